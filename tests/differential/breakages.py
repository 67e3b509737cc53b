"""Injected breakages for the localization tests: each one is a known bug from BUG_CLASSES.md,
written as a replacement for one attribute (a layer's forward, a primitive, a functional-model
function), plus where the differential report must say the divergence starts.

A case is a plain value: the test patches ``target.attribute`` with ``replacement`` (pytest's
monkeypatch, so the source is never edited and the original always comes back), runs the report,
and compares its first divergence with ``module``, ``phase`` and ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from differential import diagnose
from differential.bundled_adapters import ClassModelAdapter
from scratch_model import autograd as ag
from scratch_model import functional, layers
from scratch_model import train as scratch_train
from scratch_model.autograd import Tensor, linalg, op
from scratch_model.autograd.tensor import unbroadcast
from scratch_model.config import TransformerConfig
from scratch_model.module import Module, Parameter


@dataclass(frozen=True)
class Breakage:
    """One injected bug and the first divergence the report must name for it."""

    name: str
    target: Any  # the module or class that holds the attribute
    attribute: str
    replacement: Any
    module: str  # expected first_divergence.module
    phase: str  # forward | backward | param_grad | optimizer | training
    kind: str  # one of differential.diagnose's kinds, asserted exactly
    impl: str = "class"
    op: str | None = None  # the primitive the report's finite-difference check must name
    hint: str | None = None  # words the hint must contain
    source_here: bool = False  # the replacement is the blamed code: scratch_source must point into this file
    # Run float32 checks on this model instead of the default one. The default ln_eps (1e-5) moves a
    # LayerNorm output by about eps / (2 var) ~ 3e-6 relative, under compare.FLOAT32_FLOOR (1e-5),
    # so float32 cannot see a missing eps there; at 1e-4 the same bug is visible in both dtypes.
    float32_model: TransformerConfig | None = None


# --- helpers ------------------------------------------------------------------------------------

def _after_build(edit: Callable[[Module], None]) -> Callable[..., None]:
    """A ClassModelAdapter.__init__ (the class model's side) that builds the model as usual, then hands
    it to ``edit``: the way to break one module instance (run_report builds its own models)."""
    build = ClassModelAdapter.__init__

    def __init__(self: ClassModelAdapter, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        edit(self.model)

    return __init__


def swap_forward(path: str, forward: Callable[..., Tensor]) -> Callable[..., None]:
    """Break only the module at ``path``: its class becomes a subclass with ``forward``, so the
    report's source pointer lands on the broken forward."""
    def edit(model: Module) -> None:
        module = model.get(path)
        module.__class__ = type(f"Broken{type(module).__name__}", (type(module),), {"forward": forward})

    return _after_build(edit)


def _mha(self: layers.MultiHeadAttention, x: Tensor, *, scale: bool = True, axis: int = -1,
         split: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The class model's attention with one knob per forward-math slip."""
    b, t, d = x.shape
    split = split or self.split_heads
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    scores = q @ k.swapaxes(-1, -2)  # (B, h, T, T)
    if scale:
        scores = scores * (1.0 / np.sqrt(self.head_dim))
    weights = ag.softmax(scores, axis=axis)
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))  # (B, T, D)


# --- class model: forward-math slips ----------------------------------------------------------

def mha_no_scale(self, x, mask=None):
    return _mha(self, x, scale=False)


def mha_softmax_wrong_axis(self, x, mask=None):
    return _mha(self, x, axis=-2)


def mha_heads_by_reshape(self, x, mask=None):
    b, t, _ = x.shape
    return _mha(self, x, split=lambda z: z.reshape(b, self.num_heads, t, self.head_dim))  # no transpose


def block_no_residual(self, x, mask=None):
    x = self.ln1(self.attn(x, mask))
    return self.ln2(x + self.ffn(x))


def ln_no_eps(self, x):
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / (centered * centered).mean(axis=-1, keepdims=True).sqrt() * self.weight + self.bias


