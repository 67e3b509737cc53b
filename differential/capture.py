"""Capture: run one implementation on a batch and record every named module call.

For every module, leaf and container, in execution order: its float inputs, output, the gradient
of the loss w.r.t. the output and w.r.t. each input (through this module alone), plus every
parameter's gradient and the loss. Model code is never changed: the class model and the torch
model are observed through forward hooks, the functional model through its scope recorder. Each
hook puts an identity node on the module's float inputs, so the input gradient read there is the
one that flows through this module, as torch's full backward hooks define it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROOT = ""  # the path of the whole model


@dataclass
class Call:
    """One module call, as numpy arrays (None where a side has no value, e.g. a missing grad)."""

    path: str
    enter: int  # position in the order modules were entered (parents before children)
    exit: int  # position in the order modules returned (children before parents)
    inputs: list[np.ndarray]  # float inputs only, in argument order
    output: np.ndarray
    input_requires_grad: list[bool]
    output_requires_grad: bool
    grad_output: np.ndarray | None = None
    grad_inputs: list[np.ndarray | None] = field(default_factory=list)
    produced_by: list[str | None] = field(default_factory=list)  # which module returned each input
    # the Python stack when the module was entered, innermost first, as (file, line): the line of
    # its container that called it is among them, also when the container's code branches
    stack: tuple[tuple[str, int], ...] = ()


@dataclass
class Capture:
    """Everything one forward and backward of one implementation showed."""

    impl: str
    dtype: str
    calls: dict[str, Call]  # by module path, in entry order
    loss: float
    logits: np.ndarray
    params: dict[str, np.ndarray]
    param_grads: dict[str, np.ndarray | None]
    param_requires_grad: dict[str, bool]
    loss_requires_grad: bool = True
    max_backward_calls: int = 1  # most times one node's backward ran in one pass (should be 1)
    logits_grad: np.ndarray | None = None  # the loss's own backward: d loss / d logits
    logits_grad_known: bool = True  # False: this implementation keeps no gradient on the logits
    # parameters several modules hold (a head tied to the embedding): name -> the holders' paths;
    # the gradient is the sum of one share per holder (see differential.tied)
    tied: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def ordered(self, by: str = "enter") -> list[Call]:
        return sorted(self.calls.values(), key=lambda c: getattr(c, by))

    def direct_params(self, path: str) -> list[str]:
        """Names of the parameters charged to the module call at ``path``: those whose nearest
        recorded module is that one (a parameter of a module that was not recorded, such as a
        user's layer with no counterpart in the name map, is charged to its nearest recorded
        ancestor, or to the model root; none is ever dropped)."""
        if "#" in path:
            return []  # a repeated call: its module's parameters are judged at the first call
        return list(self._charged.get(path, ()))

    @functools.cached_property
    def _charged(self) -> dict[str, list[str]]:
        """The parameters charged to each module call, in parameter order (computed once: every
        module asks)."""
        recorded = {p.split("#")[0] for p in self.calls}
        out: dict[str, list[str]] = {}
        for n in self.params:
            out.setdefault(nearest_recorded(n.rpartition(".")[0], recorded), []).append(n)
        return out


def nearest_recorded(path: str, recorded: set[str] | dict[str, Any]) -> str:
    """``path`` itself if recorded, else its nearest recorded ancestor, else the root."""
    while path and path not in recorded:
        path = path.rpartition(".")[0]
    return path


def parent_call(path: str, recorded: set[str] | dict[str, Any]) -> str | None:
    """The nearest recorded proper ancestor of the module call ``path`` (None for the root):
    ``blocks.0``'s parent is the model even though ``blocks`` (a list) is not recorded."""
    base = path.split("#")[0]
    if base == ROOT:
        return None
    return nearest_recorded(base.rpartition(".")[0], recorded)


class ModuleCrash(Exception):
    """The implementation under test raised while running: ``phase`` is "forward" (``path``: the
    innermost module that was running, None when it raised outside every recorded module) or
    "backward" (the loss and its backward)."""

    def __init__(self, path: str | None, error: BaseException, phase: str = "forward") -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.path, self.error, self.phase = path, error, phase


