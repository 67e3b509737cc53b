"""A torch side reuses a reference model that an earlier side built and no longer holds: the reuse
must be invisible (fresh weights, no gradients left over, the same capture as a newly built model)
and two live sides never share a model."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from differential import sides
from differential.sides import TorchSide
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.init import seeded_weights

CONFIG = TransformerConfig(num_layers=2)


@pytest.fixture(autouse=True)
def _no_models_from_other_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sides, "_REFERENCES", sides._FreeModels(most_bytes=2**30))


def _batch() -> tuple[np.ndarray, np.ndarray]:
    return next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))


def test_live_sides_never_share_a_model() -> None:
    weights = seeded_weights(CONFIG, 0)
    sides = [TorchSide(CONFIG, weights, "float64") for _ in range(3)]
    assert len({id(s.model) for s in sides}) == 3


def test_a_reused_model_is_a_fresh_one() -> None:
    tokens, targets = _batch()
    first = TorchSide(CONFIG, seeded_weights(CONFIG, 1), "float64")
    first.capture(tokens, targets)  # leaves gradients on its parameters
    first.run_module("blocks.0.attn", [np.ones((8, 8, CONFIG.embed_dim))], tokens, np.ones((8, 8, CONFIG.embed_dim)))
    held = id(first.model)
    del first
    gc.collect()

    weights = seeded_weights(CONFIG, 2)
    reused = TorchSide(CONFIG, weights, "float64")
    fresh = TorchSide(CONFIG, weights, "float64")  # none left to reuse: built anew
    assert id(reused.model) == held and id(fresh.model) != held
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
