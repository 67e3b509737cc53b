"""The backward engine: accumulation over shared subgraphs, linear-time deep graphs, no_grad,
dtype rules and user errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scratch_checks import OpCase, case_inputs, check_op_against_torch
from scratch_op_cases import OP_CASES

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor, topological_order

# One tensor feeding many ops: every path's gradient must be added, none overwritten.
SHARED_GRAPHS = [
    OpCase("diamond", ((3, 4),), lambda x: (x * 2.0) * x.exp(), lambda x: (x * 2.0) * x.exp()),
    OpCase("one input, five consumers", ((3, 4),), lambda x: x + x * x + x.exp() - x / 3.0 + x.sum(axis=0),
           lambda x: x + x * x + x.exp() - x / 3.0 + x.sum(dim=0)),
    OpCase("shared intermediate", ((3, 4),), lambda x: (lambda h: h * h + h.max(axis=1, keepdims=True))(x.exp()),
           lambda x: (lambda h: h * h + h.amax(dim=1, keepdim=True))(x.exp())),
    OpCase("both matmul operands", ((4, 4),), lambda x: x @ x, lambda x: x @ x),
    OpCase("shared through movement", ((2, 3),), lambda x: x.transpose() @ x + x[0].reshape(3, 1),
           lambda x: x.t() @ x + x[0].reshape(3, 1)),
]


@pytest.mark.parametrize("case", SHARED_GRAPHS, ids=str)
def test_shared_subgraph_gradients_add_up(case: OpCase) -> None:
    check_op_against_torch(case)


def count_backward_calls(root: Tensor) -> Counter:
    """Wrap every node's backward closure so that each call is counted under the node's id."""
    calls: Counter = Counter()
    for node in topological_order(root):
        if node._backward is not None:
            calls[id(node)] = 0

            def counted(g: np.ndarray, inner: Callable = node._backward, key: int = id(node)):
                calls[key] += 1
                return inner(g)

            node._backward = counted
    return calls


def test_deep_chain_backprops_once_per_node() -> None:
    depth, a = 5000, 0.999
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * a + x  # y_n = a * y_{n-1} + x, so dy_n/dx = sum_{k=0..n} a^k
    calls = count_backward_calls(y)
    y.backward(np.ones(2))
    assert len(calls) == 2 * depth
    assert set(calls.values()) == {1}, "some backward closure ran more or less than once"
    np.testing.assert_allclose(x.grad, np.full(2, (1 - a ** (depth + 1)) / (1 - a)), rtol=1e-10)


def test_doubling_ladder_is_linear_not_exponential() -> None:
    """Each level uses the previous one twice: a backward that re-walks shared subgraphs per path
    would make 2**60 calls; a topological walk makes one per node."""
    x = Tensor(np.array(1.5), requires_grad=True)
    y = x
    for _ in range(60):
        y = y * 0.5 + y * 0.5
    calls = count_backward_calls(y)
    y.backward()
    assert len(calls) == 3 * 60
    assert set(calls.values()) == {1}
    np.testing.assert_allclose(x.grad, 1.0, rtol=1e-12)


def test_topological_order_puts_parents_first_once_each() -> None:
    x = Tensor(np.ones(3), requires_grad=True)
    h = x.exp()
    out = (h * h + h).sum()
    order = topological_order(out)
    assert len(order) == len({id(n) for n in order}), "a node appears twice"
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for parent in node.parents:
            assert position[id(parent)] < position[id(node)]
    assert order[0] is x and order[-1] is out


def test_second_backward_accumulates_into_leaves() -> None:
    x_np = np.random.default_rng(1).standard_normal((2, 3))
    x, x_t = Tensor(x_np.copy(), requires_grad=True), torch.tensor(x_np, requires_grad=True)
    for _ in range(2):
        (x * x.exp()).sum().backward()
        (x_t * x_t.exp()).sum().backward()
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=1e-12)


def test_leaf_gradients_are_independent_arrays() -> None:
    """An add hands one array to both inputs and a transpose hands back a view: each leaf must
    still own its gradient, so an in-place update (clipping, scaling) touches only that leaf."""
    rng = np.random.default_rng(2)
    a = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    b = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    upstream = rng.standard_normal((3, 2))
    kept = upstream.copy()
    (a + b.transpose()).backward(upstream)
    assert not np.shares_memory(a.grad, b.grad)
    assert not np.shares_memory(a.grad, upstream) and not np.shares_memory(b.grad, upstream)
    a.grad *= 0.0
    np.testing.assert_array_equal(b.grad, kept.T)
    np.testing.assert_array_equal(upstream, kept)


def test_intermediate_gradients_are_kept_only_when_retained() -> None:
    """Like torch: leaves keep their gradient, an intermediate only after retain_grad(), and a
    retained gradient equals torch's (through a shared use, where two paths add up)."""
    x_np = np.random.default_rng(3).standard_normal((3, 4))
    x, x_t = Tensor(x_np.copy(), requires_grad=True), torch.tensor(x_np, requires_grad=True)
    h, h_t = x.exp(), x_t.exp()
    kept, kept_t = h * 2.0, h_t * 2.0
    kept.retain_grad()
    kept_t.retain_grad()
    dropped = kept + h
    (dropped * kept).sum().backward()
    ((kept_t + h_t) * kept_t).sum().backward()
    assert h.grad is None and dropped.grad is None and not h.retains_grad
    assert kept.retains_grad and x.grad is not None
    np.testing.assert_allclose(kept.grad, kept_t.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=1e-13)
    leaf_before = x.grad.copy()
    kept.grad[...] = 0.0  # a retained gradient is not shared with any leaf's
    np.testing.assert_array_equal(x.grad, leaf_before)


