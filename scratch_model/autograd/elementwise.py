"""Elementwise primitives: arithmetic with broadcasting, exp, log, sqrt, relu."""

from __future__ import annotations

from typing import Any

import numpy as np

from scratch_model.autograd.tensor import Tensor, as_tensor, check_same_dtype, op, unbroadcast


def _pair(name: str, a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as tensors; a constant takes the dtype of the tensor beside it."""
    a_t = as_tensor(a, b if isinstance(b, Tensor) else None)
    b_t = as_tensor(b, a_t)
    check_same_dtype(name, (a_t, b_t))
    return a_t, b_t


# Backward closures keep the arrays and flags they need, never the input Tensors: an intermediate
# Tensor nobody else holds can then drop its array before the backward (see Tensor.backward).

@op
def _add(a: Tensor, b: Tensor):
    a_shape, b_shape, a_req, b_req = a.shape, b.shape, a.requires_grad, b.requires_grad

    def backward(g):
        return (unbroadcast(g, a_shape) if a_req else None), (unbroadcast(g, b_shape) if b_req else None)

    return a.data + b.data, backward


@op
def _sub(a: Tensor, b: Tensor):
    a_shape, b_shape, a_req, b_req = a.shape, b.shape, a.requires_grad, b.requires_grad

    def backward(g):
        return (unbroadcast(g, a_shape) if a_req else None), (unbroadcast(-g, b_shape) if b_req else None)

    return a.data - b.data, backward


@op
def _mul(a: Tensor, b: Tensor):
    a_shape, b_shape, a_req, b_req = a.shape, b.shape, a.requires_grad, b.requires_grad
    a_data, b_data = a.data if b_req else None, b.data if a_req else None  # each only for the other's gradient

    def backward(g):
        return (unbroadcast(g * b_data, a_shape) if a_req else None,
                unbroadcast(g * a_data, b_shape) if b_req else None)

    return a.data * b.data, backward


@op
def _div(a: Tensor, b: Tensor):
    a_shape, b_shape, a_req, b_req = a.shape, b.shape, a.requires_grad, b.requires_grad
    a_data, b_data = (a.data if b_req else None), b.data

    def backward(g):
        return (unbroadcast(g / b_data, a_shape) if a_req else None,
                unbroadcast(-g * a_data / (b_data * b_data), b_shape) if b_req else None)

    return a.data / b.data, backward


@op
def _pow(a: Tensor, b: Tensor):
    a_data, b_data, a_shape, b_shape, a_req, b_req = a.data, b.data, a.shape, b.shape, a.requires_grad, b.requires_grad
    out = a_data ** b_data

    def backward(g):
        grad_a = unbroadcast(g * b_data * a_data ** (b_data - 1), a_shape) if a_req else None
        grad_b = None
        if b_req:
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_b = unbroadcast(g * out * np.log(a_data), b_shape)
        return grad_a, grad_b

    return out, backward


def add(a: Any, b: Any) -> Tensor:
    return _add(*_pair("add", a, b))


def sub(a: Any, b: Any) -> Tensor:
    return _sub(*_pair("sub", a, b))


def mul(a: Any, b: Any) -> Tensor:
    return _mul(*_pair("mul", a, b))


def div(a: Any, b: Any) -> Tensor:
    return _div(*_pair("div", a, b))


def pow(a: Any, exponent: Any) -> Tensor:  # noqa: A001 - mirrors the operator's name
    return _pow(*_pair("pow", a, exponent))


@op
def neg(a: Tensor):
    return -a.data, lambda g: (-g,)


@op
def exp(a: Tensor):
    out = np.exp(a.data)
    return out, lambda g: (g * out,)


@op
def log(a: Tensor):
    a_data = a.data
    return np.log(a_data), lambda g: (g / a_data,)


@op
def sqrt(a: Tensor):
    out = np.sqrt(a.data)
    return out, lambda g: (g / (2 * out),)


@op
def relu(a: Tensor):
    # np.maximum, not np.where(a > 0, a, 0): several times faster on large arrays, and NaN stays
    # NaN as in torch.relu. The backward reads its mask off the output (kept anyway as the next
    # layer's input) rather than saving one more array.
    out = np.maximum(a.data, a.data.dtype.type(0))
    return out, lambda g: (np.multiply(g, out > 0, dtype=g.dtype),)
