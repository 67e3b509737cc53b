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

from dataclasses import dataclass, fields

import numpy as np

RTOL64, ATOL64 = 1e-7, 1e-9
NOISE_FACTOR, FLOAT32_FLOOR = 8.0, 1e-6


@dataclass(frozen=True)
class Metrics:
    """How far ``actual`` is from ``expected``; all floats are plain Python numbers (JSON-ready)."""

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
    if a.shape != e.shape:
        return Metrics(match=False, shape_actual=list(a.shape), shape_expected=list(e.shape))
    if a.size == 0:
        return Metrics(True, list(a.shape), list(e.shape), 0.0, 0.0, 1.0, 1.0, 0, 0.0, None)
    finite = bool(np.isfinite(a).all() and np.isfinite(e).all())
    nans = (0, 0, 0, 0) if finite else \
        (int(np.isnan(a).sum()), int(np.isinf(a).sum()), int(np.isnan(e).sum()), int(np.isinf(e).sum()))
    if not finite:  # keep the arithmetic below finite; the counts above carry the news
        a_f, e_f = np.nan_to_num(a, posinf=0.0, neginf=0.0), np.nan_to_num(e, posinf=0.0, neginf=0.0)
    else:
        a_f, e_f = a, e
    abs_e = np.abs(e_f)
    scale = max(float(abs_e.max()), scale)
    diff = np.abs(a_f - e_f)
    if noise is None:
        allowed = RTOL64 * abs_e + ATOL64 * scale
    else:
        noise_err = float(np.abs(np.nan_to_num(np.asarray(noise, dtype=np.float64)) - e_f).max())
        allowed = NOISE_FACTOR * noise_err + FLOAT32_FLOOR * scale
    bad = diff > allowed
    if not finite:
        bad |= np.isfinite(a) != np.isfinite(e)
        bad |= ~np.isfinite(a) & ~np.isfinite(e) & ~((a == e) | (np.isnan(a) & np.isnan(e)))
        diff = np.where(np.isfinite(a) == np.isfinite(e), diff, np.inf)
    rel = diff / np.maximum(abs_e, np.finfo(np.float64).tiny)
    norm_a, norm_e = float(np.sqrt(np.vdot(a_f, a_f))), float(np.sqrt(np.vdot(e_f, e_f)))
    cosine = float(np.vdot(a_f, e_f)) / (norm_a * norm_e) if norm_a > 0 and norm_e > 0 else \
        (1.0 if norm_a == norm_e else 0.0)
    ratio = norm_a / norm_e if norm_e > 0 else (1.0 if norm_a == 0 else float("inf"))
    worst_flat = int(np.argmax(diff))
    worst = [int(i) for i in np.unravel_index(worst_flat, a.shape)] if a.ndim else []
    mismatched = int(np.count_nonzero(bad))
    return Metrics(
        match=mismatched == 0,
        shape_actual=list(a.shape), shape_expected=list(e.shape),
        max_abs=float(diff.flat[worst_flat]), max_rel=float(rel.max()),
        cosine=cosine, norm_ratio=ratio,
        mismatched=mismatched, mismatched_share=mismatched / a.size,
        worst_index=worst, nan_actual=nans[0], inf_actual=nans[1], nan_expected=nans[2], inf_expected=nans[3],
    )


_FIELDS = tuple(f.name for f in fields(Metrics))


