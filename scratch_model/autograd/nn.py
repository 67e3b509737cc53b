"""Neural-network primitives: stable softmax and log-softmax, and the embedding gather."""

from __future__ import annotations

import numpy as np

from scratch_model.autograd.tensor import Tensor, op


@op
def softmax(a: Tensor, axis: int = -1):
    shifted = a.data - a.data.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return out, backward


@op
def log_softmax(a: Tensor, axis: int = -1):
    shifted = a.data - a.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return out, backward


@op
def embedding(weight: Tensor, indices: np.ndarray):
    """Rows of ``weight`` picked by integer ``indices``; the backward scatter-adds, so a token
    that appears several times in a batch receives the sum of its gradients."""
    indices = np.asarray(indices)

    def backward(g):
        grad = np.zeros_like(weight.data)
        np.add.at(grad, indices.reshape(-1), g.reshape(-1, weight.shape[-1]))
        return (grad,)

    return weight.data[indices], backward
