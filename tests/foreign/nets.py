"""tinyflow's layers, a post-LN reversal transformer built from them, and two optimizers.

Parameters live in each layer's plain list ``params`` (weight first, then bias or shift); a
container lists its children's by hand in ``parameters()``, and the optimizers take that list.
Linear weights are stored (in, out). `Dense` is called through ``__call__`` alone; every `Layer`
through ``Layer.__call__``, which calls its ``forward`` (the transformer block also calls its MLP's
``forward`` directly).
"""

from __future__ import annotations

import math

import numpy as np

from .engine import Value, affine, layer_norm, lookup

EPS = 1e-5


class Dense:
    """``x @ W + b``; ``params = [W (in, out), b (out,)]``."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        self.params = [Value(rng.normal(0.0, n_in ** -0.5, (n_in, n_out))), Value(rng.normal(0.0, 0.1, n_out))]

    def __call__(self, x: Value) -> Value:
        w, b = self.params
        return affine(x, w, b)


class Layer:
    """A layer with a ``forward``; calling it runs ``forward``."""

    params: list[Value]

    def __call__(self, *args: object) -> Value:
        return self.forward(*args)

    def forward(self, *args: object) -> Value:
        raise NotImplementedError


class TokenTable(Layer):
    def __init__(self, vocab: int, dim: int, rng: np.random.Generator) -> None:
        self.params = [Value(rng.normal(0.0, 1.0, (vocab, dim)))]

    def forward(self, ids: np.ndarray) -> Value:
        return lookup(self.params[0], ids)  # (B, T, D)


class LearnedPositions(Layer):
    def __init__(self, length: int, dim: int, rng: np.random.Generator) -> None:
        self.params = [Value(rng.normal(0.0, 0.5, (length, dim)))]

    def forward(self, x: Value) -> Value:
        return x.plus(self.params[0].first(x.val.shape[1]))  # (B, T, D) + (T, D)


class Norm(Layer):
    def __init__(self, dim: int, rng: np.random.Generator) -> None:
        self.params = [Value(1.0 + rng.normal(0.0, 0.1, dim)), Value(rng.normal(0.0, 0.1, dim))]

    def forward(self, x: Value) -> Value:
        gain, shift = self.params
        return layer_norm(x, gain, shift, EPS)


class SelfAttention(Layer):
    def __init__(self, dim: int, heads: int, rng: np.random.Generator) -> None:
        self.heads = heads
        self.wq, self.wk, self.wv, self.wo = (Dense(dim, dim, rng) for _ in range(4))

    def split(self, x: Value) -> Value:
        b, t, d = x.val.shape
        return x.view(b, t, self.heads, d // self.heads).swap(1, 2)  # (B, h, T, hd)

    def attend(self, q: Value, k: Value, v: Value) -> Value:
        scores = q.dot(k.swap(-1, -2)).times(1.0 / math.sqrt(q.val.shape[-1]))  # (B, h, T, T)
        return scores.softmax(axis=-1).dot(v)  # (B, h, T, hd)

    def forward(self, x: Value) -> Value:
        b, t, d = x.val.shape
        mixed = self.attend(self.split(self.wq(x)), self.split(self.wk(x)), self.split(self.wv(x)))
        return self.wo(mixed.swap(1, 2).view(b, t, d))  # (B, h, T, hd) -> (B, T, D)

    def parameters(self) -> list[Value]:
        return self.wq.params + self.wk.params + self.wv.params + self.wo.params


class MLP(Layer):
    def __init__(self, dim: int, hidden: int, rng: np.random.Generator) -> None:
        self.up, self.down = Dense(dim, hidden, rng), Dense(hidden, dim, rng)

    def forward(self, x: Value) -> Value:
        return self.down(self.up(x).relu())

    def parameters(self) -> list[Value]:
        return self.up.params + self.down.params


class Block(Layer):
    """Post-LN: ``x = norm_a(x + mha(x))``, then ``x = norm_b(x + mlp(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int, rng: np.random.Generator) -> None:
        self.mha, self.norm_a = SelfAttention(dim, heads, rng), Norm(dim, rng)
        self.mlp, self.norm_b = MLP(dim, hidden, rng), Norm(dim, rng)

    def forward(self, x: Value) -> Value:
        x = self.norm_a(x.plus(self.mha(x)))
        return self.norm_b(x.plus(self.mlp.forward(x)))

    def parameters(self) -> list[Value]:
        return self.mha.parameters() + self.norm_a.params + self.mlp.parameters() + self.norm_b.params


class Reverser(Layer):
    """Token ids (B, T) -> logits (B, T, vocab)."""

    def __init__(self, vocab: int = 10, length: int = 8, dim: int = 32, heads: int = 4, hidden: int = 64,
                 depth: int = 1, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tok_emb, self.pos = TokenTable(vocab, dim, rng), LearnedPositions(length, dim, rng)
        self.layers = [Block(dim, heads, hidden, rng) for _ in range(depth)]
        self.out = Dense(dim, vocab, rng)

    def forward(self, ids: np.ndarray) -> Value:
        x = self.pos(self.tok_emb(ids))
        for layer in self.layers:
            x = layer(x)
        return self.out(x)

    def parameters(self) -> list[Value]:
        return (self.tok_emb.params + self.pos.params + [p for layer in self.layers for p in layer.parameters()]
                + self.out.params)


# --- optimizers over a plain list of Values ---------------------------------------------------

class SGD:
    """SGD with momentum: ``buf = momentum * buf + g`` (``buf = g`` on the first step); ``val -= lr * buf``."""

    def __init__(self, params: list[Value], lr: float, momentum: float = 0.9) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.bufs: list[np.ndarray | None] = [None] * len(params)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            buf = self.bufs[i]
            self.bufs[i] = p.g.copy() if buf is None else self.momentum * buf + p.g
            p.val = p.val - self.lr * self.bufs[i]


class Adam:
    def __init__(self, params: list[Value], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p.val) for p in params]
        self.v = [np.zeros_like(p.val) for p in params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * p.g
            v *= b2
            v += (1 - b2) * p.g * p.g
            m_hat, v_hat = m / (1 - b1 ** self.t), v / (1 - b2 ** self.t)
            p.val = p.val - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
