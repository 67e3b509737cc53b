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
    def __init__(self, in_features: int, out_features: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.weight = Parameter(init.uniform_fan_in(seed, f"{name}.weight", (out_features, in_features),
                                                    in_features, dtype))
        self.bias = Parameter(init.uniform_fan_in(seed, f"{name}.bias", (out_features,), in_features, dtype))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.transpose() + self.bias  # (..., in) @ (in, out)


class Embedding(Module):
    def __init__(self, num_embeddings: int, dim: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.weight = Parameter(init.normal(seed, f"{name}.weight", (num_embeddings, dim), dtype))

    def forward(self, tokens: np.ndarray) -> Tensor:
        return ag.embedding(self.weight, tokens)  # (B, T) -> (B, T, D)


class PositionalEmbedding(Module):
    """Adds a position vector to each step: a learned table, or a fixed sinusoidal one."""

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


class MultiHeadAttention(Module):
    def __init__(self, dim: int, num_heads: int, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, proj, Linear(dim, dim, seed=seed, name=f"{name}.{proj}", dtype=dtype))

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # (B, h, T, hd)

    def forward(self, x: Tensor, mask: np.ndarray | None = None) -> Tensor:
        """``mask``: booleans broadcastable to (B, h, T, T), True where a query may attend."""
        b, t, d = x.shape
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))  # (B, h, T, T)
        if mask is not None:
            scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
        weights = ag.softmax(scores, axis=-1)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)  # (B, T, h, hd) -> (B, T, D)
        return self.out_proj(context)


class FeedForward(Module):
    def __init__(self, dim: int, hidden: int, *, seed: int, name: str, dtype: np.dtype = np.float64) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, seed=seed, name=f"{name}.fc1", dtype=dtype)
        self.fc2 = Linear(hidden, dim, seed=seed, name=f"{name}.fc2", dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(ag.relu(self.fc1(x)))


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
    """Post-LN block: ``x = ln1(x + attn(x))``, then ``x = ln2(x + ffn(x))``."""

    def __init__(self, config: TransformerConfig, *, seed: int, name: str,
                 dtype: np.dtype = np.float64) -> None:
        super().__init__()
        d = config.embed_dim
        self.attn = MultiHeadAttention(d, config.num_heads, seed=seed, name=f"{name}.attn", dtype=dtype)
        self.ln1 = LayerNorm(d, config.ln_eps, dtype)
        self.ffn = FeedForward(d, config.ff_dim, seed=seed, name=f"{name}.ffn", dtype=dtype)
        self.ln2 = LayerNorm(d, config.ln_eps, dtype)

    def forward(self, x: Tensor, mask: np.ndarray | None = None) -> Tensor:
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.ffn(x))


class ReversalTransformer(Module):
    """Tokens (B, T) -> logits (B, T, vocab): embedding, positions, blocks, output projection."""

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
        self.pos_embedding = PositionalEmbedding(config.seq_len, d, kind=config.positional, seed=seed,
                                                 name="pos_embedding", dtype=dtype)
        self.blocks = ModuleList([TransformerBlock(config, seed=seed, name=f"blocks.{i}", dtype=dtype)
                                  for i in range(config.num_layers)])
        self.head = Linear(d, config.vocab_size, seed=seed, name="head", dtype=dtype)

    def forward(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> Tensor:
        tokens = validate_tokens(tokens, self.config)
        x = self.pos_embedding(self.embedding(tokens))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x)
