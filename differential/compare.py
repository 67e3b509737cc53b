"""Compare one pair of tensors: metrics, and a verdict under the documented tolerance model.

Tolerance model
---------------
float64 runs: an element matches when ``|a - r| <= rtol * |r| + atol * S`` with ``rtol = 1e-7``,
``atol = 1e-9`` and ``S`` the larger of ``max|r|`` and the scale of the computation the tensor
comes from (for gradients, the module's output gradient). So a gradient that is zero in exact
arithmetic and holds only round-off, such as a key-projection bias (softmax ignores a constant
shift of the scores), passes.
Parity in float64 is near machine precision (errors ~1e-14), so these leave six orders of
magnitude of room for round-off and none for a bug.

float32 runs are judged against the reference implementation run in float64 (the oracle), with a
noise floor: the reference's own float32 run shows how much error float32 alone makes on this
tensor. The scratch tensor matches when ``max|a32 - r64| <= NOISE_FACTOR * max|r32 - r64| +
FLOAT32_FLOOR * max|r64|``. A correct float32 implementation differs from the oracle by about as
much as the reference's float32 run does; a bug differs by orders of magnitude more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

RTOL64, ATOL64 = 1e-7, 1e-9
NOISE_FACTOR, FLOAT32_FLOOR = 8.0, 1e-6


@dataclass(slots=True)
class Metrics:
    """How far ``actual`` is from ``expected``; all floats are plain Python numbers (JSON-ready).
    Read-only by convention (not frozen: a report builds a hundred of these, and frozen
    dataclasses are several times slower to create)."""

    match: bool
    shape_actual: list[int]
    shape_expected: list[int]
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    norm_ratio: float | None = None  # |actual| / |expected|
    mismatched: int | None = None
    mismatched_share: float | None = None
    worst_index: list[int] | None = None
    nan_actual: int = 0
    inf_actual: int = 0
    nan_expected: int = 0
    inf_expected: int = 0
    missing: str | None = None  # "actual" or "expected" when one side has no tensor
    # The largest error relative to what the tolerance model allows there: 1 is where match ends
    # (inf for a non-finite disagreement; None when there is nothing to compare).
    tolerance_ratio: float | None = None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in _FIELDS}


def compare(actual: np.ndarray | None, expected: np.ndarray | None,
            noise: np.ndarray | None = None, scale: float = 0.0) -> Metrics:
    """Compare ``actual`` with ``expected``. ``noise`` (optional) is the reference's own float32
    result for the same tensor: its distance from ``expected`` sets the float32 noise floor.
    ``scale`` (optional) is the magnitude of the computation the tensor comes from (for a gradient,
    the module's output gradient): a tensor that is zero in exact arithmetic holds only round-off
    of that size, so the absolute allowance never falls below ``ATOL64 * scale``."""
    if actual is None or expected is None:
        both_missing = actual is None and expected is None
        shape_a = [] if actual is None else list(np.shape(actual))
        shape_e = [] if expected is None else list(np.shape(expected))
        return Metrics(match=both_missing, shape_actual=shape_a, shape_expected=shape_e,
                       missing=None if both_missing else ("actual" if actual is None else "expected"))
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    shape = a.shape
    if shape != e.shape:
        return Metrics(match=False, shape_actual=list(shape), shape_expected=list(e.shape))
    if a.size == 0:
        return Metrics(True, list(shape), list(shape), 0.0, 0.0, 1.0, 1.0, 0, 0.0, None, tolerance_ratio=0.0)
    # Fast path, a dozen passes over the data: every product below is finite exactly when every
    # element is (a huge finite value that overflows a square only sends it to the careful path).
    aa, ee, ae = float(np.vdot(a, a)), float(np.vdot(e, e)), float(np.vdot(a, e))
    if not (math.isfinite(aa) and math.isfinite(ee) and math.isfinite(ae)):
        return _compare_nonfinite(a, e, noise, scale)
    a, e = a.reshape(-1), e.reshape(-1)  # flat (0-d too), so the passes can work in place
    diff = np.subtract(a, e)
    np.abs(diff, out=diff)
    abs_e = np.abs(e)
    scale = max(_peak(abs_e), scale)
    worst_flat = int(diff.argmax())
    max_abs = float(diff[worst_flat])
    if noise is None:
        floor = ATOL64 * scale  # the least any element is allowed: when nothing exceeds it, nothing is bad
        if max_abs == 0.0:  # equal arrays: every difference, and so every ratio of one, is 0
            return _metrics(shape, 0, 0.0, 0.0, 0, aa, ee, ae, _NO_NANS, 0.0)
        allowed = np.multiply(abs_e, RTOL64)
        allowed += floor
        mismatched = 0 if max_abs <= floor else int(np.count_nonzero(diff > allowed))
        # `_ratio(diff, allowed)` in place: every difference is finite here and every allowance at
        # least the smallest normal number, so no quotient is NaN
        if not floor >= _TINY:
            np.maximum(allowed, _TINY, out=allowed)
    else:
        allowed = NOISE_FACTOR * _noise_error(noise, e) + FLOAT32_FLOOR * scale
        mismatched = 0 if max_abs <= allowed else int(np.count_nonzero(diff > allowed))
        ratio = _ratio(max_abs, allowed)
    if abs_e[abs_e.argmin()] < _TINY:  # (a pass that costs less than the one it saves where nothing is that small)
        np.maximum(abs_e, _TINY, out=abs_e)
    # a difference where the reference (or the allowance) is 0: an infinite relative error (ratio).
    # Every divisor is at least the smallest normal number: a quotient can overflow only where a
    # difference exceeds 1, so the floating-point state is set only then (it costs as much as a pass).
    if max_abs > 1.0:
        with np.errstate(over="ignore"):
            if noise is None:
                ratio = _peak(np.divide(diff, allowed, out=allowed))
            max_rel = _peak(np.divide(diff, abs_e, out=abs_e))
    else:
        if noise is None:
            ratio = _peak(np.divide(diff, allowed, out=allowed))
        max_rel = _peak(np.divide(diff, abs_e, out=abs_e))
    return _metrics(shape, mismatched, max_abs, max_rel, worst_flat, aa, ee, ae, _NO_NANS, ratio)


def matches_zero(expected: np.ndarray, noise: np.ndarray | None = None, scale: float = 0.0) -> bool:
    """``compare(np.zeros_like(expected), expected, noise, scale).match`` without the metrics: whether
    ``expected`` is zero up to the tolerance model (round-off of its scale)."""
    e = np.asarray(expected, dtype=np.float64)
    return agrees(np.zeros_like(e), e, noise, scale)


def _ratio(diff: np.ndarray | float, allowed: np.ndarray | float) -> float:
    """max(diff / allowed): an element allowed nothing (a zero reference with no scale) counts as
    allowed the smallest normal number, so any difference there is far above 1 and none is 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        ratios = np.divide(diff, np.maximum(allowed, _TINY))
    ratio = float(np.max(ratios))
    if math.isnan(ratio):  # inf / inf: a difference that overflowed against an allowance that did too
        ratio = float(np.max(np.where(np.isnan(ratios), 1.0, ratios)))
    return ratio


def _peak(x: np.ndarray) -> float:
    """The largest value of a flat array (the first NaN, if any, as max gives): argmax's pass is the
    faster one on small arrays."""
    return float(x[x.argmax()])


def _noise_error(noise: np.ndarray, e: np.ndarray) -> float:
    """max |noise - e|: how far the reference's own float32 run is from the float64 oracle."""
    n = np.nan_to_num(np.asarray(noise, dtype=np.float64)).reshape(e.shape)
    return float(np.abs(n - e).max())


def _metrics(shape: tuple[int, ...], mismatched: int, max_abs: float, max_rel: float, worst_flat: int,
             aa: float, ee: float, ae: float, nans: tuple[int, int, int, int], tolerance_ratio: float) -> Metrics:
    norm_a, norm_e = math.sqrt(aa), math.sqrt(ee)
    cosine = ae / (norm_a * norm_e) if norm_a > 0 and norm_e > 0 else (1.0 if norm_a == norm_e else 0.0)
    ratio = norm_a / norm_e if norm_e > 0 else (1.0 if norm_a == 0 else float("inf"))
    worst = []  # np.unravel_index(worst_flat, shape), C order, without its call's overhead
    for n in reversed(shape):
        worst_flat, i = divmod(worst_flat, n)
        worst.append(i)
    worst.reverse()
    return Metrics(match=mismatched == 0, shape_actual=list(shape), shape_expected=list(shape), max_abs=max_abs,
                   max_rel=max_rel, cosine=cosine, norm_ratio=ratio, mismatched=mismatched,
                   mismatched_share=mismatched / math.prod(shape), worst_index=worst, nan_actual=nans[0],
                   inf_actual=nans[1], nan_expected=nans[2], inf_expected=nans[3], tolerance_ratio=tolerance_ratio)


def _compare_nonfinite(a: np.ndarray, e: np.ndarray, noise: np.ndarray | None, scale: float) -> Metrics:
    """The careful path: a NaN or Inf on either side. Counts them, keeps the arithmetic finite, and
    marks every element whose finiteness differs (or whose non-finite values differ) as bad."""
    nans = (int(np.isnan(a).sum()), int(np.isinf(a).sum()), int(np.isnan(e).sum()), int(np.isinf(e).sum()))
    a_f, e_f = np.nan_to_num(a, posinf=0.0, neginf=0.0), np.nan_to_num(e, posinf=0.0, neginf=0.0)
    abs_e = np.abs(e_f)
    scale = max(float(abs_e.max()), scale)
    with np.errstate(over="ignore"):  # two huge values of opposite signs: an infinite difference, and bad
        diff = np.abs(a_f - e_f)
    if noise is None:
        allowed = RTOL64 * abs_e + ATOL64 * scale
    else:
        allowed = NOISE_FACTOR * _noise_error(noise, e_f) + FLOAT32_FLOOR * scale
    fin_a, fin_e = np.isfinite(a), np.isfinite(e)
    bad = diff > allowed
    bad |= fin_a != fin_e
    bad |= ~fin_a & ~fin_e & ~((a == e) | (np.isnan(a) & np.isnan(e)))
    diff = np.where(fin_a == fin_e, diff, np.inf)
    with np.errstate(over="ignore"):
        rel = diff / np.maximum(abs_e, _TINY)
    worst_flat = int(np.argmax(diff))
    # Two non-finite values that differ (inf vs -inf, inf vs nan) have no finite distance: infinitely far.
    ratio = math.inf if np.any(bad & ~fin_a & ~fin_e) else _ratio(diff, np.broadcast_to(allowed, diff.shape))
    return _metrics(a.shape, int(np.count_nonzero(bad)), float(diff.flat[worst_flat]), float(rel.max()),
                    worst_flat, float(np.vdot(a_f, a_f)), float(np.vdot(e_f, e_f)), float(np.vdot(a_f, e_f)), nans,
                    ratio)


def compare_many(pairs: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]]
                 ) -> list[Metrics]:
    """`compare` for many ``(actual, expected, noise, scale)`` pairs; a pair of the very same arrays
    seen before reuses the first result (a report sees one tensor as one module's output and the
    next one's input).

    Pair by pair on purpose: judging all of a report's tensors in one concatenated pass (segment
    reductions) was measured 1.5-2.5x slower at 4 and 12 layers, because the passes then run over
    buffers too large for the cache, where each tensor alone fits."""
    seen: dict[tuple[int, int, int, float], Metrics] = {}
    results = []
    for a, e, n, scale in pairs:
        key = (id(a), id(e), id(n), scale)
        if key not in seen:
            seen[key] = compare(a, e, n, scale)
        results.append(seen[key])
    return results


