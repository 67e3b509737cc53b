"""The user's from-scratch port of `torch_model.TinyGPT`, on a small numpy autograd (this
project's `scratch_model.autograd` stands in for the user's own framework). The module tree and
the names follow the torch model, as a port's do; the math is written again by hand."""

from __future__ import annotations

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor


class Init:
    """Makes parameters: seeded normal draws, or given values, in one precision."""

    def __init__(self, seed: int, dtype: str) -> None:
        self.rng, self.dtype = np.random.default_rng(seed), np.dtype(dtype)

    def normal(self, *shape: int, scale: float = 0.02) -> Tensor:
        return Tensor((scale * self.rng.standard_normal(shape)).astype(self.dtype), requires_grad=True)

    def const(self, array: np.ndarray) -> Tensor:
        return Tensor(array.astype(self.dtype), requires_grad=True)


class Linear:
    def __init__(self, init: Init, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.weight = init.normal(fan_out, fan_in)  # (out, in), as torch stores it
        self.bias = init.const(np.zeros(fan_out)) if bias else None

    def __call__(self, x: Tensor) -> Tensor:
        out = x @ ag.transpose(self.weight, (1, 0))
        return out if self.bias is None else out + self.bias


class Embedding:
    def __init__(self, init: Init, count: int, dim: int) -> None:
        self.weight = init.normal(count, dim)

    def __call__(self, ids: np.ndarray) -> Tensor:
        return ag.embedding(self.weight, ids)


class LayerNorm:
    def __init__(self, init: Init, dim: int, eps: float = 1e-5) -> None:
        self.weight = init.const(np.ones(dim))
        self.bias = init.const(np.zeros(dim))
        self.eps = eps

    def __call__(self, x: Tensor) -> Tensor:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) * (x - mean)).mean(axis=-1, keepdims=True)
        return (x - mean) / (var + self.eps).sqrt() * self.weight + self.bias


class CausalSelfAttention:
    def __init__(self, init: Init, dim: int, heads: int) -> None:
        self.heads = heads
        self.c_attn = Linear(init, dim, 3 * dim)
        self.c_proj = Linear(init, dim, dim)

    def __call__(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        qkv = self.c_attn(x)

        def heads(z: Tensor) -> Tensor:
            return ag.transpose(ag.reshape(z, (b, t, self.heads, hd)), (0, 2, 1, 3))  # (B, h, T, hd)

        q, k, v = heads(qkv[:, :, :d]), heads(qkv[:, :, d:2 * d]), heads(qkv[:, :, 2 * d:])
        att = (q @ ag.transpose(k, (0, 1, 3, 2))) * (1.0 / np.sqrt(hd))
        blocked = np.triu(np.full((t, t), -np.inf), k=1).astype(x.dtype)  # -inf above the diagonal: the future
        att = ag.softmax(att + blocked, axis=-1)
        y = ag.reshape(ag.transpose(att @ v, (0, 2, 1, 3)), (b, t, d))
        return self.c_proj(y)


class MLP:
    def __init__(self, init: Init, dim: int) -> None:
        self.c_fc = Linear(init, dim, 4 * dim)
        self.c_proj = Linear(init, 4 * dim, dim)

    def __call__(self, x: Tensor) -> Tensor:
        return self.c_proj(ag.gelu_tanh(self.c_fc(x)))


class Block:
    def __init__(self, init: Init, dim: int, heads: int) -> None:
        self.ln_1 = LayerNorm(init, dim)
        self.attn = CausalSelfAttention(init, dim, heads)
        self.ln_2 = LayerNorm(init, dim)
        self.mlp = MLP(init, dim)

    def __call__(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT:
    def __init__(self, vocab: int = 10, block_size: int = 8, dim: int = 32, heads: int = 4, layers: int = 2,
                 seed: int = 0, dtype: str = "float64") -> None:
        init = Init(seed, dtype)
        self.wte = Embedding(init, vocab, dim)
        self.wpe = Embedding(init, block_size, dim)
        self.h = [Block(init, dim, heads) for _ in range(layers)]
        self.ln_f = LayerNorm(init, dim)
        self.lm_head = Linear(init, dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one tensor, two uses

    def __call__(self, ids: np.ndarray) -> Tensor:
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(np.arange(t))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
