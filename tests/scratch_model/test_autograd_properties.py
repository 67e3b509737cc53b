"""Property tests over random shapes: broadcasting binary ops, batched matmul, reductions over
random axes, random permutations and random indices, against torch or finite differences."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scratch_checks import FD_RTOL, OpCase, assert_close, check_op_against_torch, fd_grad, projected

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor

FAST = settings(max_examples=30, deadline=None)

BINARY = {
    "add": (ag.add, torch.add, "real"),
    "sub": (ag.sub, torch.sub, "real"),
    "mul": (ag.mul, torch.mul, "real"),
    "div": (ag.div, torch.div, "nonzero"),
    "pow": (ag.pow, torch.pow, "positive"),
}
REDUCTIONS = {"sum": (ag.sum, torch.sum), "mean": (ag.mean, torch.mean), "max": (ag.max, torch.amax)}
small_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)


@FAST
@given(name=st.sampled_from(sorted(BINARY)),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4))
def test_binary_op_broadcasts_like_torch(name: str, shapes: hnp.BroadcastableShapes) -> None:
    ours, theirs, domain = BINARY[name]
    a, b = shapes.input_shapes
    check_op_against_torch(OpCase(f"{name} {a} {b}", (a, b), ours, theirs, domain))


@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(signature="(m,n),(n,p)->(m,p)", max_dims=5, max_side=4))
def test_matmul_broadcasts_batch_axes_like_torch(shapes: hnp.BroadcastableShapes) -> None:
    a, b = shapes.input_shapes
    check_op_against_torch(OpCase(f"matmul {a} {b}", (a, b), ag.matmul, torch.matmul))


@st.composite
def shape_and_axes(draw: st.DrawFn) -> tuple[tuple[int, ...], int | tuple[int, ...] | None]:
    """A shape and the axes to reduce: None, one int, or a tuple, any of them negative."""
    shape = draw(small_shapes)
    axes = draw(st.none() | hnp.valid_tuple_axes(len(shape), min_size=1))
    if axes is not None and len(axes) == 1 and draw(st.booleans()):
        return shape, axes[0]
    return shape, axes


@FAST
@given(name=st.sampled_from(sorted(REDUCTIONS)), plan=shape_and_axes(), keepdims=st.booleans())
def test_reduction_over_random_axes_matches_torch(name: str, plan: tuple, keepdims: bool) -> None:
    shape, axis = plan
    ours, theirs = REDUCTIONS[name]
    dims = tuple(range(len(shape))) if axis is None else axis
    check_op_against_torch(OpCase(
        f"{name} {shape} axis={axis} keepdims={keepdims}", (shape,),
        lambda a: ours(a, axis=axis, keepdims=keepdims), lambda a: theirs(a, dim=dims, keepdim=keepdims)))


@st.composite
def shape_and_permutation(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = draw(small_shapes)
    perm = draw(st.permutations(range(len(shape))))
    signs = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    return shape, tuple(p - len(shape) if negative else p for p, negative in zip(perm, signs, strict=True))


@FAST
@given(plan=shape_and_permutation())
def test_transpose_by_random_permutation_matches_torch(plan: tuple) -> None:
    shape, perm = plan
    check_op_against_torch(OpCase(f"transpose {shape} {perm}", (shape,),
                                  lambda a: ag.transpose(a, perm), lambda a: a.permute(*perm)))


@FAST
@given(shape=small_shapes, data=st.data())
def test_softmax_over_random_axis_matches_torch(shape: tuple[int, ...], data: st.DataObject) -> None:
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    for ours, theirs in ((ag.softmax, torch.softmax), (ag.log_softmax, torch.log_softmax)):
        check_op_against_torch(OpCase(f"{ours.__name__} {shape} axis={axis}", (shape,),
                                      lambda a: ours(a, axis=axis), lambda a: theirs(a, dim=axis)))


@FAST
@given(shape=small_shapes, data=st.data())
def test_reshape_to_random_shape_matches_torch(shape: tuple[int, ...], data: st.DataObject) -> None:
    target = tuple(data.draw(st.permutations(shape), label="target"))[::-1] + (1,)
    check_op_against_torch(OpCase(f"reshape {shape}->{target}", (shape,),
                                  lambda a: a.reshape(target), lambda a: a.reshape(target)))


def _check_index_by_finite_differences(shape: tuple[int, ...], index: object) -> None:
    """Torch rejects negative steps, so indexing is checked against finite differences."""
    rng = np.random.default_rng(0)
    array = rng.standard_normal(shape)
    x = Tensor(array, requires_grad=True)
    out = x[index]
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    expected = fd_grad(projected(lambda: x[index], upstream), array)
    assert_close(x.grad, expected, f"getitem {shape} {index!r}: backward of input 0", FD_RTOL)


@FAST
@given(shape=small_shapes, data=st.data())
def test_basic_indexing_gradient(shape: tuple[int, ...], data: st.DataObject) -> None:
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True), label="index")
    _check_index_by_finite_differences(shape, index)


@FAST
@given(shape=small_shapes, data=st.data())
def test_integer_array_indexing_adds_repeated_gradients(shape: tuple[int, ...], data: st.DataObject) -> None:
    index = data.draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(max_dims=2, max_side=6)),
                      label="index")
    _check_index_by_finite_differences(shape, index)
