"""The tolerance model and the metrics of `compare`, and `compare_many` agreeing with it."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from differential.compare import ATOL64, FLOAT32_FLOOR, NOISE_FACTOR, RTOL64, compare, compare_many

rng = np.random.default_rng(0)
REF = rng.standard_normal((4, 5))


@pytest.mark.parametrize("name, actual, match", [
    ("identical", REF.copy(), True),
    ("round-off", REF * (1 + 1e-13), True),
    ("just inside rtol", REF + 0.5 * RTOL64 * np.abs(REF), True),
    ("one element off", np.where(np.arange(20).reshape(4, 5) == 7, REF + 1e-3, REF), False),
    ("scaled", REF * 1.001, False),
    ("sign flipped", -REF, False),
    ("nan", np.where(np.arange(20).reshape(4, 5) == 3, np.nan, REF), False),
])
def test_float64_tolerance(name: str, actual: np.ndarray, match: bool) -> None:
    assert compare(actual, REF).match is match, name


def test_zero_in_exact_arithmetic_passes_against_the_computation_scale() -> None:
    roundoff = np.full(8, 3e-18)
    assert not compare(roundoff, -roundoff).match  # on its own scale: a real difference
    assert compare(roundoff, -roundoff, scale=1e-2).match  # against the module's gradient scale: noise
    assert not compare(np.full(8, 1e-6), np.zeros(8), scale=1e-2).match


def test_float32_noise_floor() -> None:
    exact = REF
    torch32 = (REF.astype(np.float32)).astype(np.float64)  # the reference's own float32 error
    scratch32 = (REF * (1 + 2e-7)).astype(np.float32).astype(np.float64)
    assert compare(scratch32, exact, noise=torch32).match
    assert not compare(REF * 1.0001, exact, noise=torch32).match


def test_metrics() -> None:
    m = compare(2 * REF, REF)
    assert math.isclose(m.norm_ratio, 2.0) and math.isclose(m.cosine, 1.0)
    assert m.mismatched == REF.size and m.mismatched_share == 1.0
    worst = np.unravel_index(np.argmax(np.abs(REF)), REF.shape)
    assert m.worst_index == [int(i) for i in worst]
    assert math.isclose(m.max_abs, float(np.abs(REF).max()))
    shape = compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not shape.match and shape.shape_actual == [2, 3] and shape.shape_expected == [3, 2]
    missing = compare(None, REF)
    assert not missing.match and missing.missing == "actual"
    assert compare(None, None).match


def test_compare_many_equals_compare_pair_by_pair() -> None:
    pairs = []
    for k in range(120):
        shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(0, 4))))
        e = rng.standard_normal(shape)
        a = [e.copy(), e + 1e-12, 2 * e, None, np.where(e > 0, np.nan, e), rng.standard_normal(shape + (2,)),
             e + 1e-3][k % 7]
        pairs.append((a, e, e + 1e-7 if k % 3 == 0 else None, float(k % 2)))
    pairs.append((np.zeros((0, 3)), np.zeros((0, 3)), None, 0.0))
    pairs.append(pairs[0])  # the same arrays twice
    for one, many in zip((compare(*p) for p in pairs), compare_many(pairs), strict=True):
        a, b = one.to_dict(), many.to_dict()
        for key in a:
            if isinstance(a[key], float) and not (math.isnan(a[key]) and math.isnan(b[key])):
                assert math.isclose(a[key], b[key], rel_tol=1e-12, abs_tol=1e-300), key
            elif not isinstance(a[key], float):
                assert a[key] == b[key], key


def _documented(actual: np.ndarray, expected: np.ndarray, noise: np.ndarray | None, scale: float) -> dict:
    """The tolerance model as the module docstring states it, written out plainly (no fast paths)."""
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    fin_a, fin_e = np.isfinite(a), np.isfinite(e)
    a0, e0 = np.where(fin_a, a, 0.0), np.where(fin_e, e, 0.0)
    s = max(float(np.max(np.abs(e0))), scale)
    diff = np.abs(a0 - e0)
    if noise is None:
        allowed = RTOL64 * np.abs(e0) + ATOL64 * s
    else:
        allowed = NOISE_FACTOR * float(np.max(np.abs(np.nan_to_num(noise) - e0))) + FLOAT32_FLOOR * s
    same_nonfinite = ~fin_a & ~fin_e & ((a == e) | (np.isnan(a) & np.isnan(e)))
    bad = np.where(fin_a & fin_e, diff > allowed, ~same_nonfinite)
    shown = np.where(fin_a == fin_e, diff, np.inf)
    with np.errstate(over="ignore"):
        rel = shown / np.maximum(np.abs(e0), np.finfo(np.float64).tiny)
    return {"match": not bad.any(), "mismatched": int(bad.sum()), "max_abs": float(shown.max()),
            "max_rel": float(rel.max()),
            "nan_actual": int(np.isnan(a).sum()), "inf_actual": int(np.isinf(a).sum())}


_values = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e-300]))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
       mode=st.sampled_from(["copy", "roundoff", "perturb", "random", "nonfinite"]),
       noisy=st.booleans(), scale=st.sampled_from([0.0, 1e-2, 10.0]))
def test_compare_follows_the_documented_model(data, shape, mode: str, noisy: bool, scale: float) -> None:
    e = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3)))
    if mode == "copy":
        a = e.copy()
    elif mode == "roundoff":
        a = e * (1 + 1e-14)
    elif mode == "perturb":
        a = e + data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1e-12, 1e-8, 1e-3])))
    elif mode == "random":
        a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3)))
    else:
        a = data.draw(hnp.arrays(np.float64, shape, elements=_values))
        e = np.where(data.draw(hnp.arrays(np.bool_, shape)), a, e)  # some non-finite values on both sides
    noise = e.astype(np.float32).astype(np.float64) if noisy else None
    got = compare(a, e, noise, scale)
    want = _documented(a, e, noise, scale)
    assert got.match is want["match"] and got.mismatched == want["mismatched"]
    assert got.nan_actual == want["nan_actual"] and got.inf_actual == want["inf_actual"]
    for key in ("max_abs", "max_rel"):
        assert math.isclose(getattr(got, key), want[key], rel_tol=1e-12, abs_tol=0.0) or \
            getattr(got, key) == want[key], key
