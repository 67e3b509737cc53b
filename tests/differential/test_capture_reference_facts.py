"""What a torch side finds out about its reference model's structure is kept with the model: the next
side that takes the model from the pool reuses it, and it never keeps the model alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from differential import sides
from differential.report import initial_weights
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data

CONFIG = TransformerConfig(num_layers=2)


def _capture(side: sides.TorchSide):
    tokens, targets = next(make_reversal_data(CONFIG, 4, 1, seed=0).batches(0, 4))
    return side.capture(tokens, targets)


def test_a_model_nobody_holds_is_let_go_with_what_was_found_about_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sides, "_REFERENCES", sides._FreeModels(most_bytes=0))  # the pool keeps nothing
    side = sides.TorchSide(CONFIG, initial_weights(CONFIG, 0), "float64")
    _capture(side)  # finds the recorded modules and the parameters by name
    model = weakref.ref(side.model)
    assert sides._STRUCTURES.get(side.model), "the side keeps nothing with its model"
    del side
    gc.collect()
    assert model() is None


def test_the_next_side_reuses_the_facts_and_captures_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sides, "_REFERENCES", sides._FreeModels(most_bytes=2**30))
    weights = initial_weights(CONFIG, 0)
    first = sides.TorchSide(CONFIG, weights, "float64")
    expected = _capture(first)
    facts = first._facts
    del first
    gc.collect()
    # other weights: the reused model gets them, and the parameters found before are the model's own
    changed = {n: a * 0.5 for n, a in weights.items()}
    second = sides.TorchSide(CONFIG, changed, "float64")
    assert second._facts is facts
    got = _capture(second)
    for name, value in got.params.items():
        np.testing.assert_array_equal(value, changed[name])
    fresh = _capture(sides.TorchSide(CONFIG, changed, "float64"))  # a model built for it
    assert got.loss == fresh.loss
    for path, call in fresh.calls.items():
        np.testing.assert_array_equal(got.calls[path].output, call.output)
        np.testing.assert_array_equal(got.calls[path].grad_output, call.grad_output)
    assert expected.loss != got.loss