def verdicts(pairs: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]]) -> list[bool]:
    """``[compare(a, e, noise, scale).match for ...]`` without the metrics, for checks that need only
    the verdict (the optimizer step's parameters, the gradient-flow table).

    Small float64 pairs of finite values are judged a few at a time (`_CHUNK` values): their values
    laid end to end, the tolerance model applied element by element with each pair's own scale
    (the same operations, in the same order, as `compare`), and each pair's mismatches counted over
    its segment. Many small tensors cost a few numpy calls instead of a dozen each, and the
    temporaries stay small. A large pair is judged alone (`agrees`); anything else (a missing side,
    shapes that differ, an empty tensor, a float32 noise floor, a NaN or Inf) goes to `compare`."""
    out: list[bool | None] = [None] * len(pairs)
    chunk: list[int] = []  # the pairs judged together next
    size = 0
    for i, (a, e, n, _) in enumerate(pairs):
        if a is not None and e is not None and n is None and np.shape(a) == np.shape(e) and 0 < np.size(e) < _ALONE:
            chunk.append(i)
            size += np.size(e)
            if size >= _CHUNK:
                _judge_together(pairs, chunk, out)
                chunk, size = [], 0
        else:
            out[i] = agrees(*pairs[i])
    if chunk:
        _judge_together(pairs, chunk, out)
    return out  # type: ignore[return-value]


