"""Bring your own model: run the differential report on a from-scratch framework this project did
not write, through a small `Adapter` its author subclasses (docs/adapter.md has a worked example).

`AdapterSide` (in `differential.adapter_side`) puts an adapter behind the `Side` interface, so
``run_report(ReportOptions(adapter=...))`` compares the user's model with the torch reference,
module by module, in the reference's names:

- modules are found by walking the model object (attributes, lists, tuples, dicts) and recorded at
  run time by patching their *classes'* ``__call__`` and ``forward``: Python looks special methods
  up on the class, so patching an instance's ``__call__`` would record nothing. Each class is
  wrapped once, the wrapper dispatches by instance, and the originals always come back;
- names are checked as strictly as the weight loader: every unmapped name, missing reference
  parameter and shape mismatch is listed in one ValueError before anything runs;
- weights go from the user's model to the reference, transposing the ``(in, out)`` weights the
  adapter declares;
- with an identity op and gradients kept on intermediate tensors, every module's input and output
  gradients are compared as for our own models; without them, only parameter gradients are, the
  backward is localized from those alone, and the report lists the phases it could not check;
- the run reaches the user's model: `load_adapter` calls a factory with `AdapterOptions` (config,
  dtype, seed, layers), `run_config` refuses a fixed config that a flag contradicts, and what the
  user's code prints while it is imported, built and run is kept in a `UserOutput`, out of the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import io
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from differential.capture import ROOT
from differential.errors import InputError
from differential.side import PROJECT_ROOT
from scratch_model.config import TransformerConfig


class Adapter:
    """What the report needs to know about your framework. Subclass it, set ``model`` (usually in
    ``__init__``), ``tensor_type`` and ``name_map`` (plus ``leaf_map`` and ``transposed`` where they
    apply), and write the seven required methods (most are one line).

    Names: *your* module paths are where this class finds your layers when it walks ``model``
    (``layers[0].mha.wq``: attributes, list/tuple items and dict values, Python-style); *your*
    parameter names are whatever `named_parameters` returns. *Reference* names are the torch
    model's (``blocks.0.attn.q_proj``, ``blocks.0.attn.q_proj.weight``). A mapped module must take
    and return the same tensors as its reference module.
    """

    # --- required attributes ---------------------------------------------------------------
    model: Any = None  # your model object: the root of the module walk
    tensor_type: type | tuple[type, ...] = ()  # your tensor class(es)
    # Your module path or parameter name -> the reference's. Keys and values may hold ``{name}``
    # holes, each matching one path part (``"layers[{i}].mha": "blocks.{i}.attn"``). None leaves a
    # module out (a helper object with no reference counterpart). A parameter without its own entry
    # is named by its module's entry plus its leaf, renamed by ``leaf_map``.
    name_map: dict[str, str | None] = {}
    leaf_map: dict[str, str] = {}  # your parameter's name inside its module -> the reference's ("w" -> "weight")
    transposed: set[str] | frozenset[str] = frozenset()  # your parameter names (holes allowed) stored (in, out)
    config: TransformerConfig | None = None  # fixes your model's sizes (the run must agree); None: the run's
    # The optimizer kinds your make_optimizer has ("adam", "sgd"); the checks of any other are listed as not run.
    optimizers: tuple[str, ...] = ("adam", "sgd")

    # --- required methods ------------------------------------------------------------------
    def forward(self, tokens: np.ndarray) -> Any:
        """Run your model on integer token ids (B, T) and return the logits (B, T, vocab), your tensor."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(tokens)")

    def loss_and_backward(self, logits: Any, targets: np.ndarray) -> Any:
        """Mean cross-entropy of ``logits`` against integer ``targets`` (B, T); run your backward from
        it; return the loss (your scalar tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss_and_backward(logits, targets)")

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """Your tensor's values as a numpy array."""
        raise NotImplementedError(f"{type(self).__name__} must define to_numpy(tensor)")

    def grad_of(self, tensor: Any) -> np.ndarray | None:
        """The gradient your framework stored on ``tensor`` after the backward, or None where it keeps none."""
        raise NotImplementedError(f"{type(self).__name__} must define grad_of(tensor)")

    def named_parameters(self) -> dict[str, Any]:
        """Every parameter of your model, by your name."""
        raise NotImplementedError(f"{type(self).__name__} must define named_parameters()")

    def set_parameter(self, name: str, array: np.ndarray) -> None:
        """Overwrite your parameter ``name`` with ``array`` (in your layout and dtype): a new array the
        report made for this call and keeps no reference to, so you may store it as it is."""
        raise NotImplementedError(f"{type(self).__name__} must define set_parameter(name, array)")

    def zero_grad(self) -> None:
        """Clear every parameter's gradient (the report runs several backwards)."""
        raise NotImplementedError(f"{type(self).__name__} must define zero_grad()")

    # --- optional: module backward checks -------------------------------------------------------
    def identity(self, tensor: Any) -> Any | None:
        """A new tensor equal to ``tensor`` whose gradient flows back to it unchanged (``tensor * 1.0``
        in most frameworks). With it (and gradients kept on intermediate tensors) each module's input
        gradients can be read through that module alone; None (the default): only parameter
        gradients are compared."""
        return None

    def requires_grad(self, tensor: Any) -> bool:
        """Whether ``tensor`` is part of the graph (frameworks without the notion: True)."""
        return True

    def is_tensor(self, obj: Any) -> bool:
        return isinstance(obj, self.tensor_type)

    def is_module(self, obj: Any) -> bool:
        """Which objects found by the walk are modules: by default, objects with a ``forward``
        method, or callable instances of your own classes."""
        if isinstance(obj, _NOT_MODULES) or self.is_tensor(obj):
            return False
        return callable(getattr(obj, "forward", None)) or (callable(obj) and _user_class(type(obj)))

    def retain_grad(self, tensor: Any) -> bool:
        """Keep the gradient the backward will give ``tensor`` (a module's output, made by your ops)
        without a new node, as torch's ``retain_grad()`` does, and say so (True). With it a module's
        output gradient is read on the output itself, with no identity put on it; False (the default):
        the output goes through `identity` too."""
        return False

    # Whether the arrays `to_numpy` and `grad_of` return stay as they are: an op's result and a
    # backward's gradient are new arrays, nothing writes into them later, and `set_parameter`,
    # `set_grad` and `zero_grad` replace a parameter's arrays instead of writing into them. True: the
    # report keeps those arrays without copying them (it still copies your parameters' values, and
    # any array that is a part of a larger one). False (the default): it copies every array it keeps.
    stable_arrays: bool = False

    # --- optional: teacher forcing (every finding in one run) -----------------------------------
    def tensor(self, array: np.ndarray) -> Any | None:
        """A new tensor of yours holding ``array``: a leaf of your graph that receives a gradient in
        the backward (``Tensor(array, requires_grad=True)`` in most frameworks). With it (and
        `backward`) the report runs each module alone on the reference's inputs and output gradient,
        so it blames every module only for the error it adds itself and finds every independent bug
        in one run; it also runs your loss alone on the reference's logits. None (the default): only
        the first divergence is localized, and the report lists these checks as not run."""
        return None

    def backward(self, output: Any, grad: np.ndarray) -> None:
        """Run your backward from ``output`` (not a scalar) with ``grad`` (same shape, your dtype) as the
        gradient of the loss with respect to it, accumulating into every ``grad_of``. A framework that
        only backpropagates from scalars can backpropagate ``sum(output * grad)`` instead."""
        raise NotImplementedError(f"{type(self).__name__} defines tensor(), so it must define backward(output, grad)")

    def loss_function(self) -> Callable[..., Any] | None:
        """The function of yours that computes the loss inside `loss_and_backward` (looked up when
        asked): where a loss finding points. None (the default): it points at `loss_and_backward`."""
        return None

    # --- optional: optimizer and training checks --------------------------------------------
    def make_optimizer(self, kind: str, lr: float) -> Any:
        """A fresh optimizer over the parameter list your training loop would use, with a ``step()``
        that applies the gradients stored on the parameters: ``kind`` is "adam" (betas 0.9, 0.999, eps
        1e-8) or "sgd" (momentum 0.9). Without it the optimizer and training phases are not checked."""
        raise NotImplementedError

    def set_grad(self, name: str, array: np.ndarray | None) -> None:
        """Store ``array`` as parameter ``name``'s gradient (None: no gradient); needed with make_optimizer.
        Like `set_parameter`'s, the array is the report's new copy: store it as it is if you like."""
        raise NotImplementedError(f"{type(self).__name__} defines make_optimizer, so it must define set_grad")

    # --- optional: a framework without module objects ------------------------------------------
    def record_forward(self, tokens: np.ndarray, recorder: Recorder) -> Any:
        """Run your model like `forward`, telling ``recorder`` about every module call yourself (for a
        framework whose modules are functions, with no objects whose classes the report could wrap).
        Around each module call: ``inputs = recorder.before(path, inputs)`` (run the module on the
        tuple it returns), then ``output = recorder.after(path, output)`` (hand on what it returns).
        ``path`` is your module path, a key of `modules`, which you then override to list your paths
        (each value: the function that implements the module, where the report points for its
        source). Defining it replaces the class patching."""
        raise NotImplementedError

    def call_module(self, path: str, *args: Any) -> Any:
        """Run your module at ``path`` alone on ``args`` and return its output: the arguments its first
        call passed to ``recorder.before``, each float tensor replaced by a new leaf (`tensor`). With
        `record_forward`, needed for teacher forcing and isolated mode (a module object is called
        instead when your framework has them)."""
        raise NotImplementedError(f"{type(self).__name__} must define call_module(path, *args) to run a module alone")

    # --- optional: what the report can say about your engine's own code ---------------------------
    def backward_function(self) -> Callable[..., Any] | None:
        """Your engine's function that walks the graph backward: where a repeated-backward finding
        (see `backward_calls`) points. None (the default): it points at `loss_and_backward`."""
        return None

    def backward_calls(self) -> int | None:
        """How many times the busiest node's backward ran in your most recent backward
        (`loss_and_backward` or `backward`): 1 in a correct engine, more in one that re-walks shared
        subgraphs once per path (a recursive backward without a visited set). None (the default): not
        counted, and that fault goes unseen while the gradients are right."""
        return None

    def check_ops(self, output: Any, inputs: list[Any]) -> dict[str, Any] | None:
        """Check the backward of each of your ops on the paths from ``inputs`` (leaves made by `tensor`)
        to ``output`` (a module run alone on them, no backward yet) against finite differences of its
        forward; return the first that disagrees as ``{"op": name, "function": the op's code (for its
        source), "input": which argument, "relative_error": float}``, or None when all agree. Then a
        backward finding names the op inside the module. The report calls it only in float64 runs."""
        return None

    def watch_tensors(self) -> contextlib.AbstractContextManager[list[tuple[Any, str, bool]]]:
        """A context manager yielding a list to which, while it is active, each tensor your framework
        makes is appended as ``(tensor, site, by_op)``: ``site`` is the code that made it
        (`code_site` of its frame: "function at file:line"); ``by_op`` is True where your framework's
        op machinery made it (an op's result, a constant an op wraps) and False where it was built
        from raw data (``Tensor(array)`` in model code, an op that hands back a new leaf). With it a
        graph break's hint names the line where the gradient chain stops. Not defined by default."""
        raise NotImplementedError

    # --- provided ----------------------------------------------------------------------------
    def modules(self) -> dict[str, Any]:
        """Your modules by path, parents first; the model itself is ``""``."""
        return walk_modules(self.model, self.is_module, self.is_tensor)


