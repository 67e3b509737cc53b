"""Reductions over axes: sum, mean, max."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from scratch_model.autograd.tensor import Tensor, op


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (int(axis),) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis)
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of rank {ndim}")
    return tuple(sorted(a % builtins.max(ndim, 1) for a in axes))


def _keep(grad: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Reinsert reduced axes so ``grad`` broadcasts against the input."""
    return grad if keepdims else np.expand_dims(grad, axes)


@op
def sum(a: Tensor, axis: Any = None, keepdims: bool = False):  # noqa: A001
    axes, a_shape = _axes(axis, a.ndim), a.shape

    def backward(g):
        return (np.broadcast_to(_keep(g, axes, keepdims), a_shape).copy(),)

    return np.sum(a.data, axis=axes, keepdims=keepdims), backward


@op
def mean(a: Tensor, axis: Any = None, keepdims: bool = False):
    axes, a_shape, a_dtype = _axes(axis, a.ndim), a.shape, a.dtype
    count = int(np.prod([a.shape[i] for i in axes])) if axes else 1

    def backward(g):
        return (np.broadcast_to(_keep(g, axes, keepdims) / count, a_shape).astype(a_dtype),)

    return np.mean(a.data, axis=axes, keepdims=keepdims), backward


@op
def max(a: Tensor, axis: Any = None, keepdims: bool = False):  # noqa: A001
    """Maximum; where several elements tie, the gradient is shared equally among them."""
    axes, a_data = _axes(axis, a.ndim), a.data
    out = np.max(a_data, axis=axes, keepdims=True)

    def backward(g):
        winners = a_data == out
        share = winners / winners.sum(axis=axes, keepdims=True)
        return ((_keep(g, axes, keepdims) * share).astype(a_data.dtype),)

    return (out if keepdims else np.squeeze(out, axis=axes)), backward
