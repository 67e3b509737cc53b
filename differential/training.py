"""Train any of the three implementations on the same data, from the same initial weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scratch_model import data as data_module
from scratch_model.config import TrainConfig, TrainResult, TransformerConfig

IMPLEMENTATIONS = ("class", "functional", "torch")


@dataclass(frozen=True)
class TrainPlan:
    """One training run: which implementation, which settings."""

    impl: str = "class"
    seed: int = 0
    dtype: str = "float64"
    model: TransformerConfig = field(default_factory=TransformerConfig)
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields to change

    def __post_init__(self) -> None:
        if self.impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {', '.join(IMPLEMENTATIONS)}, got {self.impl!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        self.train_config()  # validates the overrides now, not halfway through

    def train_config(self) -> TrainConfig:
        unknown = sorted(set(self.overrides) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return replace(TrainConfig(), **self.overrides)

    def total_steps(self) -> int:
        config = self.train_config()
        return config.epochs * -(-config.num_train // config.batch_size)


def run(plan: TrainPlan, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train as ``plan`` says; return the result as a JSON-ready dict (test-set figures)."""
    config = plan.train_config()
    data = data_module.make_reversal_data(plan.model, config.num_train, config.num_test, seed=plan.seed,
                                          task=config.task)
    if plan.impl == "torch":
        result = _train_torch(plan, config, data, on_step)
    else:
        result = _train_scratch(plan, config, data, on_step)
    return {"impl": plan.impl, "seed": plan.seed, "dtype": plan.dtype, "epochs": config.epochs, "task": data.task,
            **result.to_dict()}


def _train_scratch(plan: TrainPlan, config: TrainConfig, data: Any,
                   on_step: Callable[[int, float], None] | None) -> TrainResult:
    from scratch_model.functional import build_simple_transformer
    from scratch_model.layers import ReversalTransformer
    from scratch_model.train import train

    if plan.impl == "class":
        model = ReversalTransformer(plan.model, seed=plan.seed, dtype=plan.dtype)
        return train(model, model.parameters(), data, config, on_step)
    params, forward = build_simple_transformer(plan.model, seed=plan.seed, dtype=plan.dtype)
    return train(lambda tokens: forward(params, tokens), list(params.values()), data, config, on_step)


def _train_torch(plan: TrainPlan, config: TrainConfig, data: Any,
                 on_step: Callable[[int, float], None] | None) -> TrainResult:
    from scratch_model.functional import build_simple_transformer
    from torch_reference.train import train_torch

    # The reference starts from the scratch models' initial weights, so the three runs differ
    # only in their implementation.
    params, _ = build_simple_transformer(plan.model, seed=plan.seed, dtype=plan.dtype)
    arrays = {name: np.array(t.data) for name, t in params.items()}
    return train_torch(plan.model, arrays, data, config, dtype=plan.dtype, on_step=on_step)