class Recorder(Protocol):
    """What `Adapter.record_forward` reports each module call to."""

    def before(self, path: str, inputs: tuple) -> tuple:
        """Your module ``path`` is about to run on ``inputs``: run it on the tuple returned instead."""
        ...

    def after(self, path: str, output: Any) -> Any:
        """Your module ``path`` returned ``output``: hand its caller the value returned instead."""
        ...


def code_site(frame: types.FrameType) -> str:
    """"function at file:line" of a frame, the file named as source pointers name it (relative to
    this project's root when it lies inside it): how `Adapter.watch_tensors` names where a tensor
    was made."""
    file = Path(frame.f_code.co_filename).resolve()
    shown = file.relative_to(PROJECT_ROOT) if file.is_relative_to(PROJECT_ROOT) else file
    return f"{frame.f_code.co_name} at {shown}:{frame.f_lineno}"


OPTIMIZER_KINDS = ("adam", "sgd")
_NOT_MODULES = (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)
_LEAVES = (str, bytes, int, float, complex, np.ndarray, np.generic, types.ModuleType) + _NOT_MODULES


def _user_class(cls: type) -> bool:
    root = cls.__module__.partition(".")[0]
    return root not in sys.stdlib_module_names and root not in ("builtins", "numpy", "torch")


def walk_modules(root: Any, is_module: Callable[[Any], bool], is_tensor: Callable[[Any], bool]) -> dict[str, Any]:
    """Every module reachable from ``root`` through attributes, list/tuple items and dict values,
    by Python-style path (``layers[0].mha``), parents before children; each object once, under the
    first path that reaches it. ``root`` itself is ``""`` whatever ``is_module`` says."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(ROOT, root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, _LEAVES) or is_tensor(obj):
            continue
        seen.add(id(obj))
        if path == ROOT or is_module(obj):
            found[path] = obj
        if isinstance(obj, (list, tuple)):
            children = [(f"[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, dict):
            children = [(f"[{k!r}]", v) for k, v in obj.items()]
        else:
            try:
                children = [(f".{k}", v) for k, v in vars(obj).items() if not k.startswith("__")]
            except TypeError:  # no __dict__
                children = []
        stack += [(f"{path}{key}".lstrip("."), child) for key, child in reversed(children)]
    return found


# --- the name map --------------------------------------------------------------------------

_HOLE = re.compile(r"\{(\w+)\}")
_NO_ENTRY = object()


class _Table:
    """Name-map lookups: exact keys first, then patterns with ``{holes}``, most literal text first."""

    def __init__(self, entries: dict[str, Any], problems: list[str]) -> None:
        self.exact: dict[str, str | None] = {}
        self.patterns: list[tuple[re.Pattern[str], str | None]] = []
        for key, target in sorted(entries.items(), key=lambda kv: -len(_HOLE.sub("", str(kv[0])))):
            if not isinstance(key, str) or not (target is None or isinstance(target, str)):
                problems.append(f"bad name-map entry: {key!r} -> {target!r} (expected a str key and a str or None)")
                continue
            extra = set(_HOLE.findall(target or "")) - set(_HOLE.findall(key))
            if extra:
                problems.append(f"bad name-map entry: {key!r} -> {target!r} uses {sorted(extra)} that the key lacks")
            elif _HOLE.search(key):
                self.patterns.append((_compile(key), target))
            else:
                self.exact[key] = target

    def lookup(self, name: str) -> Any:
        """The target for ``name``: a reference path, None (left out), or _NO_ENTRY."""
        if name in self.exact:
            return self.exact[name]
        for pattern, target in self.patterns:
            hit = pattern.fullmatch(name)
            if hit:
                return None if target is None else _HOLE.sub(lambda m: hit.group(m.group(1)), target)
        return _NO_ENTRY


def _compile(key: str) -> re.Pattern[str]:
    parts, seen = [], set()
    for i, piece in enumerate(_HOLE.split(key)):
        if i % 2 == 0:
            parts.append(re.escape(piece))
        else:  # a hole: one path part; a repeated hole must repeat its text
            parts.append(f"(?P={piece})" if piece in seen else rf"(?P<{piece}>[^.\[\]]+)")
            seen.add(piece)
    return re.compile("".join(parts))


def _param_target(name: str, table: _Table, leaf_map: dict[str, str]) -> Any:
    """The reference name for your parameter: its own entry, else its closest mapped module's
    target plus its (renamed) leaf."""
    hit = table.lookup(name)
    if hit is not _NO_ENTRY:
        return hit
    cuts = [m.start() for m in re.finditer(r"\.", name)]
    for owner, leaf in [(name[:i], name[i + 1:]) for i in reversed(cuts)] + [(ROOT, name)]:
        module = table.lookup(owner)
        if isinstance(module, str):
            leaf = leaf_map.get(leaf, leaf)
            return f"{module}.{leaf}" if module else leaf
    return _NO_ENTRY


@functools.lru_cache(maxsize=8)
def reference_layout(config: TransformerConfig) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
    """The torch reference's parameter shapes and recorded module paths for ``config``."""
    import torch

    from torch_reference.model import ReversalTransformer

    with torch.random.fork_rng(devices=[]):  # building it draws random weights; leave the global stream alone
        model = ReversalTransformer(config)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    modules = tuple(p for p, m in model.named_modules() if not isinstance(m, torch.nn.ModuleList))
    return params, modules


