"""The class-based transformer: layers as modules that hold their parameters.

Read bottom-up: small layers first, the full model last. Parameter names and layouts match the
functional model and the torch reference (Linear weight is (out, in)).
"""

from __future__ import annotations

import numpy as np

from scratch_model import autograd as ag
from scratch_model import init
from scratch_model.autograd import Tensor
from scratch_model.config import TransformerConfig
from scratch_model.data import validate_tokens
from scratch_model.module import Module, ModuleList, Parameter


class Linear(Module):
    """``x @ weight.T + bias``. ``bias=False``: no bias parameter. ``weight``: use this parameter
    (owned by another module: a head tied to the embedding) instead of a new one."""

    def __init__(self, in_features: int, out_features: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64, bias: bool = True, weight: Parameter | None = None) -> None:
        super().__init__()
        self.tied = weight is not None
        self.weight = weight if weight is not None else Parameter(
            init.uniform_fan_in(seed, f"{name}.weight", (out_features, in_features), in_features, dtype))
        self.bias = Parameter(init.uniform_fan_in(seed, f"{name}.bias", (out_features,), in_features, dtype)) \
            if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return ag.linear(x, self.weight.transpose(), self.bias)  # (..., in) @ (in, out) + bias, one node


class Embedding(Module):
    def __init__(self, num_embeddings: int, dim: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.weight = Parameter(init.normal(seed, f"{name}.weight", (num_embeddings, dim), dtype))

    def forward(self, tokens: np.ndarray) -> Tensor:
        return ag.embedding(self.weight, tokens)  # (B, T) -> (B, T, D)


class PositionalEmbedding(Module):
    """Adds a position vector to each step: a learned table, or a fixed sinusoidal one. (A model
    with ``positional="none"`` has no such module.)"""

    def __init__(self, seq_len: int, dim: int, *, kind: str, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        if kind == "learned":
            self.weight = Parameter(init.normal(seed, f"{name}.weight", (seq_len, dim), dtype))
        else:
            self.table = Tensor(init.sinusoidal_table(seq_len, dim, dtype))

    def forward(self, x: Tensor) -> Tensor:
        table = self.weight if "weight" in self._parameters else self.table
        return x + table[: x.shape[1]]  # (B, T, D) + (T, D)


def causal_mask(length: int) -> np.ndarray:
    """(T, T) booleans, True where query i may attend to key j: j <= i."""
    return np.tril(np.ones((length, length), dtype=bool))


class MultiHeadAttention(Module):
    def __init__(self, dim: int, num_heads: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64, bias: bool = True, causal: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, proj, Linear(dim, dim, seed=seed, name=f"{name}.{proj}", dtype=dtype, bias=bias))

    def allowed(self, length: int, mask: np.ndarray | None) -> np.ndarray | None:
        """Where a query may attend: the causal mask of the architecture, and ``mask`` if given."""
        if not self.causal:
            return mask
        return causal_mask(length) if mask is None else causal_mask(length) & np.asarray(mask, dtype=bool)

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # (B, h, T, hd)

    def forward(self, x: Tensor, mask: np.ndarray | None = None) -> Tensor:
        """``mask``: an extra mask, booleans broadcastable to (B, h, T, T), True where a query may
        attend (a causal model applies its own causal mask as well)."""
        b, t, d = x.shape
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))  # (B, h, T, T)
        mask = self.allowed(t, mask)
        if mask is not None:
            scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
        weights = ag.softmax(scores, axis=-1)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)  # (B, T, h, hd) -> (B, T, D)
        return self.out_proj(context)


class FeedForward(Module):
    def __init__(self, dim: int, hidden: int, *, seed: int, name: str, dtype: np.dtype = np.float64,
                 bias: bool = True, activation: str = "relu") -> None:
        super().__init__()
        self.activation = activation
        self.fc1 = Linear(dim, hidden, seed=seed, name=f"{name}.fc1", dtype=dtype, bias=bias)
        self.fc2 = Linear(hidden, dim, seed=seed, name=f"{name}.fc2", dtype=dtype, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        activate = getattr(ag, self.activation)  # looked up per call: ag.relu, ag.gelu or ag.gelu_tanh
        return self.fc2(activate(self.fc1(x)))


class LayerNorm(Module):
    """Normalises the last axis with the biased variance, as torch.nn.LayerNorm does."""

    def __init__(self, dim: int, eps: float, dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        centered = x - x.mean(axis=-1, keepdims=True)
        variance = (centered * centered).mean(axis=-1, keepdims=True)
        return centered / (variance + self.eps).sqrt() * self.weight + self.bias


class TransformerBlock(Module):
    """Post-LN (``config.norm == "post"``): ``x = ln1(x + attn(x))``, then ``x = ln2(x + ffn(x))``.
    Pre-LN: ``x = x + attn(ln1(x))``, then ``x = x + ffn(ln2(x))``."""

    def __init__(self, config: TransformerConfig, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        d = config.embed_dim
        self.pre_norm = config.norm == "pre"
        self.attn = MultiHeadAttention(d, config.num_heads, seed=seed, name=f"{name}.attn", dtype=dtype,
                                       bias=config.bias, causal=config.causal)
        self.ln1 = LayerNorm(d, config.ln_eps, dtype)
        self.ffn = FeedForward(d, config.ff_dim, seed=seed, name=f"{name}.ffn", dtype=dtype, bias=config.bias,
                               activation=config.activation)
        self.ln2 = LayerNorm(d, config.ln_eps, dtype)

    def forward(self, x: Tensor, mask: np.ndarray | None = None) -> Tensor:
        if not self.pre_norm:
            x = self.ln1(x + self.attn(x, mask))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), mask)
        return x + self.ffn(self.ln2(x))


class ReversalTransformer(Module):
    """Tokens (B, T) -> logits (B, T, vocab): embedding, positions (unless ``positional="none"``),
    blocks, the final LayerNorm ``ln_f`` (with ``final_norm``), output projection (its weight is
    the embedding's with ``tie_head``)."""

    def __init__(self, config: TransformerConfig | None = None, seed: int = 0,
                 dtype: np.dtype | str = np.float64) -> None:
        super().__init__()
        config = config or TransformerConfig()
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.config = config
        d = config.embed_dim
        self.embedding = Embedding(config.vocab_size, d, seed=seed, name="embedding", dtype=dtype)
        if config.positional != "none":
            self.pos_embedding = PositionalEmbedding(config.seq_len, d, kind=config.positional, seed=seed,
                                                     name="pos_embedding", dtype=dtype)
        self.blocks = ModuleList([TransformerBlock(config, seed=seed, name=f"blocks.{i}", dtype=dtype)
                                  for i in range(config.num_layers)])
        if config.final_norm:
            self.ln_f = LayerNorm(d, config.ln_eps, dtype)
        self.head = Linear(d, config.vocab_size, seed=seed, name="head", dtype=dtype, bias=config.bias,
                           weight=self.embedding.weight if config.tie_head else None)

    def forward(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> Tensor:
        """``mask``: an extra attention mask (True: may attend), beside the architecture's own."""
        tokens = validate_tokens(tokens, self.config)
        x = self.embedding(tokens)
        if "pos_embedding" in self._modules:
            x = self.pos_embedding(x)
        for block in self.blocks:
            x = block(x, mask)
        if "ln_f" in self._modules:
            x = self.ln_f(x)
        return self.head(x)
