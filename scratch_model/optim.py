"""SGD (with momentum) and Adam, following torch.optim's update rules step for step.

The update runs on all parameters at once: their gradients and values laid end to end in one
flat array, the optimizer's state kept flat the same way, so a step costs a few numpy calls
whatever the number of parameters. Elementwise, the arithmetic is torch's, in torch's order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from scratch_model.autograd import Tensor

Where = slice | np.ndarray  # the flat positions of the parameters being updated


class Optimizer:
    weight_decay = 0.0  # each optimizer sets its own

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        seen: set[int] = set()  # a tensor listed twice (a tied weight under both its names) is stepped once
        self.params = [p for p in params if not (id(p) in seen or seen.add(id(p)))]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        self.lr = lr
        sizes = [p.size for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # parameter i: [o_i, o_{i+1})
        # One state dtype: the parameters' when they agree (the models here), else float64.
        dtypes = {p.dtype for p in self.params}
        self.dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient; one without is skipped (its state too), as
        torch does."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        if len(live) == len(self.params):
            where: Where = slice(None)
        else:
            where = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in live])
        params = [self.params[i] for i in live]
        grad = np.concatenate([p.grad.reshape(-1) for p in params], dtype=self.dtype)  # (N,)
        value = np.concatenate([p.data.reshape(-1) for p in params], dtype=self.dtype) if self.weight_decay else None
        update = self.update(live, where, grad, value)
        del grad, value  # the update may sit in the gradient's buffer
        start = 0
        for p in params:  # each parameter gets a fresh array: old ones stay as they were
            stop = start + p.size
            # value - update in the state's dtype, parameter by parameter: no flat copy of the values
            new = np.subtract(p.data.reshape(-1), update[start:stop], dtype=self.dtype)
            p.data = new.reshape(p.shape).astype(p.dtype, copy=False)
            start = stop

    def update(self, live: list[int], where: Where, grad: np.ndarray, value: np.ndarray | None) -> np.ndarray:
        """The amount to subtract from the flat values of parameters ``live`` (indices into
        ``self.params``), which sit at positions ``where`` of the flat state. ``grad`` is the step's
        own flat copy of their gradients (the update may be computed into it); ``value`` their flat
        values, given only when weight decay needs them."""
        raise NotImplementedError

    def _per_element(self, per_param: list[float], live: list[int]) -> float | np.ndarray:
        """A Python float when every live parameter has the same value, else one value per element
        in the state dtype (which is how numpy applies a Python float to an array: same rounding)."""
        if len(set(per_param)) == 1:
            return per_param[0]
        sizes = np.diff(self.offsets)[live]
        return np.repeat(np.asarray(per_param, dtype=self.dtype), sizes)


class SGD(Optimizer):
    """``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` on the first step); ``p -= lr * buf``."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum, self.dampening, self.weight_decay = momentum, dampening, weight_decay
        self.buffer = np.zeros(self.offsets[-1], dtype=self.dtype)  # flat momentum buffers
        self.started = np.zeros(len(self.params), dtype=bool)  # whose buffer holds a value yet

    def update(self, live, where, grad, value):
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        if self.momentum:
            buf = self.buffer[where]
            fresh = ~self.started[live]
            buf = self.momentum * buf + (1 - self.dampening) * grad
            if fresh.any():  # a first step copies the gradient
                first = np.repeat(fresh, np.diff(self.offsets)[live])
                buf[first] = grad[first]
            if isinstance(where, slice):
                self.buffer = buf
            else:
                self.buffer[where] = buf
            self.started[live] = True
            grad = buf
        return self.lr * grad


class Adam(Optimizer):
    """Adam with bias correction, in torch's order of operations:
    ``p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = np.zeros(self.offsets[-1], dtype=self.dtype)  # flat first and second moments
        self.v = np.zeros(self.offsets[-1], dtype=self.dtype)
        self.steps = [0] * len(self.params)

    def update(self, live, where, grad, value):
        # block by block and in place: the same operations in the same order as the formulas in the
        # docstring (so the same bits), with one small temporary instead of a flat array per operation
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        for i in live:
            self.steps[i] += 1
        whole = isinstance(where, slice)
        m = self.m if whole else self.m[where]
        v = self.v if whole else self.v[where]
        # Python floats, not numpy float64 scalars: those would promote float32 parameters
        step_size = self._per_element([self.lr / (1 - self.beta1 ** self.steps[i]) for i in live], live)
        root2 = self._per_element([math.sqrt(1 - self.beta2 ** self.steps[i]) for i in live], live)
        b1, b2, eps = self.beta1, self.beta2, self.eps
        t = np.empty(min(_BLOCK, grad.size), dtype=grad.dtype)
        for lo in range(0, grad.size, _BLOCK):
            hi = min(lo + _BLOCK, grad.size)
            g, mb, vb, tb = grad[lo:hi], m[lo:hi], v[lo:hi], t[:hi - lo]
            np.subtract(g, mb, out=tb)
            tb *= 1 - b1
            mb += tb  # torch's lerp form: m + (1 - b1) * (g - m)
            vb *= b2
            np.multiply(g, 1 - b2, out=tb)
            tb *= g
            vb += tb  # b2 * v + (1 - b2) * g * g
            np.sqrt(vb, out=tb)
            tb /= _part(root2, lo, hi)
            tb += eps  # the denominator
            np.multiply(mb, _part(step_size, lo, hi), out=g)  # the gradient is done with
            g /= tb
        if not whole:
            self.m[where], self.v[where] = m, v
        return grad


_BLOCK = 1 << 12  # values an in-place update works on at a time: its temporary stays small (and in the cache)


def _part(x: float | np.ndarray, lo: int, hi: int) -> float | np.ndarray:
    """Values ``lo:hi`` of a per-element array, or the one value every element shares."""
    return x if isinstance(x, float) else x[lo:hi]