@dataclass(frozen=True)
class Names:
    """The checked correspondence between your model and the reference."""

    modules: dict[str, str]  # reference module path -> your module path
    params: dict[str, str]  # reference parameter name -> your parameter name
    transposed: frozenset[str]  # your parameter names stored (in, out)
    unmatched: tuple[str, ...]  # reference modules with no counterpart: not compared


def resolve_names(adapter: Adapter, config: TransformerConfig, reference: Any = None) -> Names:
    """Map every module and parameter of ``adapter``'s model onto the reference (``reference``: a
    user's own torch model, in its own names; None: the bundled one for ``config``), or raise one
    ValueError listing every unmapped name, unknown target, duplicate, missing reference parameter
    and shape mismatch (after the declared transposes).

    The answer depends only on what the adapter declares (class, maps, transposes), its modules'
    paths and classes, its parameters' names, shapes and sharing, and the config; the same
    question comes back for every report of a process that builds the same model (a report
    builds its side anew), so the answers against the bundled reference are kept."""
    modules = adapter.modules()
    first: dict[int, str] = {}  # a tensor listed under several names counts under its first
    params = [(name, tuple(np.shape(adapter.to_numpy(t))), first.setdefault(id(t), name))
              for name, t in adapter.named_parameters().items()]
    try:
        key = (type(adapter), config, tuple(adapter.name_map.items()), tuple(adapter.leaf_map.items()),
               frozenset(adapter.transposed), tuple((p, type(o)) for p, o in modules.items()), tuple(params))
        hash(key)
    except TypeError:  # an unhashable entry: the checks below report it
        key = None
    if reference is not None or key is None:
        return _resolve_names(adapter, config, reference, modules, params)
    known = _RESOLVED.get(key)
    if known is None:
        known = _RESOLVED[key] = _resolve_names(adapter, config, None, modules, params)
        while len(_RESOLVED) > 64:
            del _RESOLVED[next(iter(_RESOLVED))]
    return known


