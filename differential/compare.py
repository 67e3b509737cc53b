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


def compare_many(pairs: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]]
                 ) -> list[Metrics]:
    """`compare` for many ``(actual, expected, noise, scale)`` pairs; a pair of the very same arrays
    seen before reuses the first result (a report sees one tensor as one module's output and the
    next one's input)."""
    seen: dict[tuple[int, int, int, float], Metrics] = {}
    results = []
    for a, e, n, scale in pairs:
        key = (id(a), id(e), id(n), scale)
        if key not in seen:
            seen[key] = compare(a, e, n, scale)
        results.append(seen[key])
    return results


_FIELDS = tuple(f.name for f in fields(Metrics))
