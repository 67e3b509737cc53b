"""`compare` on the edges the tolerance model and the metrics define but the main tests do not reach:
a missing side, empty and zero tensors, vectors shorter than 1, non-finite values on either side,
inputs that are not float64, and `compare_many`'s reuse. Written to kill the mutants
``benchmarks/mutation.py`` found surviving; every expectation is worked out by hand here."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from differential.compare import compare, compare_many

REF = np.random.default_rng(1).standard_normal((4, 5))
INF, NAN = math.inf, math.nan


def test_a_missing_side_keeps_the_shape_of_the_other() -> None:
    no_actual, no_expected, neither = compare(None, REF), compare(REF, None), compare(None, None)
    assert (no_actual.match, no_actual.missing, no_actual.shape_actual, no_actual.shape_expected) == \
        (False, "actual", [], [4, 5])
    assert (no_expected.match, no_expected.missing, no_expected.shape_actual, no_expected.shape_expected) == \
        (False, "expected", [4, 5], [])
    assert (neither.match, neither.missing, neither.shape_actual, neither.shape_expected) == (True, None, [], [])
    assert no_actual.match is False and neither.match is True


def test_a_shape_mismatch_is_a_plain_false() -> None:
    m = compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert m.match is False and m.max_abs is None and m.mismatched is None


def test_empty_tensors_match_with_neutral_metrics() -> None:
    got = compare(np.zeros((0, 3)), np.zeros((0, 3))).to_dict()
    assert got == {"match": True, "shape_actual": [0, 3], "shape_expected": [0, 3], "max_abs": 0.0, "max_rel": 0.0,
                   "cosine": 1.0, "norm_ratio": 1.0, "mismatched": 0, "mismatched_share": 0.0, "worst_index": None,
                   "nan_actual": 0, "inf_actual": 0, "nan_expected": 0, "inf_expected": 0, "missing": None,
                   "tolerance_ratio": 0.0}
    assert got["match"] is True


def test_metrics_of_an_ordinary_mismatch() -> None:
    m = compare(2 * REF, REF)
    assert m.shape_actual == [4, 5] and m.shape_expected == [4, 5]
    assert (m.nan_actual, m.inf_actual, m.nan_expected, m.inf_expected) == (0, 0, 0, 0)


def test_cosine_and_norm_ratio_of_vectors_shorter_than_one() -> None:
    # |a| = 0.5, |e| = 0.25, a.e = 0.3 * 0.2 + 0.4 * 0.15 = 0.12: cosine 0.12 / 0.125, ratio 2
    m = compare(np.array([0.3, 0.4]), np.array([0.2, 0.15]))
    assert math.isclose(m.cosine, 0.96, rel_tol=1e-12) and math.isclose(m.norm_ratio, 2.0, rel_tol=1e-12)


@pytest.mark.parametrize("actual, expected, cosine, ratio, match", [
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 1.0, 1.0, True),  # two zero vectors: the same direction, the same length
    ([0.0, 0.0, 0.0], [1.0, 2.0, 2.0], 0.0, 0.0, False),
    ([1.0, 2.0, 2.0], [0.0, 0.0, 0.0], 0.0, INF, False),
])
def test_cosine_and_norm_ratio_with_a_zero_vector(actual, expected, cosine, ratio, match) -> None:
    m = compare(np.array(actual), np.array(expected))
    assert (m.cosine, m.norm_ratio, m.match) == (cosine, ratio, match)


def test_counts_of_non_finite_values_on_each_side() -> None:
    a = np.array([NAN, INF, 1.0, 1.0, NAN, 1.0, 1.0, 1.0])
    e = np.array([NAN, INF, -INF, INF, NAN, NAN, -INF, INF])
    m = compare(a, e)
    assert (m.nan_actual, m.inf_actual, m.nan_expected, m.inf_expected) == (2, 1, 3, 5)
    assert m.match is False and m.mismatched == 5  # 2, 3, 5, 6, 7; 0, 1 and 4 hold the same value


@pytest.mark.parametrize("actual, max_abs, worst", [
    ([NAN, 1.0, 3.0], 2.0, [2]),  # finite elements differ as usual beside a shared NaN
    ([NAN, 1.5, 1.0], 0.5, [1]),
    ([NAN, NAN, 1.0], INF, [1]),  # a NaN against 1.0: infinitely far
])
def test_metrics_on_the_careful_path(actual, max_abs, worst) -> None:
    m = compare(np.array(actual), np.array([NAN, 1.0, 1.0]))
    assert (m.max_abs, m.worst_index) == (max_abs, worst)


def test_the_float32_floor_on_the_careful_path() -> None:
    # the noise floor beside a shared NaN: 8 * max|r32 - r64| (0 here) + 1e-6 * max|r64| = 2e-6
    e, noise = np.array([NAN, 2.0]), np.array([NAN, 2.0], np.float32)
    assert compare(np.array([NAN, 2.0 + 1.5e-6]), e, noise=noise).match is True
    assert compare(np.array([NAN, 2.0 + 3e-6]), e, noise=noise).match is False


@pytest.mark.parametrize("actual, expected, mismatched", [
    ([INF, 1.0], [INF, 1.0], 0),
    ([-INF, 1.0], [-INF, 1.0], 0),
    ([NAN, 1.0], [NAN, 1.0], 0),
    ([INF, 1.0], [-INF, 1.0], 1),  # both non-finite, not the same value
    ([-INF, 1.0], [INF, 1.0], 1),
    ([NAN, 1.0], [INF, 1.0], 1),
    ([INF, 1.0], [NAN, 1.0], 1),
    ([1.0, 1.0], [NAN, 1.0], 1),  # a NaN on the reference side only
    ([1.0, 1.0], [1.0, INF], 1),
])
def test_non_finite_values_match_only_themselves(actual, expected, mismatched) -> None:
    m = compare(np.array(actual), np.array(expected))
    assert m.mismatched == mismatched and m.match is (mismatched == 0)


def test_a_difference_equal_to_the_allowance_matches() -> None:
    # |a - r| <= rtol |r| + atol S: zeros against zeros (allowance 0) beside a shared NaN
    assert compare(np.array([NAN, 0.0, 0.0]), np.array([NAN, 0.0, 0.0])).match is True
    assert compare(np.array([0.0, 0.0]), np.array([0.0, 0.0])).match is True


@pytest.mark.parametrize("noise", [None, np.zeros(3)])
def test_an_element_at_its_allowance_is_not_counted_beside_one_beyond(noise) -> None:
    # a zero reference and scale 0: the allowance is 0 (rtol |0| + atol 0, or 8 * 0 + 1e-6 * 0),
    # the first element exceeds it and the other two sit exactly on it
    m = compare(np.array([1.0, 0.0, 0.0]), np.zeros(3), noise=noise)
    assert m.match is False and m.mismatched == 1 and m.mismatched_share == 1 / 3


@pytest.mark.parametrize("actual, expected", [
    # a difference where the reference is 0: 10 / the smallest normal float64 overflows to infinity
    ([10.0, 2.0], [0.0, 2.0]),
    ([NAN, 10.0], [NAN, 0.0]),  # the same on the careful path
])
def test_an_infinite_relative_error_raises_no_floating_point_warning(actual, expected) -> None:
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        m = compare(np.array(actual), np.array(expected))
    assert m.max_rel == INF and m.match is False


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_metrics_are_computed_in_float64_whatever_the_input_dtype(dtype) -> None:
    # float16 squares overflow past 65504; float32 sums of a thousand squares round differently
    values = np.array([300.0, -200.0, 250.0], dtype) if dtype == np.float16 else \
        np.random.default_rng(2).standard_normal(1000).astype(dtype)
    exact = values.astype(np.float64)
    for a, e in ((values, exact), (exact, values)):
        m = compare(a, e)
        assert m.match is True and m.max_abs == 0.0
        assert math.isclose(m.cosine, 1.0, rel_tol=1e-12) and math.isclose(m.norm_ratio, 1.0, rel_tol=1e-12)
        assert (m.nan_actual, m.inf_actual, m.nan_expected, m.inf_expected) == (0, 0, 0, 0)


def test_a_float32_reference_run_that_overflowed_bounds_nothing() -> None:
    # noise floor = NOISE_FACTOR * max|r32 - r64| with r32 = inf: infinite, whatever the oracle holds
    noise = np.array([INF], np.float32)
    assert compare(np.array([-1e300]), np.array([3.4e38]), noise=noise).match is True


def test_compare_many_reuses_a_result_only_for_the_same_arrays_noise_and_scale() -> None:
    a, e = REF * 1.0001, REF
    loose = REF + 1e-3  # the reference's float32 run 1e-3 off: allows 8e-3, and |a - e| < 3e-4 here
    assert float(np.max(np.abs(a - e))) < 3e-4
    results = compare_many([(a, e, None, 0.0), (a, e, loose, 0.0), (a, e, None, 0.0), (e, e, None, 0.0)])
    assert [m.match for m in results] == [False, True, False, True]
    roundoff = np.full(8, 3e-18)  # zero in exact arithmetic: noise against a scale of 1e-2, not against 0
    results = compare_many([(roundoff, -roundoff, None, 0.0), (roundoff, -roundoff, None, 1e-2)])
    assert [m.match for m in results] == [False, True]
