"""The adapter that lets the differential report run on tinyflow (`nets.Reverser`).

It is what a user writes for their own framework: how to run the model and its loss, read values
and gradients, list and set parameters (tinyflow keeps them in plain ``params`` lists, so they are
named ``<module path>.params[i]``), and how tinyflow's names map onto the reference's.

    scratchdiff report --adapter tests.foreign.adapter:make_adapter
"""

from __future__ import annotations

import numpy as np

from differential.adapter import Adapter

from .engine import Value, cross_entropy
from .nets import SGD, Adam, Reverser


class TinyflowAdapter(Adapter):
    tensor_type = Value
    name_map = {
        "": "",
        "tok_emb": "embedding",
        "pos": "pos_embedding",
        "layers[{i}]": "blocks.{i}",
        "layers[{i}].mha": "blocks.{i}.attn",
        "layers[{i}].mha.wq": "blocks.{i}.attn.q_proj",
        "layers[{i}].mha.wk": "blocks.{i}.attn.k_proj",
        "layers[{i}].mha.wv": "blocks.{i}.attn.v_proj",
        "layers[{i}].mha.wo": "blocks.{i}.attn.out_proj",
        "layers[{i}].norm_a": "blocks.{i}.ln1",
        "layers[{i}].mlp": "blocks.{i}.ffn",
        "layers[{i}].mlp.up": "blocks.{i}.ffn.fc1",
        "layers[{i}].mlp.down": "blocks.{i}.ffn.fc2",
        "layers[{i}].norm_b": "blocks.{i}.ln2",
        "out": "head",
    }
    leaf_map = {"params[0]": "weight", "params[1]": "bias"}  # weight (or gain) first, then bias (or shift)
    transposed = frozenset({"layers[{i}].mha.{w}.params[0]", "layers[{i}].mlp.{w}.params[0]", "out.params[0]"})

    def __init__(self, model: Reverser) -> None:
        self.model = model

    def forward(self, tokens: np.ndarray) -> Value:
        return self.model(tokens)

    def loss_and_backward(self, logits: Value, targets: np.ndarray) -> Value:
        loss = cross_entropy(logits, targets)
        loss.backprop()
        return loss

    def to_numpy(self, tensor: Value) -> np.ndarray:
        return tensor.val

    def grad_of(self, tensor: Value) -> np.ndarray:
        return tensor.g

    def identity(self, tensor: Value) -> Value:
        return tensor.times(1.0)

    def tensor(self, array: np.ndarray) -> Value:
        return Value(array)

    def backward(self, output: Value, grad: np.ndarray) -> None:
        seed = Value(0.0, (output,))  # tinyflow backpropagates from scalars: a seed that hands `grad` down

        def hand_down() -> None:
            output.g = output.g + grad

        seed.back = hand_down
        seed.backprop()

    def named_parameters(self) -> dict[str, Value]:
        return {f"{path}.params[{i}]": p for path, module in self.modules().items()
                for i, p in enumerate(getattr(module, "params", []))}

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        self.named_parameters()[name].val = np.array(array, dtype=np.float64)

    def zero_grad(self) -> None:
        for p in self.named_parameters().values():
            p.g = np.zeros_like(p.val)

    def make_optimizer(self, kind: str, lr: float) -> SGD | Adam:
        params = self.model.parameters()  # the list tinyflow's own training loop uses
        return Adam(params, lr) if kind == "adam" else SGD(params, lr, momentum=0.9)

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        p = self.named_parameters()[name]
        p.g = np.zeros_like(p.val) if array is None else np.array(array, dtype=np.float64)


def make_adapter(depth: int = 1, seed: int = 0) -> TinyflowAdapter:
    """The default-sized tinyflow transformer (the reference's default config), ready to compare."""
    return TinyflowAdapter(Reverser(depth=depth, seed=seed))
