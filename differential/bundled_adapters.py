"""The two bundled scratch models behind the adapter protocol, as a user's frameworks would be.

They are the first two adapters: ``scratchdiff report --adapter differential.bundled_adapters:class_model``
(or ``:functional_model``) checks a bundled model through exactly the path a user's model takes
(the name map, the teacher-forcing hooks, the optimizer hooks, the engine hooks), so the adapter
path is tested on every fault of the catalogue, against the bundled side that reads the same model
directly. They are also complete worked examples of every hook:

- `ClassModelAdapter`: a framework with module objects (found by walking the model, recorded by
  wrapping their classes);
- `FunctionalModelAdapter`: a framework without them (pure functions over a dict of parameters),
  which reports its own module calls (`record_forward`) and runs one module alone by path
  (`call_module`).

Both run on this project's autograd, an engine like torch's (``requires_grad``, gradients kept on
leaves only unless asked); `ScratchAutogradAdapter` holds what that engine answers, written only
against the protocol and the engine's public helpers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from differential.adapter import Adapter, AdapterOptions, Recorder, code_site, made_by
from scratch_model import autograd as ag
from scratch_model import functional, train
from scratch_model.autograd import Tensor
from scratch_model.autograd.gradcheck import check_node, count_backward_calls, nodes_between
from scratch_model.autograd.tensor import observe_creation
from scratch_model.config import TransformerConfig
from scratch_model.layers import ReversalTransformer
from scratch_model.module import ModuleList
from scratch_model.optim import SGD, Adam


class ScratchAutogradAdapter(Adapter):
    """The hooks answered by the engine both bundled models run on; a subclass adds the model."""

    tensor_type = Tensor

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        self._backward_calls: int | None = None

    # the parameters (a subclass fills ``_params``: name -> Tensor)
    _params: dict[str, Tensor]

    def named_parameters(self) -> dict[str, Tensor]:
        return self._params

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        # the report's own copy: kept as it is
        self._params[name].data = array if type(array) is np.ndarray and array.dtype == self.dtype else \
            np.array(array, dtype=self.dtype)

    def zero_grad(self) -> None:
        for p in self._params.values():
            p.grad = None

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        self._params[name].grad = array if array is None or (type(array) is np.ndarray and array.dtype == self.dtype) \
            else np.array(array, dtype=self.dtype)

    # values and gradients
    def loss_and_backward(self, logits: Tensor, targets: np.ndarray) -> Tensor:
        loss = train.cross_entropy(logits, targets)  # looked up at each call, as the training loop does
        if loss.requires_grad:  # a loss cut from the graph is reported as such, not as a crash
            self._counted_backward(loss, None)
        return loss

    def loss_function(self) -> Any:
        return train.cross_entropy  # the one loss_and_backward calls now

    def backward_function(self) -> Any:
        return Tensor.backward  # looked up when asked, as a fault may have replaced it

    # the engine's own arrays: every op makes a new one, every backward new gradients; parameters' arrays
    # and gradients are replaced, never written into (by zero_grad, set_grad, set_parameter, the optimizers)
    stable_arrays = True

    def to_numpy(self, tensor: Tensor) -> np.ndarray:
        return tensor.data

    def grad_of(self, tensor: Tensor) -> np.ndarray | None:
        return tensor.grad

    def identity(self, tensor: Tensor) -> Tensor:
        out = ag.identity(tensor)
        out.retain_grad()  # the engine keeps gradients on leaves only, unless asked
        return out

    def retain_grad(self, tensor: Tensor) -> bool:
        tensor.retain_grad()
        return True

    def requires_grad(self, tensor: Tensor) -> bool:
        return bool(tensor.requires_grad)

    # teacher forcing
    def tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(np.array(array, dtype=self.dtype), requires_grad=True)

    def backward(self, output: Tensor, grad: np.ndarray) -> None:
        self._counted_backward(output, np.asarray(grad, dtype=self.dtype))

    # the engine's own code
    def _counted_backward(self, root: Tensor, grad: np.ndarray | None) -> None:
        with count_backward_calls(root) as counts:
            root.backward() if grad is None else root.backward(grad)
        self._backward_calls = max(counts.values(), default=1)

    def backward_calls(self) -> int | None:
        return self._backward_calls

    def check_ops(self, output: Tensor, inputs: list[Any]) -> dict[str, Any] | None:
        rng = np.random.default_rng(0)
        for node in nodes_between(output, {id(x) for x in inputs}):
            bad = check_node(node, rng)
            if bad is not None:
                return {"op": bad.op, "function": bad.function, "input": bad.input_index,
                        "relative_error": bad.relative_error}
        return None

    @contextlib.contextmanager
    def watch_tensors(self) -> Iterator[list[tuple[Any, str, bool]]]:
        made: list[tuple[Any, str, bool]] = []

        def note(tensor: Tensor) -> None:
            frame = sys._getframe(2)  # the engine calls this from the code that builds the tensor
            while frame is not None and frame.f_code.co_name == "__init__" and \
                    isinstance(frame.f_locals.get("self"), Tensor):
                frame = frame.f_back  # a subclass's __init__ (Parameter)
            if frame is None:
                return
            site = code_site(frame)
            # an op's result comes from the op wrapper; a constant an op takes part with, from as_tensor
            by_op = frame.f_code.co_name in ("wrapper", "as_tensor") and \
                site.partition(" at ")[2].startswith("scratch_model/autograd/")
            made.append((tensor, site, by_op))

        with observe_creation(note):
            yield made

    # optimizer
    def _optimizer_params(self) -> list[Tensor]:
        return list(self._params.values())

    def make_optimizer(self, kind: str, lr: float) -> Any:
        params = self._optimizer_params()
        return Adam(params, lr=lr) if kind == "adam" else SGD(params, lr=lr, momentum=0.9)


class ClassModelAdapter(ScratchAutogradAdapter):
    """The class model: modules are objects, found by the walk and recorded by wrapping their classes."""

    def __init__(self, options: AdapterOptions) -> None:
        super().__init__(options.dtype)
        self.model = ReversalTransformer(options.config, seed=options.seed, dtype=options.dtype)
        self._modules = dict(self.model.named_modules())  # its own paths are the reference's
        # the list of blocks is a container the reference does not record (as torch's ModuleList)
        self.name_map = {path: None if isinstance(m, ModuleList) else path for path, m in self._modules.items()}
        self._params = dict(self.model.named_parameters())

    def forward(self, tokens: np.ndarray) -> Tensor:
        return self.model(tokens)

    def modules(self) -> dict[str, Any]:
        return self._modules

    def _optimizer_params(self) -> list[Tensor]:
        return self.model.parameters()


class FunctionalModelAdapter(ScratchAutogradAdapter):
    """The functional model: no module objects, only functions over a dict of parameters. It reports
    each module call to the report's recorder itself, and runs one module alone by its path."""

    def __init__(self, options: AdapterOptions) -> None:
        super().__init__(options.dtype)
        self.sizes = options.config  # not ``config``: that attribute would fix the run's sizes
        self._params, self._forward = functional.build_simple_transformer(options.config, seed=options.seed,
                                                                          dtype=options.dtype)
        self.paths = module_paths(options.config)
        self.name_map = {path: path for path in self.paths}  # its paths are the reference's

    def modules(self) -> dict[str, Any]:
        # each module's function, looked up now (for its source); the model's own names for them
        return {path: functional.submodule(self._params, self.sizes, path) for path in self.paths}

    def forward(self, tokens: np.ndarray) -> Tensor:
        return self._forward(self._params, tokens)

    def record_forward(self, tokens: np.ndarray, recorder: Recorder) -> Tensor:
        return self._forward(self._params, tokens, recorder=_Scopes(recorder))

    def call_module(self, path: str, *args: Any) -> Tensor:
        return functional.submodule(self._params, self.sizes, path)(*args)


