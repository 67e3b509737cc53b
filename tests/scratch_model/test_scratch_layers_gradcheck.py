"""Every layer of the class model against float64 finite differences: the gradient of the input
(every entry) and of every parameter (a sample of entries each), for a random upstream gradient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scratch_checks import FD_RTOL, assert_close, fd_grad, projected, sample_entries, seeded_rng

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
PARAM_SAMPLES = 5  # entries checked by finite differences per parameter larger than FULL_CHECK
FULL_CHECK = 28  # parameters up to this size (the Embedding case table) are checked entirely


def tokens(rng: np.random.Generator, length: int = T) -> np.ndarray:
    out = rng.integers(0, CONFIG.vocab_size, size=(B, length))
    out[:, 1] = out[:, 0]  # a repeated token in every row, so scatter-add matters
    return out


def causal_mask() -> np.ndarray:
    return np.tril(np.ones((T, T), dtype=bool))  # (T, T), broadcast over batch and heads


def random_mask(rng: np.random.Generator) -> np.ndarray:
    mask = rng.random((B, 1, T, T)) > 0.4  # per batch, broadcast over heads
    mask[..., np.arange(T), np.arange(T)] = True  # no fully blocked row
    return mask


@dataclass(frozen=True)
class LayerCase:
    """``build(rng) -> (module, args)``: float arrays in ``args`` are inputs to differentiate,
    anything else (tokens, masks) is passed as it is."""

    name: str
    build: Callable[[np.random.Generator], tuple[Module, tuple]]

    def __str__(self) -> str:
        return self.name


def _x(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape or (B, T, D))


LAYER_CASES = [
    LayerCase("Linear 3-D input", lambda r: (Linear(D, 3, seed=1, name="lin"), (_x(r),))),
    LayerCase("Linear 2-D input", lambda r: (Linear(4, 3, seed=1, name="lin"), (_x(r, 5, 4),))),
    LayerCase("Embedding", lambda r: (Embedding(CONFIG.vocab_size, 4, seed=1, name="emb"), (tokens(r),))),
    LayerCase("PositionalEmbedding learned, full length",
              lambda r: (PositionalEmbedding(T, D, kind="learned", seed=1, name="pos"), (_x(r),))),
    LayerCase("PositionalEmbedding learned, shorter sequence",
              lambda r: (PositionalEmbedding(T, D, kind="learned", seed=1, name="pos"), (_x(r, B, 3, D),))),
    LayerCase("PositionalEmbedding sinusoidal",
              lambda r: (PositionalEmbedding(T, D, kind="sinusoidal", seed=1, name="pos"), (_x(r),))),
    LayerCase("MultiHeadAttention no mask", lambda r: (MultiHeadAttention(D, 2, seed=1, name="attn"), (_x(r),))),
    LayerCase("MultiHeadAttention causal mask",
              lambda r: (MultiHeadAttention(D, 2, seed=1, name="attn"), (_x(r), causal_mask()))),
    LayerCase("MultiHeadAttention per-batch mask, 4 heads",
              lambda r: (MultiHeadAttention(D, 4, seed=1, name="attn"), (_x(r), random_mask(r)))),
    LayerCase("MultiHeadAttention batch of 1",
              lambda r: (MultiHeadAttention(D, 2, seed=1, name="attn"), (_x(r, 1, T, D),))),
    LayerCase("FeedForward", lambda r: (FeedForward(D, 12, seed=1, name="ffn"), (_x(r),))),
    LayerCase("LayerNorm", lambda r: (LayerNorm(D, 1e-5), (_x(r),))),
    LayerCase("TransformerBlock", lambda r: (TransformerBlock(CONFIG, seed=1, name="blocks.0"), (_x(r),))),
    LayerCase("TransformerBlock causal mask",
              lambda r: (TransformerBlock(CONFIG, seed=1, name="blocks.0"), (_x(r), causal_mask()))),
    LayerCase("ReversalTransformer learned", lambda r: (ReversalTransformer(CONFIG, seed=1), (tokens(r),))),
    LayerCase("ReversalTransformer sinusoidal, 2 layers, masked",
              lambda r: (ReversalTransformer(TransformerConfig(**{**CONFIG.to_dict(), "num_layers": 2,
                                                                   "positional": "sinusoidal"}), seed=1),
                         (tokens(r), causal_mask()))),
    LayerCase("ReversalTransformer short sequence, batch of 1",
              lambda r: (ReversalTransformer(CONFIG, seed=1), (tokens(r, 3)[:1],))),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_layer_gradients_match_finite_differences(case: LayerCase) -> None:
    rng = seeded_rng(case.name)
    module, args = case.build(rng)
    params = dict(module.named_parameters())
    for p in params.values():  # move off the init values (LayerNorm's ones and zeros are too special)
        p.data += 0.1 * rng.standard_normal(p.shape)
    inputs = {i: Tensor(a, requires_grad=True) for i, a in enumerate(args)
              if isinstance(a, np.ndarray) and a.dtype == np.float64}
    call_args = [inputs.get(i, a) for i, a in enumerate(args)]

    out = module(*call_args)
    upstream = 0.1 * rng.standard_normal(out.shape)
    out.backward(upstream)
    loss = projected(lambda: module(*call_args), upstream)

    for i, x in inputs.items():
        assert_close(x.grad, fd_grad(loss, x.data), f"{case}: gradient of input {i}", FD_RTOL)
    for name, p in params.items():
        entries = sample_entries(rng, p.shape, p.size if p.size <= FULL_CHECK else PARAM_SAMPLES)
        assert p.grad is not None, f"{case}: parameter {name} got no gradient"
        ours = np.array([p.grad[e] for e in entries])
        assert_close(ours, fd_grad(loss, p.data, entries=entries), f"{case}: gradient of {name}", FD_RTOL)
