"""Model and training configuration, shared by every implementation (scratch class, scratch
functional, torch). Plain dataclasses: importing this module pulls in no autograd."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of the sequence-reversal transformer. Defaults follow the original report."""

    vocab_size: int = 10  # token 0 is reserved; data uses tokens 1..vocab_size-1
    seq_len: int = 8  # sequence length, and the size of the learned positional table
    embed_dim: int = 32
    num_heads: int = 4  # embed_dim must be a multiple of num_heads
    ff_dim: int = 64  # hidden width of the feed-forward block
    num_layers: int = 1
    ln_eps: float = 1e-5
    positional: str = "learned"  # or "sinusoidal" (a fixed table, no parameter)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "embed_dim", "num_heads", "ff_dim", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {self.positional!r}")
        if not self.ln_eps > 0:
            raise ValueError(f"ln_eps must be positive, got {self.ln_eps!r}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults reach >= 99% exact-sequence accuracy on the default model."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"  # or "sgd"
    momentum: float = 0.9  # SGD only
    num_train: int = 6000
    num_test: int = 1000

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_train", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


@dataclass
class TrainResult:
    """Test-set figures after training, plus the per-epoch training loss."""

    exact_match: float  # share of test sequences reversed entirely right
    token_accuracy: float  # share of test tokens right
    loss: float  # mean cross-entropy on the test set
    seconds: float  # wall time of the training loop (data and evaluation excluded)
    steps: int
    train_loss: list[float] = field(default_factory=list)  # mean per epoch

    def to_dict(self) -> dict:
        return asdict(self)
