"""coursegrad's autograd: a `Tensor` holds ``data`` (a numpy array) and ``grad`` (same shape); every
op makes its output and a ``_backward`` closure that adds the output's gradient, times the local
derivative, into its inputs' ``grad``. `Tensor.backward` sorts the graph with a recursive
depth-first search, as courses teach it, and runs each closure once in reverse order.

Arrays keep the dtype they were made in (float64 or float32): constants are built in the
tensor's own dtype so that a float32 model stays float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

print("coursegrad 0.3: numpy autograd loaded")  # what a course framework says when imported


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient over the axes numpy broadcast, back to ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Tensor:
    def __init__(self, data: object, _prev: tuple[Tensor, ...] = (), _op: str = "", dtype: object = None) -> None:
        array = np.asarray(data)
        if dtype is not None or not np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype or np.float64)
        self.data = array
        self.grad = np.zeros_like(array)
        self._prev = _prev
        self._op = _op
        self._backward: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return f"Tensor(shape={self.data.shape}, op={self._op!r})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def _lift(self, other: object) -> Tensor:
        return other if isinstance(other, Tensor) else Tensor(other, dtype=self.data.dtype)

    # --- elementwise ------------------------------------------------------------------------
    def __add__(self, other: object) -> Tensor:
        other = self._lift(other)
        out = Tensor(self.data + other.data, (self, other), "+")

        def _backward() -> None:
            self.grad += unbroadcast(out.grad, self.data.shape)
            other.grad += unbroadcast(out.grad, other.data.shape)

        out._backward = _backward
        return out

    def __mul__(self, other: object) -> Tensor:
        other = self._lift(other)
        out = Tensor(self.data * other.data, (self, other), "*")

        def _backward() -> None:
            self.grad += unbroadcast(out.grad * other.data, self.data.shape)
            other.grad += unbroadcast(out.grad * self.data, other.data.shape)

        out._backward = _backward
        return out

    def __pow__(self, exponent: float) -> Tensor:
        out = Tensor(self.data ** exponent, (self,), f"**{exponent}")

        def _backward() -> None:
            self.grad += out.grad * exponent * self.data ** (exponent - 1)

        out._backward = _backward
        return out

    def __neg__(self) -> Tensor:
        return self * -1.0

    def __sub__(self, other: object) -> Tensor:
        return self + (-self._lift(other))

    def __truediv__(self, other: object) -> Tensor:
        return self * self._lift(other) ** -1.0

    __radd__ = __add__
    __rmul__ = __mul__

    def exp(self) -> Tensor:
        out = Tensor(np.exp(self.data), (self,), "exp")

        def _backward() -> None:
            self.grad += out.grad * out.data

        out._backward = _backward
        return out

    def log(self) -> Tensor:
        out = Tensor(np.log(self.data), (self,), "log")

        def _backward() -> None:
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def relu(self) -> Tensor:
        out = Tensor(np.maximum(self.data, 0), (self,), "relu")

        def _backward() -> None:
            self.grad += out.grad * (self.data > 0)

        out._backward = _backward
        return out

    # --- reductions -------------------------------------------------------------------------
    def sum(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        out = Tensor(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

        def _backward() -> None:
            g = out.grad if keepdims or axis is None else np.expand_dims(out.grad, axis)
            self.grad += np.broadcast_to(g, self.data.shape)

        out._backward = _backward
        return out

    def mean(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        n = self.data.size if axis is None else self.data.shape[axis]
        return self.sum(axis, keepdims) * (1.0 / n)

    # --- linear algebra and movement --------------------------------------------------------
    def __matmul__(self, other: Tensor) -> Tensor:
        out = Tensor(self.data @ other.data, (self, other), "@")

        def _backward() -> None:
            self.grad += unbroadcast(out.grad @ np.swapaxes(other.data, -1, -2), self.data.shape)
            other.grad += unbroadcast(np.swapaxes(self.data, -1, -2) @ out.grad, other.data.shape)

        out._backward = _backward
        return out

    def reshape(self, *shape: int) -> Tensor:
        out = Tensor(self.data.reshape(shape), (self,), "reshape")

        def _backward() -> None:
            self.grad += out.grad.reshape(self.data.shape)

        out._backward = _backward
        return out

    def transpose(self, a: int, b: int) -> Tensor:
        out = Tensor(np.swapaxes(self.data, a, b), (self,), "transpose")

        def _backward() -> None:
            self.grad += np.swapaxes(out.grad, a, b)

        out._backward = _backward
        return out

    def rows(self, stop: int) -> Tensor:
        """The first ``stop`` rows (``t[:stop]``)."""
        out = Tensor(self.data[:stop], (self,), "rows")

        def _backward() -> None:
            self.grad[:stop] += out.grad

        out._backward = _backward
        return out

    def gather(self, ids: np.ndarray) -> Tensor:
        """Rows of a table for integer ``ids`` of any shape; a repeated id adds its gradients."""
        out = Tensor(self.data[ids], (self,), "gather")

        def _backward() -> None:
            np.add.at(self.grad, ids, out.grad)

        out._backward = _backward
        return out

    # --- the backward pass ----------------------------------------------------------------
    def backward(self) -> None:
        """Gradients of this scalar with respect to every tensor that made it."""
        topo: list[Tensor] = []
        visited: set[int] = set()

        def build(v: Tensor) -> None:
            if id(v) not in visited:
                visited.add(id(v))
                for child in v._prev:
                    build(child)
                topo.append(v)

        build(self)
        self.grad = np.ones_like(self.data)
        for v in reversed(topo):
            v._backward()
