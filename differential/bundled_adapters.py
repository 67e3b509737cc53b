"""The bundled class-based scratch model behind the adapter protocol, as a user's framework would be.

It is the first adapter: ``scratchdiff report --adapter differential.bundled_adapters:class_model``
checks the class model through exactly the path a user's model takes (the module walk, the name
map, the teacher-forcing hooks, the optimizer hooks), so the adapter path is tested on every fault of
the catalogue, against the bundled side that reads the same model directly. It is also a complete
worked example of every hook on an autograd with ``requires_grad`` and retained gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from differential.adapter import Adapter, AdapterOptions
from scratch_model import autograd as ag
from scratch_model import train
from scratch_model.autograd import Tensor
from scratch_model.layers import ReversalTransformer
from scratch_model.module import ModuleList
from scratch_model.optim import SGD, Adam


class ClassModelAdapter(Adapter):
    tensor_type = Tensor

    def __init__(self, options: AdapterOptions) -> None:
        self.model = ReversalTransformer(options.config, seed=options.seed, dtype=options.dtype)
        self.dtype = np.dtype(options.dtype)
        self._modules = dict(self.model.named_modules())  # its own paths are the reference's
        # the list of blocks is a container the reference does not record (as torch's ModuleList)
        self.name_map = {path: None if isinstance(m, ModuleList) else path for path, m in self._modules.items()}
        self._params = dict(self.model.named_parameters())

    def forward(self, tokens: np.ndarray) -> Tensor:
        return self.model(tokens)

    def loss_and_backward(self, logits: Tensor, targets: np.ndarray) -> Tensor:
        loss = train.cross_entropy(logits, targets)  # looked up at each call, as the training loop does
        if loss.requires_grad:  # a loss cut from the graph is reported as such, not as a crash
            loss.backward()
        return loss

    def to_numpy(self, tensor: Tensor) -> np.ndarray:
        return np.array(tensor.data)

    def grad_of(self, tensor: Tensor) -> np.ndarray | None:
        return None if tensor.grad is None else np.array(tensor.grad)

    def named_parameters(self) -> dict[str, Tensor]:
        return self._params

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        self._params[name].data = np.array(array, dtype=self.dtype)

    def zero_grad(self) -> None:
        for p in self._params.values():
            p.grad = None

    def identity(self, tensor: Tensor) -> Tensor:
        out = ag.identity(tensor)
        out.retain_grad()  # the engine keeps gradients on leaves only, unless asked
        return out

    def requires_grad(self, tensor: Tensor) -> bool:
        return bool(tensor.requires_grad)

    def modules(self) -> dict[str, Any]:
        return self._modules

    def tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(np.array(array, dtype=self.dtype), requires_grad=True)

    def backward(self, output: Tensor, grad: np.ndarray) -> None:
        output.backward(np.asarray(grad, dtype=self.dtype))

    def make_optimizer(self, kind: str, lr: float) -> Any:
        params = self.model.parameters()
        return Adam(params, lr=lr) if kind == "adam" else SGD(params, lr=lr, momentum=0.9)

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        self._params[name].grad = None if array is None else np.array(array, dtype=self.dtype)


def class_model(options: AdapterOptions) -> ClassModelAdapter:
    """The factory ``--adapter differential.bundled_adapters:class_model`` names."""
    return ClassModelAdapter(options)
