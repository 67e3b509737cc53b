"""Faulty autograd primitives (scratch_model/autograd/): the forward is right, the link to the
inputs or the backward is not. Shared by both scratch models."""

from __future__ import annotations

import numpy as np

from scratch_model.autograd.tensor import Tensor, op, unbroadcast


def reshape_without_backward(a, shape):
    return Tensor(a.data.reshape(shape))  # FAULT: a new leaf, no link to `a`


@op
def softmax_without_backward(a, axis=-1):
    shifted = a.data - a.data.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    out = e / e.sum(axis=axis, keepdims=True)
    return out, lambda g: (None,)  # FAULT: the backward returns no gradient


@op
def embedding_assign(weight, indices):
    indices = np.asarray(indices)

    def backward(g):
        grad = np.zeros_like(weight.data)
        grad[indices.reshape(-1)] = g.reshape(-1, weight.shape[-1])  # FAULT: repeated tokens overwrite
        return (grad,)

    return weight.data[indices], backward


@op
def matmul_transpose_with_T(a, b):
    def backward(g):
        grad_a = unbroadcast(g @ b.data.T, a.shape) if a.requires_grad else None  # FAULT: .T is 2-D only
        grad_b = unbroadcast(a.data.T @ g, b.shape) if b.requires_grad else None
        return grad_a, grad_b

    return a.data @ b.data, backward


def unbroadcast_leading_only(grad, shape):
    extra = grad.ndim - len(shape)
    return grad.sum(axis=tuple(range(extra))) if extra > 0 else grad  # FAULT: size-1 axes are not summed


def transpose_without_backward(a, axes=None):
    return Tensor(np.transpose(a.data, axes))  # FAULT: drops requires_grad and the link to `a`


@op
def relu_backward_passes_all(a):
    positive = a.data > 0
    return np.where(positive, a.data, 0).astype(a.dtype, copy=False), lambda g: (g,)  # FAULT: ignores the mask


@op
def sqrt_backward_missing_half(a):
    out = np.sqrt(a.data)
    return out, lambda g: (g / out,)  # FAULT: d sqrt(x) = 1 / (2 sqrt(x)); the 2 is missing


@op
def sub_backward_sign(a, b):
    def backward(g):
        grad_a = unbroadcast(g, a.shape) if a.requires_grad else None
        grad_b = unbroadcast(g, b.shape) if b.requires_grad else None  # FAULT: should be -g
        return grad_a, grad_b

    return a.data - b.data, backward

