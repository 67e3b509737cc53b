"""`compare`'s fast path (finite inputs) gives, field by field and to the last bit, what the tolerance
model computes written out plainly: its shortcuts (equal arrays, the floating-point state set only
where a quotient can overflow, the worst index without numpy's unravel) change no metric."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from differential.compare import ATOL64, RTOL64, compare

TINY = np.finfo(np.float64).tiny


def _plain(actual: np.ndarray, expected: np.ndarray, scale: float) -> dict:
    """Every metric of a finite float64 pair, one numpy expression each, no shortcut."""
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    s = max(float(np.max(np.abs(e))), scale)
    allowed = RTOL64 * np.abs(e) + ATOL64 * s
    aa, ee, ae = float(np.vdot(a, a)), float(np.vdot(e, e)), float(np.vdot(a, e))
    na, ne = math.sqrt(aa), math.sqrt(ee)
    with np.errstate(over="ignore"):
        rel = diff / np.maximum(np.abs(e), TINY)
        ratio = diff / np.maximum(allowed, TINY)
    bad = int(np.count_nonzero(diff > allowed))
    return {
        "match": bad == 0, "shape_actual": list(a.shape), "shape_expected": list(e.shape),
        "max_abs": float(diff.max()), "max_rel": float(rel.max()),
        "cosine": ae / (na * ne) if na > 0 and ne > 0 else (1.0 if na == ne else 0.0),
        "norm_ratio": na / ne if ne > 0 else (1.0 if na == 0 else math.inf),
        "mismatched": bad, "mismatched_share": bad / a.size,
        "worst_index": [int(i) for i in np.unravel_index(int(np.argmax(diff)), a.shape)],
        "nan_actual": 0, "inf_actual": 0, "nan_expected": 0, "inf_expected": 0, "missing": None,
        "tolerance_ratio": float(ratio.max()),
    }


def _pairs() -> list[tuple[np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(400):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=i % 4))  # 0-d included
        e = rng.standard_normal(shape) * 10.0 ** int(rng.integers(-6, 6))
        kind = i % 8
        if kind == 0:
            a = e.copy()  # equal: every difference 0
        elif kind == 1:
            a = e * (1 + 1e-14)  # round-off
        elif kind == 2:
            a = e + rng.choice([0.5, 1.0, 1.5, 4.0, 10.0]) * rng.standard_normal(shape)  # |diff| around 1
            e.flat[0] = 0.0  # a zero reference: the relative error overflows once the difference exceeds 4
        elif kind == 3:
            e = np.zeros(shape)
            a = np.full(shape, 5e-324)  # subnormal differences against nothing allowed
        elif kind == 4:
            a = np.zeros(shape)  # the actual side all zero
        elif kind == 5:
            a = (e + 1e-9).astype(np.float32)  # a float32 side, compared in float64
        elif kind == 6:
            a = -e
        else:
            a = e.copy()
            a.flat[-1] += 1e-3
        out.append((a, e, (0.0, 1.0, 1e-3, 1e300, -1.0)[i % 5]))
    return out


PAIRS = _pairs()


@pytest.mark.parametrize("kind", range(8))
def test_fast_path_equals_the_plain_formulas_to_the_bit(kind: int) -> None:
    for a, e, scale in PAIRS[kind::8]:
        with warnings.catch_warnings(), np.errstate(all="warn", under="ignore"):
            warnings.simplefilter("error")  # no floating-point warning escapes, wherever the shortcut goes
            got = compare(a, e, scale=scale).to_dict()
        assert repr(got) == repr(_plain(a, e, scale)), (a, e, scale)
