"""Every autograd primitive against float64 central finite differences, independently of torch."""

from __future__ import annotations

import pytest
from scratch_checks import FD_RTOL, OpCase, assert_close, case_inputs, fd_grad, projected
from scratch_op_cases import OP_CASES

from scratch_model.autograd import Tensor


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_op_gradient_matches_finite_differences(case: OpCase) -> None:
    arrays, rng = case_inputs(case)
    inputs = [Tensor(a, requires_grad=True) for a in arrays]  # shares each array: fd_grad perturbs it
    out = case.ours(*inputs)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    loss = projected(lambda: case.ours(*inputs), upstream)
    for i, (tensor, array) in enumerate(zip(inputs, arrays, strict=True)):
        assert_close(tensor.grad, fd_grad(loss, array), f"{case}: backward of input {i}", FD_RTOL)
