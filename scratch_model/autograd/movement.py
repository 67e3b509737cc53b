"""Movement primitives: reshape, transpose/permute, indexing and slicing, concatenation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scratch_model.autograd.tensor import Tensor, check_same_dtype, op


@op
def reshape(a: Tensor, shape: tuple[int, ...]):
    a_shape = a.shape
    return a.data.reshape(shape), lambda g: (g.reshape(a_shape),)


@op
def transpose(a: Tensor, axes: tuple[int, ...] | None = None):
    """Permute axes (reverse them when ``axes`` is None); the gradient is permuted back."""
    perm = tuple(range(a.ndim))[::-1] if axes is None else tuple(axes)
    out = np.transpose(a.data, perm)  # rejects a bad permutation before it is normalised
    # invert over non-negative axes: (0, -1, -2) must read (0, 2, 1)
    inverse = [0] * len(perm)
    for position, axis in enumerate(perm):
        inverse[axis % a.ndim] = position
    return out, lambda g: (np.transpose(g, inverse),)


@op
def swapaxes(a: Tensor, axis1: int, axis2: int):
    return np.swapaxes(a.data, axis1, axis2), lambda g: (np.swapaxes(g, axis1, axis2),)


def _is_basic(index: Any) -> bool:
    """Slices, ints, None and Ellipsis never repeat an element, so the backward can assign."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


@op
def getitem(a: Tensor, index: Any):
    """Indexing and slicing; with integer-array indices repeated elements add their gradients."""
    if isinstance(index, Tensor):
        raise TypeError("index a Tensor with a numpy array or slices, not a Tensor")

    a_shape, a_dtype = a.shape, a.dtype

    def backward(g):
        grad = np.zeros(a_shape, dtype=a_dtype)
        if _is_basic(index):
            grad[index] = g
        else:
            np.add.at(grad, index, g)
        return (grad,)

    return a.data[index], backward


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    check_same_dtype("concatenate", tensors)
    return _concatenate(*tensors, axis=axis)


@op
def _concatenate(*tensors: Tensor, axis: int = 0):
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return (np.concatenate([t.data for t in tensors], axis=axis),
            lambda g: tuple(np.split(g, bounds, axis=axis)))


@op
def identity(a: Tensor):
    """A new node with the same value. Observers put one at a module boundary so the gradient that
    flows through that module alone can be read from it."""
    return a.data, lambda g: (g,)
