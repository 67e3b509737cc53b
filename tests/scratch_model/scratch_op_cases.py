"""The op table: every autograd primitive, one line per case, edge shapes included.

A case names its input shapes, our expression and the same expression in torch. Index arrays,
token arrays and constant arrays belong to the case (drawn once from a fixed generator); only
the float inputs are differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scratch_checks import OpCase

from scratch_model import autograd as ag

_fixed = np.random.default_rng(20240611)
CONST_ROW = _fixed.standard_normal(3)  # a numpy constant broadcast against a (2, 3) tensor
BOOL_MASK = _fixed.random((3, 4)) > 0.5
TOKENS = np.array([[0, 2, 2, 4], [4, 2, 0, 0]])  # repeated tokens: their gradients must add
TOKENS_BATCH1 = np.array([[3, 3, 3]])
CAUSAL = np.where(np.tril(np.ones((4, 4), dtype=bool)), 0.0, -np.inf)  # (4, 4): -inf above the diagonal
CE_TARGETS = np.array([4, 0, 0, 2, 4, 1])  # repeated classes, and rows sharing a target


def _const(array: np.ndarray, like: Any) -> Any:
    """The constant in the dtype of ``like``: a float64 array beside a float32 tensor is a
    dtype mix, which our ops reject on purpose."""
    return array.astype(like.dtype) if isinstance(like, ag.Tensor) else torch.from_numpy(array)


def binary(name: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...],
           ours: Callable, theirs: Callable, domain: str = "real") -> OpCase:
    return OpCase(f"{name} {shape_a} {shape_b}", (shape_a, shape_b), ours, theirs, domain)


def reductions(name: str, ours: Callable, theirs: Callable) -> list[OpCase]:
    """``name`` over None, one axis (positive and negative) and tuples of axes, keepdims both
    ways, plus size-1 edge shapes."""
    cases = []
    plans = [((2, 3, 4), axis) for axis in (None, 1, -1, (0, 2), (-1, 0))]
    plans += [((1, 3), 0), ((5,), None), ((2, 1, 3), 1)]
    for shape, axis in plans:
        dims = tuple(range(len(shape))) if axis is None else axis
        for keepdims in (False, True):
            cases.append(OpCase(
                f"{name} {shape} axis={axis} keepdims={keepdims}", (shape,),
                lambda a, axis=axis, keepdims=keepdims: ours(a, axis=axis, keepdims=keepdims),
                lambda a, dims=dims, keepdims=keepdims: theirs(a, dim=dims, keepdim=keepdims)))
    return cases


def _getitem(name: str, shape: tuple[int, ...], index: Any, torch_index: Any = None) -> OpCase:
    torch_index = index if torch_index is None else torch_index
    return OpCase(f"getitem {name} {shape}", (shape,), lambda a: a[index], lambda a: a[torch_index])


ARITHMETIC = [
    binary("add", (3, 4), (3, 4), ag.add, torch.add),
    binary("add", (3, 1), (1, 4), ag.add, torch.add),
    binary("add", (4,), (2, 3, 4), ag.add, torch.add),
    binary("add", (), (2, 3), ag.add, torch.add),
    binary("add", (1,), (2, 3), lambda a, b: a + b, lambda a, b: a + b),
    binary("add", (2, 3, 1), (2, 1, 4), ag.add, torch.add),
    binary("sub", (2, 3, 4), (4,), ag.sub, torch.sub),
    binary("sub", (3, 1), (1, 4), lambda a, b: a - b, lambda a, b: a - b),
    binary("mul", (3, 4), (3, 4), ag.mul, torch.mul),
    binary("mul", (2, 1, 4), (3, 1), ag.mul, torch.mul),
    binary("mul", (2, 3), (), lambda a, b: a * b, lambda a, b: a * b),
    binary("div", (3, 4), (3, 4), ag.div, torch.div, "nonzero"),
    binary("div", (3, 4), (4,), lambda a, b: a / b, lambda a, b: a / b, "nonzero"),
    binary("div", (1, 4), (3, 1), ag.div, torch.div, "nonzero"),
    OpCase("mul one input twice", ((3, 4),), lambda a: a * a, lambda a: a * a),
    OpCase("neg", ((3, 4),), ag.neg, torch.neg),
    OpCase("neg operator", ((2, 1),), lambda a: -a, lambda a: -a),
    # Python and numpy constants on either side of the operator
    OpCase("scalar const", ((2, 3),), lambda a: 2.5 * a - 1.0, lambda a: 2.5 * a - 1.0),
    OpCase("scalar rsub", ((2, 3),), lambda a: 3.0 - a, lambda a: 3.0 - a),
    OpCase("scalar rdiv", ((2, 3),), lambda a: 2.0 / a + a / 4.0, lambda a: 2.0 / a + a / 4.0, "nonzero"),
    OpCase("array const add", ((2, 3),), lambda a: a + _const(CONST_ROW, a), lambda a: a + _const(CONST_ROW, a)),
    OpCase("array const rmul", ((2, 3),), lambda a: _const(CONST_ROW, a) * a,
           lambda a: _const(CONST_ROW, a) * a),
    OpCase("pow scalar 3", ((3, 4),), lambda a: a ** 3, lambda a: a ** 3),
    OpCase("pow scalar 0.5", ((3, 4),), lambda a: ag.pow(a, 0.5), lambda a: a ** 0.5, "positive"),
    OpCase("pow scalar -1.5", ((3, 4),), lambda a: a ** -1.5, lambda a: a ** -1.5, "positive"),
    binary("pow tensor exponent", (3, 4), (3, 4), ag.pow, torch.pow, "positive"),
    binary("pow tensor exponent", (3, 4), (4,), lambda a, b: a ** b, lambda a, b: a ** b, "positive"),
]

UNARY = [
    OpCase("exp", ((3, 4),), ag.exp, torch.exp),
    OpCase("exp method", ((1, 5),), lambda a: a.exp(), torch.exp),
    OpCase("log", ((3, 4),), ag.log, torch.log, "positive"),
    OpCase("sqrt", ((3, 4),), ag.sqrt, torch.sqrt, "positive"),
    OpCase("relu", ((3, 4),), ag.relu, torch.relu, "nonzero"),
    OpCase("relu method", ((2, 1, 3),), lambda a: a.relu(), torch.relu, "nonzero"),
    OpCase("identity", ((3, 4),), ag.identity, torch.clone),
]

MATMUL = [
    binary("matmul", (3, 4), (4, 5), ag.matmul, torch.matmul),
    binary("matmul", (2, 3, 4), (2, 4, 5), ag.matmul, torch.matmul),
    binary("matmul", (2, 3, 3, 4), (2, 3, 4, 2), lambda a, b: a @ b, lambda a, b: a @ b),
    binary("matmul", (2, 1, 3, 4), (5, 4, 2), ag.matmul, torch.matmul),
    binary("matmul", (3, 4), (2, 4, 5), ag.matmul, torch.matmul),
    binary("matmul", (1, 3, 4), (1, 4, 2), ag.matmul, torch.matmul),
    binary("matmul", (1, 1), (1, 1), ag.matmul, torch.matmul),
    # a Linear layer: N-D @ 2-D runs as one product over the flattened leading axes
    binary("matmul", (2, 3, 4), (4, 5), ag.matmul, torch.matmul),
    binary("matmul", (2, 2, 3, 4), (4, 2), lambda a, b: a @ b, lambda a, b: a @ b),
    binary("matmul", (1, 1, 4), (4, 3), ag.matmul, torch.matmul),
    OpCase("linear", ((2, 3, 4), (4, 5), (5,)), ag.linear, lambda x, w, b: x @ w + b),
    OpCase("linear 2-D input", ((3, 4), (4, 2), (2,)), ag.linear, lambda x, w, b: x @ w + b),
    OpCase("linear without bias", ((2, 1, 3, 4), (4, 2)), ag.linear, lambda x, w: x @ w),
    OpCase("linear of a transposed weight", ((2, 3, 4), (5, 4), (5,)), lambda x, w, b: ag.linear(x, w.transpose(), b),
           lambda x, w, b: torch.nn.functional.linear(x, w, b)),
]

REDUCE = (reductions("sum", ag.sum, torch.sum) + reductions("mean", ag.mean, torch.mean)
          + reductions("max", ag.max, torch.amax) + [
              OpCase("sum method", ((2, 3),), lambda a: a.sum(), torch.sum),
              OpCase("mean method", ((2, 3),), lambda a: a.mean(axis=0), lambda a: a.mean(dim=0)),
              # torch.amax shares the gradient of tied maxima equally, as ours does
              OpCase("max with ties", ((2, 3),), lambda a: ag.concatenate([a, a], axis=1).max(axis=1),
                     lambda a: torch.cat([a, a], dim=1).amax(dim=1)),
          ])

MOVEMENT = [
    OpCase("reshape (2, 3, 4)->(6, 4)", ((2, 3, 4),), lambda a: ag.reshape(a, (6, 4)),
           lambda a: a.reshape(6, 4)),
    OpCase("reshape (2, 3, 4)->(4, -1)", ((2, 3, 4),), lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1)),
    OpCase("reshape (1, 6)->(6,)", ((1, 6),), lambda a: a.reshape((6,)), lambda a: a.reshape(6)),
    OpCase("reshape (24,)->(2, 3, 4)", ((24,),), lambda a: a.reshape(2, 3, 4), lambda a: a.reshape(2, 3, 4)),
    OpCase("transpose reverse", ((2, 3, 4),), lambda a: a.transpose(), lambda a: a.permute(2, 1, 0)),
    OpCase("transpose 2-D", ((3, 4),), ag.transpose, lambda a: a.t()),
    OpCase("permute (1, 2, 0)", ((2, 3, 4),), lambda a: ag.transpose(a, (1, 2, 0)),
           lambda a: a.permute(1, 2, 0)),
    OpCase("permute (0, -1, -2)", ((2, 3, 4),), lambda a: ag.transpose(a, (0, -1, -2)),
           lambda a: a.permute(0, -1, -2)),
    OpCase("permute method (0, 2, 1, 3)", ((2, 3, 4, 2),), lambda a: a.permute(0, 2, 1, 3),
           lambda a: a.permute(0, 2, 1, 3)),
    OpCase("permute size-1 (2, 0, 1)", ((1, 3, 1),), lambda a: a.transpose(2, 0, 1),
           lambda a: a.permute(2, 0, 1)),
    OpCase("swapaxes (-1, -2)", ((2, 3, 4),), lambda a: ag.swapaxes(a, -1, -2),
           lambda a: a.transpose(-1, -2)),
    OpCase("swapaxes (0, 2)", ((2, 3, 4),), lambda a: a.swapaxes(0, 2), lambda a: a.transpose(0, 2)),
    _getitem("int", (3, 4), 1),
    _getitem("numpy int", (3, 4), np.int64(2), 2),
    _getitem("negative int and slice", (3, 4), (-1, slice(1, 3))),
    _getitem("step slice", (3, 4), (slice(None), slice(None, None, 2))),
    _getitem("size-1 slice", (3, 4), slice(1, 2)),
    _getitem("ellipsis", (2, 3, 4), (Ellipsis, 1)),
    _getitem("newaxis", (3, 4), (None, 0)),
    OpCase("getitem reversed (3, 4)", ((3, 4),), lambda a: a[::-1], lambda a: torch.flip(a, [0])),
    _getitem("repeated rows", (3, 4), np.array([0, 2, 0, 0]), torch.tensor([0, 2, 0, 0])),
    _getitem("repeated pairs", (3, 4), ([1, 1, 0], [2, 2, 3])),
    _getitem("slice and repeated columns", (3, 4), (slice(None), [3, 3, 1])),
    _getitem("2-D index array", (3, 4), np.array([[0, 1], [1, 1]]), torch.tensor([[0, 1], [1, 1]])),
    _getitem("boolean mask", (3, 4), BOOL_MASK, torch.from_numpy(BOOL_MASK)),
    OpCase("concatenate axis 0", ((2, 3), (4, 3)), lambda a, b: ag.concatenate([a, b], axis=0),
           lambda a, b: torch.cat([a, b], dim=0)),
    OpCase("concatenate three, axis 1", ((2, 3), (2, 1), (2, 2)),
           lambda a, b, c: ag.concatenate([a, b, c], axis=1), lambda a, b, c: torch.cat([a, b, c], dim=1)),
    OpCase("concatenate axis -1", ((2, 1, 3), (2, 1, 2)), lambda a, b: ag.concatenate([a, b], axis=-1),
           lambda a, b: torch.cat([a, b], dim=-1)),
]

NN = [
    *[OpCase(f"softmax axis={axis}", ((2, 3, 4),), lambda a, axis=axis: ag.softmax(a, axis=axis),
             lambda a, axis=axis: torch.softmax(a, dim=axis)) for axis in (-1, 0, 1)],
    *[OpCase(f"log_softmax axis={axis}", ((2, 3, 4),), lambda a, axis=axis: ag.log_softmax(a, axis=axis),
             lambda a, axis=axis: torch.log_softmax(a, dim=axis)) for axis in (-1, 0, 1)],
    OpCase("softmax size-1 axis", ((3, 1),), lambda a: ag.softmax(a, axis=-1), lambda a: torch.softmax(a, -1)),
    # the last axis has its own path (halving max, einsum sums): odd, even and attention-like widths
    *[OpCase(f"softmax last axis of {n}", ((2, 3, 2, n),), lambda a: ag.softmax(a, axis=3),
             lambda a: torch.softmax(a, -1)) for n in (2, 5, 7, 32)],
    # scores beyond +-60 and masked (-inf) scores take the path shifted by each row's maximum
    OpCase("softmax of large scores", ((2, 3, 5),), lambda a: ag.softmax(a * 90.0, axis=-1),
           lambda a: torch.softmax(a * 90.0, -1)),
    OpCase("softmax with masked scores", ((2, 4, 4),), lambda a: ag.softmax(a + CAUSAL.astype(a.dtype), axis=-1),
           lambda a: torch.softmax(a + torch.from_numpy(CAUSAL).to(a.dtype), -1)),
    OpCase("cross_entropy_mean", ((6, 5),), lambda a: ag.cross_entropy_mean(a, CE_TARGETS),
           lambda a: F.cross_entropy(a, torch.from_numpy(CE_TARGETS))),
    OpCase("cross_entropy_mean one row", ((1, 3),), lambda a: ag.cross_entropy_mean(a, CE_TARGETS[:1] % 3),
           lambda a: F.cross_entropy(a, torch.from_numpy(CE_TARGETS[:1] % 3))),
    OpCase("embedding repeated tokens", ((5, 3),), lambda w: ag.embedding(w, TOKENS),
           lambda w: F.embedding(torch.from_numpy(TOKENS), w)),
    OpCase("embedding batch of 1", ((5, 3),), lambda w: ag.embedding(w, TOKENS_BATCH1),
           lambda w: F.embedding(torch.from_numpy(TOKENS_BATCH1), w)),
]

OP_CASES: list[OpCase] = ARITHMETIC + UNARY + MATMUL + REDUCE + MOVEMENT + NN