def test_the_graph_is_freed_by_the_backward_unless_retained() -> None:
    """As in torch: a second backward through a freed graph raises, retain_graph=True allows it and
    the leaves accumulate; a freed node no longer holds its inputs."""
    x_np = np.random.default_rng(4).standard_normal((2, 3))
    x, x_t = Tensor(x_np.copy(), requires_grad=True), torch.tensor(x_np, requires_grad=True)
    h = x.exp() * x
    h.sum().backward()
    assert h.parents == () and h.op is None
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        h.sum().backward()
    x.grad = None
    y, y_t = (x.exp() * x).sum(), (x_t.exp() * x_t).sum()
    y.backward(retain_graph=True)
    y.backward()
    y_t.backward(retain_graph=True)
    y_t.backward()
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=1e-13)


def test_large_arrays_only_the_graph_reaches_are_released_and_recomputed_on_demand() -> None:
    """An intermediate array of 1 MB or more that no caller holds is dropped during the forward
    (its op's backward keeps what it needs itself); the gradients still equal torch's, and reading a
    released array by walking the graph recomputes the same values. A held tensor keeps its array."""
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((512, 600))  # 2.4 MB in float64
    x, x_t = Tensor(x_np.copy(), requires_grad=True), torch.tensor(x_np, requires_grad=True)
    held = x * 2.0
    out = ((held + 1.0).exp() * x).sum()  # held + 1: reached through the graph only
    out_t = ((x_t * 2.0 + 1.0).exp() * x_t).sum()
    product = out.parents[0]
    exp_node = product.parents[0]
    plus_node = exp_node.parents[0]
    assert plus_node._data is None, "the sum read only by exp should have been released"
    assert held._data is not None  # a caller holds it
    np.testing.assert_array_equal(plus_node.data, x_np * 2.0 + 1.0)  # recomputed from its record
    del product, exp_node, plus_node
    out.backward()
    out_t.backward()
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=1e-13)


def test_op_checks_run_on_a_graph_with_released_arrays() -> None:
    """The op checks re-run each node's primitive from its record: released arrays are recomputed,
    and every node of a correct graph passes."""
    from scratch_model.autograd.gradcheck import check_node, nodes_between

    x = Tensor(np.random.default_rng(6).standard_normal((512, 300)), requires_grad=True)
    out = (x * 2.0 + 1.0).exp() * x
    nodes = nodes_between(out, {id(x)})
    assert any(n._data is None for n in nodes), "nothing was released: the test would not test it"
    rng = np.random.default_rng(0)
    assert [check_node(n, rng) for n in nodes] == [None] * len(nodes)


def test_constants_and_untracked_inputs_get_no_gradient() -> None:
    x = Tensor(np.ones(3), requires_grad=True)
    c = Tensor(np.full(3, 2.0))
    (x * c).sum().backward()
    assert c.grad is None and not c.requires_grad
    untracked = c * c
    assert not untracked.requires_grad and untracked.parents == () and untracked.op is None


