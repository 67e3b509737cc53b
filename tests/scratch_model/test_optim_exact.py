"""The flat, in-place Adam step gives, to the last bit, what its formulas give written out plainly per
parameter (a new array per operation, in torch's order): working in place and on one flat buffer is a
matter of memory, never of arithmetic. In one block and in many, float64 and float32, with weight
decay, and with parameters that skip a step (no gradient) so that the state is updated through an
index, not a slice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scratch_model import optim
from scratch_model.autograd import Tensor
from scratch_model.optim import Adam

SHAPES = [(4, 3), (7,), (), (2, 2, 2)]


class PlainAdam:
    """Adam per parameter, each formula one numpy expression (torch's order of operations)."""

    def __init__(self, values: list[np.ndarray], lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        self.values = [v.copy() for v in values]
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = [np.zeros_like(v) for v in values]
        self.v = [np.zeros_like(v) for v in values]
        self.t = [0] * len(values)

    def step(self, grads: list[np.ndarray | None]) -> None:
        for i, g in enumerate(grads):
            if g is None:
                continue
            p = self.values[i]
            if self.wd:
                g = g + self.wd * p
            self.t[i] += 1
            self.m[i] = self.m[i] + (1 - self.b1) * (g - self.m[i])
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            step_size = self.lr / (1 - self.b1 ** self.t[i])
            denom = np.sqrt(self.v[i]) / math.sqrt(1 - self.b2 ** self.t[i]) + self.eps
            self.values[i] = p - step_size * self.m[i] / denom


@pytest.mark.parametrize("block", [1 << 14, 5])  # the flat buffer in one block, and in many (across parameters)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_in_place_equals_the_plain_formulas_to_the_bit(dtype: type, weight_decay: float, block: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optim, "_BLOCK", block)
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = [Tensor(v.copy(), requires_grad=True) for v in start]
    kwargs = dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    ours, plain = Adam(params, **kwargs), PlainAdam(start, **kwargs)
    for step in range(6):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        if step in (2, 3):
            grads[1] = None  # skipped: the state moves through an index for the others
        if step == 4:
            grads[0] = grads[3] = None
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.copy()
        given = [None if g is None else g.copy() for g in grads]
        ours.step()
        plain.step(given)
        for i, (p, want) in enumerate(zip(params, plain.values, strict=True)):
            assert p.data.dtype == dtype
            assert np.array_equal(p.data, want), f"parameter {i} after step {step + 1}"
        for p, g, kept in zip(params, grads, given, strict=True):
            if g is not None:
                assert np.array_equal(p.grad, kept)  # the step leaves the gradients it was given alone


def test_a_step_leaves_the_old_parameter_arrays_alone() -> None:
    p = Tensor(np.ones(3), requires_grad=True)
    old = p.data
    p.grad = np.ones(3)
    Adam([p], lr=0.1).step()
    assert np.array_equal(old, np.ones(3)) and not np.array_equal(p.data, old)


def test_a_tensor_listed_twice_is_stepped_once() -> None:
    """A tied weight listed under both of its names (as many parameter walks list it) takes one step."""
    once, twice = Tensor(np.arange(4.0), requires_grad=True), Tensor(np.arange(4.0), requires_grad=True)
    other = Tensor(np.ones(2), requires_grad=True)
    opt_once, opt_twice = Adam([once, other], lr=0.1), Adam([twice, other, twice], lr=0.1)
    for opt, p in ((opt_once, once), (opt_twice, twice)):
        p.grad, other.grad = np.full(4, 0.5), np.ones(2)
        other.data = np.ones(2)
        opt.step()
    assert np.array_equal(once.data, twice.data) and not np.array_equal(once.data, np.arange(4.0))
