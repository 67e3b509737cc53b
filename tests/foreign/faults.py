"""Faults injected into tinyflow for the adapter tests: each is a known bug from BUG_CLASSES.md,
written as a replacement for one attribute of tinyflow (a layer method, an op, a fused function),
plus where the differential report must say the divergence starts, in the reference's names and
in tinyflow's own.

A case is a plain value; the test patches ``target.attribute`` with ``replacement`` through
pytest's monkeypatch, so tinyflow's source is never edited and always comes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import adapter, engine, nets
from .engine import Value


@dataclass(frozen=True)
class Fault:
    name: str
    target: Any
    attribute: str
    replacement: Any
    module: str  # the report's first_divergence.module (the reference's path)
    theirs: str | None  # the same place in tinyflow's names (None: not a module)
    phase: str
    kind: str | None = None  # asserted when given


def _attend_no_scale(self: nets.SelfAttention, q: Value, k: Value, v: Value) -> Value:
    return q.dot(k.swap(-1, -2)).softmax(axis=-1).dot(v)  # no 1/sqrt(head_dim)


def _attend_softmax_over_queries(self: nets.SelfAttention, q: Value, k: Value, v: Value) -> Value:
    scores = q.dot(k.swap(-1, -2)).times(1.0 / math.sqrt(q.val.shape[-1]))
    return scores.softmax(axis=-2).dot(v)  # normalizes over the queries, not the keys


def _split_by_reshape(self: nets.SelfAttention, x: Value) -> Value:
    b, t, d = x.val.shape
    return x.view(b, self.heads, t, d // self.heads)  # a reshape where a transpose was needed


def _residual_from_raw_data(self: nets.Block, x: Value) -> Value:
    x = self.norm_a(Value(x.val + self.mha(x).val))  # rebuilt from arrays: the graph stops here
    return self.norm_b(x.plus(self.mlp.forward(x)))


def _positions_not_added(self: nets.LearnedPositions, x: Value) -> Value:
    return x


def _lookup_overwrites(table: Value, ids: np.ndarray) -> Value:
    out = Value(table.val[ids], (table,))

    def back() -> None:
        table.g[ids] += out.g  # buffered fancy-index add: a repeated id keeps only its last gradient

    out.back = back
    return out


def _layer_norm_no_eps(x: Value, gain: Value, shift: Value, eps: float) -> Value:
    return engine.layer_norm(x, gain, shift, 0.0)


def _layer_norm_gain_grad_without_xhat(x: Value, gain: Value, shift: Value, eps: float) -> Value:
    out = engine.layer_norm(x, gain, shift, eps)
    right = out.back

    def back() -> None:
        before = gain.g.copy()
        right()
        gain.g = before + out.g.reshape(-1, gain.val.shape[0]).sum(axis=0)  # d gain = sum(dy): forgot xhat

    out.back = back
    return out


def _affine_weight_grad_first_sample(x: Value, w: Value, b: Value) -> Value:
    out = engine.affine(x, w, b)
    right = out.back

    def back() -> None:
        before = w.g.copy()
        right()
        n_in, n_out = w.val.shape
        w.g = before + x.val[0].reshape(-1, n_in).T @ out.g[0].reshape(-1, n_out)  # no sum over the batch

    out.back = back
    return out


def _relu_without_mask(self: Value) -> Value:
    out = Value(np.maximum(self.val, 0.0), (self,))

    def back() -> None:
        self.g += out.g  # forgot: only where the input was positive

    out.back = back
    return out


def _softmax_backward_without_correction(self: Value, axis: int = -1) -> Value:
    shifted = np.exp(self.val - self.val.max(axis=axis, keepdims=True))
    s = shifted / shifted.sum(axis=axis, keepdims=True)
    out = Value(s, (self,))

    def back() -> None:
        self.g += s * out.g  # dropped the "- sum(g * s)" term

    out.back = back
    return out


def _attention_parameters_without_wo(self: nets.SelfAttention) -> list[Value]:
    return self.wq.params + self.wk.params + self.wv.params  # wo forgotten: the optimizer never sees it


def _cross_entropy_sum(logits: Value, targets: np.ndarray) -> Value:
    mean = engine.cross_entropy(logits, targets)
    return mean.times(float(np.size(targets)))  # a sum where the mean is needed


FAULTS = [
    Fault("attention_no_scale", nets.SelfAttention, "attend", _attend_no_scale,
          "blocks.0.attn", "layers[0].mha", "forward"),
    Fault("softmax_over_queries", nets.SelfAttention, "attend", _attend_softmax_over_queries,
          "blocks.0.attn", "layers[0].mha", "forward"),
    Fault("heads_split_by_reshape", nets.SelfAttention, "split", _split_by_reshape,
          "blocks.0.attn", "layers[0].mha", "forward"),
    Fault("positions_not_added", nets.LearnedPositions, "forward", _positions_not_added,
          "pos_embedding", "pos", "forward"),
    Fault("layer_norm_no_eps", nets, "layer_norm", _layer_norm_no_eps,
          "blocks.0.ln1", "layers[0].norm_a", "forward"),
    Fault("residual_from_raw_data", nets.Block, "forward", _residual_from_raw_data,
          "blocks.0", "layers[0]", "backward"),
    Fault("relu_backward_without_mask", Value, "relu", _relu_without_mask,
          "blocks.0.ffn", "layers[0].mlp", "backward"),
    Fault("softmax_backward_wrong", Value, "softmax", _softmax_backward_without_correction,
          "blocks.0.attn", "layers[0].mha", "backward"),
    Fault("embedding_grad_overwrites", nets, "lookup", _lookup_overwrites,
          "embedding", "tok_emb", "param_grad", "param_grad_formula"),
    Fault("dense_weight_grad_one_sample", nets, "affine", _affine_weight_grad_first_sample,
          "head", "out", "param_grad", "param_grad_formula"),
    Fault("layer_norm_gain_grad", nets, "layer_norm", _layer_norm_gain_grad_without_xhat,
          "blocks.0.ln2", "layers[0].norm_b", "param_grad", "param_grad_formula"),
    Fault("parameter_missing_from_list", nets.SelfAttention, "parameters", _attention_parameters_without_wo,
          "blocks.0.attn.out_proj", "layers[0].mha.wo", "optimizer", "not_updated"),
    Fault("loss_sum_not_mean", adapter, "cross_entropy", _cross_entropy_sum,
          "(loss)", None, "training", "loss_mismatch"),
]