def ln_unbiased_variance(self, x):
    centered = x - x.mean(axis=-1, keepdims=True)
    variance = (centered * centered).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)
    return centered / (variance + self.eps).sqrt() * self.weight + self.bias


def pos_added_twice(self, x):
    return x + self.weight[: x.shape[1]] + self.weight[: x.shape[1]]


def ffn_sqrt_for_relu(self, x):
    return self.fc2(ag.sqrt(self.fc1(x)))  # NaN wherever fc1's output is negative


def ffn_keeps_reduced_axis(self, x):
    return self.fc2(ag.relu(self.fc1(x))).sum(axis=-1, keepdims=True)  # (B, T, 1): broadcasts in the residual


# --- class model: graph breaks and parameters that never learn ---------------------------------

def block_residual_from_data(self, x, mask=None):
    x = self.ln1(Tensor(x.data + self.attn(x, mask).data))
    return self.ln2(x + self.ffn(x))


def linear_from_data(self, x):
    return Tensor((x @ self.weight.transpose() + self.bias).data)


def pos_slice_from_data(self, x):
    return x + Tensor(self.weight.data[: x.shape[1]])


def ln_init_frozen_weight(self, dim, eps, dtype=np.float64):
    Module.__init__(self)
    self.eps = eps
    self.weight = Parameter(np.ones(dim, dtype=dtype), requires_grad=False)
    self.bias = Parameter(np.zeros(dim, dtype=dtype))


def parameters_without_v_proj(self):
    return [p for name, p in self.named_parameters() if ".v_proj." not in name]


def cross_entropy_sum(logits, targets):
    b, t, v = logits.shape
    log_probs = ag.log_softmax(ag.reshape(logits, (b * t, v)), axis=-1)  # (B*T, V)
    return -log_probs[np.arange(b * t), np.asarray(targets).reshape(-1)].sum()


# --- shared autograd primitives with a wrong backward -----------------------------------------

@op
def embedding_assigns_rows(weight, indices):
    indices = np.asarray(indices)

    def backward(g):
        grad = np.zeros_like(weight.data)
        grad[indices.reshape(-1)] = g.reshape(-1, weight.shape[-1])  # repeated tokens overwrite
        return (grad,)

    return weight.data[indices], backward


@op
def getitem_assigns(a, index):
    def backward(g):
        grad = np.zeros_like(a.data)
        grad[index] = g  # repeated integer indices overwrite instead of adding
        return (grad,)

    return a.data[index], backward


@op
def softmax_zero_backward(a, axis=-1):
    e = np.exp(a.data - a.data.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True), lambda g: (np.zeros_like(g),)


@op
def relu_negated_backward(a):
    positive = a.data > 0
    return np.where(positive, a.data, 0).astype(a.dtype), lambda g: (-g * positive,)


@op
def matmul_last_batch_only(a, b):
    """grad_b of a batched (x @ W.T) keeps only the last batch element instead of the sum."""
    def backward(g):
        grad_a = unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape) if a.requires_grad else None
        per_batch = np.swapaxes(a.data, -1, -2) @ g
        if b.ndim == 2 and per_batch.ndim > 2:
            grad_b = per_batch.reshape(-1, *b.shape)[-1]
        else:
            grad_b = unbroadcast(per_batch, b.shape)
        return grad_a, (grad_b if b.requires_grad else None)

    return a.data @ b.data, backward


@op
def linear_last_batch_only(x, weight_t, bias=None):
    """The fused Linear's weight gradient keeps only the last batch element instead of the sum."""
    out = x.data @ weight_t.data + (0 if bias is None else bias.data)

    def backward(g):
        grad_w = np.swapaxes(x.data[-1], -1, -2) @ g[-1] if x.ndim > 2 else x.data.T @ g
        grads = [g @ weight_t.data.T, grad_w]
        return (*grads, g.reshape(-1, g.shape[-1]).sum(axis=0)) if bias is not None else tuple(grads)

    return out, backward


