"""Faulty versions of functions of the functional model (scratch_model/functional.py)."""

from __future__ import annotations

import numpy as np

from scratch_model import autograd as ag
from scratch_model import init
from scratch_model.functional import allowed, layer_norm, linear, softmax_last


def attention_without_scale(params, config, path, x, mask=None, recorder=None):
    from scratch_model.functional import _scope

    b, t, d = x.shape
    h, hd = config.num_heads, config.head_dim

    def project(name):
        out = _scope(recorder, f"{path}.{name}", lambda z: linear(params, f"{path}.{name}", z), x)
        return ag.transpose(ag.reshape(out, (b, t, h, hd)), (0, 2, 1, 3))

    q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
    scores = ag.matmul(q, ag.transpose(k, (0, 1, 3, 2)))  # FAULT: q not divided by sqrt(head_dim)
    mask = allowed(config, t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    context = ag.matmul(softmax_last(scores), v)
    merged = ag.reshape(ag.transpose(context, (0, 2, 1, 3)), (b, t, d))
    return _scope(recorder, f"{path}.out_proj", lambda z: linear(params, f"{path}.out_proj", z), merged)


def layer_norm_unbiased(params, config, path, x):
    mu = x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    variance = ((x - mu) ** 2).sum(axis=-1, keepdims=True) / (n - 1)  # FAULT: unbiased variance
    normed = (x - mu) * (variance + config.ln_eps) ** -0.5
    return normed * params[f"{path}.weight"] + params[f"{path}.bias"]


def add_positions_twice(params, config, x):
    t = x.shape[1]
    if config.positional == "learned":
        table = params["pos_embedding.weight"][:t]
        return x + table + table  # FAULT: positional table added twice
    fixed = init.sinusoidal_table(config.seq_len, config.embed_dim, x.dtype)[:t]
    return x + fixed + fixed


def allowed_one_ahead(config, length, mask):
    if config.mask == "none":
        return mask
    triangle = np.arange(length)[None, :] <= np.arange(length)[:, None] + 1  # FAULT: off by one, sees key i+1
    return triangle if mask is None else triangle & np.asarray(mask, dtype=bool)


def block_second_residual_from_block_input(params, config, path, x, mask=None, recorder=None):
    from scratch_model.functional import _scope, attention, feed_forward

    def sub(name, fn, *inputs):
        return _scope(recorder, f"{path}.{name}", fn, *inputs)

    def norm(name, z):
        return sub(name, lambda y: layer_norm(params, config, f"{path}.{name}", y), z)

    stream = x + sub("attn", lambda y: attention(params, config, f"{path}.attn", y, mask, recorder), norm("ln1", x))
    transformed = sub("ffn", lambda y: feed_forward(params, config, f"{path}.ffn", y, recorder), norm("ln2", stream))
    return x + transformed  # FAULT: adds the block's input, not the stream that holds the attention's output
