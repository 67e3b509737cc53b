"""Counting backward calls (the report's check for an engine that re-walks shared subgraphs) keeps
nothing alive: a counted backward frees the graph as it goes, like any other, and the count still
sees every call."""

from __future__ import annotations

import tracemalloc

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.autograd.gradcheck import count_backward_calls


def test_a_counted_backward_frees_the_graph_as_it_goes() -> None:
    x = Tensor(np.random.default_rng(0).standard_normal(50_000) * 0.01, requires_grad=True)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        y = x
        for _ in range(12):  # each exp keeps its result for its backward: 12 arrays the size of x
            y = ag.exp(y) * 0.1
        loss = y.sum()
        del y
        built = tracemalloc.get_traced_memory()[0] - start
        with count_backward_calls(loss) as counts:
            loss.backward()
            held = tracemalloc.get_traced_memory()[0] - start  # inside the block: nothing restored yet
    finally:
        tracemalloc.stop()
    assert built > 12 * x.data.nbytes
    assert held < 3 * x.data.nbytes, (built, held)  # x.grad and round-off, not the graph
    assert len(counts) == 25 and set(counts.values()) == {1}  # 12 exp, 12 mul and the sum, each once


def test_nodes_a_backward_never_reached_get_their_own_backward_back() -> None:
    x = Tensor(np.ones(3), requires_grad=True)
    y = ag.exp(x)
    root = y.sum()
    own, own_root = y._backward, root._backward
    with count_backward_calls(root) as counts:
        assert root._backward is not own_root  # counted while the block runs
        assert y._backward is own  # reached (and wrapped) only once the root's backward runs
    assert root._backward is own_root and y._backward is own and counts == {}
    with count_backward_calls(root) as counts:
        root._backward(np.ones(()))  # the root's backward runs (without the engine): y is now counted
        assert y._backward is not own
    assert root._backward is own_root and y._backward is own and counts == {id(root): 1}


def test_a_backward_that_recurses_is_counted_at_every_node_it_reaches() -> None:
    """An engine that walks every path (no topological order) runs a shared node's backward once per
    path: the count sees each of them, also below the shared node."""
    x = Tensor(np.ones(3), requires_grad=True)
    shared = ag.exp(x)
    deeper = ag.exp(shared)
    out = (deeper * 2.0 + deeper * 3.0).sum()  # deeper is reached through two paths

    def visit(node: Tensor, g: np.ndarray) -> None:
        if node._backward is not None:
            for parent, pg in zip(node._parents, node._backward(g), strict=True):
                if pg is not None and parent.requires_grad:
                    visit(parent, pg)

    with count_backward_calls(out) as counts:
        visit(out, np.ones(()))
    assert counts[id(deeper)] == 2 and counts[id(shared)] == 2 and counts[id(out)] == 1
    assert max(counts.values()) == 2 and len(counts) == 6  # sum, add, two muls, deeper, shared