@op
def linear_doubles_weight_grad(x, weight_t, bias=None):
    out = x.data @ weight_t.data + (0 if bias is None else bias.data)

    def backward(g):
        x_flat, g_flat = x.data.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
        grads = [g @ weight_t.data.T, 2 * (x_flat.T @ g_flat)]  # the weight gradient doubled
        return (*grads, g_flat.sum(axis=0)) if bias is not None else tuple(grads)

    return out, backward


def transpose_without_graph(a, axes=None):
    return Tensor(np.transpose(a.data, axes))  # a transpose that drops requires_grad


def reshape_without_graph(a, shape):
    return Tensor(a.data.reshape(shape))  # a reshape with no link to its input


_cross_entropy = scratch_train.cross_entropy


def loss_from_data(logits, targets):
    return Tensor(_cross_entropy(logits, targets).data)  # the value is right; no gradient leaves it


# --- functional model ----------------------------------------------------------------------------

def f_layer_norm_no_eps(params, config, path, x):
    mu = x.mean(axis=-1, keepdims=True)
    normed = (x - mu) * (((x - mu) ** 2).mean(axis=-1, keepdims=True)) ** -0.5
    return normed * params[f"{path}.weight"] + params[f"{path}.bias"]


def f_attention_no_scale(params, config, path, x, mask=None, recorder=None):
    b, t, d = x.shape
    h, hd = config.num_heads, config.head_dim

    def project(name):
        out = functional._scope(recorder, f"{path}.{name}", lambda z: functional.linear(params, f"{path}.{name}", z), x)
        return ag.transpose(ag.reshape(out, (b, t, h, hd)), (0, 2, 1, 3))  # (B, h, T, hd)

    q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
    scores = ag.matmul(q, ag.transpose(k, (0, 1, 3, 2)))  # (B, h, T, T), no 1/sqrt(hd)
    context = ag.matmul(functional.softmax_last(scores), v)
    merged = ag.reshape(ag.transpose(context, (0, 2, 1, 3)), (b, t, d))  # (B, T, D)
    return functional._scope(recorder, f"{path}.out_proj",
                             lambda z: functional.linear(params, f"{path}.out_proj", z), merged)


def f_softmax_wrong_axis(scores):
    exps = ag.exp(scores - scores.max(axis=-2, keepdims=True))
    return exps / exps.sum(axis=-2, keepdims=True)


_f_linear = functional.linear


def f_linear_from_data(params, path, x):
    return Tensor(_f_linear(params, path, x).data)


def f_positions_from_data(params, config, x):
    return x + Tensor(params["pos_embedding.weight"].data[: x.shape[1]])


def f_block_residual_from_data(params, config, path, x, mask=None, recorder=None):
    def sub(name, fn, *inputs):
        return functional._scope(recorder, f"{path}.{name}", fn, *inputs)

    attended = sub("attn", lambda z: functional.attention(params, config, f"{path}.attn", z, mask, recorder), x)
    x = sub("ln1", lambda z: functional.layer_norm(params, config, f"{path}.ln1", z), Tensor(x.data + attended.data))
    transformed = sub("ffn", lambda z: functional.feed_forward(params, config, f"{path}.ffn", z, recorder), x)
    return sub("ln2", lambda z: functional.layer_norm(params, config, f"{path}.ln2", z), x + transformed)


def f_feed_forward_sqrt(params, config, path, x, recorder=None):
    hidden = functional._scope(recorder, f"{path}.fc1", lambda z: functional.linear(params, f"{path}.fc1", z), x)
    return functional._scope(recorder, f"{path}.fc2", lambda z: functional.linear(params, f"{path}.fc2", z),
                             ag.sqrt(hidden))


# --- the table ------------------------------------------------------------------------------------

K = diagnose
EPS_VISIBLE_IN_FLOAT32 = TransformerConfig(ln_eps=1e-4)

