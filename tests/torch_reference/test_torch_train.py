"""train_torch: the scratch training loop in torch, through the library and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from torch_parity import SMALL

from differential import cli
from differential.training import TrainPlan, run
from scratch_model import functional as F
from scratch_model.config import TrainConfig
from scratch_model.data import make_reversal_data
from torch_reference.train import train_torch

TINY = TrainConfig(epochs=2, batch_size=32, num_train=200, num_test=50)


def initial(dtype: str = "float64") -> dict[str, np.ndarray]:
    params, _ = F.build_simple_transformer(SMALL, seed=0, dtype=dtype)
    return {name: t.data.copy() for name, t in params.items()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_result_fields_and_progress_callback(dtype):
    data = make_reversal_data(SMALL, TINY.num_train, TINY.num_test, seed=1)
    calls = []
    result = train_torch(SMALL, initial(dtype), data, TINY, dtype=dtype,
                         on_step=lambda step, loss: calls.append((step, loss)))
    steps = TINY.epochs * -(-TINY.num_train // TINY.batch_size)
    assert result.steps == steps and [s for s, _ in calls] == list(range(1, steps + 1))
    assert all(isinstance(loss, float) and np.isfinite(loss) for _, loss in calls)
    assert len(result.train_loss) == TINY.epochs and result.train_loss[1] < result.train_loss[0]
    assert 0 <= result.exact_match <= result.token_accuracy <= 1 and result.seconds > 0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_same_figures_as_the_class_model(optimizer):
    """Through differential.training.run, as the CLI does: same weights, same batches."""
    overrides = {"epochs": 2, "num_train": 300, "num_test": 100, "optimizer": optimizer}
    results = {impl: run(TrainPlan(impl=impl, model=SMALL, overrides=overrides)) for impl in ("class", "torch")}
    scratch, reference = results["class"], results["torch"]
    np.testing.assert_allclose(scratch["train_loss"], reference["train_loss"], rtol=1e-9)
    np.testing.assert_allclose(scratch["loss"], reference["loss"], rtol=1e-9)
    assert (scratch["exact_match"], scratch["token_accuracy"]) == \
        (reference["exact_match"], reference["token_accuracy"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: {k: v for k, v in a.items() if k != "head.bias"}, "missing head.bias"),
    (lambda a: dict(a, extra=np.zeros(2)), "unexpected extra"),
    (lambda a: dict(a, **{"head.weight": a["head.weight"].T}), r"head.weight is float64 \(32, 11\)"),
    (lambda a: dict(a, **{"head.bias": a["head.bias"].astype(np.float32)}), "head.bias is float32"),
])
def test_initial_weights_must_fit(change, message):
    data = make_reversal_data(SMALL, TINY.num_train, TINY.num_test, seed=1)
    with pytest.raises(ValueError, match=message):
        train_torch(SMALL, change(initial()), data, TINY)


def test_unknown_dtype_is_refused():
    data = make_reversal_data(SMALL, TINY.num_train, TINY.num_test, seed=1)
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        train_torch(SMALL, initial(), data, TINY, dtype="float16")


def test_cli_trains_the_reference_to_99_percent(capsys):
    """The acceptance run: `scratchdiff train --impl torch --json` with the default settings."""
    assert cli.main(["train", "--impl", "torch", "--json"]) == cli.EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["impl"] == "torch" and result["steps"] == 470
    assert result["exact_match"] >= 0.99, result


def test_sinusoidal_model_trains():
    config = replace(SMALL, positional="sinusoidal")
    params, _ = F.build_simple_transformer(config, seed=0)
    arrays = {name: t.data.copy() for name, t in params.items()}
    data = make_reversal_data(config, TINY.num_train, TINY.num_test, seed=1)
    result = train_torch(config, arrays, data, TINY)
    assert result.train_loss[-1] < result.train_loss[0]
