"""Neural-network primitives: stable softmax and log-softmax, cross-entropy, and the embedding gather."""

from __future__ import annotations

import numpy as np

from scratch_model.autograd.tensor import Tensor, op


def _max_last(x: np.ndarray) -> np.ndarray:
    """Max over the last axis (kept): np.maximum of the two halves until one column is left. Exact,
    and several times faster than numpy's reduction over a short last axis (attention rows)."""
    n = x.shape[-1]
    while n > 1:
        half = n // 2
        top = np.maximum(x[..., :half], x[..., half:2 * half])  # (..., half), a fresh array
        if n % 2:
            np.maximum(top[..., :1], x[..., 2 * half:], out=top[..., :1])
        x, n = top, half
    return x


def _sum_last(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis (kept), by einsum: much faster than ``sum(axis=-1)`` on short rows."""
    return np.einsum("...i->...", x)[..., None]


@op
def softmax(a: Tensor, axis: int = -1):
    if axis in (-1, a.ndim - 1) and a.size and a.shape[-1]:
        return _softmax_last(a.data)
    shifted = a.data - a.data.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return out, backward


_EXP_SAFE = {np.dtype(np.float32): 60.0, np.dtype(np.float64): 600.0}  # |x| below: exp(x) stays finite and nonzero


def _softmax_last(x: np.ndarray):
    """Softmax over the last axis, in place on one fresh array; the backward's row sums of
    ``g * out`` in one einsum.

    The usual shift by each row's maximum only guards exp against overflow (and whole rows against
    underflow); when every entry lies within +-60 (float32, +-600 in float64) neither can happen,
    and the shift, a row-max pass and a subtraction pass, is skipped: softmax is the same for any
    shift, to rounding."""
    limit = _EXP_SAFE.get(x.dtype, 0.0)
    if -limit < x.min() and x.max() < limit:  # NaN or +-inf anywhere: False, the shifted path
        out = np.exp(x)
    else:
        out = x - _max_last(x)
        np.exp(out, out=out)
    out /= _sum_last(out)

    def backward(g):
        grad = g - np.einsum("...i,...i->...", g, out)[..., None]
        grad *= out
        return (grad,)

    return out, backward


@op
def log_softmax(a: Tensor, axis: int = -1):
    shifted = a.data - a.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return out, backward


@op
def cross_entropy_mean(logits: Tensor, targets: np.ndarray):
    """Mean over rows of ``-log softmax(logits)[row, target]``; logits (N, V), integer targets (N,).

    Log-softmax, the pick of each row's target and the mean in one node: its backward is
    ``(softmax(logits) - onehot(targets)) * g / N``, with no (N, V) gradient of the log-probabilities
    and no scatter in between."""
    targets = np.asarray(targets).reshape(-1)
    rows = np.arange(logits.shape[0])
    shifted = logits.data - logits.data.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (N, 1)
    picked = shifted[rows, targets] - log_norm[:, 0]  # log p(target), (N,)

    def backward(g):
        grad = np.exp(shifted - log_norm)  # softmax, (N, V)
        grad[rows, targets] -= 1.0
        grad *= g / len(rows)
        return (grad,)

    return -picked.mean(), backward


_ONE_HOT_LIMIT = 1 << 22  # elements of the one-hot matrix the embedding backward may build


@op
def embedding(weight: Tensor, indices: np.ndarray):
    """Rows of ``weight`` picked by integer ``indices``; the backward scatter-adds, so a token
    that appears several times in a batch receives the sum of its gradients."""
    indices = np.asarray(indices)
    shape, dtype = weight.shape, weight.dtype

    def backward(g):
        flat, rows = indices.reshape(-1), g.reshape(-1, shape[-1])  # (N,), (N, D)
        if shape[0] * flat.size <= _ONE_HOT_LIMIT:
            # the scatter-add as one product with a one-hot matrix: many times faster than np.add.at
            one_hot = np.zeros((shape[0], flat.size), dtype=dtype)  # (rows of weight, N)
            one_hot[flat, np.arange(flat.size)] = 1
            return (one_hot @ rows,)
        grad = np.zeros(shape, dtype=dtype)
        np.add.at(grad, flat, rows)
        return (grad,)

    return weight.data[indices], backward
