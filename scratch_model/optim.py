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
    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
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
        value = np.concatenate([p.data.reshape(-1) for p in params], dtype=self.dtype)  # (N,)
        new = value - self.update(live, where, grad, value)
        start = 0
        for p in params:  # each parameter gets a fresh array (a view of `new`): old ones stay as they were
            p.data = new[start:start + p.size].reshape(p.shape).astype(p.dtype, copy=False)
            start += p.size

    def update(self, live: list[int], where: Where, grad: np.ndarray, value: np.ndarray) -> np.ndarray:
        """The amount to subtract from ``value``: the flat values of parameters ``live`` (indices
        into ``self.params``), which sit at positions ``where`` of the flat state."""
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
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        for i in live:
            self.steps[i] += 1
        m = self.m[where] + (1 - self.beta1) * (grad - self.m[where])  # torch's lerp form
        v = self.beta2 * self.v[where] + (1 - self.beta2) * grad * grad
        if isinstance(where, slice):
            self.m, self.v = m, v
        else:
            self.m[where], self.v[where] = m, v
        # Python floats, not numpy float64 scalars: those would promote float32 parameters
        step_size = self._per_element([self.lr / (1 - self.beta1 ** self.steps[i]) for i in live], live)
        root2 = self._per_element([math.sqrt(1 - self.beta2 ** self.steps[i]) for i in live], live)
        denom = np.sqrt(v) / root2 + self.eps
        return step_size * m / denom
