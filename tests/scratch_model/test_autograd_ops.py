"""Every autograd primitive against torch in float64: value, shape, dtype and the gradient of
every input; and the same table in float32, which must stay float32 throughout."""

from __future__ import annotations

import numpy as np
import pytest
from scratch_checks import OpCase, check_op_against_torch
from scratch_op_cases import OP_CASES


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_op_matches_torch_float64(case: OpCase) -> None:
    check_op_against_torch(case, np.float64, rtol=1e-12)


# float32 carries ~6e-8 relative round-off per operation and these cases chain at most a few
# operations over a few dozen O(1) values, so 1e-5 leaves two orders of magnitude of headroom
# while any wrong formula is still off by O(1). The dtype checks inside are exact.
@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_op_keeps_float32(case: OpCase) -> None:
    check_op_against_torch(case, np.float32, rtol=1e-5)
