"""Faulty versions of class-model methods (scratch_model/layers.py), one mistake each.

Each function is the clean method with one realistic slip; the comment on the faulty line says
what is wrong. They are swapped in only by `differential.faults.activate`.
"""

from __future__ import annotations

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.module import Parameter


def block_residual_from_data(self, x, mask=None):
    if self.pre_norm:
        x = Tensor(x.data + self.attn(self.ln1(x), mask).data)  # FAULT: residual rebuilt from raw data
        return x + self.ffn(self.ln2(x))
    x = self.ln1(Tensor(x.data + self.attn(x, mask).data))  # FAULT: residual rebuilt from raw data
    return self.ln2(x + self.ffn(x))


def block_pre_norm_residual_of_normed(self, x, mask=None):
    h = self.ln1(x)
    x = h + self.attn(h, mask)  # FAULT: the residual adds the normalized input, not the stream x
    return x + self.ffn(self.ln2(x))


def block_pre_norm_applied_after(self, x, mask=None):
    x = self.ln1(x + self.attn(x, mask))  # FAULT: the post-LN line left in a pre-LN block
    return x + self.ffn(self.ln2(x))


def positional_slice_from_data(self, x):
    table = self.weight if "weight" in self._parameters else self.table
    return x + Tensor(table.data[: x.shape[1]])  # FAULT: table slice rebuilt from raw data


def model_head_reshape_from_data(self, tokens, mask=None):
    from scratch_model.data import validate_tokens

    tokens = validate_tokens(tokens, self.config)
    x = self.embedding(tokens)
    if "pos_embedding" in self._modules:
        x = self.pos_embedding(x)
    for block in self.blocks:
        x = block(x, mask)
    if "ln_f" in self._modules:
        x = self.ln_f(x)
    b, t, d = x.shape
    flat = Tensor(x.data.reshape(b * t, d))  # FAULT: (B, T, D) -> (B*T, D) through raw data
    return self.head(flat).reshape(b, t, -1)


def attention_value_from_data(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(Tensor(self.v_proj(x).data))  # FAULT: value projection cut from the graph
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))
    mask = self.allowed(t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    weights = ag.softmax(scores, axis=-1)
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))


def attention_without_scale(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(self.v_proj(x))
    scores = q @ k.swapaxes(-1, -2)  # FAULT: missing * 1/sqrt(head_dim)
    mask = self.allowed(t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    weights = ag.softmax(scores, axis=-1)
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))


def attention_softmax_wrong_axis(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(self.v_proj(x))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))
    mask = self.allowed(t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    weights = ag.softmax(scores, axis=-2)  # FAULT: normalises over queries, not keys
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))


def split_heads_by_reshape(self, x):
    b, t, _ = x.shape
    return x.reshape(b, self.num_heads, t, self.head_dim)  # FAULT: reshape where a transpose was needed


def attention_mask_inverted(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(self.v_proj(x))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))
    mask = self.allowed(t, mask)
    if mask is not None:
        scores = scores + np.where(mask, -1e9, 0.0).astype(x.dtype)  # FAULT: reads True as "blocked"
    weights = ag.softmax(scores, axis=-1)
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))


def layer_norm_without_eps(self, x):
    centered = x - x.mean(axis=-1, keepdims=True)
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / variance.sqrt() * self.weight + self.bias  # FAULT: no eps under the sqrt


def layer_norm_unbiased(self, x):
    centered = x - x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    variance = (centered * centered).sum(axis=-1, keepdims=True) / (n - 1)  # FAULT: unbiased variance
    return centered / (variance + self.eps).sqrt() * self.weight + self.bias


def layer_norm_init_frozen(self, dim, eps, dtype=np.float64):
    from scratch_model.module import Module

    Module.__init__(self)
    self.eps = eps
    self.weight = Parameter(np.ones(dim, dtype=dtype), requires_grad=False)  # FAULT: never learns
    self.bias = Parameter(np.zeros(dim, dtype=dtype))


def positional_not_added(self, x):
    return x  # FAULT: forgot to add the positional table


def parameters_missing_ffn(self):
    # FAULT: a hand-built list that forgot the feed-forward layers
    return [p for name, p in self.named_parameters() if ".ffn." not in name]


def positional_init_frozen(self, seq_len, dim, *, kind, seed, name, dtype=np.float64):
    from scratch_model import init
    from scratch_model.module import Module

    Module.__init__(self)
    # FAULT: the table is created without requires_grad, so it gets no gradient ...
    self.weight = Parameter(init.normal(seed, f"{name}.weight", (seq_len, dim), dtype), requires_grad=False)


def parameters_trainable_only(self):
    # FAULT: ... and the optimizer's list keeps only parameters that require grad, so it never sees it
    return [p for _, p in self.named_parameters() if p.requires_grad]


def attention_mostly_outside_graph(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(self.v_proj(x))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))
    mask = self.allowed(t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    context = (ag.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    out = self.out_proj(context)
    # FAULT: the output is rebuilt from raw data; a small proxy of the input keeps "a gradient" flowing
    return Tensor(out.data - 1e-3 * x.data) + x * 1e-3


def attention_causal_mask_transposed(self, x, mask=None):
    b, t, d = x.shape
    q = self.split_heads(self.q_proj(x))
    k = self.split_heads(self.k_proj(x))
    v = self.split_heads(self.v_proj(x))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(self.head_dim))
    allowed = np.triu(np.ones((t, t), dtype=bool))  # FAULT: triu, not tril: each query sees the future
    scores = scores + np.where(allowed, 0.0, -np.inf).astype(x.dtype)
    weights = ag.softmax(scores, axis=-1)
    return self.out_proj((weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d))


def linear_tied_weight_from_data(self, x):
    # FAULT: a tied layer reads the shared table through .data, so the table's gradient gets only
    # its other use's share (the head's is never summed in)
    weight = Tensor(self.weight.data) if self.tied else self.weight
    out = x @ weight.transpose()
    return out if self.bias is None else out + self.bias