_RESOLVED: dict[Any, Names] = {}


def _resolve_names(adapter: Adapter, config: TransformerConfig, reference: Any, found: dict[str, Any],
                   found_params: list[tuple[str, tuple[int, ...], str]]) -> Names:
    if reference is None:
        ref_params, ref_modules = reference_layout(config)
    else:
        from differential.user_reference import module_layout

        ref_params, ref_modules = module_layout(reference)
    problems: list[str] = []
    table = _Table(dict(adapter.name_map), problems)
    modules: dict[str, str] = {}
    for theirs, obj in found.items():
        target = table.lookup(theirs)
        shown = theirs or "(model)"
        if target is _NO_ENTRY:
            problems.append(f"unmapped module: {shown} ({type(obj).__name__}) has no name_map entry "
                            f"(map it to a reference module path, or to None to leave it out)")
        elif target is None:
            continue
        elif target not in ref_modules:
            problems.append(f"unknown reference module: {shown} maps to {target!r}, which the reference lacks"
                            + (_flag_hint(target, config, present=False) if reference is None else ""))
        elif target in modules:
            problems.append(f"duplicate: modules {modules[target] or '(model)'} and {shown} both map to {target!r}")
        else:
            modules[target] = theirs

    flips = _Table(dict.fromkeys(adapter.transposed, ""), problems)
    params: dict[str, str] = {}
    transposed: set[str] = set()
    leaf_map = dict(adapter.leaf_map)
    for theirs, shape, first_name in found_params:
        if first_name != theirs:
            continue  # the same tensor under a second name (a tied head): the reference lists it once too
        target = _param_target(theirs, table, leaf_map)
        if target is _NO_ENTRY:
            problems.append(f"unmapped parameter: {theirs!r} (shape {shape}) has no name_map entry")
            continue
        if target is None:
            continue
        if target not in ref_params:
            problems.append(f"unknown reference parameter: {theirs!r} maps to {target!r}, which the reference lacks"
                            + (_flag_hint(target, config, present=False) if reference is None else ""))
            continue
        if target in params:
            problems.append(f"duplicate: parameters {params[target]!r} and {theirs!r} both map to {target!r}")
            continue
        params[target] = theirs
        flipped = flips.lookup(theirs) is not _NO_ENTRY
        if flipped and len(shape) != 2:
            problems.append(f"cannot transpose: {theirs!r} is declared transposed but has shape {shape}")
            continue
        if flipped:
            transposed.add(theirs)
            shape = shape[::-1]
        if shape != ref_params[target]:
            how = " after the declared transpose" if flipped else \
                " (stored (in, out)? list it in transposed)" if shape[::-1] == ref_params[target] else ""
            problems.append(f"shape mismatch: {theirs!r} -> {target!r}: the reference has {ref_params[target]}, "
                            f"yours is {shape}{how}")
    problems += _missing(ref_params, params, None if reference is not None else config)
    problems += [f"transposed entry {entry!r} matches none of your parameters" for entry in adapter.transposed
                 if not any(_Table({entry: ""}, []).lookup(t) is not _NO_ENTRY for t in params.values())]
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise InputError(f"cannot compare {type(adapter).__name__} with the reference: {len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}\n{lines}")
    return Names(modules, params, frozenset(transposed), tuple(m for m in ref_modules if m not in modules))


