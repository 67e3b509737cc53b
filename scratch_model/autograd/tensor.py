"""The Tensor, the `op` decorator that links results to their inputs, and the backward engine.

Every primitive is a function decorated with :func:`op`. It returns ``(out_array, backward)``
where ``backward(grad_out)`` gives one gradient array (or ``None``) per tensor argument. The
decorator turns that into a graph node. ``Tensor.backward`` walks the graph once, in reverse
topological order found without recursion, so its cost is linear in the graph size.

As in torch, a backward leaves gradients on leaves only (parameters, inputs), and on the other
tensors that asked for one with :meth:`Tensor.retain_grad`; every other intermediate gradient is
dropped as soon as the nodes before it have taken their share, so a backward holds only the
gradients still on their way.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_grad_enabled = True
_creation_observers: list[Callable[[Tensor], None]] = []


@contextlib.contextmanager
def observe_creation(observer: Callable[[Tensor], None]) -> Iterator[None]:
    """Call ``observer(tensor)`` for every Tensor created while the block runs (diagnostics: where
    a tensor that cut the graph was made)."""
    _creation_observers.append(observer)
    try:
        yield
    finally:
        _creation_observers.remove(observer)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Run ops without recording a graph (results never require grad)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


@dataclass(frozen=True)
class OpRecord:
    """How a node was made: the primitive, its arguments, and their tensor positions."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Tensor:
    """A numpy array with an optional gradient and a link to the op that produced it."""

    __slots__ = ("_data", "grad", "requires_grad", "name", "_parents", "_backward", "_record", "_retain", "_links",
                 "__weakref__")
    __array_priority__ = 1000  # so `ndarray * Tensor` defers to Tensor.__rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None) -> None:
        array = np.asarray(data, dtype=dtype)
        if array.dtype not in FLOAT_DTYPES:
            if dtype is not None or not np.issubdtype(array.dtype, np.number):
                raise TypeError(f"Tensor needs float32 or float64 data, got dtype {array.dtype}")
            array = array.astype(np.float64)
        self._data: np.ndarray | None = array
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable[[np.ndarray], Sequence[np.ndarray | None]] | None = None
        # (name, primitive, args, kwargs) of the op that made it; `op` turns it into an OpRecord
        self._record: tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None
        self._retain = False
        self._links = 0  # references to this tensor from its children's parent tuples and op records
        for observer in _creation_observers:
            observer(self)

    @property
    def data(self) -> np.ndarray:
        """The array. An intermediate array that only the graph still reached may have been released
        during the forward (see `_release_unheld`); reading it recomputes it from the op record."""
        data = self._data
        return data if data is not None else _recompute(self)

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = value

    # --- array-like surface -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def op(self) -> OpRecord | None:
        """The primitive that produced this tensor (None for leaves and untracked results)."""
        return None if self._record is None else OpRecord(*self._record)

    @property
    def parents(self) -> tuple[Tensor, ...]:
        return self._parents

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def retain_grad(self) -> None:
        """Keep this tensor's gradient in ``.grad`` after a backward, as leaves do (the backward
        drops intermediate gradients otherwise). Tools that read the gradient of a module's output
        ask for it with this."""
        self._retain = True

    @property
    def retains_grad(self) -> bool:
        return self._retain and self._backward is not None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return float(self.data.item())

    def detach(self) -> Tensor:
        return Tensor(self.data, dtype=self.data.dtype)

    def astype(self, dtype: Any) -> Tensor:
        """A leaf copy in another float dtype (for casting weights, not inside a graph)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    # --- backward -------------------------------------------------------------------------
    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(x) into ``x.grad`` for every leaf x of the graph (and every tensor
        that called :meth:`retain_grad`); other intermediate gradients are freed on the way.

        As in torch, the graph goes as the backward passes: once a node has handed its gradient on,
        the arrays it saved for that are released, so the memory of a step falls during its
        backward, and a second backward through the same graph raises. ``retain_graph=True`` keeps
        the graph for another backward."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(it has no path to any parameter)")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward() without a gradient needs a scalar, got shape {self.shape}")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"gradient shape {grad.shape} does not match tensor shape {self.shape}")

        # ids of arrays some .grad (or the caller) already holds: a leaf given one of those, or a
        # view, keeps a copy, so an in-place update of its .grad (clipping, scaling) reaches no
        # other gradient and not the caller's array. A backward may hand one array to several inputs.
        held = {id(grad)}
        pending: dict[int, np.ndarray] = {id(self): grad}
        summed: set[int] = set()  # pending sums the engine made itself: a third share is added in place
        pop = pending.pop
        order = topological_order(self)  # popped from the end: children first, each dropped once done
        if not retain_graph:
            _release_unheld()
        while order:
            node = order.pop()
            g = pop(id(node), None)
            if g is not None:
                summed.discard(id(g))  # handed on from here: no longer only the engine's
            backward = node._backward
            if backward is None:  # a leaf
                if g is not None:
                    if node.grad is not None:
                        node.grad = node.grad + g
                    else:
                        node.grad = g.copy() if g.base is not None or id(g) in held else g
                        held.add(id(node.grad))
                continue
            parents = node._parents
            if not retain_graph:
                _link(node, -1)
                node._backward, node._parents, node._record = _freed_backward, (), None
            if g is None:
                continue
            if node._retain:
                node.grad = g if node.grad is None else node.grad + g
                held.add(id(node.grad))
            for parent, pg in zip(parents, backward(g), strict=True):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                before = pending.get(key)
                if before is None:
                    pending[key] = pg
                elif id(before) in summed:
                    before += pg
                else:
                    pending[key] = total = before + pg
                    summed.add(id(total))

    # --- operators (looked up at call time, so a primitive can be swapped by name) ---------
    def __add__(self, other: Any) -> Tensor:
        return _ops().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops().div(other, self)

    def __neg__(self) -> Tensor:
        return _ops().neg(self)

    def __pow__(self, exponent: Any) -> Tensor:
        return _ops().pow(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return _ops().pow(base, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops().matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops().matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops().getitem(self, index)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes: int) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops().transpose(self, axes or None)

    permute = transpose

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return _ops().swapaxes(self, axis1, axis2)

    def exp(self) -> Tensor:
        return _ops().exp(self)

    def log(self) -> Tensor:
        return _ops().log(self)

    def sqrt(self) -> Tensor:
        return _ops().sqrt(self)

    def relu(self) -> Tensor:
        return _ops().relu(self)


def _count_local_references() -> int:
    """What sys.getrefcount reports for an object held by one local variable only (2 on CPython:
    the variable and the call's argument), measured rather than assumed."""
    probe = object()
    return sys.getrefcount(probe)


_LOCAL_REFERENCES = _count_local_references()
_RELEASE_BYTES = 1 << 20  # smaller arrays are not worth the bookkeeping (one sweep per large result)
_candidates: list[weakref.ref] = []  # graph nodes with large arrays, oldest first
_sweeping = False


def _release_unheld() -> None:
    """Drop the array of every large intermediate tensor that nothing but its graph links (its
    children's parent tuples and op records) still reaches.

    A primitive's backward keeps the arrays it needs itself, never its input Tensors, so such an
    array is needed by no backward, and no caller can see it: the sum of a residual add once the
    LayerNorm that read it has made its own, the attention scores before their scaling. Without
    this the graph would hold every array of the forward until the backward reaches its nodes;
    torch keeps only what its backward formulas save. Anything else that holds the Tensor (the
    caller, a hook's record, an op that keeps its input Tensor) adds a reference, and the array
    stays. Runs as large results are made and when a backward starts; reading ``.data`` of a
    released tensor (walking the graph by hand) recomputes it from its op record."""
    global _sweeping
    if _sweeping:
        return
    _sweeping = True
    try:
        kept = []
        for ref in _candidates:
            t = ref()
            if t is None or t._record is None:
                continue  # gone, or its node already freed by a backward
            if sys.getrefcount(t) == _LOCAL_REFERENCES + t._links:
                t._data = None
                continue
            kept.append(ref)
        t = None
        _candidates[:] = kept
    finally:
        _sweeping = False


def _link(node: Tensor, step: int) -> None:
    """Count (step 1) or uncount (step -1) the references ``node``'s parent tuple and op record hold
    to its Tensor arguments."""
    if node._record is None:
        return  # freed by an earlier backward: nothing left to count
    for parent in node._parents:
        parent._links += 2 * step  # the parent tuple and the record's argument tuple
    if node._record[3]:
        for a in node._record[3].values():
            if isinstance(a, Tensor):
                a._links += step


def _recompute(t: Tensor) -> np.ndarray:
    """The array of a tensor released by `_release_unheld`: its op re-run on its arguments (whose
    own arrays are recomputed the same way when released too), without building a graph."""
    record = t._record
    if record is None:
        raise RuntimeError("the array of this tensor was released and its op record is gone")
    with no_grad():
        value = record[1](*record[2], **record[3])._data
    t._data = value
    return value


def _freed_backward(grad: np.ndarray) -> Sequence[np.ndarray | None]:
    raise RuntimeError("backward() through a graph that an earlier backward already freed; pass "
                       "retain_graph=True to the first backward to go through a graph twice")


_autograd_package: Any = None


def _ops() -> Any:
    """The autograd package, whose attributes a fault may swap: read at call time."""
    global _autograd_package
    if _autograd_package is None:
        from scratch_model import autograd

        _autograd_package = autograd
    return _autograd_package


def topological_order(root: Tensor) -> list[Tensor]:
    """Every node that requires grad and reaches ``root``, parents before children.

    An explicit stack instead of recursion: deep graphs never hit the recursion limit, and each
    node is expanded once, so shared subgraphs cost nothing extra.
    """
    order: list[Tensor] = []
    seen = {id(root)}
    # (node, index of the next parent to visit): a node goes into the order once all its parents have
    stack: list[tuple[Tensor, int]] = [(root, 0)]
    push, pop = stack.append, stack.pop
    while stack:
        node, i = pop()
        parents = node._parents
        while i < len(parents):
            parent = parents[i]
            i += 1
            if parent.requires_grad and id(parent) not in seen:
                seen.add(id(parent))
                push((node, i))
                node, parents, i = parent, parent._parents, 0
        order.append(node)
    return order


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """Wrap a constant so it takes part in an op; a Python or numpy scalar takes ``like``'s dtype."""
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype if like is not None else None
    array = np.asarray(value)
    if array.dtype not in FLOAT_DTYPES or (like is not None and array.ndim == 0):
        array = array.astype(dtype or np.float64)
    return Tensor(array)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back down to the input's ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def check_same_dtype(name: str, tensors: Sequence[Tensor]) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        shown = ", ".join(str(t.dtype) for t in tensors)
        raise TypeError(f"{name}: inputs have different dtypes ({shown}); cast one explicitly")


def op(fn: Callable[..., tuple[np.ndarray, Callable[[np.ndarray], Sequence[np.ndarray | None]]]]
       ) -> Callable[..., Tensor]:
    """Make a primitive from ``fn(*tensors_and_args) -> (out_array, backward)``.

    Tensor arguments are the graph parents, in order; ``backward(g)`` returns one gradient
    per Tensor argument. The record of the call lets tools re-run the primitive on perturbed
    inputs (finite differences) and name it in a report.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Tensor:
        out, backward = fn(*args, **kwargs)
        parents = tuple([a for a in args if isinstance(a, Tensor)])
        if _grad_enabled:
            for p in parents:
                if p.requires_grad:
                    return _result(out, parents, backward, (name, wrapper, args, kwargs))
        return _result(out, (), None, None)

    wrapper.primitive = fn  # type: ignore[attr-defined]
    return wrapper


_new_tensor = object.__new__


def _result(out: Any, parents: tuple[Tensor, ...], backward: Any, record: Any) -> Tensor:
    """An op's result: Tensor's constructor without its checks (an op returns a float array of its
    inputs' dtype; a numpy scalar is wrapped), observers told as by the constructor."""
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    if out.dtype not in FLOAT_DTYPES:
        if not np.issubdtype(out.dtype, np.number):
            raise TypeError(f"Tensor needs float32 or float64 data, got dtype {out.dtype}")
        out = out.astype(np.float64)
    t = _new_tensor(Tensor)
    t._data = out
    t.grad = None
    t.requires_grad = backward is not None
    t.name = None
    t._parents = parents
    t._backward = backward
    t._record = record
    t._retain = False
    t._links = 0
    for observer in _creation_observers:
        observer(t)
    if backward is not None:
        _link(t, 1)
        if out.nbytes >= _RELEASE_BYTES:
            _candidates.append(weakref.ref(t))
            _release_unheld()
    return t
