"""A scratch side checks ops on a float64 copy of itself, built once per side and given the side's
current weights before every check."""

from __future__ import annotations

import numpy as np

from differential import faults
from differential.sides import ScratchSide
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.init import seeded_weights

CONFIG = TransformerConfig(num_layers=2)
PATH = "blocks.1.ln2"


def test_the_probe_follows_the_sides_weights() -> None:
    tokens, targets = next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))
    with faults.activate("sqrt_backward_no_half"):
        side = ScratchSide("class", CONFIG, seeded_weights(CONFIG, 0), "float32")
        inputs = side.capture(tokens, targets).calls[PATH].inputs
        first = side.op_check(PATH, inputs, tokens, None)
        assert first is not None and first["source"].startswith("differential/faults/ops.py:")
        probe = side._probe

        side.load(seeded_weights(CONFIG, 1))
        again = side.op_check(PATH, inputs, tokens, None)
        fresh = ScratchSide("class", CONFIG, seeded_weights(CONFIG, 1), "float32").op_check(PATH, inputs, tokens, None)
    assert side._probe is probe and again == fresh
    mine, probed = side.params(), probe.params()
    for name, value in mine.items():
        assert probed[name].dtype == np.float64
        assert np.array_equal(probed[name], value.astype(np.float64)), name
    assert not np.array_equal(mine["head.weight"], seeded_weights(CONFIG, 0)["head.weight"].astype(np.float32))


def test_a_clean_model_passes_every_op_check_twice() -> None:
    tokens, targets = next(make_reversal_data(CONFIG, 8, 1, seed=0).batches(0, 8))
    side = ScratchSide("functional", CONFIG, seeded_weights(CONFIG, 0), "float64")
    calls = side.capture(tokens, targets).calls
    for _ in range(2):
        assert [side.op_check(p, calls[p].inputs, tokens, None) for p in ("blocks.0.attn", PATH)] == [None, None]
