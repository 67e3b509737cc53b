"""coursegrad's layers, the reversal transformer, its loss and its one optimizer.

Course habits kept on purpose: layers are called through ``__call__`` (no ``forward``), weights sit
in plain lists (``Linear.params = [W, b]`` with ``W`` stored (in, out)), sub-layers too, token ids
arrive as a float tensor, the positional layer returns its table and the model adds it, the head
runs on ``x.reshape(B*T, D)``, and the model returns ``(B*T, vocab)`` logits for a loss that
takes flat targets.
"""

from __future__ import annotations

import numpy as np

from .engine import Tensor

EPS = 1e-5


class Module:
    def parameters(self) -> list[Tensor]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = np.zeros_like(p.data)


class Linear(Module):
    def __init__(self, nin: int, nout: int, rng: np.random.Generator, dtype: str) -> None:
        self.params = [Tensor(rng.normal(0.0, nin ** -0.5, (nin, nout)), dtype=dtype),  # W: (in, out)
                       Tensor(rng.normal(0.0, 0.1, nout), dtype=dtype)]

    def __call__(self, x: Tensor) -> Tensor:
        w, b = self.params
        return x @ w + b

    def parameters(self) -> list[Tensor]:
        return self.params


class ReLU(Module):
    def __call__(self, x: Tensor) -> Tensor:
        return x.relu()


class LayerNorm(Module):
    def __init__(self, dim: int, rng: np.random.Generator, dtype: str) -> None:
        self.params = [Tensor(1.0 + rng.normal(0.0, 0.1, dim), dtype=dtype),  # gamma
                       Tensor(rng.normal(0.0, 0.1, dim), dtype=dtype)]  # beta

    def __call__(self, x: Tensor) -> Tensor:
        gamma, beta = self.params
        mu = x.mean(axis=-1, keepdims=True)
        centred = x - mu
        var = (centred ** 2).mean(axis=-1, keepdims=True)  # biased, as torch
        return centred * (var + EPS) ** -0.5 * gamma + beta

    def parameters(self) -> list[Tensor]:
        return self.params


class Embedding(Module):
    def __init__(self, vocab: int, dim: int, rng: np.random.Generator, dtype: str) -> None:
        self.weight = Tensor(rng.normal(0.0, 1.0, (vocab, dim)), dtype=dtype)

    def __call__(self, idx: Tensor) -> Tensor:
        return self.weight.gather(idx.data.astype(np.int64))  # ids come as floats: (B, T) -> (B, T, D)

    def parameters(self) -> list[Tensor]:
        return [self.weight]


class PositionalEmbedding(Module):
    """Returns the table for ``T`` positions; the caller adds it to the token embeddings."""

    def __init__(self, block_size: int, dim: int, rng: np.random.Generator, dtype: str) -> None:
        self.weight = Tensor(rng.normal(0.0, 0.5, (block_size, dim)), dtype=dtype)

    def __call__(self, t: int) -> Tensor:
        return self.weight.rows(t)  # (T, D)

    def parameters(self) -> list[Tensor]:
        return [self.weight]


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    shifted = x - Tensor(x.data.max(axis=axis, keepdims=True))  # a constant: the shift cancels
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


class MultiHeadAttention(Module):
    def __init__(self, dim: int, heads: int, rng: np.random.Generator, dtype: str) -> None:
        self.n_head = heads
        self.qkv = [Linear(dim, dim, rng, dtype) for _ in range(3)]
        self.proj = Linear(dim, dim, rng, dtype)

    def split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.reshape(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # (B, h, T, hd)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, h, T, T)

    def merge(self, y: Tensor) -> Tensor:
        b, h, t, hd = y.shape
        return y.transpose(1, 2).reshape(b, t, h * hd)  # (B, h, T, hd) -> (B, T, D)

    def __call__(self, x: Tensor) -> Tensor:
        q, k, v = (self.split(lin(x)) for lin in self.qkv)
        att = softmax(self.scores(q, k), axis=-1)
        return self.proj(self.merge(att @ v))

    def parameters(self) -> list[Tensor]:
        return [p for lin in self.qkv + [self.proj] for p in lin.parameters()]


class FeedForward(Module):
    def __init__(self, dim: int, hidden: int, rng: np.random.Generator, dtype: str) -> None:
        self.layers = [Linear(dim, hidden, rng, dtype), ReLU(), Linear(hidden, dim, rng, dtype)]

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Tensor]:
        return [p for layer in self.layers for p in layer.parameters()]


class Block(Module):
    def __init__(self, dim: int, heads: int, hidden: int, rng: np.random.Generator, dtype: str) -> None:
        self.sa = MultiHeadAttention(dim, heads, rng, dtype)
        self.ln1 = LayerNorm(dim, rng, dtype)
        self.ffwd = FeedForward(dim, hidden, rng, dtype)
        self.ln2 = LayerNorm(dim, rng, dtype)

    def __call__(self, x: Tensor) -> Tensor:
        x = self.ln1(x + self.sa(x))
        return self.ln2(x + self.ffwd(x))

    def parameters(self) -> list[Tensor]:
        return self.sa.parameters() + self.ln1.parameters() + self.ffwd.parameters() + self.ln2.parameters()


class Transformer(Module):
    """Float token ids (B, T) -> logits (B*T, vocab)."""

    def __init__(self, vocab_size: int = 10, block_size: int = 8, n_embd: int = 32, n_head: int = 4,
                 n_hidden: int = 64, n_layer: int = 1, seed: int = 1337, dtype: str = "float64") -> None:
        rng = np.random.default_rng(seed)
        self.token_embedding = Embedding(vocab_size, n_embd, rng, dtype)
        self.position_embedding = PositionalEmbedding(block_size, n_embd, rng, dtype)
        self.blocks = [Block(n_embd, n_head, n_hidden, rng, dtype) for _ in range(n_layer)]
        self.lm_head = Linear(n_embd, vocab_size, rng, dtype)
        print(f"number of parameters: {sum(p.data.size for p in self.parameters())}")

    def __call__(self, idx: Tensor) -> Tensor:
        b, t = idx.shape
        x = self.token_embedding(idx) + self.position_embedding(t)  # (B, T, D) + (T, D)
        for block in self.blocks:
            x = block(x)
        x = x.reshape(b * t, -1)  # (B*T, D)
        return self.lm_head(x)  # (B*T, vocab)

    def parameters(self) -> list[Tensor]:
        return (self.token_embedding.parameters() + self.position_embedding.parameters()
                + [p for block in self.blocks for p in block.parameters()] + self.lm_head.parameters())


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood; ``logits`` (N, V), ``targets`` float ids (N,)."""
    n, v = logits.shape
    shifted = logits - Tensor(logits.data.max(axis=1, keepdims=True))
    log_probs = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
    one_hot = np.zeros((n, v), dtype=logits.data.dtype)
    one_hot[np.arange(n), targets.data.astype(np.int64)] = 1.0
    return -(log_probs * one_hot).sum() * (1.0 / n)


class SGD:
    """The one optimizer: SGD with momentum (``buf = momentum * buf + g``; the first step's buf is g)."""

    def __init__(self, params: list[Tensor], lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.bufs: list[np.ndarray | None] = [None] * len(params)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            buf = self.bufs[i]
            self.bufs[i] = p.grad.copy() if buf is None else self.momentum * buf + p.grad
            p.data = p.data - self.lr * self.bufs[i]
