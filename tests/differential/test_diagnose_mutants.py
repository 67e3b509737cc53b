"""`diagnose`: the exact words of every kind, the edges of `name_factor`'s table, and the boundaries of
`_close`, `_fit_scale`, `_explains` and `scale_of`. Written to kill the mutants ``benchmarks/mutation.py``
found surviving in diagnose.py; every expectation is worked out by hand here (the tensors are small
enough to do the least-squares fit on paper, and the float boundaries are exact powers of two)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from differential import diagnose as D
from differential.diagnose import _close, _explains, _fit_scale, classify, name_factor, scale_of

E = np.array([[1.0, 2.0], [3.0, 4.0]])


# --- name_factor ------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor, text", [
    (2.0, "2 (= 2)"),                      # k = 2 comes before sqrt(4)
    (0.5, "0.5 (= 1/2)"),                  # before 2/4-style readings
    (64.0, "64 (= 64)"),                   # the last k of the table
    (1 / 64, "0.015625 (= 1/64)"),
    (8.0, "8 (= 8)"),                      # 8 before sqrt(64)
    (1 / math.sqrt(2), "0.707107 (= 1/sqrt(2))"),
    (1 / math.sqrt(63), "0.125988 (= 1/sqrt(63))"),
    (math.sqrt(3), "1.73205 (= sqrt(3))"),
    (65.0, "65"),                          # past the table
    (1 / 65, "0.0153846"),
    (math.sqrt(65), "8.06226"),
    (-2.0, "-2"),                          # a sign flip is no table entry
    (3 * (1 + 0.5e-6), "3 (= 3)"),         # within 1e-6 relative
    (3 * (1 + 2e-6), "3.00001"),           # outside it
    (1.0, "1"),                            # k starts at 2
    (1234.5678, "1234.57"),
])
def test_name_factor_reads_exactly(factor: float, text: str) -> None:
    assert name_factor(factor) == text


# --- _close -------------------------------------------------------------------------------------------

def test_close_measures_against_the_reference_size() -> None:
    b = np.array([1.0, 0.0])
    assert _close(np.array([1.0, 1e-5]), b)  # exactly SHAPE_TOL * 1.0 away: still close
    assert not _close(np.array([1.0, 2e-5]), b)
    assert not _close(np.array([1.0, 1.0, 5.0]), np.array([1.0, 1.0, 1.0]))  # one far element is enough
    assert not _close(-b, b)  # |a - b|, not |a + b|
    small = np.array([1e-3, -2e-3])
    assert not _close(small + 1e-7, small)  # 1e-7 > 1e-5 * 2e-3: the scale is the reference's own size
    assert _close(small + 1e-8, small)
    zero = np.zeros(3)
    assert _close(zero, zero)
    assert not _close(np.array([1e-200, 0.0, 0.0]), zero)  # the floor is 1e-300, not 1


# --- _explains ----------------------------------------------------------------------------------------

def test_explains_at_its_boundaries() -> None:
    assert _explains(None) is False
    assert _explains((np.array([2.0]), 1e-5)) is True  # residual exactly SHAPE_TOL
    assert _explains((np.array([2.0]), 2e-5)) is False
    res = 2.0 ** -20
    assert _explains((np.array([1 + 10 * res]), res)) is True  # the move exactly 10x the residual
    assert _explains((np.array([1 + 9.5 * res]), res)) is False
    assert _explains((np.array([1 + 10.5 * res]), res)) is True
    assert _explains((np.array([1.0]), 0.0)) is False  # factor 1 is no rescaling, even with no residual
    assert _explains((np.array([1 + 2e-12]), 0.0)) is True  # floor 1e-13: a 2e-12 move is enough
    assert _explains((np.array([1 + 0.5e-12]), 0.0)) is False
    assert _explains((np.array([1.0, 1.0, 0.5]), 0.0)) is True  # the largest move of several factors
    assert _explains((np.array([0.0]), 0.0)) is True
    assert _explains((np.array([3.0]), 0.0)) is True


# --- _fit_scale and scale_of --------------------------------------------------------------------------

def test_fit_scale_refuses_what_cannot_be_rescaled() -> None:
    assert _fit_scale(np.ones((2, 3)), np.ones((3, 2)), rows=False) is None  # shapes
    assert _fit_scale(np.zeros((0, 3)), np.zeros((0, 3)), rows=False) is None  # empty
    assert _fit_scale(np.zeros(3), np.ones(3), rows=False) is None  # nothing to fit
    assert _fit_scale(np.array([np.nan, 1.0]), np.ones(2), rows=False) is None
    assert _fit_scale(np.array([np.inf, 1.0]), np.ones(2), rows=False) is None
    assert _fit_scale(np.array([1.0, 2.0]), np.zeros(2), rows=False) is None  # reference at zero
    assert _fit_scale(np.array([1.0, 0.0]), np.array([0.0, 1.0]), rows=False) is None  # orthogonal: f = 0
    # a row the reference has at zero, the tensor not
    assert _fit_scale(np.array([[2.0, 4.0], [1.0, 0.0]]), np.array([[1.0, 2.0], [0.0, 0.0]]), rows=True) is None


def test_fit_scale_values() -> None:
    factors, residual = _fit_scale(np.array([2.0]), np.array([1.0]), rows=False)  # one element
    assert factors.tolist() == [2.0] and residual == 0.0
    factors, residual = _fit_scale(np.array([1.0, 0.5]), np.array([2.0, 1.0]), rows=False)  # fitted size 1
    assert factors.tolist() == [0.5] and residual == 0.0
    # a = [3, 4], e = [1, 0]: f = 3, fitted [3, 0], residual 4 / 3
    factors, residual = _fit_scale(np.array([3.0, 4.0]), np.array([1.0, 0.0]), rows=False)
    assert factors.tolist() == [3.0] and residual == pytest.approx(4 / 3, rel=1e-15)
    # a = [0.3, 0.4], e = [0.1, 0]: f = 3, fitted [0.3, 0], residual 0.4 / 0.3 (relative to the fitted size)
    factors, residual = _fit_scale(np.array([0.3, 0.4]), np.array([0.1, 0.0]), rows=False)
    assert factors == pytest.approx([3.0], rel=1e-15) and residual == pytest.approx(4 / 3, rel=1e-12)
    # by rows along the last axis: [[2, 4], [3, 3], [0, 0]] against [[1, 2], [1, 1], [0, 0]]
    a = np.array([[2.0, 4.0], [3.0, 3.0], [0.0, 0.0]])
    e = np.array([[1.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    factors, residual = _fit_scale(a, e, rows=True)
    assert factors.tolist() == [2.0, 3.0, 0.0] and residual == 0.0
    # the last axis is the row, whatever the rank: (2, 1, 3) has two rows of three
    a3 = np.array([[[1.0, 2.0, 3.0]], [[-2.0, -4.0, -6.0]]])
    e3 = np.array([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]])
    factors, residual = _fit_scale(a3, e3, rows=True)
    assert factors.tolist() == [1.0, -2.0] and residual == 0.0
    # not by rows: one factor for the whole tensor, (1*2 + 2*4 + 1*3 + 1*3) / (1 + 4 + 1 + 1) = 16 / 7
    factors, _ = _fit_scale(a[:2], e[:2], rows=False)
    assert factors.shape == (1,) and factors[0] == pytest.approx(16 / 7, rel=1e-15)


def test_scale_of() -> None:
    assert scale_of(2 * E, E) == 2.0
    assert scale_of([1.0, 0.5], [2.0, 1.0]) == 0.5
    assert scale_of([2.0], [1.0]) == 2.0
    # least squares over the whole tensor: (1 + 4 + 18 + 32) / (1 + 4 + 9 + 16) = 55 / 30
    assert scale_of([[1.0, 2.0], [6.0, 8.0]], E) == pytest.approx(55 / 30, rel=1e-15)
    # halves with different factors: still one factor, (1*1 + 1*1 + 3*1 + 3*1) / 4 = 2
    assert scale_of([1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0]) == 2.0
    assert scale_of([np.nan, 1.0], [1.0, 1.0]) is None
    assert scale_of(np.zeros(2), np.ones(2)) is None
    assert scale_of(np.ones((2, 3)), np.ones((3, 2))) is None
    # integers and float32 are read as float64: 1/3 of float32(0.1) is no float32 rounding
    got = scale_of(np.array([0.1], dtype=np.float32), np.array([3.0], dtype=np.float32))
    assert got == float(np.float64(np.float32(0.1)) * 3.0 / 9.0)
    assert scale_of(np.array([1, 2]), np.array([2, 4])) == 0.5


# --- classify: the words of every kind ------------------------------------------------------------

def test_missing_sides() -> None:
    assert classify(None, E, is_grad=True) == (D.GRAPH_BREAK, "is None where the reference has a value")
    assert classify(None, E, is_grad=False) == (D.VALUE, "was never produced")
    assert classify(E, None, is_grad=True) == (D.VALUE, "has a value where the reference has none")
    assert classify(E, None, is_grad=False) == (D.VALUE, "has a value where the reference has none")


def test_shape_and_non_finite_words() -> None:
    assert classify(np.ones((2, 3)), np.ones((3, 2)), False) == \
        (D.SHAPE, "has shape (2, 3), the reference (3, 2)")
    with_nan = E.copy()
    with_nan[0, 0] = np.nan
    two_bad = with_nan.copy()
    two_bad[1, 1] = np.inf
    assert classify(two_bad, with_nan, False) == (D.NAN_INF, "has 2 NaN/Inf values where the reference has 1")
    assert classify(with_nan, E, True) == (D.NAN_INF, "has 1 NaN/Inf values where the reference has 0")
    # as many bad values on both sides: the reference's own, not a new NaN
    assert classify(with_nan, with_nan, False) == \
        (D.VALUE, "differs from the reference, which itself holds 1 NaN/Inf values")
    assert classify(E, two_bad, False) == (D.VALUE, "differs from the reference, which itself holds 2 NaN/Inf values")


def test_zeros() -> None:
    words = "is all zeros where the reference is not"
    assert classify(np.zeros((2, 2)), E, True) == (D.ZERO_GRAD, words)
    assert classify(np.zeros((2, 2)), E, False) == (D.VALUE, words)
    # both zero (a mismatch only by dtype, say): nothing is missing, so no zero-gradient kind
    assert classify(np.zeros((2, 2)), np.zeros((2, 2)), True) == (D.VALUE, "differs from the reference")
    # the reference zero and the tensor not: no rescaling, no detachment
    assert classify(E, np.zeros((2, 2)), True) == (D.VALUE, "differs from the reference")


def test_sign_and_constant_scale_words() -> None:
    assert classify(-E, E, False) == (D.SIGN, "has the right magnitude but the opposite sign")
    assert classify(-1.00005 * E, E, True)[0] == D.SIGN  # within 10 * SHAPE_TOL of -1
    assert classify(-1.000105 * E, E, True) == \
        (D.SCALE, "is the reference times a constant factor -1.00011")
    assert classify(-0.999895 * E, E, True)[0] == D.SCALE
    assert classify(3 * E, E, True) == (D.SCALE, "is the reference times a constant factor 3 (= 3)")
    assert classify(E / 64, E, False) == (D.SCALE, "is the reference times a constant factor 0.015625 (= 1/64)")
    # a vector and a scalar-like single element are rescalings too
    assert classify(np.array([2.0]), np.array([1.0]), False) == \
        (D.SCALE, "is the reference times a constant factor 2 (= 2)")


def test_row_scale_words() -> None:
    # rows of a 2-d tensor rescaled by 2, 3 and 0.5: the factor range, low to high
    e = np.array([[1.0, 2.0], [1.0, 1.0], [4.0, -2.0]])
    a = e * np.array([[2.0], [3.0], [0.5]])
    assert classify(a, e, False) == (D.SCALE, "is the reference rescaled row by row along the last axis (factors "
                                              "0.5 to 3): a normalization computed differently (eps, variance)?")
    # a factor with more than 6 digits is written to 7
    b = e * np.array([[1.0], [1.0], [1.2345678]])
    kind, words = classify(b, e, True)
    assert kind == D.SCALE and "(factors 1 to 1.234568)" in words
    # a row at zero in both, the others rescaled: factor 0 for it
    e0 = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    a0 = np.array([[2.0, 4.0], [0.0, 0.0], [3.0, 4.0]])
    kind, words = classify(a0, e0, False)
    assert kind == D.SCALE and "(factors 0 to 2)" in words
    # a row the reference has at zero but the tensor not (if only by 1e-9): no rescaling
    e1 = np.array([[1.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    a1 = np.array([[2.0, 4.0], [3.0, 3.0], [1e-9, 0.0]])
    assert classify(a1, e1, False) == (D.VALUE, "differs from the reference")
    # the last axis, not the first: columns rescaled are no row rescaling
    cols = E * np.array([[2.0, 3.0]])
    assert classify(cols, E, False) == (D.VALUE, "differs from the reference")
    # a 3-d tensor: rows are along the last axis, over every leading index
    e3 = np.arange(1.0, 13.0).reshape(2, 2, 3)
    a3 = e3 * np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    kind, words = classify(a3, e3, False)
    assert kind == D.SCALE and "(factors 1 to 4)" in words


def test_tiny_orthogonal_is_no_rescaling() -> None:
    # f = 0 leaves nothing fitted: not "a constant factor 0"
    assert classify(np.array([1e-7, 0.0]), np.array([0.0, 1.0]), False) == (D.VALUE, "differs from the reference")


def test_mostly_detached_words_and_boundary() -> None:
    e = np.array([3.0, 4.0])  # norm 5
    a = np.array([0.3, 0.0])  # norm 0.3 < 0.5, cosine 0.9 / (0.3 * 5) = 0.6
    assert classify(a, e, True) == (D.MOSTLY_DETACHED, "carries only 0.06 of the reference's gradient norm (cosine "
                                    "0.6): most of the result is computed outside the graph (from raw data), so "
                                    "only a small part that stayed connected passes a gradient back")
    assert classify(np.array([0.5, 0.0]), e, True) == (D.VALUE, "differs from the reference")  # exactly a tenth
    assert classify(np.array([0.0, -0.49]), e, True)[0] == D.MOSTLY_DETACHED
    assert classify(np.array([0.0, -0.51]), e, True)[0] == D.VALUE
    assert classify(np.array([3.0, 0.0]), e, True) == (D.VALUE, "differs from the reference")  # 0.6 of it
    # small references too: the ratio counts, not the size
    small = np.array([3e-3, 4e-3])
    assert classify(np.array([3e-4, 0.0]), small, True)[0] == D.MOSTLY_DETACHED
    big = np.array([3e3, 4e3])
    assert classify(np.array([3e2, 0.0]), big, True)[0] == D.MOSTLY_DETACHED
    assert classify(np.array([3e2, 0.0]), big, False) == (D.VALUE, "differs from the reference")


# --- classify: permutations -----------------------------------------------------------------------

def test_permuted_values() -> None:
    order = "holds the reference's values in a different order (a reshape where a transpose was needed?)"
    assert classify(np.array([2.0, 1.0]), np.array([1.0, 2.0]), False) == (D.PERMUTED, order)
    # values moved across rows, no axis permutation: sorted over the whole tensor
    e = np.array([[1.0, 5.0, 2.0], [7.0, 3.0, 9.0]])
    a = np.array([[7.0, 1.0, 3.0], [9.0, 5.0, 2.0]])
    assert classify(a, e, False) == (D.PERMUTED, order)
    assert classify(np.array([3.0, 1.0]), np.array([1.0, 2.0]), False) == (D.VALUE, "differs from the reference")


def test_axes_permutations() -> None:
    sq = np.arange(1.0, 10.0).reshape(3, 3) ** 2
    assert classify(sq.T.copy(), sq, True) == (D.PERMUTED, "is the reference with axes permuted as (1, 0)")
    t = np.arange(1.0, 28.0).reshape(3, 3, 3) ** 1.5
    for perm in [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        moved = np.transpose(t, perm).copy()
        assert classify(moved, t, False) == (D.PERMUTED, f"is the reference with axes permuted as {perm}")
    # a 6-d tensor: permutations 1 to 119 (in itertools order) are tried by axes; 119 is (0, 5, 4, 3, 2, 1),
    # the last one that keeps axis 0, and 120 is (1, 0, 2, 3, 4, 5), which only the sorted values name
    six = np.arange(1.0, 65.0).reshape((2,) * 6) ** 1.5
    assert classify(np.transpose(six, (0, 5, 4, 3, 2, 1)).copy(), six, False) == \
        (D.PERMUTED, "is the reference with axes permuted as (0, 5, 4, 3, 2, 1)")
    assert classify(np.transpose(six, (1, 0, 2, 3, 4, 5)).copy(), six, False) == \
        (D.PERMUTED, "holds the reference's values in a different order (a reshape where a transpose was needed?)")


def test_close_tensors_are_plain_value_mismatches() -> None:
    e = np.array([[1.0, 2.0], [3.0, 4.0]])
    a = e + np.array([[1e-6, -1e-6], [0.0, 2e-6]])
    assert classify(a, e, False) == (D.VALUE, "differs from the reference")


def test_the_identity_is_never_a_permutation() -> None:
    # _close measures against its second argument's size, so here the reference is close to the tensor
    # (|e - a| <= 1e-5 * (1 + 1e-5)) but not the tensor to the reference: still no "permuted as (0, 1)"
    a = np.array([[1 + 1e-5, 1e-5 + 5e-11]])
    e = np.array([[1.0, 0.0]])
    assert not _close(a, e) and _close(e, a)
    assert classify(a, e, False) == (D.VALUE, "differs from the reference")


# --- edges: empty, 0-d, underflow, inputs that are not float arrays -------------------------------

def test_empty_tensors() -> None:
    assert _close(np.zeros((0, 3)), np.zeros((0, 3)))
    assert classify(np.zeros((0, 3)), np.zeros((0, 3)), False) == (D.VALUE, "differs from the reference")
    assert classify(np.zeros((0, 3)), np.zeros((0, 3)), True) == (D.VALUE, "differs from the reference")


def test_zero_dimensional_tensors() -> None:
    assert classify(np.array(2.0), np.array(1.0), False) == \
        (D.SCALE, "is the reference times a constant factor 2 (= 2)")
    # no rescaling of a reference at zero, and no row to rescale in a 0-d tensor
    assert classify(np.array(1.0), np.array(0.0), False) == (D.VALUE, "differs from the reference")
    assert classify(np.array(1.0), np.array(0.0), True) == (D.VALUE, "differs from the reference")


def test_a_gradient_whose_squares_underflow_is_not_detached() -> None:
    # 1e-200 squared is 0 in float64: its norm reads 0, which is no share of the reference's norm
    assert classify(np.array([1e-200, 0.0]), np.array([0.0, 1.0]), True) == (D.VALUE, "differs from the reference")


def test_a_zero_tensor_against_an_infinite_reference_has_no_scale() -> None:
    assert scale_of(np.zeros(2), [np.inf, 1.0]) is None


def test_any_real_numbers_are_read_as_float64() -> None:
    # Fractions (or Decimals) become floats; left as objects, numpy could not even test them for NaN
    half, one, two = Fraction(1, 2), Fraction(1), Fraction(2)
    words = "is the reference times a constant factor 0.5 (= 1/2)"
    assert classify([half, one], [1.0, 2.0], False) == (D.SCALE, words)
    assert classify([0.5, 1.0], [one, two], False) == (D.SCALE, words)
    assert classify(np.array([half, one], dtype=object), np.array([one, two], dtype=object), True) == (D.SCALE, words)
    assert scale_of([half], [1.0]) == 0.5
    assert scale_of([0.5], [one]) == 0.5
    assert scale_of([Decimal("1.5")], [Decimal("0.5")]) == 3.0


def test_display_path() -> None:
    assert D.display_path("") == "(model)"
    assert D.display_path("blocks.0.attn") == "blocks.0.attn"


def test_divergence_to_dict() -> None:
    d = D.Divergence("blocks.0", "forward", D.SCALE, "twice", "a.py:1", "b.py:2", tensor="out")
    assert d.to_dict() == {"module": "blocks.0", "phase": "forward", "kind": "scale_factor", "hint": "twice",
                           "scratch_source": "a.py:1", "reference_source": "b.py:2", "tensor": "out", "metrics": None,
                           "op": None, "port_from": None, "also_in": []}