def compare_many(pairs: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]]
                 ) -> list[Metrics]:
    """`compare` for many ``(actual, expected, noise, scale)`` pairs at once, with the same results.

    A report compares a hundred small tensors; doing the element-wise work on one concatenated
    array instead of one pair at a time makes that a handful of numpy calls instead of thousands.
    Pairs that need special handling (a missing side, a shape mismatch, an empty tensor,
    non-finite values) go through `compare` one by one.
    """
    results: list[Metrics | None] = [None] * len(pairs)
    regular: list[int] = []
    seen: dict[tuple, int] = {}  # the same arrays compared twice: reuse the first result
    repeats: list[tuple[int, int]] = []
    for i, (a, e, n, scale) in enumerate(pairs):
        key = (id(a), id(e), id(n), scale)
        if a is not None and e is not None and key in seen:
            repeats.append((i, seen[key]))
        elif a is None or e is None or np.shape(a) != np.shape(e) or np.size(e) == 0:
            results[i] = compare(*pairs[i])
        else:
            seen[key] = i
            regular.append(i)
    if regular:
        flat_a = np.concatenate([np.asarray(pairs[i][0], dtype=np.float64).ravel() for i in regular])
        flat_e = np.concatenate([np.asarray(pairs[i][1], dtype=np.float64).ravel() for i in regular])
        sizes = np.array([np.size(pairs[i][1]) for i in regular])
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        if not (np.isfinite(flat_a).all() and np.isfinite(flat_e).all()):
            odd = np.add.reduceat((~np.isfinite(flat_a)) | (~np.isfinite(flat_e)), starts) > 0
            for k in np.flatnonzero(odd):
                results[regular[k]] = compare(*pairs[regular[k]])
            keep = np.flatnonzero(~odd)
            mask = np.repeat(~odd, sizes)
            regular = [regular[k] for k in keep]
            flat_a, flat_e, sizes = flat_a[mask], flat_e[mask], sizes[keep]
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1])) if len(sizes) else starts[:0]
        if regular:
            _fill_regular(pairs, regular, flat_a, flat_e, sizes, starts, results)
    for i, first in repeats:
        results[i] = results[first]
    return results  # type: ignore[return-value]


def _fill_regular(pairs, regular, flat_a, flat_e, sizes, starts, results) -> None:
    abs_e = np.abs(flat_e)
    diff = np.abs(flat_a - flat_e)
    seg_scale = np.maximum(np.maximum.reduceat(abs_e, starts), [pairs[i][3] for i in regular])
    rtol = np.empty(len(regular))
    floor = np.empty(len(regular))
    for k, i in enumerate(regular):
        noise = pairs[i][2]
        if noise is None:
            rtol[k], floor[k] = RTOL64, ATOL64 * seg_scale[k]
        else:
            noise_err = float(np.abs(np.nan_to_num(np.asarray(noise, dtype=np.float64)) - pairs[i][1]).max())
            rtol[k], floor[k] = 0.0, NOISE_FACTOR * noise_err + FLOAT32_FLOOR * seg_scale[k]
    allowed = np.repeat(rtol, sizes) * abs_e + np.repeat(floor, sizes)
    bad = np.add.reduceat(diff > allowed, starts)
    rel = diff / np.maximum(abs_e, np.finfo(np.float64).tiny)
    max_rel = np.maximum.reduceat(rel, starts)
    norm_a = np.sqrt(np.add.reduceat(flat_a * flat_a, starts))
    norm_e = np.sqrt(np.add.reduceat(flat_e * flat_e, starts))
    dots = np.add.reduceat(flat_a * flat_e, starts)
    for k, i in enumerate(regular):
        shape = np.shape(pairs[i][1])
        start, size = int(starts[k]), int(sizes[k])
        worst_flat = int(np.argmax(diff[start:start + size]))
        na, ne = float(norm_a[k]), float(norm_e[k])
        cosine = float(dots[k]) / (na * ne) if na > 0 and ne > 0 else (1.0 if na == ne else 0.0)
        ratio = na / ne if ne > 0 else (1.0 if na == 0 else float("inf"))
        mismatched = int(bad[k])
        results[i] = Metrics(
            match=mismatched == 0, shape_actual=list(shape), shape_expected=list(shape),
            max_abs=float(diff[start + worst_flat]), max_rel=float(max_rel[k]), cosine=cosine, norm_ratio=ratio,
            mismatched=mismatched, mismatched_share=mismatched / size,
            worst_index=[int(j) for j in np.unravel_index(worst_flat, shape)] if shape else [])
