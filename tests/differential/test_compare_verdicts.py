"""`verdicts` judges many pairs together (one pass over their values laid end to end): every verdict
must be the one `compare` reaches for that pair alone, on pairs mixed so that a segment boundary, a
pair's own scale or a careful-path case would show if it leaked into a neighbour."""

from __future__ import annotations

import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from differential import compare as compare_module
from differential.compare import ATOL64, RTOL64, agrees, compare, verdicts


def _pairs(seed: int, count: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=i % 4))  # 0-d included
        if i % 17 == 0:
            shape = (int(rng.integers(30, 70)), 40)  # large: judged alone
        e = rng.standard_normal(shape) * 10.0 ** int(rng.integers(-8, 8))
        kind = int(rng.integers(0, 12))
        if kind == 0:
            a = e.copy()
        elif kind == 1:
            a = e * (1 + 1e-14)  # round-off: agrees
        elif kind == 2:
            a = e * (1 + 3 * RTOL64)  # just past the relative allowance where the floor is below it
        elif kind == 3:
            e = np.zeros(shape)
            a = np.full(shape, 1e-12)  # against nothing: only the scale's round-off is allowed
        elif kind == 4:
            a = e.astype(np.float32)  # a float32 side, judged in float64
        elif kind == 5:
            a = e.copy()
            a.flat[-1] = np.nan  # the careful path
        elif kind == 6:
            a, e = e.copy(), e.copy()
            a.flat[0] = e.flat[0] = np.inf  # equal infinities agree (careful path)
        elif kind == 7:
            a = np.ones(shape + (2,))  # shapes differ
        elif kind == 8:
            a = None
        elif kind == 9:
            a, e = np.zeros((0, 3)), np.zeros((0, 3))  # empty
        elif kind == 10:
            a = e + ATOL64 * np.max(np.abs(e), initial=0.0) * 0.5  # inside the absolute floor
        else:
            a = e.copy()
            a.flat[0] += 1e-3 * (1 + abs(e.flat[0]))
        scale = (0.0, 1.0, 1e-3, 1e300, float("nan"), float("inf"), -1.0)[i % 7]
        noise = e + 1e-7 if (i % 13 == 0 and a is not None and np.size(e) > 0) else None
        out.append((a, e, noise, scale))
    return out


@pytest.mark.parametrize("chunk", [1 << 15, 7, 1])  # pairs judged together: all, a few, one by one
@pytest.mark.parametrize("seed", range(4))
def test_verdicts_equal_compare_pair_by_pair(seed: int, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare_module, "_CHUNK", chunk)
    pairs = _pairs(seed, 300)
    expected = [compare(*p).match for p in pairs]
    with warnings.catch_warnings(), np.errstate(all="warn", under="ignore"):
        warnings.simplefilter("error")  # no floating-point warning escapes from the pairs judged together
        assert verdicts(pairs) == expected
    assert 0 < sum(expected) < len(expected)  # both verdicts are there to get wrong


@pytest.mark.parametrize("seed", range(4))
def test_agrees_equals_compare(seed: int) -> None:
    pairs = _pairs(seed, 300)
    expected = [compare(*p).match for p in pairs]
    with warnings.catch_warnings(), np.errstate(all="warn", under="ignore"):
        warnings.simplefilter("error")
        assert [agrees(*p) for p in pairs] == expected
    assert 0 < sum(expected) < len(expected)


def test_a_pairs_scale_stays_its_own() -> None:
    """The same small error passes beside a large-scale pair's allowance only if its own allows it."""
    big = (np.array([1e6, 2e6]), np.array([1e6, 2e6]), None, 0.0)
    small = (np.array([1e-6]), np.array([0.0]), None, 0.0)  # allowed 0: a mismatch
    assert verdicts([big, small, big]) == [True, False, True]
    assert verdicts([small]) == [False]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), count=st.integers(1, 6))
def test_verdicts_property(data: st.DataObject, count: int) -> None:
    values = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, 1e-300, np.nan, np.inf, -np.inf]))
    pairs = []
    for _ in range(count):
        shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))
        e = data.draw(hnp.arrays(np.float64, shape, elements=values))
        delta = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1e-15, 1e-9, 1e-3])))
        with np.errstate(invalid="ignore"):
            a = e + delta * np.abs(e) + delta
        pairs.append((a, e, None, data.draw(st.sampled_from([0.0, 1e-2, 10.0]))))
    assert verdicts(pairs) == [compare(*p).match for p in pairs]


def test_only_what_cannot_be_judged_together_goes_to_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finite float64 pairs of one shape (one value included, large ones too) never reach `compare`;
    a NaN, a noise floor, a missing side or differing shapes reach it once each."""
    called: list[int] = []
    real = compare_module.compare

    def counting(a, e, noise=None, scale=0.0):
        called.append(1)
        return real(a, e, noise, scale)

    monkeypatch.setattr(compare_module, "compare", counting)
    rng = np.random.default_rng(2)
    plain = [(rng.standard_normal(s), rng.standard_normal(s), None, 0.0) for s in [(3, 2), (1,), (), (5,), (40, 40)]]
    assert verdicts(plain) == [False] * 5 and called == []
    big = rng.standard_normal((40, 40))
    assert verdicts([(big * (1 + 1e-15), big, None, 0.0)]) == [True] and called == []
    others = [(np.array([np.nan]), np.zeros(1), None, 0.0), (np.ones(2), np.ones(2), np.ones(2), 0.0),
              (None, np.ones(2), None, 0.0), (np.ones(3), np.ones(2), None, 0.0)]
    assert verdicts(plain[:1] + others) == [False, False, True, False, False] and len(called) == 4
