"""Model and training configuration, shared by every implementation (scratch class, scratch
functional, torch). Plain dataclasses: importing this module pulls in no autograd."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

CHOICES = {
    "norm": ("post", "pre"),
    "activation": ("relu", "gelu", "gelu_tanh"),
    "mask": ("none", "causal"),
    "positional": ("learned", "sinusoidal", "none"),
}


@dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters and architecture of the transformer. Defaults are the seed model of the
    original report (post-LN, ReLU, no mask, learned positions, separate head, biases everywhere);
    `arch("gpt")` gives the GPT-style decoder."""

    vocab_size: int = 10  # token 0 is reserved; data uses tokens 1..vocab_size-1
    seq_len: int = 8  # longest sequence, and the size of the positional table
    embed_dim: int = 32
    num_heads: int = 4  # embed_dim must be a multiple of num_heads
    ff_dim: int = 64  # hidden width of the feed-forward block
    num_layers: int = 1
    ln_eps: float = 1e-5  # LayerNorm's epsilon under the square root
    positional: str = "learned"  # learned (table `pos_embedding.weight`) | sinusoidal (fixed) | none
    norm: str = "post"  # post: x = ln(x + f(x));  pre: x = x + f(ln(x))
    final_norm: bool = False  # a LayerNorm `ln_f` between the last block and the head
    activation: str = "relu"  # of the feed-forward: relu | gelu (exact, erf) | gelu_tanh (tanh approximation)
    mask: str = "none"  # attention mask: none | causal (query i sees keys 0..i)
    bias: bool = True  # every Linear layer has a bias (False: no `*_proj.bias`, `fc*.bias`, `head.bias`)
    tie_head: bool = False  # the head reuses `embedding.weight` (no `head.weight` of its own)

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
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("final_norm", "bias", "tie_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.ln_eps, bool) or not isinstance(self.ln_eps, (int, float)) or not self.ln_eps > 0 \
                or not np.isfinite(self.ln_eps):
            raise ValueError(f"ln_eps must be a positive number, got {self.ln_eps!r}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def causal(self) -> bool:
        return self.mask == "causal"

    def to_dict(self) -> dict:
        return asdict(self)

    def changed_fields(self) -> dict[str, Any]:
        """The architecture fields that differ from the seed model's, by name."""
        seed = TransformerConfig()
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS
                if getattr(self, name) != getattr(seed, name)}


# The fields that choose the architecture (the others are sizes).
ARCHITECTURE_FIELDS = ("norm", "final_norm", "activation", "mask", "bias", "ln_eps", "tie_head", "positional")
SIZE_FIELDS = ("vocab_size", "seq_len", "embed_dim", "num_heads", "ff_dim", "num_layers")

# Named presets: each is a set of field values on top of the defaults.
ARCHS: dict[str, dict[str, Any]] = {
    "seed": {},  # the original report's model
    "gpt": {"norm": "pre", "final_norm": True, "activation": "gelu_tanh", "mask": "causal", "tie_head": True,
            "positional": "learned"},
}

# The architectures every variant check runs over: each field changed alone, then the presets and
# GPT-style models with the other options a GPT port often has.
VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {},
    "pre_ln": {"norm": "pre"},
    "final_norm": {"final_norm": True},
    "gelu": {"activation": "gelu"},
    "gelu_tanh": {"activation": "gelu_tanh"},
    "causal": {"mask": "causal"},
    "no_bias": {"bias": False},
    "ln_eps_1e-6": {"ln_eps": 1e-6},
    "tied_head": {"tie_head": True},
    "sinusoidal": {"positional": "sinusoidal"},
    "no_positions": {"positional": "none"},
    "gpt": ARCHS["gpt"],
    "gpt_no_bias_sinusoidal": {**ARCHS["gpt"], "bias": False, "positional": "sinusoidal", "activation": "gelu"},
}


def arch(name: str, **overrides: Any) -> TransformerConfig:
    """The preset ``name`` (seed | gpt), with any field overridden."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}: expected one of {', '.join(ARCHS)}")
    return TransformerConfig(**{**ARCHS[name], **overrides})


def variant(name: str, **overrides: Any) -> TransformerConfig:
    """The named variant of `VARIANTS`, with any field overridden (sizes, usually)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: expected one of {', '.join(VARIANTS)}")
    return TransformerConfig(**{**VARIANTS[name], **overrides})


def config_from_mapping(values: Mapping[str, Any], base: TransformerConfig | None = None,
                        source: str = "config") -> TransformerConfig:
    """``base`` (default: the seed model) with the fields in ``values`` replaced; an ``arch`` key
    starts from that preset instead. Unknown keys are refused by name."""
    values = dict(values)
    known = set(TransformerConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known - {"arch"})
    if unknown:
        raise ValueError(f"{source}: unknown model setting{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; known: arch, {', '.join(sorted(known))}")
    if "arch" in values:
        base = arch(values.pop("arch"))
    try:
        return replace(base or TransformerConfig(), **values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


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
    # reverse: the target is the reversed input (needs attention to later tokens: no causal mask);
    # mirror: the first half copied, then reversed (learnable under a causal mask);
    # auto: mirror for a causal model, reverse otherwise
    task: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in ("auto", "reverse", "mirror"):
            raise ValueError(f"task must be auto, reverse or mirror, got {self.task!r}")
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
