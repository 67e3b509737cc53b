"""SGD (with momentum) and Adam, following torch.optim's update rules step for step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from scratch_model.autograd import Tensor


class Optimizer:
    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                p.data = p.data - self.update(i, p.grad.astype(p.dtype, copy=False), p.data)

    def update(self, i: int, grad: np.ndarray, value: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SGD(Optimizer):
    """``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` on the first step); ``p -= lr * buf``."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum, self.dampening, self.weight_decay = momentum, dampening, weight_decay
        self.buffers: list[np.ndarray | None] = [None] * len(self.params)

    def update(self, i: int, grad: np.ndarray, value: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        if self.momentum:
            buf = self.buffers[i]
            buf = grad.copy() if buf is None else self.momentum * buf + (1 - self.dampening) * grad
            self.buffers[i] = buf
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
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.steps = [0] * len(self.params)

    def update(self, i: int, grad: np.ndarray, value: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        self.steps[i] += 1
        t = self.steps[i]
        self.m[i] = self.m[i] + (1 - self.beta1) * (grad - self.m[i])  # torch's lerp form
        self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * grad * grad
        bias1, bias2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        # Python floats, not numpy float64 scalars: those would promote float32 parameters
        denom = np.sqrt(self.v[i]) / math.sqrt(bias2) + self.eps
        return (self.lr / bias1) * self.m[i] / denom
