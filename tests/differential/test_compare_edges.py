"""The verdict-only helpers (`matches_zero`, `agrees`, `verdicts`) and `compare` at the edges of the
tolerance model a mutation run over compare.py found unpinned: the allowance's boundary (an element
exactly at ``rtol |r| + atol S`` matches; one just past it does not), the default scale, the
non-finite fallbacks, the float32 noise floor's boundary, and no floating-point warning from huge
values. Every expectation is worked out here from the documented model, and each helper is checked
against `compare` itself, which it must agree with."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from differential.compare import ATOL64, FLOAT32_FLOOR, NOISE_FACTOR, RTOL64, agrees, compare, matches_zero, verdicts

INF, NAN = math.inf, math.nan


def _on_the_boundary(scale: float) -> float:
    """A positive x with ``x == x * RTOL64 + ATOL64 * scale`` exactly, in the order the code computes
    it: a value a reference-zero check allows exactly, no more and no less."""
    floor = ATOL64 * scale
    x = floor / (1.0 - RTOL64)
    for _ in range(64):  # a few ulps either way: the rounding of the two sides settles on one
        allowed = x * RTOL64 + floor
        if allowed == x:
            return x
        x = np.nextafter(x, INF if allowed > x else -INF)
    raise AssertionError("no value sits exactly on the allowance near the expected one")


def test_a_value_at_the_allowance_is_zero_and_one_past_it_is_not() -> None:
    x = _on_the_boundary(1.0)
    assert x > ATOL64  # past the shortcut (|r| <= atol S), so the full rule decides
    at = np.array([x, 0.0])
    past = np.array([np.nextafter(x, INF), 0.0])
    assert matches_zero(at, scale=1.0) is True
    assert matches_zero(past, scale=1.0) is False
    for e in (at, past):  # the same verdict as comparing zeros with it
        assert matches_zero(e, scale=1.0) is compare(np.zeros_like(e), e, scale=1.0).match


def test_a_value_just_above_the_floor_is_still_zero() -> None:
    # between atol S and the allowance rtol |r| + atol S: zero only because of the relative part
    x = ATOL64 * (1 + 0.5 * RTOL64)
    assert matches_zero(np.array([x]), scale=1.0) is True
    assert compare(np.zeros(1), np.array([x]), scale=1.0).match is True


def test_matches_zero_on_the_float32_floor_boundary() -> None:
    # max|r| against NOISE_FACTOR * max|r32 - r64| + FLOAT32_FLOOR * max|r|, equal exactly here
    err = (1.0 - FLOAT32_FLOOR) / NOISE_FACTOR
    assert NOISE_FACTOR * err + FLOAT32_FLOOR * 1.0 == 1.0
    expected = np.array([1.0, 0.0])
    assert matches_zero(expected, noise=np.array([1.0, err])) is True
    assert matches_zero(expected, noise=np.array([1.0, np.nextafter(err, 0.0)])) is False


@pytest.mark.parametrize("expected, noise, scale, zero", [
    ([NAN, 0.0], None, 0.0, False),  # a NaN is not zero
    ([INF, 0.0], None, 0.0, False),
    ([0.0, 0.0, -INF], None, 5.0, False),
    # a NaN the reference's own float32 run also has: the careful path with the noise floor
    ([NAN, 1e-3], [NAN, 1e-3], 0.0, False),
])
def test_matches_zero_with_non_finite_values(expected, noise, scale, zero) -> None:
    e = np.array(expected)
    n = None if noise is None else np.array(noise)
    assert matches_zero(e, n, scale) is zero
    assert compare(np.zeros_like(e), e, n, scale).match is zero


def test_matches_zero_takes_the_scale_given_on_the_careful_path() -> None:
    # a NaN sends it to `compare`; there the scale still sets the allowance of the finite values
    e = np.array([NAN, 1e-12])
    assert matches_zero(e, scale=1.0) is False  # the NaN
    finite = np.array([1e-12, 0.0])
    assert matches_zero(finite, scale=1.0) is True and matches_zero(finite, scale=0.0) is False


def test_agrees_judges_on_the_array_alone_unless_given_a_scale() -> None:
    e = np.full(4, 1e-3)
    a = e + 5e-10  # within atol * 1 but not within rtol * 1e-3 + atol * 1e-3
    assert agrees(a, e) is False and compare(a, e).match is False
    assert agrees(a, e, scale=1.0) is True and compare(a, e, scale=1.0).match is True


def test_agrees_at_the_allowance_and_one_past_it() -> None:
    # zeros against a reference of x: the allowance is rtol x + atol S, which x sits exactly on
    x = _on_the_boundary(1.0)
    zeros = np.zeros(2)
    at, past = np.array([x, 0.0]), np.array([np.nextafter(x, INF), 0.0])
    assert agrees(zeros, at, scale=1.0) is True and agrees(zeros, past, scale=1.0) is False
    assert [verdicts([(zeros, e, None, 1.0)])[0] for e in (at, past)] == [True, False]
    assert [compare(zeros, e, scale=1.0).match for e in (at, past)] == [True, False]


def _relative_boundary() -> tuple[np.ndarray, np.ndarray, float]:
    """(actual, expected, scale) whose one difference equals its allowance exactly where the reference
    is 1 (so the relative part of the allowance takes part, and no shortcut decides): the allowance
    ``1 * RTOL64 + ATOL64 * scale`` is made a multiple of 1's ulp, so that 1 + it is exact."""
    ulp = 2.0 ** -52
    target = math.ceil((RTOL64 + ATOL64 * 1.5) / ulp) * ulp
    part = target - RTOL64  # exact: the two are within a factor of 2
    scale = part / ATOL64
    for _ in range(64):  # a few ulps either way, until the product rounds onto ``part``
        if ATOL64 * scale == part:
            break
        scale = np.nextafter(scale, INF if ATOL64 * scale < part else -INF)
    assert 1.0 * RTOL64 + ATOL64 * scale == target and (1.0 + target) - 1.0 == target
    return np.array([1.0 + target, 0.5]), np.array([1.0, 0.5]), float(scale)


