"""Check recorded op nodes' backward against finite differences of their own forward.

Used to name the primitive whose backward is wrong once a module has been blamed: each node
carries the primitive and the arguments it was called with, so it can be re-run on perturbed
inputs without the model.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from scratch_model.autograd.tensor import Tensor, no_grad


@dataclass(frozen=True)
class OpCheck:
    op: str  # the primitive's name
    function: object  # the primitive itself (for its source location)
    input_index: int  # which tensor argument's gradient disagrees
    expected: float  # directional derivative by central differences
    actual: float  # the same, from the node's backward

    @property
    def relative_error(self) -> float:
        return abs(self.actual - self.expected) / max(abs(self.expected), 1e-300)


def nodes_between(output: Tensor, stop: set[int]) -> list[Tensor]:
    """Op nodes on the paths from ``output`` back to the tensors in ``stop`` (ids), in creation
    order (parents first)."""
    seen: set[int] = set()
    found: list[Tensor] = []
    stack = [output]
    while stack:
        node = stack.pop()
        if id(node) in seen or id(node) in stop or node.op is None:
            continue
        seen.add(id(node))
        found.append(node)
        stack.extend(node.parents)
    order = {id(n): i for i, n in enumerate(reversed(found))}
    return sorted(found, key=lambda n: order[id(n)])


def check_node(node: Tensor, rng: np.random.Generator, eps: float = 1e-6, rtol: float = 1e-5
               ) -> OpCheck | None:
    """The first tensor argument of ``node``'s op whose backward disagrees with central
    differences along a random direction, or None when all agree. Needs float64 data."""
    record = node.op
    if record is None:
        return None
    upstream = rng.standard_normal(node.shape)
    # An output that is infinite (a masked attention score) has no derivative to difference: it is
    # left out on both sides (its upstream is 0, and its values are not summed), so the rest of the
    # output is still judged rather than the whole sum turning into NaN, which nothing exceeds.
    finite = np.isfinite(node.data)
    finite = None if finite.all() else finite
    if finite is not None:
        upstream[~finite] = 0.0
    grads = node._backward(upstream)  # noqa: SLF001 - reading the node's own backward
    # Perturb one argument position at a time: x * x passes the same tensor twice, and each
    # position has its own gradient.
    positions = [i for i, a in enumerate(record.args) if isinstance(a, Tensor)]
    for k, (pos, grad) in enumerate(zip(positions, grads, strict=True)):
        arg = record.args[pos]
        if not arg.requires_grad:
            continue
        direction = rng.standard_normal(arg.shape)
        actual = 0.0 if grad is None else float(np.sum(np.asarray(grad) * direction))

        def value_at(step: float) -> float:
            args = list(record.args)
            args[pos] = Tensor(arg.data + step * direction)
            with no_grad():
                out = record.fn(*args, **record.kwargs).data
            return float(np.sum((out if finite is None else np.where(finite, out, 0.0)) * upstream))

        expected = (value_at(eps) - value_at(-eps)) / (2 * eps)
        scale = max(abs(expected), abs(actual), np.sqrt(np.sum(upstream ** 2)) * 1e-3)
        if abs(actual - expected) > rtol * scale + 1e-7:
            return OpCheck(record.name, record.fn, k, expected, actual)
    return None


@contextlib.contextmanager
def count_backward_calls(root: Tensor) -> Iterator[dict[int, int]]:
    """Count how often each node's backward runs while the block runs (one backward pass should
    run each exactly once); yields {id(node): calls}, filled in as the backward goes.

    Nodes are counted as the backward reaches them, with no walk of the graph beforehand: the root
    is wrapped at the start, and a node's parents when its own backward runs (before it runs, so a
    backward that recurses into them is counted too). An engine reads a node's backward when it
    calls it, after one of the node's children has run, so it always finds the counting wrapper.

    Holds nothing the backward would free: a node is reached through a weak reference, and its
    backward (with the arrays it saved) only through the counting wrapper the node holds, so
    memory falls during a counted backward as it does during any other."""
    counter = _Counter()
    counter.wrap(root)
    root = None  # the generator's frame outlives the yield: no strong reference to the graph
    try:
        yield counter.counts
    finally:
        for ref in counter.wrapped:
            node = ref()
            # a backward that ran has freed its node (the engine swapped the wrapper out): leave it so
            if node is not None and getattr(node._backward, "counts", None) is counter.counts:  # noqa: SLF001
                node._backward = node._backward.original  # noqa: SLF001


class _Counter:
    """The counts of one `count_backward_calls` block, and the nodes it wrapped (weakly). An object
    rather than a closure, whose reference to itself (a wrapper wraps the next nodes) would be a
    cycle: the capture that counts runs with the cyclic collector paused and must leave none."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.wrapped: list[weakref.ref] = []

    def wrap(self, node: Tensor) -> None:
        fn = node._backward  # noqa: SLF001
        if fn is None or getattr(fn, "counts", None) is self.counts:
            return  # a leaf, or counted already
        node._backward = _counted(self, id(node), fn, node._parents)  # noqa: SLF001
        self.wrapped.append(weakref.ref(node))


def _counted(counter: _Counter, key: int, fn: Callable, parents: tuple[Tensor, ...]) -> Callable:
    counts = counter.counts

    def run(g: np.ndarray):
        counts[key] = counts.get(key, 0) + 1
        for parent in parents:  # the nodes this backward hands gradients to: counted from now on
            counter.wrap(parent)
        return fn(g)

    run.counts, run.original = counts, fn  # type: ignore[attr-defined]  # to put the original back
    return run