def agrees(actual: np.ndarray | None, expected: np.ndarray | None, noise: np.ndarray | None = None,
           scale: float = 0.0) -> bool:
    """``compare(actual, expected, noise, scale).match`` without the metrics: for finite float64 values,
    the few passes the verdict needs (most pairs of a report stop at the first: every difference
    within the scale's round-off). Anything else (a missing side, shapes that differ, an empty
    tensor, a float32 noise floor, a NaN or Inf) goes to `compare`."""
    if actual is None or expected is None or noise is not None:
        return compare(actual, expected, noise, scale).match
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape or a.size == 0:
        return compare(actual, expected, noise, scale).match
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN or Inf goes to `compare`
        diff = np.subtract(a.reshape(-1), e.reshape(-1))
        np.abs(diff, out=diff)
        abs_e = np.abs(e.reshape(-1))
    worst, top = _peak(diff), _peak(abs_e)
    if not (math.isfinite(worst) and math.isfinite(top) and math.isfinite(scale)):
        return compare(actual, expected, noise, scale).match
    floor = ATOL64 * max(top, scale)
    if worst <= floor:
        return True
    allowed = np.multiply(abs_e, RTOL64, out=abs_e)
    allowed += floor
    return not np.any(diff > allowed)


def _judge_together(pairs: list[tuple], chunk: list[int], out: list[bool | None]) -> None:
    """`verdicts` for the pairs at positions ``chunk`` (finite or not, same shapes, not empty, no noise)."""
    sizes = np.fromiter((np.size(pairs[i][1]) for i in chunk), dtype=np.int64, count=len(chunk))
    starts = np.zeros(len(chunk), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    a = np.concatenate([np.ravel(pairs[i][0]) for i in chunk], dtype=np.float64)
    e = np.concatenate([np.ravel(pairs[i][1]) for i in chunk], dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN or Inf makes its segment go to `compare`
        diff = np.subtract(a, e, out=a)
        np.abs(diff, out=diff)
        abs_e = np.abs(e, out=e)
        worst = np.maximum.reduceat(diff, starts)
        scale = np.maximum(np.maximum.reduceat(abs_e, starts), [float(pairs[i][3]) for i in chunk])
        allowed = np.multiply(abs_e, RTOL64, out=abs_e)
        allowed += np.repeat(ATOL64 * scale, sizes)
        bad = np.logical_or.reduceat(diff > allowed, starts)
    # a NaN or Inf (or a NaN scale given, which `compare` ignores): `compare` decides
    finite = np.isfinite(worst) & np.isfinite(scale)
    for k, i in enumerate(chunk):
        out[i] = not bad[k] if finite[k] else compare(*pairs[i]).match


_FIELDS = tuple(f.name for f in fields(Metrics))
_TINY = np.finfo(np.float64).tiny
_NO_NANS = (0, 0, 0, 0)
_CHUNK = 1 << 13  # values `verdicts` judges together: its temporaries stay small (and in the cache)
_ALONE = 1 << 10  # a pair this large is judged alone (`agrees`): laying it end to end with others costs more
