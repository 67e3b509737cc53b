"""tinyflow's autograd: a `Value` holds an array ``val`` and its gradient ``g``; every op builds its
result and, beside it, a ``back`` closure that pushes the result's ``g`` into its parents' ``g``.

`Value.backprop` orders the graph with a recursive depth-first search (fine for the small graphs
here) and runs each ``back`` once, in reverse order. Gradients accumulate (``+=``) until cleared.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def shrink(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back down to ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Value:
    """An array that remembers the op that made it."""

    def __init__(self, val: object, parents: tuple[Value, ...] = ()) -> None:
        self.val = np.asarray(val, dtype=np.float64)
        self.g = np.zeros_like(self.val)
        self.parents = parents
        self.back: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Value(shape={self.val.shape})"

    def backprop(self) -> None:
        """d(self)/d(everything that made it), into each ``.g``; ``self`` must be a scalar."""
        order: list[Value] = []
        seen: set[int] = set()

        def visit(v: Value) -> None:
            if id(v) in seen:
                return
            seen.add(id(v))
            for parent in v.parents:
                visit(parent)
            order.append(v)

        visit(self)
        self.g = np.ones_like(self.val)
        for v in reversed(order):
            if v.back is not None:
                v.back()

    # --- elementwise -----------------------------------------------------------------------
    def plus(self, other: Value) -> Value:
        out = Value(self.val + other.val, (self, other))

        def back() -> None:
            self.g += shrink(out.g, self.val.shape)
            other.g += shrink(out.g, other.val.shape)

        out.back = back
        return out

    def times(self, factor: float) -> Value:
        """Multiply by a plain number."""
        out = Value(self.val * factor, (self,))

        def back() -> None:
            self.g += out.g * factor

        out.back = back
        return out

    def relu(self) -> Value:
        out = Value(np.maximum(self.val, 0.0), (self,))

        def back() -> None:
            self.g += out.g * (self.val > 0)

        out.back = back
        return out

    def softmax(self, axis: int = -1) -> Value:
        shifted = np.exp(self.val - self.val.max(axis=axis, keepdims=True))
        s = shifted / shifted.sum(axis=axis, keepdims=True)
        out = Value(s, (self,))

        def back() -> None:
            self.g += s * (out.g - (out.g * s).sum(axis=axis, keepdims=True))

        out.back = back
        return out

    # --- linear algebra and movement ------------------------------------------------------
    def dot(self, other: Value) -> Value:
        """Batched matrix product over the last two axes."""
        out = Value(self.val @ other.val, (self, other))

        def back() -> None:
            self.g += shrink(out.g @ np.swapaxes(other.val, -1, -2), self.val.shape)
            other.g += shrink(np.swapaxes(self.val, -1, -2) @ out.g, other.val.shape)

        out.back = back
        return out

    def swap(self, a: int, b: int) -> Value:
        out = Value(np.swapaxes(self.val, a, b), (self,))

        def back() -> None:
            self.g += np.swapaxes(out.g, a, b)

        out.back = back
        return out

    def view(self, *shape: int) -> Value:
        out = Value(self.val.reshape(shape), (self,))

        def back() -> None:
            self.g += out.g.reshape(self.val.shape)

        out.back = back
        return out

    def first(self, n: int) -> Value:
        """The first ``n`` rows."""
        out = Value(self.val[:n], (self,))

        def back() -> None:
            self.g[:n] += out.g

        out.back = back
        return out


# --- fused ops with hand-written backwards ----------------------------------------------------

def lookup(table: Value, ids: np.ndarray) -> Value:
    """Rows of ``table`` for integer ``ids``; repeated ids add their gradients."""
    out = Value(table.val[ids], (table,))

    def back() -> None:
        np.add.at(table.g, ids, out.g)

    out.back = back
    return out


def affine(x: Value, w: Value, b: Value) -> Value:
    """``x @ w + b`` with ``w`` stored (in, out)."""
    out = Value(x.val @ w.val + b.val, (x, w, b))

    def back() -> None:
        n_in, n_out = w.val.shape
        x.g += out.g @ w.val.T
        w.g += x.val.reshape(-1, n_in).T @ out.g.reshape(-1, n_out)
        b.g += out.g.reshape(-1, n_out).sum(axis=0)

    out.back = back
    return out


def layer_norm(x: Value, gain: Value, shift: Value, eps: float) -> Value:
    """Normalize over the last axis (biased variance), then scale and shift."""
    mean = x.val.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(((x.val - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x.val - mean) * inv
    out = Value(xhat * gain.val + shift.val, (x, gain, shift))

    def back() -> None:
        n = x.val.shape[-1]
        dxhat = out.g * gain.val
        x.g += inv / n * (n * dxhat - dxhat.sum(-1, keepdims=True) - xhat * (dxhat * xhat).sum(-1, keepdims=True))
        gain.g += (out.g * xhat).reshape(-1, n).sum(axis=0)
        shift.g += out.g.reshape(-1, n).sum(axis=0)

    out.back = back
    return out


def cross_entropy(logits: Value, targets: np.ndarray) -> Value:
    """Mean negative log-likelihood of integer ``targets`` under softmax(logits) over the last axis."""
    z = logits.val.reshape(-1, logits.val.shape[-1])  # (N, V)
    t = np.asarray(targets).reshape(-1)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(t))
    out = Value(-log_p[rows, t].mean(), (logits,))

    def back() -> None:
        p = np.exp(log_p)
        p[rows, t] -= 1.0
        logits.g += (p / len(t) * out.g).reshape(logits.val.shape)

    out.back = back
    return out
