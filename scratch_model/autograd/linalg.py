"""Batched matrix multiplication, and the Linear layer's product-plus-bias as one op."""

from __future__ import annotations

from typing import Any

import numpy as np

from scratch_model.autograd.tensor import Tensor, as_tensor, check_same_dtype, op, unbroadcast


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` over the last two axes, broadcasting the leading (batch) axes."""
    a_t = as_tensor(a, b if isinstance(b, Tensor) else None)
    b_t = as_tensor(b, a_t)
    check_same_dtype("matmul", (a_t, b_t))
    if a_t.ndim < 2 or b_t.ndim < 2:
        raise ValueError(f"matmul needs operands of rank >= 2, got shapes {a_t.shape} and {b_t.shape}")
    if a_t.shape[-1] != b_t.shape[-2]:
        raise ValueError(f"matmul: inner sizes differ, shapes {a_t.shape} @ {b_t.shape}")
    return _matmul(a_t, b_t)


@op
def _matmul(a: Tensor, b: Tensor):
    if b.ndim == 2 and a.ndim > 2 and a.shape[-1] > 0:
        return _matmul_flat(a, b)

    a_data, b_data, a_req, b_req = a.data, b.data, a.requires_grad, b.requires_grad

    def backward(g):
        # swapaxes, not .T: .T would also reverse the batch axes of a 3-D operand
        grad_a = unbroadcast(g @ np.swapaxes(b_data, -1, -2), a_data.shape) if a_req else None
        grad_b = unbroadcast(np.swapaxes(a_data, -1, -2) @ g, b_data.shape) if b_req else None
        return grad_a, grad_b

    return a_data @ b_data, backward


def _matmul_flat(a: Tensor, b: Tensor):
    """``(..., K) @ (K, N)`` (a Linear layer) as one 2-D product over the flattened leading axes: one
    BLAS call instead of one per batch row, and the gradient of ``b`` as a single ``(K, B*T) @
    (B*T, N)`` product instead of a stack of per-batch products summed afterwards."""
    a_shape, b_data, a_req, b_req = a.shape, b.data, a.requires_grad, b.requires_grad
    a_flat = a.data.reshape(-1, a_shape[-1])  # (B*T, K)
    out = (a_flat @ b_data).reshape(*a_shape[:-1], b_data.shape[-1])  # (..., N)
    if not b_req:
        a_flat = None  # only b's gradient needs it

    def backward(g):
        g_flat = g.reshape(-1, g.shape[-1])  # (B*T, N)
        grad_a = (g_flat @ b_data.T).reshape(a_shape) if a_req else None
        grad_b = a_flat.T @ g_flat if b_req else None
        return grad_a, grad_b

    return out, backward


def linear(x: Any, weight_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight_t + bias`` in one node: a Linear layer. ``weight_t`` is the (in, out) weight,
    usually ``weight.transpose()`` of an (out, in) parameter (that transpose stays a node of its
    own); ``x`` (..., in) runs as one 2-D product over its flattened leading axes, the bias is
    added in place, and the bias gradient is one column sum."""
    x_t = as_tensor(x, weight_t)
    tensors = (x_t, weight_t) if bias is None else (x_t, weight_t, bias)
    check_same_dtype("linear", tensors)
    if weight_t.ndim != 2 or x_t.ndim < 1 or x_t.shape[-1] != weight_t.shape[0]:
        raise ValueError(f"linear: input {x_t.shape} does not fit an (in, out) weight {weight_t.shape}")
    if bias is not None and bias.shape != weight_t.shape[1:]:
        raise ValueError(f"linear: bias shape {bias.shape} does not match the output width {weight_t.shape[1]}")
    if x_t.shape[-1] == 0:  # nothing to multiply: the plain ops handle the empty product
        out = matmul(x_t, weight_t)
        return out if bias is None else out + bias
    return _linear(*tensors)


@op
def _linear(x: Tensor, weight_t: Tensor, bias: Tensor | None = None):
    x_shape, w_data, x_req, w_req = x.shape, weight_t.data, x.requires_grad, weight_t.requires_grad
    b_req = bias is not None and bias.requires_grad
    x_flat = x.data.reshape(-1, x_shape[-1])  # (B*T, in)
    out = x_flat @ w_data  # (B*T, out)
    if bias is not None:
        out += bias.data
    if not w_req:
        x_flat = None  # only the weight's gradient needs it
    with_bias = bias is not None

    def backward(g):
        g_flat = g.reshape(-1, g.shape[-1])  # (B*T, out)
        grad_x = (g_flat @ w_data.T).reshape(x_shape) if x_req else None
        grad_w = x_flat.T @ g_flat if w_req else None
        if not with_bias:
            return grad_x, grad_w
        # the column sums as a BLAS product: several times faster than sum(axis=0) on (B*T, out)
        return grad_x, grad_w, ((np.ones(len(g_flat), dtype=g_flat.dtype) @ g_flat) if b_req else None)

    return out.reshape(*x_shape[:-1], w_data.shape[1]), backward
