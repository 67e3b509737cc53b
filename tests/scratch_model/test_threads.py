"""Thread pinning: numpy's BLAS and torch on one thread by default, SCRATCHDIFF_THREADS overrides,
both restored afterwards, and training runs pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from scratch_model.config import TrainConfig, TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.layers import ReversalTransformer
from scratch_model.threads import ENV_VAR, cpu_threads, default_threads


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.mark.parametrize("environ, expected", [({}, 1), ({ENV_VAR: "3"}, 3), ({ENV_VAR: " 2 "}, 2),
                                               ({ENV_VAR: ""}, 1)])
def test_default_threads_reads_the_override(environ: dict[str, str], expected: int) -> None:
    assert default_threads(environ) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_override_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be a positive integer, got '{bad}'"):
        default_threads({ENV_VAR: bad})


@pytest.mark.parametrize("count", [1, 2])
def test_cpu_threads_pins_blas_and_torch_then_restores_both(count: int) -> None:
    before_blas, before_torch = blas_threads(), torch.get_num_threads()
    with cpu_threads(count):
        assert blas_threads() == {count}
        assert torch.get_num_threads() == count
    assert blas_threads() == before_blas and torch.get_num_threads() == before_torch


def test_the_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "2")
    with cpu_threads():
        assert blas_threads() == {2} and torch.get_num_threads() == 2


def test_training_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from scratch_model import train as train_module

    monkeypatch.delenv(ENV_VAR, raising=False)
    seen: list[set[int]] = []
    config = TransformerConfig()
    model = ReversalTransformer(config, dtype=np.float32)
    data = make_reversal_data(config, num_train=16, num_test=8, seed=0)
    train_module.train(model, model.parameters(), data, TrainConfig(epochs=1, batch_size=16, num_train=16,
                                                                   num_test=8),
                       on_step=lambda step, loss: seen.append(blas_threads()))
    assert seen == [{1}]
