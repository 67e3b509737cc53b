"""The adapter between the port (`port.TinyGPT`) and the report; with ``--reference`` the report
compares the port against the user's torch model (`torch_model.TinyGPT`) in that model's names.

    scratchdiff report --adapter examples.gpt_port.adapter:make_adapter \\
                       --reference examples.gpt_port.torch_model:make_model
"""

from __future__ import annotations

import numpy as np

from differential.adapter import Adapter, AdapterOptions
from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.autograd.tensor import observe_creation
from scratch_model.config import arch
from scratch_model.optim import SGD, Adam

from .port import TinyGPT


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    b, t, v = logits.shape
    log_probs = ag.log_softmax(ag.reshape(logits, (b * t, v)), axis=-1)
    return -log_probs[np.arange(b * t), targets.reshape(-1)].mean()


class PortAdapter(Adapter):
    tensor_type = Tensor
    config = arch("gpt", num_layers=2)  # the sizes of the batch the report draws (vocab 10, length 8)
    name_map = {  # the port's paths -> the torch model's own paths
        "": "",
        "wte": "wte",
        "wpe": "wpe",
        "h[{i}]": "h.{i}",
        "h[{i}].ln_1": "h.{i}.ln_1",
        "h[{i}].attn": "h.{i}.attn",
        "h[{i}].attn.c_attn": "h.{i}.attn.c_attn",
        "h[{i}].attn.c_proj": "h.{i}.attn.c_proj",
        "h[{i}].ln_2": "h.{i}.ln_2",
        "h[{i}].mlp": "h.{i}.mlp",
        "h[{i}].mlp.c_fc": "h.{i}.mlp.c_fc",
        "h[{i}].mlp.c_proj": "h.{i}.mlp.c_proj",
        "ln_f": "ln_f",
        "lm_head": "lm_head",
    }

    def __init__(self, model: TinyGPT) -> None:
        self.model = model

    def is_module(self, obj: object) -> bool:
        return callable(obj) and type(obj).__module__ == TinyGPT.__module__

    def forward(self, tokens: np.ndarray) -> Tensor:
        # This engine frees the gradients of intermediate tensors unless asked to keep them; the
        # report reads each module's output gradient, so every tensor of the forward keeps its own.
        with observe_creation(Tensor.retain_grad):
            return self.model(tokens)

    def loss_and_backward(self, logits: Tensor, targets: np.ndarray) -> Tensor:
        loss = cross_entropy(logits, targets)
        loss.backward()
        return loss

    def to_numpy(self, tensor: Tensor) -> np.ndarray:
        return tensor.data

    def grad_of(self, tensor: Tensor) -> np.ndarray | None:
        return tensor.grad

    def identity(self, tensor: Tensor) -> Tensor:
        return ag.identity(tensor)  # made inside forward(): it keeps its gradient

    def tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(array, requires_grad=True)

    def backward(self, output: Tensor, grad: np.ndarray) -> None:
        output.backward(grad)

    def named_parameters(self) -> dict[str, Tensor]:
        """Every parameter once: the tied head's weight is listed as wte.weight only, as torch does."""
        seen, out = set(), {}
        for path, module in self.modules().items():
            for leaf in ("weight", "bias"):
                p = getattr(module, leaf, None)
                if isinstance(p, Tensor) and id(p) not in seen:
                    seen.add(id(p))
                    out[f"{path}.{leaf}" if path else leaf] = p
        return out

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        p = self.named_parameters()[name]
        p.data = np.array(array, dtype=p.data.dtype)

    def zero_grad(self) -> None:
        for p in self.named_parameters().values():
            p.grad = None

    def make_optimizer(self, kind: str, lr: float):
        params = list(self.named_parameters().values())
        return Adam(params, lr=lr) if kind == "adam" else SGD(params, lr=lr, momentum=0.9)

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        p = self.named_parameters()[name]
        p.grad = None if array is None else np.array(array, dtype=p.data.dtype)


def make_adapter(options: AdapterOptions | None = None) -> PortAdapter:
    """What ``--adapter examples.gpt_port.adapter:make_adapter`` loads: the port in the run's
    precision (``--dtype``)."""
    return PortAdapter(TinyGPT(dtype=options.dtype if options else "float64"))
