"""A torch side reuses a reference model that an earlier side built and no longer holds: the reuse
must be invisible (fresh weights, no gradients left over, the same capture as a newly built model)
and two live sides never share a model."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from differential import sides
from differential.sides import TorchSide
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.init import seeded_weights
from torch_reference.model import ReversalTransformer

CONFIG = TransformerConfig(num_layers=2)
KEY = (ReversalTransformer, CONFIG, torch.float64, "cpu")  # what the pool keeps CONFIG's float64 models under


@pytest.fixture(autouse=True)
def _no_models_from_other_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sides, "_REFERENCES", sides._FreeModels(most_bytes=2**30))


def _free_models() -> list[object]:
    """Every free float64 reference model of CONFIG (taken out of the pool)."""
    models = []
    while (taken := sides._REFERENCES.take(KEY)) is not None:
        models.append(taken[0])
    return models


def _batch() -> tuple[np.ndarray, np.ndarray]:
    return next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))


def test_live_sides_never_share_a_model() -> None:
    weights = seeded_weights(CONFIG, 0)
    built = [TorchSide(CONFIG, weights, "float64") for _ in range(3)]
    assert len({id(s.model) for s in built}) == 3


def test_a_reused_model_is_a_fresh_one() -> None:
    tokens, targets = _batch()
    first = TorchSide(CONFIG, seeded_weights(CONFIG, 1), "float64")
    first.capture(tokens, targets)  # leaves gradients on its parameters
    first.run_module("blocks.0.attn", [np.ones((8, 8, CONFIG.embed_dim))], tokens, np.ones((8, 8, CONFIG.embed_dim)))
    held = first.model
    del first
    gc.collect()
    assert any(model is held for model in _free_models())
    sides._REFERENCES.give_back(KEY, held, 0)  # the only free one

    weights = seeded_weights(CONFIG, 2)
    reused = TorchSide(CONFIG, weights, "float64")
    fresh = TorchSide(CONFIG, weights, "float64")  # none left to reuse: built anew
    assert reused.model is held and fresh.model is not held
    assert all(p.grad is None for p in reused.model.parameters())
    for name, value in reused.params().items():
        assert np.array_equal(value, weights[name]), name

    a, b = reused.capture(tokens, targets), fresh.capture(tokens, targets)
    assert a.loss == b.loss and np.array_equal(a.logits, b.logits)
    assert list(a.calls) == list(b.calls)
    for name in b.param_grads:
        assert np.array_equal(a.param_grads[name], b.param_grads[name]), name


def test_another_dtype_or_config_builds_its_own() -> None:
    weights = seeded_weights(CONFIG, 0)
    side = TorchSide(CONFIG, weights, "float64")
    held = id(side.model)
    del side
    gc.collect()
    other = TorchSide(CONFIG, weights, "float32")
    wider = TorchSide(TransformerConfig(num_layers=2, final_norm=True), seeded_weights(
        TransformerConfig(num_layers=2, final_norm=True), 0), "float64")
    assert held not in (id(other.model), id(wider.model))
    assert {p.dtype for p in other.model.parameters()} == {other.torch.float32}


def test_the_models_kept_fit_the_budget() -> None:
    free = sides._FreeModels(most_bytes=100)
    for i in range(4):
        free.give_back("key", f"model {i}", 40)
    free.give_back("big", "too big to keep", 101)
    assert [free.take("key"), free.take("key"), free.take("key")] == [("model 3", 40), ("model 2", 40), None]
    assert free.take("big") is None and free.take("other") is None


@pytest.mark.parametrize("leave", ["hook", "pre_hook", "forward", "frozen", "eval"])
def test_a_model_something_was_left_on_is_not_reused(leave: str) -> None:
    weights = seeded_weights(CONFIG, 0)
    side = TorchSide(CONFIG, weights, "float64")
    attn = side.model.get_submodule("blocks.0.attn")
    if leave == "hook":
        attn.register_forward_hook(lambda m, args, out: None)
    elif leave == "pre_hook":
        attn.register_forward_pre_hook(lambda m, args: None)
    elif leave == "forward":
        attn.forward = attn.forward
    elif leave == "frozen":
        side.model.head.bias.requires_grad_(False)
    else:
        side.model.eval()
    held = side.model
    del side, attn
    gc.collect()
    assert all(model is not held for model in _free_models())


def test_a_model_left_as_built_is_reused() -> None:
    weights = seeded_weights(CONFIG, 0)
    side = TorchSide(CONFIG, weights, "float64")
    side.capture(*_batch())
    held = side.model
    del side
    gc.collect()
    assert any(model is held for model in _free_models())