CLASS_CASES = [
    # forward-math slips (bug class 6)
    Breakage("attn_missing_scale", layers.MultiHeadAttention, "forward", mha_no_scale,
             "blocks.0.attn", "forward", K.VALUE, source_here=True),
    Breakage("attn_softmax_wrong_axis", layers.MultiHeadAttention, "forward", mha_softmax_wrong_axis,
             "blocks.0.attn", "forward", K.VALUE, source_here=True),
    Breakage("attn_heads_split_by_reshape", layers.MultiHeadAttention, "forward", mha_heads_by_reshape,
             "blocks.0.attn", "forward", K.VALUE, source_here=True),
    Breakage("block_residual_dropped", layers.TransformerBlock, "forward", block_no_residual,
             "blocks.0", "forward", K.VALUE, source_here=True),
    Breakage("ln_without_eps", layers.LayerNorm, "forward", ln_no_eps,
             "blocks.0.ln1", "forward", K.SCALE, source_here=True, float32_model=EPS_VISIBLE_IN_FLOAT32),
    Breakage("ln_unbiased_variance", layers.LayerNorm, "forward", ln_unbiased_variance,
             "blocks.0.ln1", "forward", K.SCALE, source_here=True),
    Breakage("positions_added_twice", layers.PositionalEmbedding, "forward", pos_added_twice,
             "pos_embedding", "forward", K.VALUE, source_here=True),
    Breakage("ffn_nan_from_sqrt", layers.FeedForward, "forward", ffn_sqrt_for_relu,
             "blocks.0.ffn", "forward", K.NAN_INF, source_here=True),
    Breakage("ffn_wrong_width", layers.FeedForward, "forward", ffn_keeps_reduced_axis,
             "blocks.0.ffn", "forward", K.SHAPE, source_here=True),
    # graph breaks through raw data (bug class 1)
    Breakage("residual_rebuilt_from_data", layers.TransformerBlock, "forward", block_residual_from_data,
             "blocks.0", "backward", K.GRAPH_BREAK, source_here=True),
    Breakage("linear_rebuilt_from_data", layers.Linear, "forward", linear_from_data,
             "head", "backward", K.GRAPH_BREAK, source_here=True),  # head is the first Linear walked
    Breakage("q_proj_only_rebuilt_from_data", ClassModelAdapter, "__init__",
             swap_forward("blocks.0.attn.q_proj", linear_from_data),
             "blocks.0.attn.q_proj", "backward", K.GRAPH_BREAK, source_here=True),
    Breakage("pos_slice_from_data", layers.PositionalEmbedding, "forward", pos_slice_from_data,
             "pos_embedding", "param_grad", K.GRAPH_BREAK, source_here=True),
    Breakage("loss_from_data", scratch_train, "cross_entropy", loss_from_data,
             "(loss)", "training", K.GRAPH_BREAK, source_here=True),
    # ops without a backward, or with a wrong one (bug classes 2-4)
    Breakage("transpose_drops_graph", ag, "transpose", transpose_without_graph,
             "head", "param_grad", K.GRAPH_BREAK),  # Linear's weight.transpose() is cut first
    Breakage("reshape_drops_graph", ag, "reshape", reshape_without_graph,
             "(loss)", "training", K.GRAPH_BREAK),  # the loss's reshape is cut first
    Breakage("embedding_backward_assigns", ag, "embedding", embedding_assigns_rows,
             "embedding", "param_grad", K.PARAM_GRAD, op="embedding_assigns_rows"),
    Breakage("softmax_backward_zeros", ag, "softmax", softmax_zero_backward,
             "blocks.0.attn", "backward", K.VALUE, op="softmax_zero_backward"),
    Breakage("relu_backward_sign_flip", ag, "relu", relu_negated_backward,
             "blocks.0.ffn", "backward", K.SIGN, op="relu_negated_backward"),
    # the class Linear runs as one fused op (linalg._linear); the functional one through _matmul
    Breakage("linear_weight_grad_one_batch", linalg, "_linear", linear_last_batch_only,
             "head", "param_grad", K.PARAM_GRAD, op="linear_last_batch_only"),
    Breakage("linear_weight_grad_doubled", linalg, "_linear", linear_doubles_weight_grad,
             "head", "param_grad", K.SCALE, op="linear_doubles_weight_grad"),
    # parameters that never learn (bug class 5)
    Breakage("ln_weight_without_requires_grad", layers.LayerNorm, "__init__", ln_init_frozen_weight,
             "blocks.0.ln2", "param_grad", K.GRAPH_BREAK, hint="requires_grad"),
    Breakage("v_proj_missing_from_optimizer", layers.ReversalTransformer, "parameters", parameters_without_v_proj,
             "blocks.0.attn.v_proj", "optimizer", K.NOT_UPDATED, hint="missing from the parameter list"),
    # loss (bug class 8)
    Breakage("loss_sum_not_mean", scratch_train, "cross_entropy", cross_entropy_sum,
             "(loss)", "training", K.LOSS, source_here=True),
]

