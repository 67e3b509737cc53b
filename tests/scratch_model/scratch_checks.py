"""Shared checks for the scratch_model tests: seeded inputs, the torch parity check of one op
case, and central finite differences.

The torch side always runs in float64 and is the oracle; our side runs in the dtype under test.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scratch_model.autograd import Tensor, no_grad

# Central differences in float64: truncation ~ eps^2 * f''' ~ 1e-12, round-off ~ 1e-16 * |f| / eps
# ~ 1e-10 for the small sums used here, so 1e-6 relative is loose for a right gradient and
# still far below any real mistake (a wrong gradient is off by O(1)).
FD_EPS = 1e-6
FD_RTOL = 1e-6


@dataclass(frozen=True)
class OpCase:
    """One row of an op table: ``ours(*tensors)`` should equal ``theirs(*torch_tensors)``.

    ``domain`` picks where inputs are drawn: "real" N(0, 1); "positive" U(0.5, 2) for log, sqrt
    and pow bases; "nonzero" |x| in U(0.2, 2) with random sign, away from kinks and poles.
    """

    name: str
    shapes: tuple[tuple[int, ...], ...]
    ours: Callable[..., Tensor]
    theirs: Callable[..., torch.Tensor]
    domain: str = "real"

    def __str__(self) -> str:
        return self.name


def seeded_rng(name: str) -> np.random.Generator:
    """A generator fixed by a case name, so each case sees the same inputs on every run."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def draw(rng: np.random.Generator, shape: tuple[int, ...], domain: str = "real") -> np.ndarray:
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":
        return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    raise ValueError(f"unknown domain {domain!r}")


def case_inputs(case: OpCase) -> tuple[list[np.ndarray], np.random.Generator]:
    rng = seeded_rng(case.name)
    return [draw(rng, shape, case.domain) for shape in case.shapes], rng


def assert_close(actual: np.ndarray | None, expected: np.ndarray, label: str, rtol: float,
                 atol_scale: float | None = None) -> None:
    """Same shape, same dtype as ``expected``, and ``|a - e| <= rtol * |e| + atol`` where
    ``atol = atol_scale * max(1, max|e|)`` (default ``atol_scale = rtol``): entries that cancel to
    near zero are judged against the size of the whole array, not their own."""
    assert actual is not None, f"{label}: no gradient"
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{label}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    atol = (rtol if atol_scale is None else atol_scale) * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=label)


def check_op_against_torch(case: OpCase, dtype: np.dtype = np.float64, rtol: float = 1e-12,
                           atol_scale: float | None = None) -> None:
    """Feed one seeded input to our op (in ``dtype``) and to torch (float64); compare the value
    and, by backpropagating a fixed random upstream gradient, the gradient of every input."""
    arrays, rng = case_inputs(case)
    ours_in = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    theirs_in = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = case.ours(*ours_in)
    ref = case.theirs(*theirs_in)
    assert isinstance(out, Tensor), f"{case}: forward returned {type(out).__name__}"
    assert_close(out.data, ref.detach().numpy().astype(dtype), f"{case}: forward", rtol, atol_scale)
    assert out.requires_grad, f"{case}: forward result is cut from its inputs"

    upstream = rng.standard_normal(out.shape)
    out.backward(upstream.astype(dtype))
    ref.backward(torch.from_numpy(upstream))
    for i, (ours, theirs) in enumerate(zip(ours_in, theirs_in, strict=True)):
        assert_close(ours.grad, theirs.grad.numpy().astype(dtype), f"{case}: backward of input {i}",
                     rtol, atol_scale)


def fd_grad(f: Callable[[], float], array: np.ndarray, eps: float = FD_EPS,
            entries: Sequence[tuple[int, ...]] | None = None) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``array``, which ``f`` reads by
    reference (the array is perturbed in place and restored). Over every entry (the result has
    ``array``'s shape) or only over ``entries`` (the result lists them in that order)."""
    assert array.dtype == np.float64, "finite differences need float64"
    index = list(np.ndindex(array.shape)) if entries is None else list(entries)
    grads = np.empty(len(index))
    for k, i in enumerate(index):
        old = array[i]
        array[i] = old + eps
        up = f()
        array[i] = old - eps
        down = f()
        array[i] = old
        grads[k] = (up - down) / (2 * eps)
    return grads.reshape(array.shape) if entries is None else grads


def projected(fn: Callable[[], Tensor], upstream: np.ndarray) -> Callable[[], float]:
    """``sum(fn() * upstream)`` without building a graph: the scalar whose gradient is what
    ``fn().backward(upstream)`` computes."""
    def scalar() -> float:
        with no_grad():
            return float(np.sum(fn().data * upstream))

    return scalar


def sample_entries(rng: np.random.Generator, shape: tuple[int, ...], count: int) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct entries of an array of ``shape``, drawn with ``rng``."""
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(count, size), replace=False)
    return [tuple(int(j) for j in np.unravel_index(i, shape)) for i in flat]
