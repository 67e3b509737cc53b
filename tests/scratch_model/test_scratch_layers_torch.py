"""Every layer of the class model against the same layer written with torch.nn.functional
(float64): the output, the input gradient and every parameter gradient. This pins the forward
math (scale, softmax axis, head split, LayerNorm variance, mask convention, sinusoidal table),
which finite differences cannot: they only check that a gradient fits its own forward."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scratch_checks import assert_close, seeded_rng

from scratch_model.autograd import Tensor
from scratch_model.config import TransformerConfig
from scratch_model.layers import (
    Embedding,
    FeedForward,
    LayerNorm,
    Linear,
    MultiHeadAttention,
    PositionalEmbedding,
    ReversalTransformer,
    TransformerBlock,
)
from scratch_model.module import Module

CONFIG = TransformerConfig(vocab_size=7, seq_len=5, embed_dim=8, num_heads=2, ff_dim=12)
B, T, D = 2, 5, CONFIG.embed_dim
TP = dict[str, torch.Tensor]  # torch parameters by the layer's own dotted names


def torch_linear(p: TP, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, p[f"{prefix}weight"], p[f"{prefix}bias"])


def torch_sinusoidal(length: int, dim: int) -> torch.Tensor:
    """The table of "Attention is all you need", written the usual torch way."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table


