"""Name the kind of a divergence from the two tensors, and write a one-line hint."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
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

KINDS = (SHAPE, GRAPH_BREAK, ZERO_GRAD, SCALE, SIGN, PERMUTED, NAN_INF, PARAM_GRAD, NOT_UPDATED, VALUE, LOSS,
         CRASH, DATA, REPEATED_BACKWARD)


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


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(a - b) <= 1e-4 * scale))


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
    if not np.any(a) and np.any(e):
        return (ZERO_GRAD if is_grad else VALUE), "is all zeros where the reference is not"
    if np.any(e) and np.any(a):
        factor = float(np.sum(a * e) / np.sum(e * e))
        if _close(a, factor * e) and abs(factor - 1) > 1e-6:
            if abs(factor + 1) <= 1e-6:
                return SIGN, "has the right magnitude but the opposite sign"
            return SCALE, f"is the reference times a constant factor {name_factor(factor)}"
    if a.ndim >= 2:
        for perm in itertools.islice(itertools.permutations(range(a.ndim)), 1, 120):
            if tuple(e.shape[p] for p in perm) == a.shape and _close(np.transpose(e, perm), a):
                return PERMUTED, f"is the reference with axes permuted as {perm}"
    if a.size > 1 and _close(np.sort(a, axis=None), np.sort(e, axis=None)):
        return PERMUTED, "holds the reference's values in a different order (a reshape where a transpose " \
                         "was needed?)"
    return VALUE, "differs from the reference"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def display_path(path: str) -> str:
    return path or "(model)"
