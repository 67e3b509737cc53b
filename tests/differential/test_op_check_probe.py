"""A float32 side checks ops on a float64 twin of its model (`AdapterSide.float64_twin`), built once
per side by the adapter's factory and given the side's current weights before every check."""

from __future__ import annotations

import numpy as np

from differential import faults
from differential.adapter import Adapter, AdapterOptions
from differential.adapter_side import AdapterSide
from differential.bundled_adapters import class_model
from differential.implementations import make_side
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.init import seeded_weights

CONFIG = TransformerConfig(num_layers=2)
PATH = "blocks.1.ln2"


def _captured(impl: str, seed: int, dtype: str) -> tuple[AdapterSide, list[np.ndarray], np.ndarray]:
    tokens, targets = next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))
    side = make_side(impl, CONFIG, seeded_weights(CONFIG, seed), dtype)
    assert isinstance(side, AdapterSide)
    return side, side.capture(tokens, targets).calls[PATH].inputs, tokens


def test_the_twin_follows_the_sides_weights() -> None:
    with faults.activate("sqrt_backward_no_half"):
        side, inputs, tokens = _captured("class", 0, "float32")
        first = side.op_check(PATH, inputs)
        assert first is not None and first["source"].startswith("differential/faults/ops.py:")
        twin = side.float64_twin()
        assert twin is not None and twin.dtype == "float64"

        side.load(seeded_weights(CONFIG, 1))
        again = side.op_check(PATH, inputs)
        other, _, _ = _captured("class", 1, "float32")
        fresh = other.op_check(PATH, inputs)
    assert side.float64_twin() is twin and again == fresh
    mine, twins = side.params(), twin.params()
    for name, value in mine.items():
        assert twins[name].dtype == np.float64
        assert np.array_equal(twins[name], value.astype(np.float64)), name
    assert not np.array_equal(mine["head.weight"], seeded_weights(CONFIG, 0)["head.weight"].astype(np.float32))


def test_a_clean_model_passes_every_op_check_twice() -> None:
    tokens, targets = next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))
    for dtype in ("float64", "float32"):
        side = make_side("functional", CONFIG, seeded_weights(CONFIG, 0), dtype)
        calls = side.capture(tokens, targets).calls
        for _ in range(2):
            assert [side.op_check(p, calls[p].inputs) for p in ("blocks.0.attn", PATH)] == [None, None]


def test_an_adapter_the_report_cannot_build_again_has_no_twin() -> None:
    made = class_model(AdapterOptions(CONFIG, "float32"))
    unknown = type(made)(AdapterOptions(CONFIG, "float32"))  # built without its factory: nothing noted
    assert isinstance(unknown, Adapter)
    with faults.activate("sqrt_backward_no_half"):
        tokens, targets = next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))
        known = AdapterSide(made, CONFIG, "float32", seeded_weights(CONFIG, 0))
        bare = AdapterSide(unknown, CONFIG, "float32", seeded_weights(CONFIG, 0))
        inputs = known.capture(tokens, targets).calls[PATH].inputs
        bare.capture(tokens, targets)
        assert known.op_check(PATH, inputs) is not None
        assert bare.float64_twin() is None and bare.op_check(PATH, inputs) is None