def _missing(ref_params: dict[str, tuple[int, ...]], params: dict[str, str], config: TransformerConfig | None
             ) -> list[str]:
    """The lines for reference parameters with no counterpart. Against the bundled reference
    (``config`` given), whole blocks past the last one your model has are one line that says so
    (your factory built fewer blocks than the run asks for), and a missing final LayerNorm or
    separate head names the flag that leaves it out."""
    missing = [(name, shape) for name, shape in ref_params.items() if name not in params]
    lines = []
    if config is not None:
        yours = {int(m.group(1)) for name in params if (m := _IN_BLOCK.match(name))}
        past = [name for name, _ in missing if (m := _IN_BLOCK.match(name)) and int(m.group(1)) >= len(yours)]
        if past and yours == set(range(len(yours))) and len(yours) < config.num_layers:
            n = len(yours)
            lines.append(f"missing: blocks.{n} to blocks.{config.num_layers - 1} ({len(past)} reference parameters): "
                         f"your model has {n} block{'s' if n != 1 else ''} and the run asks for {config.num_layers} "
                         f"(a factory that takes no argument builds the size it likes: take AdapterOptions and "
                         f"build options.layers blocks, or run with --layers {n})")
            missing = [(name, shape) for name, shape in missing if name not in past]
    lines += [f"missing: the reference parameter {name!r} (shape {shape}) has no counterpart in your model"
              + ("" if config is None else _flag_hint(name, config, present=True)) for name, shape in missing]
    return lines


