"""torch's own Adam and SGD updates on a plain list of tensors, for the reference's optimizer checks.

`TorchOptimizer` calls the functions `torch.optim.Adam.step` and `torch.optim.SGD.step` call
(`torch.optim.adam.adam`, `torch.optim.sgd.sgd`, foreach kernels) with state laid out as those
classes lay it out, so the update rules are torch's. It skips `torch.optim.Optimizer` itself:
constructing the first one in a process imports `torch._dynamo`, about 1.7 s, which is most of a
report's wall time. `tests/torch_reference/test_torch_optim.py` checks it against torch.optim
step for step.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

ADAM_BETAS, ADAM_EPS, SGD_MOMENTUM = (0.9, 0.999), 1e-8, 0.9


class TorchOptimizer:
    """``kind`` "adam" (torch's defaults) or "sgd" (momentum 0.9) over ``params``, updated in place.

    A parameter whose ``.grad`` is None is skipped and gets no state, as in torch.optim.
    """

    def __init__(self, params: list[torch.Tensor], kind: str, lr: float) -> None:
        if kind not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {kind!r}")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        self.params, self.kind, self.lr = list(params), kind, lr
        self.state: dict[int, dict[str, torch.Tensor | None]] = {}  # by position in params

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _state(self, i: int, p: torch.Tensor) -> dict[str, torch.Tensor | None]:
        if i not in self.state:
            if self.kind == "adam":  # as Adam._init_group lays it out (step: a scalar tensor on the CPU)
                step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                self.state[i] = {"step": torch.tensor(0.0, dtype=step_dtype),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            else:
                self.state[i] = {"momentum_buffer": None}  # sgd() fills it on the first step
        return self.state[i]

    @torch.no_grad()
    def step(self) -> None:
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [p for _, p in live]
        grads = [p.grad for _, p in live]
        states = [self._state(i, p) for i, p in live]
        if self.kind == "adam":
            adam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                 [s["step"] for s in states], foreach=True, amsgrad=False, beta1=ADAM_BETAS[0],
                 beta2=ADAM_BETAS[1], lr=self.lr, weight_decay=0.0, eps=ADAM_EPS, maximize=False)
            return
        buffers = [s["momentum_buffer"] for s in states]
        sgd(params, grads, buffers, foreach=True, weight_decay=0.0, momentum=SGD_MOMENTUM, lr=self.lr,
            dampening=0.0, nesterov=False, maximize=False)
        for s, buf in zip(states, buffers, strict=True):
            s["momentum_buffer"] = buf