def test_no_grad_builds_no_graph_and_restores_the_switch() -> None:
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with ag.no_grad():
        assert not ag.is_grad_enabled()
        with ag.no_grad():
            pass
        assert not ag.is_grad_enabled(), "leaving a nested no_grad re-enabled the graph"
        y = (x @ x.transpose()).exp().sum(axis=0)[1:] * 2.0
    assert ag.is_grad_enabled()
    assert not y.requires_grad and y.parents == () and y.op is None and y.is_leaf
    with pytest.raises(RuntimeError):
        y.backward()
    with pytest.raises(KeyError), ag.no_grad():
        raise KeyError("boom")
    assert ag.is_grad_enabled(), "an exception inside no_grad left the graph off"
    assert (x * 2.0).requires_grad


MIXED_DTYPE_OPS = {
    "add": ag.add, "sub": ag.sub, "mul": ag.mul, "div": ag.div, "pow": ag.pow, "matmul": ag.matmul,
    "concatenate": lambda a, b: ag.concatenate([a, b]),
    "float64 array constant": lambda a, b: a + b.data,
}


@pytest.mark.parametrize("name", sorted(MIXED_DTYPE_OPS))
@pytest.mark.parametrize("first", [np.float32, np.float64])
def test_mixed_float32_float64_raises_type_error(name: str, first: type) -> None:
    second = np.float64 if first is np.float32 else np.float32
    a = Tensor(np.ones((2, 2), dtype=first), requires_grad=True)
    b = Tensor(np.ones((2, 2), dtype=second), requires_grad=True)
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        MIXED_DTYPE_OPS[name](a, b)


def test_python_scalars_take_the_tensor_dtype() -> None:
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (2.0 * x + 1) / 3.0 - np.float64(0.5)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("data", [[1, 2], np.arange(3), 7])
def test_integer_data_becomes_float64(data: object) -> None:
    assert Tensor(data).dtype == np.float64


@pytest.mark.parametrize(("data", "dtype"), [([1, 2], np.int64), ([True, False], None), (["a"], None),
                                             ([1.0], np.float16)])
def test_non_float_tensor_raises_type_error(data: object, dtype: object) -> None:
    with pytest.raises(TypeError, match="float32 or float64"):
        Tensor(data, dtype=dtype)


def test_backward_errors() -> None:
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match=r"scalar.*\(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(())).backward()
    assert x.grad is None, "a rejected backward left a gradient behind"


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_op_record_reruns_the_primitive(case: OpCase) -> None:
    """A node's record (primitive, arguments) recomputes the node: tools re-run it on perturbed
    inputs, so it must hold exactly what the forward used."""
    arrays, _ = case_inputs(case)
    out = case.ours(*[Tensor(a, requires_grad=True) for a in arrays])
    record = out.op
    assert record is not None, f"{case}: the result has no record"
    tensor_args = [a for a in record.args if isinstance(a, Tensor)]
    assert len(tensor_args) == len(out.parents) and all(
        a is p for a, p in zip(tensor_args, out.parents, strict=True)), "parents are not the tensor arguments"
    with ag.no_grad():
        again = record.fn(*record.args, **record.kwargs)
    np.testing.assert_array_equal(again.data, out.data)


@pytest.mark.parametrize("limit", [0, 1 << 22], ids=["scatter-add", "one-hot product"])
def test_embedding_backward_paths_match_torch(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedding backward is a one-hot product for small tables and np.add.at past the limit:
    both add the gradients of repeated tokens like torch."""
    from scratch_model.autograd import nn as ag_nn

    monkeypatch.setattr(ag_nn, "_ONE_HOT_LIMIT", limit)
    rng = np.random.default_rng(7)
    w_np, tokens = rng.standard_normal((6, 4)), rng.integers(0, 6, size=(3, 5))
    upstream = rng.standard_normal((3, 5, 4))
    w, w_t = Tensor(w_np.copy(), requires_grad=True), torch.tensor(w_np, requires_grad=True)
    ag.embedding(w, tokens).backward(upstream)
    torch.nn.functional.embedding(torch.from_numpy(tokens), w_t).backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(w.grad, w_t.grad.numpy(), rtol=1e-13, atol=1e-15)