def test_a_difference_equal_to_a_relative_allowance_agrees() -> None:
    a, e, scale = _relative_boundary()
    assert scale > np.max(np.abs(e))  # the scale given, not max|r|, sets atol's part
    assert agrees(a, e, scale=scale) is compare(a, e, scale=scale).match
    past = a.copy()
    past[0] = np.nextafter(a[0], INF)
    verdict = [agrees(x, e, scale=scale) for x in (a, past)]
    assert verdict == [compare(x, e, scale=scale).match for x in (a, past)]
    assert verdict == [verdicts([(x, e, None, scale)])[0] for x in (a, past)]
    assert verdict == [True, False]


@pytest.mark.parametrize("judge", [agrees, lambda a, e: verdicts([(a, e, None, 0.0)])[0]])
def test_huge_values_raise_no_floating_point_warning(judge) -> None:  # noqa: ANN001
    # 1e308 - (-1e308) overflows: the difference is infinite, a disagreement and no warning (`compare`
    # judges these, on its careful path: the squares overflow too)
    a, e = np.array([1e308, 1.0]), np.array([-1e308, 1.0])
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        assert judge(a, e) is False
        assert judge(e, e.copy()) is True


def test_equal_arrays_have_their_worst_element_first() -> None:
    x = np.arange(6.0).reshape(2, 3)
    m = compare(x, x.copy())
    assert m.max_abs == 0.0 and m.worst_index == [0, 0] and m.tolerance_ratio == 0.0


def test_an_infinite_difference_against_an_infinite_floor_counts_as_at_the_allowance() -> None:
    # a NaN where the reference is finite: an infinite distance; the reference's float32 run overflowed,
    # so the allowance is infinite too: inf / inf counts as 1 (at the allowance), the other element 0
    a, e = np.array([NAN, 1.0]), np.array([1.0, 1.0])
    noise = np.array([INF, 1.0])
    m = compare(a, e, noise=noise)
    assert m.match is False and m.mismatched == 1 and m.tolerance_ratio == 1.0


def test_float32_values_are_judged_as_their_float64_values_at_the_allowance() -> None:
    """Each helper widens its inputs to float64 before applying the rule: the allowance worked out in
    float32 rounds differently, and near it the verdict would flip. Scanned across the allowance of a
    one-ulp float32 difference (and of a float32 value against zero), every verdict equals the one
    on float64 copies, and the scan crosses the boundary."""
    ulp = 2.0 ** -23
    a32, e32 = np.array([1 + ulp, 0.5], np.float32), np.array([1.0, 0.5], np.float32)
    a64, e64 = a32.astype(np.float64), e32.astype(np.float64)
    base = (ulp - RTOL64) / ATOL64  # the scale at which the allowance of the first element is one ulp
    seen = set()
    for i in range(-1500, 1500):
        scale = base * (1 + i * 2e-10)
        verdict = compare(a64, e64, scale=scale).match
        seen.add(verdict)
        assert agrees(a32, e32, scale=scale) is verdict
        assert verdicts([(a32, e32, None, scale)]) == [verdict]
    assert seen == {True, False}
    x = np.array([1.0, 0.0], np.float32)
    base = (1.0 - RTOL64) / ATOL64  # the scale at which 1 is exactly its own allowance
    seen = set()
    for i in range(-1500, 1500):
        scale = base * (1 + i * 2e-10)
        verdict = compare(np.zeros(2), x.astype(np.float64), scale=scale).match
        seen.add(verdict)
        assert matches_zero(x, scale=scale) is verdict
    assert seen == {True, False}


def test_huge_values_under_a_float32_noise_floor() -> None:
    """Squares of 1e200 overflow, so `matches_zero` hands these to `compare`'s careful path, with the
    noise floor and the scale it was given."""
    e = np.array([1e200, 0.0])
    # the reference's float32 run 1e200 away: the floor (8e200) holds 1e200
    assert matches_zero(e, noise=np.zeros(2)) is True
    assert compare(np.zeros(2), e, noise=np.zeros(2)).match is True
    # a float32 run that agrees: the floor is FLOAT32_FLOOR times the scale, the given one when larger
    assert matches_zero(e, noise=e.copy()) is False
    assert matches_zero(e, noise=e.copy(), scale=1e300) is True