class CallLog:
    """Hook-side bookkeeping shared by every implementation: entry/exit order, aliases, outputs.

    ``is_tensor``, ``to_numpy``, ``alias`` and ``requires_grad`` adapt it to one framework.
    """

    def __init__(self, is_tensor: Callable[[Any], bool], alias: Callable[[Any], Any],
                 requires_grad: Callable[[Any], bool]) -> None:
        self.is_tensor, self.alias, self.requires_grad = is_tensor, alias, requires_grad
        self.entries: list[str] = []
        self.open: dict[str, tuple[int, tuple]] = {}
        self.raw: dict[str, dict[str, Any]] = {}
        self.exits = 0
        self.producer: dict[int, str] = {}  # id(output tensor) -> first module that returned it
        self.counts: dict[str, int] = {}
        # id(alias) -> the tensor it stands for: a child module sees its parent's alias of a
        # tensor, and records it under the tensor itself (one copy, one comparison)
        self.canonical: dict[int, Any] = {}
        # the module calls running now, innermost last: (path, the frame that called its hook)
        self._running: list[tuple[str, Any]] = []

    def _unique(self, path: str) -> str:
        n = self.counts.get(path, 0) + 1
        self.counts[path] = n
        return path if n == 1 else f"{path}#{n}"

    def before(self, path: str, inputs: tuple) -> tuple:
        key = self._unique(path)
        canonical, producer, is_float, alias = self.canonical, self.producer, self._is_float, self.alias
        floats, produced, aliased = [], [], []
        for x in inputs:
            if not is_float(x):
                aliased.append(x)
                continue
            seen = canonical.get(id(x), x)  # the tensor itself when ``x`` is a parent's alias of it
            a = alias(x)
            if a is not x:
                canonical[id(a)] = seen
            floats.append((seen, a))
            produced.append(producer.get(id(seen)))
            aliased.append(a)
        given = tuple(aliased)
        enter = len(self.entries)
        self.open[path] = (enter, given)
        self.entries.append(key)
        # the stack down to the frame that called the running module's hook: its container's code
        # (where this call was made) is above that frame, the rest of the program below it
        running = self._running
        self.raw[key] = {"enter": enter, "inputs": floats, "produced_by": produced, "path": path,
                         "stack": call_stack(stop=running[-1][1] if running else None)}
        try:
            hook_caller = sys._getframe(2)  # stays on the stack while this module runs: its children stop there
        except ValueError:  # a log driven from the very bottom of the stack
            hook_caller = None
        running.append((path, hook_caller))
        return given

    def after(self, path: str, output: Any) -> Any:
        """Record the module's output; returns what the caller should receive: the output, or with
        ``alias_outputs`` its alias, through which its gradient is read (for frameworks that keep
        gradients only where asked, on the tensors ``alias`` makes)."""
        key = self.entries[self.open.pop(path)[0]]
        self._leave(path)
        raw = self.raw[key]
        raw["output"] = output
        raw["exit"] = self.exits
        self.exits += 1
        if self.is_tensor(output):
            self.producer.setdefault(id(output), key)
            if self.alias_outputs and self._is_float(output) and self.requires_grad(output):
                twin = self.alias(output)
                if twin is not output:
                    self.canonical[id(twin)] = output
                    raw["output_alias"] = twin
                    return twin
        return output

    def drop(self, path: str) -> None:
        """Forget the running call of ``path``: it returned nothing to record (no tensor)."""
        self.open.pop(path, None)
        self._leave(path)

    def _leave(self, path: str) -> None:
        running = self._running
        while running and running.pop()[0] != path:  # calls nest: it is the innermost one
            pass

    def innermost_open(self) -> str | None:
        """The module that was running when an exception left the forward."""
        return max(self.open, key=lambda p: self.open[p][0]) if self.open else None

    def _is_float(self, x: Any) -> bool:
        return self.is_tensor(x) and self.float_dtype(x)

    float_dtype: Callable[[Any], bool] = staticmethod(lambda x: True)  # type: ignore[assignment]
    alias_outputs = False  # hand each module's caller an alias of its output (see `after`)


def finish_calls(log: CallLog, to_numpy: Callable[[Any], np.ndarray],
                 grad_of: Callable[[Any], np.ndarray | None]) -> dict[str, Call]:
    """Turn the raw hook records into `Call`s once the backward has run.

    A tensor that several records hold (one module's output is the next one's input) becomes one
    numpy array, so it is copied once and compared once."""
    arrays: dict[int, np.ndarray] = {}
    grads: dict[int, np.ndarray | None] = {}
    # the log holds every tensor until the end (its records, and `canonical` the aliases), so no id
    # is reused meanwhile
    requires_grad = log.requires_grad

    def value(t: Any) -> np.ndarray:
        array = arrays.get(id(t))
        if array is None:
            array = arrays[id(t)] = to_numpy(t)
        return array

    def grad(t: Any) -> np.ndarray | None:
        if id(t) in grads:
            return grads[id(t)]
        g = grads[id(t)] = grad_of(t)
        return g

    calls: dict[str, Call] = {}
    for key in log.entries:
        raw = log.raw[key]
        if "output" not in raw:
            continue  # the forward raised inside this module
        out = raw["output"]
        pairs = raw["inputs"]
        calls[key] = Call(path=key, enter=raw["enter"], exit=raw["exit"], inputs=[value(x) for x, _ in pairs],
                          output=value(out), input_requires_grad=[requires_grad(x) for x, _ in pairs],
                          output_requires_grad=requires_grad(out), grad_output=grad(raw.get("output_alias", out)),
                          grad_inputs=[grad(a) for _, a in pairs], produced_by=raw["produced_by"],
                          stack=raw.get("stack", ()))
    return calls


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the block runs (then as it was).

    A capture makes thousands of graph objects (tensors, op records, backward closures) that live
    past two young collections, so the collector promotes them to its oldest generation; a few
    captures later that sets off a full collection, which walks every object of the process
    (torch's included): measured on the 12-layer report, a full collection every 4 reports, about
    35 ms a report on average, against about 6 with the captures run this way. Reference counting
    still frees everything a capture drops (its graph, as the backward passes); only cyclic garbage
    waits for the next collection, and a capture makes none."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


STACK_DEPTH = 24  # frames kept per call: the hook machinery and a framework's __call__ take a few


def call_stack(depth: int = STACK_DEPTH, stop: Any = None) -> tuple[tuple[str, int], ...]:
    """(file, line) of the calling frames, innermost first, up to ``stop`` (a frame, left out) or
    ``depth`` frames (a frame walk: no source is read; each line costs a look-up in its code's
    line table, so the walk ends where nothing more is needed)."""
    frame = sys._getframe(1)
    out = []
    while frame is not None and frame is not stop and len(out) < depth:
        out.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(out)