class _Scopes:
    """The functional model's scope recorder (``after`` also receives the inputs) talking to the
    report's recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        # the recorder's own before, called straight from the model's code: no frame of ours in between
        # (the report takes the frame that called before as where the module's children stop their stacks)
        self.before = recorder.before

    def after(self, path: str, inputs: tuple, output: Any) -> Any:
        return self.recorder.after(path, output)


def module_paths(config: TransformerConfig) -> list[str]:
    """The functional model's module scopes for ``config``, parents first: the names it reports."""
    paths = ["", "embedding"] + (["pos_embedding"] if config.positional != "none" else [])
    for i in range(config.num_layers):
        block = f"blocks.{i}"
        paths += [block, f"{block}.ln1", f"{block}.attn"]
        paths += [f"{block}.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
        paths += [f"{block}.ln2", f"{block}.ffn", f"{block}.ffn.fc1", f"{block}.ffn.fc2"]
    return paths + (["ln_f"] if config.final_norm else []) + ["head"]


def class_model(options: AdapterOptions) -> ClassModelAdapter:
    """The factory ``--adapter differential.bundled_adapters:class_model`` names. The adapter knows it
    was made here (`made_by`), so a float32 run can check ops on a float64 twin."""
    return made_by(ClassModelAdapter(options), class_model, options)


def functional_model(options: AdapterOptions) -> FunctionalModelAdapter:
    """The factory ``--adapter differential.bundled_adapters:functional_model`` names (and notes, as
    `class_model` does)."""
    return made_by(FunctionalModelAdapter(options), functional_model, options)