def torch_attention(p: TP, prefix: str, x: torch.Tensor, mask: np.ndarray | None, heads: int) -> torch.Tensor:
    b, t, d = x.shape

    def split(name: str) -> torch.Tensor:
        return torch_linear(p, f"{prefix}{name}.", x).view(b, t, heads, d // heads).transpose(1, 2)

    attn_mask = None if mask is None else torch.from_numpy(mask)  # True: may attend
    context = F.scaled_dot_product_attention(split("q_proj"), split("k_proj"), split("v_proj"),
                                             attn_mask=attn_mask)  # (B, h, T, hd)
    return torch_linear(p, f"{prefix}out_proj.", context.transpose(1, 2).reshape(b, t, d))


def torch_ffn(p: TP, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return torch_linear(p, f"{prefix}fc2.", torch.relu(torch_linear(p, f"{prefix}fc1.", x)))


def torch_layer_norm(p: TP, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], p[f"{prefix}weight"], p[f"{prefix}bias"], eps=CONFIG.ln_eps)


def torch_block(p: TP, prefix: str, x: torch.Tensor, mask: np.ndarray | None = None) -> torch.Tensor:
    x = torch_layer_norm(p, f"{prefix}ln1.", x + torch_attention(p, f"{prefix}attn.", x, mask, CONFIG.num_heads))
    return torch_layer_norm(p, f"{prefix}ln2.", x + torch_ffn(p, f"{prefix}ffn.", x))


def torch_model(p: TP, tokens: np.ndarray, mask: np.ndarray | None = None, config=CONFIG) -> torch.Tensor:
    idx = torch.from_numpy(tokens)
    t = tokens.shape[1]
    table = p["pos_embedding.weight"] if config.positional == "learned" else torch_sinusoidal(config.seq_len, D)
    x = F.embedding(idx, p["embedding.weight"]) + table[:t]
    for i in range(config.num_layers):
        x = torch_block(p, f"blocks.{i}.", x, mask)
    return torch_linear(p, "head.", x)


@dataclass(frozen=True)
class TorchLayerCase:
    name: str
    module: Callable[[], Module]
    args: Callable[[np.random.Generator], tuple]  # float arrays are differentiated
    theirs: Callable[..., torch.Tensor]  # (torch params, *torch args)

    def __str__(self) -> str:
        return self.name


def _x(rng: np.random.Generator, t: int = T) -> np.ndarray:
    return rng.standard_normal((B, t, D))


def _tokens(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, CONFIG.vocab_size, size=(B, T))


def _mask(rng: np.random.Generator) -> np.ndarray:
    mask = rng.random((B, 1, T, T)) > 0.4
    mask[..., np.arange(T), np.arange(T)] = True
    return mask


SINUSOIDAL_2 = TransformerConfig(**{**CONFIG.to_dict(), "positional": "sinusoidal", "num_layers": 2})

CASES = [
    TorchLayerCase("Linear", lambda: Linear(D, 3, seed=0, name="lin"), lambda r: (_x(r),),
                   lambda p, x: torch_linear(p, "", x)),
    TorchLayerCase("Embedding", lambda: Embedding(7, D, seed=0, name="emb"), lambda r: (_tokens(r),),
                   lambda p, tok: F.embedding(torch.from_numpy(tok), p["weight"])),
    TorchLayerCase("PositionalEmbedding learned", lambda: PositionalEmbedding(T, D, kind="learned", seed=0, name="pos"),
                   lambda r: (_x(r, 3),), lambda p, x: x + p["weight"][:3]),
    TorchLayerCase("PositionalEmbedding sinusoidal",
                   lambda: PositionalEmbedding(T, D, kind="sinusoidal", seed=0, name="pos"),
                   lambda r: (_x(r),), lambda p, x: x + torch_sinusoidal(T, D)),
    TorchLayerCase("MultiHeadAttention", lambda: MultiHeadAttention(D, 2, seed=0, name="attn"),
                   lambda r: (_x(r),), lambda p, x: torch_attention(p, "", x, None, 2)),
    TorchLayerCase("MultiHeadAttention masked, 4 heads", lambda: MultiHeadAttention(D, 4, seed=0, name="attn"),
                   lambda r: (_x(r), _mask(r)), lambda p, x, m: torch_attention(p, "", x, m, 4)),
    TorchLayerCase("FeedForward", lambda: FeedForward(D, 12, seed=0, name="ffn"), lambda r: (_x(r),),
                   lambda p, x: torch_ffn(p, "", x)),
    TorchLayerCase("LayerNorm", lambda: LayerNorm(D, CONFIG.ln_eps), lambda r: (_x(r),),
                   lambda p, x: torch_layer_norm(p, "", x)),
    TorchLayerCase("TransformerBlock masked", lambda: TransformerBlock(CONFIG, seed=0, name="b"),
                   lambda r: (_x(r), _mask(r)), lambda p, x, m: torch_block(p, "", x, m)),
    TorchLayerCase("ReversalTransformer", lambda: ReversalTransformer(CONFIG, seed=0), lambda r: (_tokens(r),),
                   torch_model),
    TorchLayerCase("ReversalTransformer sinusoidal, 2 layers, masked", lambda: ReversalTransformer(SINUSOIDAL_2),
                   lambda r: (_tokens(r), _mask(r)), lambda p, tok, m: torch_model(p, tok, m, SINUSOIDAL_2)),
]


# The two sides differ only in float64 round-off (largest seen ~1e-15 of the array's scale);
# 1e-10 leaves room for other BLAS and attention kernels, and is far below any formula slip.
TOL = dict(rtol=1e-10, atol_scale=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_layer_matches_torch(case: TorchLayerCase) -> None:
    rng = seeded_rng(case.name)
    module = case.module()
    params = dict(module.named_parameters())
    for p in params.values():  # off the init values, so LayerNorm's weight and bias matter
        p.data += 0.1 * rng.standard_normal(p.shape)
    args = case.args(rng)
    differentiable = [isinstance(a, np.ndarray) and a.dtype == np.float64 for a in args]
    ours_args = [Tensor(a, requires_grad=True) if d else a for a, d in zip(args, differentiable, strict=True)]
    theirs_args = [torch.tensor(a, requires_grad=True) if d else a for a, d in zip(args, differentiable, strict=True)]
    theirs_params = {name: torch.tensor(p.data, requires_grad=True) for name, p in params.items()}

    out = module(*ours_args)
    ref = case.theirs(theirs_params, *theirs_args)
    assert_close(out.data, ref.detach().numpy(), f"{case}: forward", **TOL)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    ref.backward(torch.from_numpy(upstream))
    for i, (a, t) in enumerate(zip(ours_args, theirs_args, strict=True)):
        if isinstance(a, Tensor):
            assert_close(a.grad, t.grad.numpy(), f"{case}: gradient of input {i}", **TOL)
    for name, p in params.items():
        assert_close(p.grad, theirs_params[name].grad.numpy(), f"{case}: gradient of {name}",
                     **TOL)