FUNCTIONAL_CASES = [
    Breakage("f_ln_without_eps", functional, "layer_norm", f_layer_norm_no_eps,
             "blocks.0.ln1", "forward", K.SCALE, impl="functional", source_here=True,
             float32_model=EPS_VISIBLE_IN_FLOAT32),
    Breakage("f_attn_missing_scale", functional, "attention", f_attention_no_scale,
             "blocks.0.attn", "forward", K.VALUE, impl="functional", source_here=True),
    Breakage("f_softmax_wrong_axis", functional, "softmax_last", f_softmax_wrong_axis,
             "blocks.0.attn", "forward", K.VALUE, impl="functional"),
    Breakage("f_ffn_nan_from_sqrt", functional, "feed_forward", f_feed_forward_sqrt,
             "blocks.0.ffn", "forward", K.NAN_INF, impl="functional", source_here=True),
    Breakage("f_residual_rebuilt_from_data", functional, "block", f_block_residual_from_data,
             "blocks.0", "backward", K.GRAPH_BREAK, impl="functional", source_here=True),
    Breakage("f_linear_rebuilt_from_data", functional, "linear", f_linear_from_data,
             "head", "backward", K.GRAPH_BREAK, impl="functional", source_here=True),
    Breakage("f_pos_slice_from_data", functional, "add_positions", f_positions_from_data,
             "pos_embedding", "param_grad", K.GRAPH_BREAK, impl="functional", source_here=True),
    Breakage("f_transpose_drops_graph", ag, "transpose", transpose_without_graph,
             "blocks.0.attn", "backward", K.GRAPH_BREAK, impl="functional"),  # linear uses swapaxes
    Breakage("f_embedding_getitem_assigns", ag, "getitem", getitem_assigns,
             "embedding", "param_grad", K.PARAM_GRAD, impl="functional", op="getitem_assigns"),
    Breakage("f_relu_backward_sign_flip", ag, "relu", relu_negated_backward,
             "blocks.0.ffn", "backward", K.SIGN, impl="functional", op="relu_negated_backward"),
    Breakage("f_linear_weight_grad_one_batch", linalg, "_matmul", matmul_last_batch_only,
             "head", "param_grad", K.PARAM_GRAD, impl="functional", op="matmul_last_batch_only"),
    Breakage("f_loss_from_data", scratch_train, "cross_entropy", loss_from_data,
             "(loss)", "training", K.GRAPH_BREAK, impl="functional", source_here=True),
    Breakage("f_loss_sum_not_mean", scratch_train, "cross_entropy", cross_entropy_sum,
             "(loss)", "training", K.LOSS, impl="functional", source_here=True),
]

CASES = CLASS_CASES + FUNCTIONAL_CASES
FORWARD_CASES = [c for c in CASES if c.phase == "forward"]