_IN_BLOCK = re.compile(r"blocks\.(\d+)\.")


def _flag_hint(target: str, config: TransformerConfig, present: bool) -> str:
    """For a reference name the run's architecture has (``present``) or lacks: the flag that would
    change that, where one does (a final LayerNorm, a head of its own)."""
    if target.split(".")[0] == "ln_f":
        return " (if your model has no final LayerNorm, run with --no-final-norm)" if present else \
            " (the run's architecture has no final LayerNorm: run with --final-norm)"
    if target.split(".")[0] == "head":
        return " (if your head reuses the token embedding's weight, run with --tie-head)" if present else \
            " (the run's architecture ties the head to the token embedding: run with --no-tie-head)"
    return ""


# --- the run an adapter is built for, and what the user's code prints -------------------------

@dataclass(frozen=True)
class AdapterOptions:
    """The run a factory builds your model for: ``make_adapter(options)`` receives it (a factory
    that takes no argument still works). Build your model with ``options.layers`` blocks, in
    ``options.dtype``, seeded with ``options.seed``; sizes other than the layer count are in
    ``options.config``."""

    config: TransformerConfig = field(default_factory=TransformerConfig)
    dtype: str = "float64"  # "float64" or "float32": your parameters and logits must have it
    seed: int = 0  # the run's seed (your model's own weights are copied to the reference)

    @property
    def layers(self) -> int:
        return self.config.num_layers


