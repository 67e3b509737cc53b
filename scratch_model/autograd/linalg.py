"""Batched matrix multiplication."""

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
    def backward(g):
        # swapaxes, not .T: .T would also reverse the batch axes of a 3-D operand
        grad_a = unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape) if a.requires_grad else None
        grad_b = unbroadcast(np.swapaxes(a.data, -1, -2) @ g, b.shape) if b.requires_grad else None
        return grad_a, grad_b

    return a.data @ b.data, backward
