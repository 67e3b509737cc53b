"""The adapter for coursegrad (`nn.Transformer`), written from docs/adapter.md alone.

    scratchdiff report --adapter tests.foreign_course.adapter:make_adapter --layers 2 --optimizer sgd

The factory takes the run's options, so ``--layers``, ``--dtype`` and ``--seed`` reach the model.
What the troubleshooting section of the guide says, and where it shows here: the head runs on
``(B*T, D)`` and the model returns ``(B*T, vocab)`` logits (nothing to do), the positional layer
returns its table (mapped to ``pos_embedding`` as usual), token ids and targets are handed over
as floats, the ReLU object between the feed-forward's Linears is mapped to None, parameters are
named by their place in the ``params`` lists, and the one optimizer is declared.
"""

from __future__ import annotations

import numpy as np

from differential.adapter import Adapter, AdapterOptions

from .engine import Tensor
from .nn import SGD, Transformer, cross_entropy


class CourseAdapter(Adapter):
    tensor_type = Tensor
    name_map = {
        "": "",
        "token_embedding": "embedding",
        "position_embedding": "pos_embedding",
        "blocks[{i}]": "blocks.{i}",
        "blocks[{i}].sa": "blocks.{i}.attn",
        "blocks[{i}].sa.qkv[0]": "blocks.{i}.attn.q_proj",
        "blocks[{i}].sa.qkv[1]": "blocks.{i}.attn.k_proj",
        "blocks[{i}].sa.qkv[2]": "blocks.{i}.attn.v_proj",
        "blocks[{i}].sa.proj": "blocks.{i}.attn.out_proj",
        "blocks[{i}].ln1": "blocks.{i}.ln1",
        "blocks[{i}].ffwd": "blocks.{i}.ffn",
        "blocks[{i}].ffwd.layers[0]": "blocks.{i}.ffn.fc1",
        "blocks[{i}].ffwd.layers[1]": None,  # the ReLU object: no reference counterpart, no parameters
        "blocks[{i}].ffwd.layers[2]": "blocks.{i}.ffn.fc2",
        "blocks[{i}].ln2": "blocks.{i}.ln2",
        "lm_head": "head",
    }
    leaf_map = {"params[0]": "weight", "params[1]": "bias"}  # Linear: [W, b]; LayerNorm: [gamma, beta]
    transposed = frozenset({"blocks[{i}].sa.qkv[{j}].params[0]", "blocks[{i}].sa.proj.params[0]",
                            "blocks[{i}].ffwd.layers[{j}].params[0]", "lm_head.params[0]"})
    optimizers = ("sgd",)  # coursegrad has SGD only

    def __init__(self, model: Transformer, dtype: str = "float64") -> None:
        self.model, self.dtype = model, dtype

    def forward(self, tokens: np.ndarray) -> Tensor:
        return self.model(Tensor(tokens, dtype=self.dtype))  # coursegrad takes float ids

    def loss_and_backward(self, logits: Tensor, targets: np.ndarray) -> Tensor:
        loss = cross_entropy(logits, Tensor(targets.reshape(-1), dtype=self.dtype))  # flat targets, as the model
        loss.backward()
        return loss

    def to_numpy(self, tensor: Tensor) -> np.ndarray:
        return tensor.data

    def grad_of(self, tensor: Tensor) -> np.ndarray:
        return tensor.grad

    def identity(self, tensor: Tensor) -> Tensor:
        return tensor * 1.0

    def tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(array)

    def backward(self, output: Tensor, grad: np.ndarray) -> None:
        (output * Tensor(grad)).sum().backward()  # coursegrad backpropagates from scalars only

    def named_parameters(self) -> dict[str, Tensor]:
        named = {}
        for path, module in self.modules().items():
            for i, p in enumerate(getattr(module, "params", [])):
                named[f"{path}.params[{i}]"] = p
            if isinstance(getattr(module, "weight", None), Tensor):  # the two embeddings
                named[f"{path}.weight"] = module.weight
        return named

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        self.named_parameters()[name].data = np.array(array)

    def zero_grad(self) -> None:
        for p in self.named_parameters().values():
            p.grad = np.zeros_like(p.data)

    def make_optimizer(self, kind: str, lr: float) -> SGD:
        return SGD(self.model.parameters(), lr, momentum=0.9)  # the list coursegrad's training loop uses

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        p = self.named_parameters()[name]
        p.grad = np.zeros_like(p.data) if array is None else np.array(array)


def make_adapter(options: AdapterOptions) -> CourseAdapter:
    """The transformer the run asks for: its sizes, layer count, dtype and seed."""
    c = options.config
    model = Transformer(vocab_size=c.vocab_size, block_size=c.seq_len, n_embd=c.embed_dim, n_head=c.num_heads,
                        n_hidden=c.ff_dim, n_layer=options.layers, seed=options.seed, dtype=options.dtype)
    return CourseAdapter(model, options.dtype)
