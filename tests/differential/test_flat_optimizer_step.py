"""The torch side's optimizer-step check runs torch's update on flat buffers (all parameters with a
gradient laid end to end). It must give the very bits a step parameter by parameter gives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from differential.sides import TorchSide
from scratch_model.config import TransformerConfig
from scratch_model.init import seeded_weights
from torch_reference.optim import TorchOptimizer

# default sizes; odd sizes (no dimension a multiple of a SIMD width); a tied head, no biases, a final LayerNorm
CONFIGS = [
    TransformerConfig(num_layers=2),
    TransformerConfig(vocab_size=11, seq_len=7, embed_dim=15, num_heads=3, ff_dim=23, num_layers=3),
    TransformerConfig(positional="sinusoidal", tie_head=True, bias=False, final_norm=True, num_layers=2),
]


def _grads(side: TorchSide, seed: int, missing: str | None) -> dict[str, np.ndarray | None]:
    """float64 gradients over many magnitudes, as the reference's capture gives them."""
    rng = np.random.default_rng(seed)
    grads: dict[str, np.ndarray | None] = {
        n: rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-8, 2, p.shape)
        for n, p in side.model.named_parameters()}
    if missing is not None:
        grads[missing] = None
    return grads


def _per_parameter(side: TorchSide, grads: dict[str, np.ndarray | None], kind: str, lr: float
                   ) -> dict[str, np.ndarray]:
    """The step parameter by parameter: a clone of each, its own gradient tensor, one list."""
    copies = {n: p.detach().clone() for n, p in side.model.named_parameters()}
    for n, p in copies.items():
        g = grads[n]
        p.grad = None if g is None else torch.as_tensor(np.array(g), dtype=side.tdtype)
    TorchOptimizer(list(copies.values()), kind, lr).step()
    return {n: p.numpy() for n, p in copies.items()}


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "odd_sizes", "tied_no_bias"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["adam", "sgd"])
@pytest.mark.parametrize("missing", [None, "blocks.0.ffn.fc1.weight"])
def test_flat_step_gives_the_per_parameter_bits(config: TransformerConfig, dtype: str, kind: str,
                                                missing: str | None) -> None:
    side = TorchSide(config, seeded_weights(config, 3), dtype)
    before = side.params()
    grads = _grads(side, 7, missing)
    for lr in (1e-3, 0.37):
        flat = side.optimizer_step(grads, kind, lr)
        expected = _per_parameter(side, grads, kind, lr)
        assert list(flat) == list(expected)
        for name in expected:
            assert flat[name].dtype == expected[name].dtype == np.dtype(dtype), name
            assert flat[name].shape == expected[name].shape, name
            assert np.array_equal(flat[name], expected[name]), name
        moved = [n for n in expected if not np.array_equal(flat[n], before[n])]
        assert moved and (missing is None or missing not in moved)
    for name, value in side.params().items():  # the model itself is never touched
        assert np.array_equal(value, before[name]), name


def test_a_gradient_of_the_wrong_shape_is_refused() -> None:
    side = TorchSide(TransformerConfig(), seeded_weights(TransformerConfig(), 0), "float64")
    grads = _grads(side, 0, None)
    grads["head.bias"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"'head.bias' has shape \(3,\)"):
        side.optimizer_step(grads, "adam", 1e-3)


def test_no_gradient_at_all_leaves_every_parameter() -> None:
    config = replace(TransformerConfig(), num_layers=1)
    side = TorchSide(config, seeded_weights(config, 0), "float32")
    stepped = side.optimizer_step({}, "sgd", 0.1)
    assert {n: a.tolist() for n, a in stepped.items()} == {n: a.tolist() for n, a in side.params().items()}
