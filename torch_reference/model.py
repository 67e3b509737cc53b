"""The reversal transformer in PyTorch: the oracle the scratch models are checked against.

A module tree that mirrors `scratch_model.layers` one to one: the same module paths, the same
parameter names in the same order, the same layouts (Linear weight is (out, in)), the same forward
signatures. Read bottom-up: small layers first, the full model last.

The math is written here again, independently: attention is spelled out (no
``scaled_dot_product_attention``, no ``nn.MultiheadAttention``) so that every step the scratch
side takes has a visible counterpart. Nothing here imports the scratch autograd or layers; the
weights arrive as plain arrays (see `differential.weights`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from scratch_model.config import TransformerConfig

Mask = torch.Tensor | np.ndarray


def sinusoidal_table(seq_len: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos table (float64): even columns sin(p / 10000^(2i/d)), odd columns cos."""
    positions = torch.arange(seq_len, dtype=torch.float64)[:, None]  # (T, 1)
    rates = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (ceil(D/2),)
    table = torch.zeros(seq_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(positions * rates)
    table[:, 1::2] = torch.cos(positions * rates[: dim // 2])  # an odd D has one cos column fewer
    return table


class PositionalEmbedding(nn.Module):
    """Adds a position vector to each step: a learned table (parameter ``weight``) or a fixed
    sinusoidal one (buffer ``table``, left out of the state dict like the scratch model's).

    The sinusoidal table is computed in float64 and cast like any buffer; build the model in the
    dtype you compare in, rather than casting float32 -> float64 later (which widens a rounded table).
    """

    def __init__(self, seq_len: int, dim: int, kind: str) -> None:
        super().__init__()
        if kind == "learned":
            self.weight = nn.Parameter(torch.randn(seq_len, dim))
        elif kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(seq_len, dim), persistent=False)
        else:
            raise ValueError(f"positional table must be 'learned' or 'sinusoidal', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.weight if "weight" in self._parameters else self.table
        return x + table[: x.shape[1]]  # (B, T, D) + (T, D)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention over ``num_heads`` heads, written step by step; with
    ``causal``, query i attends to keys 0..i only."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True, causal: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)

    def forward(self, x: torch.Tensor, mask: Mask | None = None) -> torch.Tensor:
        """``mask``: an extra mask, booleans broadcastable to (B, h, T, T), True where a query may
        attend (the causal mask of a causal model applies as well)."""
        b, t, d = x.shape
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, T, T)
        if self.causal:
            future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=scores.device), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        if mask is not None:
            allowed = torch.as_tensor(mask, dtype=torch.bool, device=scores.device)
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # over the keys
        context = (weights @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, h, hd) -> (B, T, D)
        return self.out_proj(context)


def activate(kind: str, x: torch.Tensor) -> torch.Tensor:
    if kind == "gelu":
        return torch.nn.functional.gelu(x)  # exact: x * Phi(x)
    if kind == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    return torch.relu(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True, activation: str = "relu") -> None:
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(activate(self.activation, self.fc1(x)))


class TransformerBlock(nn.Module):
    """Post-LN: ``x = ln1(x + attn(x))``, then ``x = ln2(x + ffn(x))``; pre-LN (``norm="pre"``):
    ``x = x + attn(ln1(x))``, then ``x = x + ffn(ln2(x))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.pre_norm = config.norm == "pre"
        self.attn = MultiHeadAttention(d, config.num_heads, bias=config.bias, causal=config.mask == "causal")
        self.ln1 = nn.LayerNorm(d, eps=config.ln_eps)
        self.ffn = FeedForward(d, config.ff_dim, bias=config.bias, activation=config.activation)
        self.ln2 = nn.LayerNorm(d, eps=config.ln_eps)

    def forward(self, x: torch.Tensor, mask: Mask | None = None) -> torch.Tensor:
        if not self.pre_norm:
            x = self.ln1(x + self.attn(x, mask))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), mask)
        return x + self.ffn(self.ln2(x))


class ReversalTransformer(nn.Module):
    """Tokens (B, T) -> logits (B, T, vocab): embedding, positions (unless ``positional="none"``),
    blocks, the final LayerNorm ``ln_f`` (with ``final_norm``), output projection. With
    ``tie_head`` the head's weight *is* the embedding's parameter: it is listed once, as
    ``embedding.weight``, by ``named_parameters`` (``state_dict`` still shows both names).

    Parameters start from torch's default initialisation; load the scratch weights with
    `differential.weights.load_into_torch` (or `load_state_dict`) before comparing.
    """

    def __init__(self, config: TransformerConfig | None = None, *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        super().__init__()
        config = config or TransformerConfig()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.config = config
        d = config.embed_dim
        self.embedding = nn.Embedding(config.vocab_size, d)
        if config.positional != "none":
            self.pos_embedding = PositionalEmbedding(config.seq_len, d, config.positional)
        self.blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_layers)])
        if config.final_norm:
            self.ln_f = nn.LayerNorm(d, eps=config.ln_eps)
        self.head = nn.Linear(d, config.vocab_size, bias=config.bias)
        if config.tie_head:
            self.head.weight = self.embedding.weight  # one parameter, two uses: its gradient sums both
        self.to(device=device, dtype=dtype)

    def forward(self, tokens: torch.Tensor, mask: Mask | None = None) -> torch.Tensor:
        """``mask``: an extra attention mask (True: may attend), beside the architecture's own."""
        tokens = self._check_tokens(tokens)
        x = self.embedding(tokens)  # (B, T, D)
        if self.config.positional != "none":
            x = self.pos_embedding(x)
        for block in self.blocks:
            x = block(x, mask)
        if self.config.final_norm:
            x = self.ln_f(x)
        return self.head(x)  # (B, T, V)

    def _check_tokens(self, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The scratch models' token checks, so both sides refuse the same inputs."""
        tokens = torch.as_tensor(tokens, device=self.embedding.weight.device)
        if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have rank 2 (batch, seq), got rank {tokens.ndim} "
                             f"with shape {tuple(tokens.shape)}")
        if not 1 <= tokens.shape[1] <= self.config.seq_len:
            raise ValueError(f"sequence length must be between 1 and seq_len={self.config.seq_len}, "
                             f"got {tokens.shape[1]}")
        if tokens.numel():
            bad = tokens[(tokens < 0) | (tokens >= self.config.vocab_size)]
            if bad.numel():
                raise ValueError(f"token {int(bad[0])} is outside the vocabulary "
                                 f"[0, {self.config.vocab_size - 1}]")
        return tokens.long()
