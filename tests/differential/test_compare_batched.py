"""The shortcuts around `compare` (`compare_many` with its reuse of repeated pairs, `matches_zero`)
give exactly what `compare` gives pair by pair: the report judges every module with them, so they
must never disagree with the one-pair path."""

from __future__ import annotations

import numpy as np
import pytest

from differential.compare import compare, compare_many, matches_zero


def _cases() -> list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]]:
    rng = np.random.default_rng(7)
    cases = []
    for i in range(120):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=i % 4))
        expected = rng.standard_normal(shape) * 10.0 ** int(rng.integers(-5, 5))
        actual = expected + rng.standard_normal(shape) * 10.0 ** int(rng.integers(-18, 0))
        variant = i % 6
        if variant == 1:
            expected = np.zeros(shape)  # nothing allowed but the scale's round-off
        elif variant == 2:
            actual = expected.copy()
        elif variant == 3:
            actual.flat[0] = np.nan  # the careful path
        elif variant == 4:
            actual = actual.astype(np.float32)
        elif variant == 5:
            actual = np.zeros(shape)
            actual.flat[-1] = 1e-300
        scale = (0.0, 1.0, float("nan"), 1e-3, float("inf"))[i % 5]
        noise = expected + 1e-7 if i % 11 == 0 else None
        cases.append((actual, expected, noise, scale))
    cases += [(None, np.ones(2), None, 0.0), (np.ones(3), np.ones(2), None, 0.0), (np.ones(0), np.ones(0), None, 0.0)]
    return cases + cases[:10]  # repeated pairs reuse a result


def test_compare_many_equals_compare_pair_by_pair() -> None:
    cases = _cases()
    for (a, e, n, scale), got in zip(cases, compare_many(cases), strict=True):
        # exact, NaN included: repr shows every float to the last bit
        assert repr(got.to_dict()) == repr(compare(a, e, n, scale).to_dict())


@pytest.mark.parametrize("expected, noise, scale", [
    (np.zeros((2, 3)), None, 0.0),
    (np.full(4, 1e-12), None, 1.0),  # round-off of the scale
    (np.full(4, 1e-12), None, 0.0),  # its own scale: not zero
    (np.array([0.0, 1e-3]), None, 0.0),
    (np.array([0.0, 1e-9]), np.array([0.0, 2e-9]), 0.0),  # within the float32 noise
    (np.array([0.0, 1e-3]), np.array([0.0, 1e-3]), 0.0),
    (np.array([np.nan, 0.0]), None, 0.0),
    (np.array([np.inf, 0.0]), None, 0.0),
    (np.zeros(0), None, 0.0),
])
def test_matches_zero_equals_compare_with_zeros(expected: np.ndarray, noise: np.ndarray | None, scale: float) -> None:
    assert matches_zero(expected, noise, scale) == compare(np.zeros_like(expected), expected, noise, scale).match
