"""The options of one report (`ReportOptions`): what is compared with what, on which model, batch and
weights. A module of its own, so the modules that reason over a report need not import the report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from scratch_model.config import TransformerConfig


@dataclass(frozen=True)
class ReportOptions:
    impl: str = "class"  # the implementation under test: class | functional | torch
    against: str = "torch"  # the reference: torch | class | functional
    dtype: str = "float64"
    seed: int = 0
    batch_size: int = 16
    model: TransformerConfig = field(default_factory=TransformerConfig)
    isolated: bool = False  # run every module alone, not only those whose joint checks disagree
    findings: bool = True  # every root cause by teacher forcing (False: the first divergence only)
    steps: int = 0  # training steps side by side (0: skip the training phase)
    optimizer: str = "adam"
    lr: float = 3e-3
    # the model's attention mask, none | causal: always equal to model.mask ("causal" here makes the model causal)
    mask: str = "none"
    weights: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    device: str = "cpu"
    # a user's model through a differential.adapter.Adapter: it becomes the implementation under test
    adapter: object | None = field(default=None, compare=False, repr=False)
    # a user's own torch.nn.Module as the reference (the model being ported), in its own names
    reference: object | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        impls = ("class", "functional", "torch")
        if self.mask not in ("none", "causal"):
            raise ValueError(f"mask must be none or causal, got {self.mask!r}")
        if self.mask == "causal" and self.model.mask != "causal":
            object.__setattr__(self, "model", replace(self.model, mask="causal"))
        object.__setattr__(self, "mask", self.model.mask)  # one source of truth: the architecture
        if self.adapter is not None:
            object.__setattr__(self, "impl", "adapter")
        if self.impl not in impls + ("adapter",):
            raise ValueError(f"impl must be one of {', '.join(impls)}, got {self.impl!r}")
        if self.against not in impls:
            raise ValueError(f"against must be one of {', '.join(impls)}, got {self.against!r}")
        if self.impl == self.against:
            raise ValueError(f"impl and against are both {self.impl!r}: compare two different implementations")
        if self.reference is not None and self.against != "torch":
            raise ValueError("a reference model (torch.nn.Module) is the torch side: it needs against='torch'")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be 0 or more, got {self.steps}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
