"""Bugs injected into coursegrad, one at a time, each the kind of mistake course code makes, with
where the report must place it: module (the reference's path, or "(loss)"), phase and kind.

A fault replaces one attribute of coursegrad (a layer's ``__call__`` or helper, an op, the loss,
the optimizer) through pytest's monkeypatch, so the source is never edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from differential import diagnose as K

from . import adapter, nn
from .engine import Tensor


@dataclass(frozen=True)
class Fault:
    name: str
    target: Any
    attribute: str
    replacement: Any
    module: str
    phase: str
    kind: str
    yours: str | None  # the same place in coursegrad's names (None: the loss)
    optimizer: str = "adam"  # the report's --optimizer (sgd for the optimizer's own faults)
    also: tuple[tuple[str, str, str], ...] = ()  # other findings the same bug causes elsewhere (module, phase, kind)


def _scores_unscaled(self: nn.MultiHeadAttention, q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1)  # forgot * head_dim ** -0.5


def _scores_causal(self: nn.MultiHeadAttention, q: Tensor, k: Tensor) -> Tensor:
    t = q.shape[-2]
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    return scores + np.triu(np.full((t, t), -1e9), 1)  # a causal mask the reversal task must not have


def _merge_without_transpose(self: nn.MultiHeadAttention, y: Tensor) -> Tensor:
    b, h, t, hd = y.shape
    return y.reshape(b, t, h * hd)  # heads merged by a reshape alone


def _positions_scaled(self: nn.PositionalEmbedding, t: int) -> Tensor:
    return self.weight.rows(t) * self.weight.shape[1] ** 0.5  # scaled by sqrt(D) like the embeddings of a paper


def _positions_detached(self: nn.PositionalEmbedding, t: int) -> Tensor:
    return Tensor(self.weight.data[:t])  # a copy of the rows: the table never gets a gradient


def _layer_norm_unbiased(self: nn.LayerNorm, x: Tensor) -> Tensor:
    gamma, beta = self.params
    n = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred ** 2).sum(axis=-1, keepdims=True) * (1.0 / (n - 1))  # Bessel's correction: torch has none
    return centred * (var + nn.EPS) ** -0.5 * gamma + beta


def _residual_from_data(self: nn.Block, x: Tensor) -> Tensor:
    x = self.ln1(Tensor(x.data + self.sa(x).data))  # rebuilt from arrays: the graph stops here
    return self.ln2(x + self.ffwd(x))


def _relu_backward_passes_everything(self: Tensor) -> Tensor:
    out = Tensor(np.maximum(self.data, 0), (self,), "relu")

    def _backward() -> None:
        self.grad += out.grad  # forgot the mask (self.data > 0)

    out._backward = _backward
    return out


def _exp_backward_uses_input(self: Tensor) -> Tensor:
    out = Tensor(np.exp(self.data), (self,), "exp")

    def _backward() -> None:
        self.grad += out.grad * self.data  # d exp(x) = exp(x), not x

    out._backward = _backward
    return out


def _gather_overwrites(self: Tensor, ids: np.ndarray) -> Tensor:
    out = Tensor(self.data[ids], (self,), "gather")

    def _backward() -> None:
        self.grad[ids] += out.grad  # buffered fancy-index add: a repeated id keeps only its last gradient

    out._backward = _backward
    return out


def _cross_entropy_sum(logits: Tensor, targets: Tensor) -> Tensor:
    return nn.cross_entropy(logits, targets) * float(logits.shape[0])  # a sum where the mean belongs


def _linear_bias_outside_graph(self: nn.Linear, x: Tensor) -> Tensor:
    w, b = self.params
    return x @ w + b.data  # the bias added as a plain array: it never gets a gradient


def _linear_bias_twice(self: nn.Linear, x: Tensor) -> Tensor:
    w, b = self.params
    return x @ w + b + b  # every Linear, the head (on (B*T, D)) among them


def _flatten_time_major(self: nn.Transformer, idx: Tensor) -> Tensor:
    b, t = idx.shape
    x = self.token_embedding(idx) + self.position_embedding(t)
    for block in self.blocks:
        x = block(x)
    x = x.transpose(0, 1).reshape(b * t, -1)  # (T, B, D) flattened: rows no longer line up with the targets
    return self.lm_head(x)


def _parameters_without_head(self: nn.Transformer) -> list[Tensor]:
    return (self.token_embedding.parameters() + self.position_embedding.parameters()
            + [p for block in self.blocks for p in block.parameters()])  # lm_head forgotten


def _sgd_step_with_weight_decay(self: nn.SGD) -> None:
    for i, p in enumerate(self.params):
        g = p.grad + 0.1 * p.data  # weight decay nobody asked for
        buf = self.bufs[i]
        self.bufs[i] = g if buf is None else self.momentum * buf + g
        p.data = p.data - self.lr * self.bufs[i]


FAULTS = [
    Fault("attention_unscaled", nn.MultiHeadAttention, "scores", _scores_unscaled,
          "blocks.0.attn", "forward", K.VALUE, "blocks[0].sa"),
    Fault("attention_causal_mask", nn.MultiHeadAttention, "scores", _scores_causal,
          "blocks.0.attn", "forward", K.VALUE, "blocks[0].sa"),
    Fault("heads_merged_by_reshape", nn.MultiHeadAttention, "merge", _merge_without_transpose,
          "blocks.0.attn", "forward", K.VALUE, "blocks[0].sa"),
    Fault("positions_scaled", nn.PositionalEmbedding, "__call__", _positions_scaled,
          "pos_embedding", "forward", K.SCALE, "position_embedding"),
    Fault("positions_detached", nn.PositionalEmbedding, "__call__", _positions_detached,
          "pos_embedding", "param_grad", K.ZERO_GRAD, "position_embedding"),  # coursegrad has no requires_grad
    Fault("layer_norm_unbiased_variance", nn.LayerNorm, "__call__", _layer_norm_unbiased,
          "blocks.0.ln1", "forward", K.VALUE, "blocks[0].ln1"),
    Fault("residual_from_data", nn.Block, "__call__", _residual_from_data,
          "blocks.0", "backward", K.ZERO_GRAD, "blocks[0]"),  # the cut input's gradient stays zero
    Fault("relu_backward_without_mask", Tensor, "relu", _relu_backward_passes_everything,
          "blocks.0.ffn", "backward", K.VALUE, "blocks[0].ffwd"),
    Fault("exp_backward_uses_input", Tensor, "exp", _exp_backward_uses_input,
          "blocks.0.attn", "backward", K.VALUE, "blocks[0].sa",
          also=(("(loss)", "backward", K.VALUE),)),  # the loss's log-sum-exp uses exp too
    Fault("embedding_grad_overwrites", Tensor, "gather", _gather_overwrites,
          "embedding", "param_grad", K.PARAM_GRAD, "token_embedding"),
    Fault("loss_sum_not_mean", adapter, "cross_entropy", _cross_entropy_sum,
          "(loss)", "training", K.LOSS, None),
    Fault("head_bias_outside_graph", nn.Linear, "__call__", _linear_bias_outside_graph,
          "head", "param_grad", K.ZERO_GRAD, "lm_head"),  # every Linear's bias: the first in the backward
    Fault("linear_bias_added_twice", nn.Linear, "__call__", _linear_bias_twice,
          "blocks.0.attn.q_proj", "forward", K.VALUE, "blocks[0].sa.qkv[0]"),
    Fault("flatten_time_major", nn.Transformer, "__call__", _flatten_time_major,
          "(model)", "forward", K.PERMUTED, ""),
    Fault("optimizer_misses_head", nn.Transformer, "parameters", _parameters_without_head,
          "head", "optimizer", K.NOT_UPDATED, "lm_head", optimizer="sgd"),
    Fault("sgd_weight_decay", nn.SGD, "step", _sgd_step_with_weight_decay,
          "embedding", "optimizer", K.VALUE, "token_embedding", optimizer="sgd"),
]
