"""`classify`: each kind of divergence is recognised from the two tensors alone."""

from __future__ import annotations

import numpy as np
import pytest

from differential import diagnose
from differential.diagnose import classify, name_factor

REF = np.random.default_rng(1).standard_normal((3, 4, 5))


@pytest.mark.parametrize("actual, is_grad, kind, words", [
    (None, True, diagnose.GRAPH_BREAK, "None"),
    (REF[..., :4], False, diagnose.SHAPE, "(3, 4, 4)"),
    (np.where(REF > 1, np.nan, REF), False, diagnose.NAN_INF, "NaN/Inf"),
    (np.zeros_like(REF), True, diagnose.ZERO_GRAD, "zeros"),
    (-REF, True, diagnose.SIGN, "opposite sign"),
    (REF / np.sqrt(8), False, diagnose.SCALE, "1/sqrt(8)"),
    (np.ascontiguousarray(np.swapaxes(REF, 1, 2)).reshape(3, 4, 5), False, diagnose.PERMUTED, "order"),
    (REF + 0.3, False, diagnose.VALUE, "differs"),
])
def test_kinds(actual: np.ndarray | None, is_grad: bool, kind: str, words: str) -> None:
    got_kind, got_words = classify(actual, REF, is_grad)
    assert (got_kind, words in got_words) == (kind, True), got_words


def test_axes_permutation_is_named() -> None:
    square = np.random.default_rng(2).standard_normal((2, 4, 4))
    kind, words = classify(np.swapaxes(square, 1, 2), square, is_grad=False)
    assert kind == diagnose.PERMUTED and "(0, 2, 1)" in words


@pytest.mark.parametrize("factor, text", [(0.5, "1/2"), (2.0, "2"), (np.sqrt(32), "sqrt(32)"), (0.123, "0.123")])
def test_name_factor(factor: float, text: str) -> None:
    assert text in name_factor(factor)
