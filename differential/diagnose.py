"""Name the kind of a divergence from the two tensors, and write a one-line hint."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# kinds, as they appear in reports
SHAPE = "shape_mismatch"
GRAPH_BREAK = "graph_break"
ZERO_GRAD = "zero_gradient"
SCALE = "scale_factor"
SIGN = "sign_flip"
PERMUTED = "transposed_or_permuted"
NAN_INF = "nan_inf"
PARAM_GRAD = "param_grad_formula"
NOT_UPDATED = "not_updated"
VALUE = "value_mismatch"
LOSS = "loss_mismatch"
CRASH = "exception"
DATA = "data_mismatch"
REPEATED_BACKWARD = "repeated_backward"
MOSTLY_DETACHED = "mostly_detached"  # a backward carrying only a tiny share of the reference's gradient

KINDS = (SHAPE, GRAPH_BREAK, ZERO_GRAD, SCALE, SIGN, PERMUTED, NAN_INF, PARAM_GRAD, NOT_UPDATED, VALUE, LOSS,
         CRASH, DATA, REPEATED_BACKWARD, MOSTLY_DETACHED)


def name_factor(factor: float) -> str:
    """A readable form of a constant factor: ``0.353553 (= 1/sqrt(8))`` where one fits."""
    shown = f"{factor:.6g}"
    candidates: list[tuple[float, str]] = []
    for k in range(2, 65):
        candidates += [(math.sqrt(k), f"sqrt({k})"), (1 / math.sqrt(k), f"1/sqrt({k})"),
                       (float(k), str(k)), (1 / k, f"1/{k}")]
    for value, text in candidates:
        if abs(factor - value) <= 1e-6 * abs(value):
            return f"{shown} (= {text})"
    return shown


# How close a transformed reference must come to the tensor before a kind names the transform: far
# tighter than any real bug's error, loose enough for float32 round-off.
SHAPE_TOL = 1e-5


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(a - b) <= SHAPE_TOL * scale))


def scale_of(actual: np.ndarray, expected: np.ndarray) -> float | None:
    """The factor f with ``actual == f * expected`` (to within SHAPE_TOL of the rescaled tensor's own
    size), or None when no constant rescaling explains ``actual``."""
    fit = _fit_scale(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rows=False)
    return None if fit is None else float(fit[0][0])


def _fit_scale(a: np.ndarray, e: np.ndarray, rows: bool) -> tuple[np.ndarray, float] | None:
    """Least-squares factors (one, or one per row of the last axis) with ``a ~ f * e``, and the
    worst error left relative to the rescaled tensor's size; None when nothing can be fitted."""
    if a.shape != e.shape or a.size == 0 or not np.any(a) or not np.all(np.isfinite(a)):
        return None
    a2, e2 = (a.reshape(-1, a.shape[-1]), e.reshape(-1, e.shape[-1])) if rows else (a.reshape(1, -1), e.reshape(1, -1))
    ee = np.einsum("ij,ij->i", e2, e2)
    if np.any((ee == 0) & np.any(a2 != 0, axis=1)):
        return None  # a row the reference has at zero cannot be rescaled into anything else
    factors = np.einsum("ij,ij->i", a2, e2) / np.where(ee == 0, 1.0, ee)
    fitted = factors[:, None] * e2
    size = float(np.max(np.abs(fitted), initial=0.0))
    if size == 0:
        return None
    return factors, float(np.max(np.abs(a2 - fitted))) / size


def _explains(fit: tuple[np.ndarray, float] | None) -> bool:
    """A rescaling explains the difference when it fits tightly and moves the tensor by far more
    than what it leaves over (a 1e-4 blend of something else is no rescaling)."""
    if fit is None:
        return False
    factors, residual = fit
    return residual <= SHAPE_TOL and float(np.max(np.abs(factors - 1))) >= 10 * max(residual, 1e-13)


def classify(actual: np.ndarray | None, expected: np.ndarray | None, is_grad: bool) -> tuple[str, str]:
    """(kind, short description) for a tensor that does not match its reference."""
    if actual is None:
        return (GRAPH_BREAK, "is None where the reference has a value") if is_grad else \
            (VALUE, "was never produced")
    if expected is None:
        return VALUE, "has a value where the reference has none"
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return SHAPE, f"has shape {tuple(a.shape)}, the reference {tuple(e.shape)}"
    bad_a, bad_e = int((~np.isfinite(a)).sum()), int((~np.isfinite(e)).sum())
    if bad_a > bad_e:
        return NAN_INF, f"has {bad_a} NaN/Inf values where the reference has {bad_e}"
    if bad_e:
        return VALUE, f"differs from the reference, which itself holds {bad_e} NaN/Inf values"
    if not np.any(a) and np.any(e):
        return (ZERO_GRAD if is_grad else VALUE), "is all zeros where the reference is not"
    fit = _fit_scale(a, e, rows=False)
    if _explains(fit):
        factor = float(fit[0][0])
        if abs(factor + 1) <= 10 * SHAPE_TOL:
            return SIGN, "has the right magnitude but the opposite sign"
        return SCALE, f"is the reference times a constant factor {name_factor(factor)}"
    fit = _fit_scale(a, e, rows=True) if a.ndim >= 2 else None
    if _explains(fit):
        low, high = float(np.min(fit[0])), float(np.max(fit[0]))
        return SCALE, (f"is the reference rescaled row by row along the last axis (factors {low:.7g} to {high:.7g}): "
                       "a normalization computed differently (eps, variance)?")
    norm_a, norm_e = float(np.sqrt(np.vdot(a, a))), float(np.sqrt(np.vdot(e, e)))
    if is_grad and norm_e > 0 and 0 < norm_a < MOSTLY_DETACHED_RATIO * norm_e:
        cosine = float(np.vdot(a, e)) / (norm_a * norm_e)
        return MOSTLY_DETACHED, (f"carries only {norm_a / norm_e:.3g} of the reference's gradient norm (cosine "
                                 f"{cosine:.3g}): most of the result is computed outside the graph (from raw data), "
                                 "so only a small part that stayed connected passes a gradient back")
    if not _close(a, e):
        if a.ndim >= 2:
            for perm in itertools.islice(itertools.permutations(range(a.ndim)), 1, 120):
                if tuple(e.shape[p] for p in perm) == a.shape and _close(np.transpose(e, perm), a):
                    return PERMUTED, f"is the reference with axes permuted as {perm}"
        if a.size > 1 and _close(np.sort(a, axis=None), np.sort(e, axis=None)):
            return PERMUTED, "holds the reference's values in a different order (a reshape where a transpose " \
                             "was needed?)"
    return VALUE, "differs from the reference"


MOSTLY_DETACHED_RATIO = 0.1  # a gradient under a tenth of the reference's norm, not a clean rescaling


@dataclass
class Divergence:
    module: str
    phase: str
    kind: str
    hint: str
    scratch_source: str
    reference_source: str
    tensor: str | None = None
    metrics: dict[str, Any] | None = None
    op: dict[str, str] | None = None  # the primitive whose backward disagrees with finite differences
    port_from: str | None = None  # three-way: where the implementation that agrees with torch does it
    also_in: list[str] = field(default_factory=list)  # other modules where the same code shows the same error
    # the module's own code (its forward, or its function) where ``scratch_source`` points inside it at
    # one line (the call of a child): one root cause seen in several modules is one code, not one line.
    # Not part of the JSON.
    code: str | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["code"]
        return out


def display_path(path: str) -> str:
    return path or "(model)"