class UserOutput:
    """What the user's code printed (stdout and stderr, in order), by stage: "import",
    "construction" (the factory) and "runs" (everything the report asked the adapter to do). The
    report shows it under its own heading and keeps it out of JSON."""

    def __init__(self) -> None:
        self.stages: dict[str, str] = {}

    @contextlib.contextmanager
    def capture(self, stage: str) -> Iterator[None]:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield
        finally:
            if buffer.getvalue():
                self.stages[stage] = self.stages.get(stage, "") + buffer.getvalue()


def user_output(adapter: Adapter) -> UserOutput:
    """The printed-output record attached to ``adapter`` (created empty on first use)."""
    found = vars(adapter).get(_OUTPUT)
    if found is None:
        found = UserOutput()
        object.__setattr__(adapter, _OUTPUT, found)
    return found


_OUTPUT = "_scratchdiff_output"


def takes_options(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` wants the run's options: it has a positional parameter without a
    default (a factory whose parameters all have defaults is called with none)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): call it bare
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def load_adapter(spec: str, options: AdapterOptions | None = None) -> Adapter:
    """The adapter named ``module:object``: an `Adapter` instance, or a factory (a function, a
    subclass) that returns one, called with ``options`` when it takes an argument and with none
    otherwise. The current directory is importable, as with ``python -m``, so a project's own
    modules are found from its root. What the import and the factory print is captured
    (`user_output`)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"--adapter expects module:object (e.g. my_project.adapter:make_adapter), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    printed = UserOutput()
    try:
        with printed.capture("import"):
            obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - the user's module: any import failure is their input error
        raise InputError(f"--adapter {spec}: cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--adapter {spec}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Adapter) and callable(obj):
        args = (options or AdapterOptions(),) if takes_options(obj) else ()
        try:
            inspect.signature(obj).bind(*args)
        except TypeError as err:
            raise InputError(f"--adapter {spec}: {attr} must be an Adapter, a factory taking the run's options "
                             f"(differential.adapter.AdapterOptions) or one taking no arguments ({err})") from None
        except ValueError:  # no signature to check (a builtin): let the call say
            pass
        with printed.capture("construction"):
            made = obj(*args)
        if isinstance(made, Adapter) and args:
            made_by(made, obj, args[0])
        obj = made
    if not isinstance(obj, Adapter):
        raise InputError(f"--adapter {spec}: got a {type(obj).__name__}, not a differential.adapter.Adapter")
    mine = user_output(obj)
    for stage, text in printed.stages.items():
        mine.stages[stage] = mine.stages.get(stage, "") + text
    return obj


def made_by(adapter: Adapter, factory: Callable[[AdapterOptions], Adapter], options: AdapterOptions) -> Adapter:
    """Note on ``adapter`` that ``factory(options)`` built it (`load_adapter` does this for every factory
    that takes the run's options), so the report can build it again for another dtype (`rebuild`)."""
    object.__setattr__(adapter, _FACTORY, (factory, options))
    return adapter


def rebuild(adapter: Adapter, dtype: str) -> Adapter | None:
    """A new adapter built the way ``adapter`` was (`made_by`), for the same run in ``dtype``; None
    when the report does not know how it was built (an instance, a factory that takes no options)."""
    known = vars(adapter).get(_FACTORY)
    if known is None:
        return None
    factory, options = known
    return made_by(factory(dataclasses.replace(options, dtype=dtype)), factory,
                   dataclasses.replace(options, dtype=dtype))


_FACTORY = "_scratchdiff_factory"


def run_config(adapter: Adapter, config: TransformerConfig, layers_flag: int | None = None) -> TransformerConfig:
    """The model config of a run on ``adapter``: the one the adapter fixes (its ``config``) when it
    fixes one, else ``config`` (what the flags ask for). ``layers_flag`` is a layer count the user
    asked for explicitly (``--layers``). A flag that disagrees with the adapter's fixed config (the
    layer count, or any setting ``config`` has away from the defaults) is an error, never silently
    overridden."""
    fixed = adapter.config
    if fixed is None:
        return config
    if not isinstance(fixed, TransformerConfig):
        raise InputError(f"{type(adapter).__name__}.config must be a TransformerConfig or None, "
                         f"got {type(fixed).__name__}")
    name = f"{type(adapter).__name__}.config"
    default = TransformerConfig()
    clashes = [f"--layers {layers_flag} disagrees with {name} (num_layers={fixed.num_layers})"
               if layers_flag is not None and layers_flag != fixed.num_layers else None]
    for f in dataclasses.fields(TransformerConfig):
        asked, theirs = getattr(config, f.name), getattr(fixed, f.name)
        if f.name != "num_layers" and asked != getattr(default, f.name) and asked != theirs:
            clashes.append(f"the flags ask for {f.name}={asked!r}, {name} has {theirs!r}")
    clashes = [c for c in clashes if c]
    if clashes:
        raise InputError(f"{'; '.join(clashes)}: drop the flag, or have your factory build the model from its "
                         f"options instead of fixing config")
    return fixed


def config_problem(adapter: Adapter, config: TransformerConfig) -> str | None:
    """Why ``adapter`` cannot run with ``config`` (its fixed config says otherwise), or None."""
    fixed = adapter.config
    if fixed is None or fixed == config:
        return None
    names = [f.name for f in dataclasses.fields(TransformerConfig) if getattr(fixed, f.name) != getattr(config, f.name)]
    diffs = ", ".join(f"{n}={getattr(fixed, n)!r} (the run: {getattr(config, n)!r})" for n in names)
    return (f"{type(adapter).__name__}.config disagrees with the report's model config: {diffs}; run with the "
            f"adapter's config (ReportOptions(model=adapter.config); the CLI does this) or drop config")
