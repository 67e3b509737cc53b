"""`Metrics.tolerance_ratio`, the number the report's picture draws: the largest error relative to
what the documented tolerance model allows there, so that 1 is exactly where match ends.

The expected ratios are computed here from the README's tolerance model (float64: 1e-7 |r| +
1e-9 S; float32: 8x the reference's own float32 error + 1e-6 S), not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from differential.compare import compare

RNG = np.random.default_rng(12)


def allowed64(expected: np.ndarray, scale: float = 0.0) -> np.ndarray:
    s = max(float(np.max(np.abs(expected), initial=0.0)), scale)
    return 1e-7 * np.abs(expected) + 1e-9 * s


@pytest.mark.parametrize("error", [0.0, 1e-15, 1e-9, 5e-8, 1e-7, 3e-7, 1e-3, 10.0])
@pytest.mark.parametrize("scale", [0.0, 50.0])
def test_float64_ratio_is_the_worst_error_over_its_allowance(error: float, scale: float) -> None:
    expected = RNG.standard_normal((6, 5))
    expected[0, 0] = 0.0  # an element allowed only the absolute floor
    actual = expected + error * RNG.standard_normal(expected.shape)
    m = compare(actual, expected, scale=scale)
    want = float(np.max(np.abs(actual - expected) / allowed64(expected, scale)))
    assert m.tolerance_ratio == pytest.approx(want, rel=1e-12, abs=0.0)
    assert (m.tolerance_ratio > 1) == (not m.match)


def test_ratio_crosses_one_exactly_where_match_ends() -> None:
    expected = np.array([2.0, -3.0, 0.5])
    allowance = allowed64(expected)
    below = expected + 0.999 * allowance * np.array([0, 1, 0])
    above = expected + 1.001 * allowance * np.array([0, 1, 0])
    assert compare(below, expected).match and compare(below, expected).tolerance_ratio == pytest.approx(0.999)
    assert not compare(above, expected).match and compare(above, expected).tolerance_ratio == pytest.approx(1.001)


def test_a_zero_reference_with_no_scale_allows_nothing() -> None:
    zeros = np.zeros(4)
    assert compare(zeros, zeros).tolerance_ratio == 0.0
    m = compare(np.array([0.0, 1e-30, 0.0, 0.0]), zeros)
    assert not m.match and m.tolerance_ratio > 1e250


def test_float32_ratio_uses_the_reference_noise_floor() -> None:
    expected = RNG.standard_normal((4, 4))
    noise = expected + 1e-7 * RNG.standard_normal(expected.shape)
    actual = expected + 3e-6 * RNG.standard_normal(expected.shape)
    m = compare(actual, expected, noise=noise, scale=2.0)
    allowed = 8 * np.max(np.abs(noise - expected)) + 1e-6 * max(np.max(np.abs(expected)), 2.0)
    assert m.tolerance_ratio == pytest.approx(np.max(np.abs(actual - expected)) / allowed, rel=1e-12)
    assert (m.tolerance_ratio > 1) == (not m.match)


@pytest.mark.parametrize("actual, expected, want", [
    ([np.inf, 1.0], [-np.inf, 1.0], math.inf),  # two infinities that differ
    ([np.nan, 1.0], [2.0, 1.0], math.inf),  # NaN where the reference is finite
    ([1.0, 2.0], [1.0, np.inf], math.inf),  # finite where the reference is infinite
])
def test_non_finite_disagreements_are_infinitely_far(actual: list, expected: list, want: float) -> None:
    m = compare(np.array(actual), np.array(expected))
    assert not m.match and m.tolerance_ratio == want


def test_equal_non_finite_values_leave_the_finite_ratio() -> None:
    expected = np.array([np.nan, np.inf, 1.0, 4.0])
    actual = np.array([np.nan, np.inf, 1.0 + 5e-8, 4.0])
    m = compare(actual, expected)
    want = 5e-8 / (1e-7 * 1.0 + 1e-9 * 4.0)
    assert want < 1 and m.match and m.tolerance_ratio == pytest.approx(want, rel=1e-6)


def test_nothing_to_compare_has_no_ratio() -> None:
    assert compare(None, np.ones(3)).tolerance_ratio is None
    assert compare(np.ones(3), np.ones(4)).tolerance_ratio is None
    assert compare(np.zeros((0, 2)), np.zeros((0, 2))).tolerance_ratio == 0.0
