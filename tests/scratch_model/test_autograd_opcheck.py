"""check_node: a node's backward against central differences of its own forward."""

from __future__ import annotations

import warnings

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.autograd.gradcheck import check_node, count_backward_calls, nodes_between
from scratch_model.autograd.tensor import op


def leaf(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return Tensor(np.random.default_rng(seed).standard_normal(shape) + 3.0, requires_grad=True)


def test_correct_ops_pass_even_with_a_repeated_argument() -> None:
    x = leaf((3, 4))
    out = ag.softmax((x * x).sqrt() @ leaf((4, 2), 1), axis=-1)
    rng = np.random.default_rng(0)
    assert [check_node(n, rng) for n in nodes_between(out, set())] == [None] * 4


def test_a_wrong_backward_is_named() -> None:
    @op
    def half_grad_exp(a):
        out = np.exp(a.data)
        return out, lambda g: (0.5 * g * out,)

    x = leaf((2, 3))
    out = ag.relu(half_grad_exp(x))
    bad = [check_node(n, np.random.default_rng(0)) for n in nodes_between(out, set())]
    assert bad[0] is not None and bad[0].op == "half_grad_exp" and abs(bad[0].relative_error - 0.5) < 1e-4
    assert bad[1] is None


def test_each_backward_runs_once_per_pass() -> None:
    x = leaf((2, 2))
    y = x * x
    z = (y + y * y).sum()
    with count_backward_calls(z) as counts:
        z.backward()
    assert counts and set(counts.values()) == {1}


def _masked_scores(half_backward: bool) -> Tensor:
    """Scores plus a causal mask of -inf above the diagonal, through an op whose backward is right
    (or, with ``half_backward``, half of what it should be)."""
    mask = np.triu(np.full((4, 4), -np.inf), k=1)

    @op
    def add_mask(a):
        factor = 0.5 if half_backward else 1.0
        return a.data + mask, lambda g: (factor * g,)

    return add_mask(leaf((2, 4, 4)))


def test_an_output_with_infinite_values_is_judged_on_its_finite_part() -> None:
    """A masked score is -inf: its difference quotient is NaN, and a sum holding one made every
    comparison false, so the op passed unchecked (with numpy's 'invalid value' warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN made along the way
        assert check_node(_masked_scores(False), np.random.default_rng(0)) is None
        bad = check_node(_masked_scores(True), np.random.default_rng(0))
    assert bad is not None and bad.op == "add_mask" and abs(bad.relative_error - 0.5) < 1e-4
