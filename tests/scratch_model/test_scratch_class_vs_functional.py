"""The class model and the functional model, built from one seed, are the same function: same
parameter names in the same order, same shapes and values, same logits, same gradients."""

from __future__ import annotations

import numpy as np
import pytest
from scratch_checks import assert_close

from scratch_model.config import TransformerConfig
from scratch_model.functional import build_simple_transformer
from scratch_model.layers import ReversalTransformer
from scratch_model.train import cross_entropy

SMALL = dict(vocab_size=7, seq_len=6, embed_dim=8, num_heads=2, ff_dim=16)
CONFIGS = {
    "1 layer learned": TransformerConfig(**SMALL, num_layers=1),
    "2 layers sinusoidal": TransformerConfig(**SMALL, num_layers=2, positional="sinusoidal"),
    "3 layers learned, 4 heads": TransformerConfig(**{**SMALL, "num_heads": 4}, num_layers=3),
    "default": TransformerConfig(),
}
MASKS = {"no mask": None, "causal mask": "causal"}

# float64: the two implementations order some operations differently (the 1/sqrt(hd) scale on q
# or on the scores, softmax as a primitive or composed from exp/max/sum, variance through pow),
# so they agree to round-off, not bit for bit.
# Largest deviation seen, relative to the array's scale: 3e-16 (float64), 2e-7 (float32, ~6e-8
# round-off per operation through a few dozen operations). float32 gets 1e-5, 50x that; a wrong
# formula is off by O(1) in either dtype.
TOLERANCES = {np.float64: dict(rtol=1e-10, atol_scale=1e-12), np.float32: dict(rtol=1e-5, atol_scale=1e-5)}


def both_models(config: TransformerConfig, dtype: type, seed: int = 3):
    model = ReversalTransformer(config, seed=seed, dtype=dtype)
    params, forward = build_simple_transformer(config, seed=seed, dtype=dtype)
    return model, params, forward


def batch(config: TransformerConfig, mask: str | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, config.vocab_size, size=(3, config.seq_len))
    tokens[:, -1] = tokens[:, 0]  # a repeated token
    targets = tokens[:, ::-1]
    mask_array = None if mask is None else np.tril(np.ones((config.seq_len, config.seq_len), dtype=bool))
    return tokens, targets, mask_array


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_parameter_names_order_shapes_and_values(config_name: str, dtype: type) -> None:
    model, params, _ = both_models(CONFIGS[config_name], dtype)
    ours = dict(model.named_parameters())
    assert list(ours) == list(params)
    for name, p in ours.items():
        assert p.dtype == params[name].dtype == dtype, name
        assert p.requires_grad and params[name].requires_grad, name
        np.testing.assert_array_equal(p.data, params[name].data, err_msg=name)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_same_logits_and_gradients(config_name: str, mask: str, dtype: type) -> None:
    config = CONFIGS[config_name]
    model, params, forward = both_models(config, dtype)
    tokens, targets, mask_array = batch(config, MASKS[mask])
    tol = TOLERANCES[dtype]

    class_logits = model(tokens, mask_array)
    functional_logits = forward(params, tokens, mask_array)
    assert class_logits.dtype == functional_logits.dtype == dtype
    assert_close(class_logits.data, functional_logits.data, "logits", **tol)

    cross_entropy(class_logits, targets).backward()
    cross_entropy(functional_logits, targets).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        assert_close(p.grad, params[name].grad, f"gradient of {name}", **tol)
