"""The torch side: the reference (`torch_reference`, or a user's own torch model) behind the `Side`
interface: run a captured forward and backward, run one module alone, take an optimizer step, and
point at the source of a module. The bundled scratch models are adapters (`differential.bundled_adapters`
behind `differential.adapter_side.AdapterSide`), as a user's framework is.

A side holds its model with weights shared from plain arrays; the report never touches framework
objects directly.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from differential.capture import CallLog, Capture, collector_paused, finish_calls
from differential.side import PROJECT_ROOT, Side, charged_index, child_line, source_location
from differential.tied import users_of
from differential.user_reference import first_tensor, recorded_modules
from scratch_model.config import TransformerConfig


def _cast_floats(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, Any]:
    """Float arrays in a side's dtype; anything else as given, for the strict check to report."""
    return {n: a.astype(dtype, copy=False) if isinstance(a, np.ndarray) and a.dtype.kind == "f"  # np.floating
            else a for n, a in arrays.items()}


# --- the torch reference ----------------------------------------------------------------------

class _FreeModels:
    """Built reference models that no live side holds, by what built them (the class, config, dtype
    and device). Building torch's module tree costs more than a side's whole load, and the reports
    of a process (zoo, sweep, the three-way view, a benchmark) build the same ones again and again.
    A side takes one, loads its weights (every parameter, strictly, gradients cleared: nothing of
    the last holder stays) and gives it back when it is garbage. The models kept hold at most
    ``most_bytes`` of parameters and buffers; the ones given back longest ago go first."""

    def __init__(self, most_bytes: int) -> None:
        self.most_bytes = most_bytes
        self._free: list[tuple[Any, Any, int]] = []  # (key, model, bytes), the latest given back last
        self._lock = threading.RLock()  # a sweep's threads; RLock: a side may die while one is taken

    def take(self, key: Any) -> tuple[Any, int] | None:
        """A free model built for ``key`` and its size in bytes (None if there is none)."""
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i][0] == key:
                    _, model, size = self._free.pop(i)
                    return model, size
        return None

    def give_back(self, key: Any, model: Any, size: int) -> None:
        if size > self.most_bytes:
            return
        with self._lock:
            self._free.append((key, model, size))
            while sum(held for _, _, held in self._free) > self.most_bytes:
                del self._free[0]


_REFERENCES = _FreeModels(most_bytes=64 * 2**20)

# what a side finds out about the structure of a bundled reference model (its parameters by name, the
# modules it records, the shared parameters), kept while the model lives: a side's model is its own
# copy, whose structure never changes, and one given back for reuse is as built (`_give_back_as_built`),
# so the next side that takes it need not walk the module tree again. Nothing kept refers to the
# model itself (its submodules do not refer to it), or it would never be let go of
_STRUCTURES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _give_back_as_built(key: Any, model: Any, size: int) -> None:
    """Give a dead side's reference model back, unless something was left on it (a hook, a wrapped
    forward, a parameter frozen, a module switched to eval): what one side's user did to its model
    never reaches another side."""
    modules = list(model.modules())
    if all(m.training and not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or
                               m._backward_pre_hooks or "forward" in m.__dict__) for m in modules) and \
            all(p.requires_grad for p in model.parameters()):
        _REFERENCES.give_back(key, model, size)


class TorchSide(Side):
    impl = "torch"

    def __init__(self, config: TransformerConfig, arrays: dict[str, np.ndarray], dtype: str,
                 device: str = "cpu", mask: np.ndarray | None = None, module: Any = None) -> None:
        """``module``: a user's own torch model to use instead of `torch_reference` (a copy of it,
        see differential.user_reference)."""
        import torch

        from differential.user_reference import prepared
        from torch_reference.model import ReversalTransformer

        self.torch = torch
        self.config, self.dtype, self.device = config, dtype, device
        self.mask = None if mask is None else torch.as_tensor(np.asarray(mask), device=device)
        self.tdtype = getattr(torch, dtype)
        if module is None:  # the bundled reference: one no live side holds, if a side before built it
            key = (ReversalTransformer, config, self.tdtype, str(device))
            taken = _REFERENCES.take(key)
            if taken is None:
                model = ReversalTransformer(config, dtype=self.tdtype, device=device)
                taken = model, sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
            self.model = taken[0]
            weakref.finalize(self, _give_back_as_built, key, *taken).atexit = False
        else:
            self.model = prepared(module, self.tdtype, device)
        self._facts = _STRUCTURES.setdefault(self.model, {}) if module is None else {}
        if "users" not in self._facts:
            self._facts["users"] = users_of(self.model.named_parameters(remove_duplicate=False))
        self.users = self._facts["users"]
        self.load(arrays)

    def _named(self) -> dict[str, Any]:
        """The model's parameters by name, found once per model (see `_STRUCTURES`)."""
        named = self._facts.get("named")
        if named is None:
            named = self._facts["named"] = dict(self.model.named_parameters())
        return named

    def params(self) -> dict[str, np.ndarray]:
        """Copies of the parameters: on the CPU in one dtype (the reference), one numpy copy of them
        all whose parts are the arrays (fewer calls per parameter)."""
        named = self._named()
        dtypes = {(p.dtype, p.device.type) for p in named.values()}
        if len(dtypes) != 1 or next(iter(dtypes))[1] != "cpu":
            return {n: p.detach().cpu().numpy().copy() for n, p in named.items()}
        flat = np.concatenate([p.detach().numpy().reshape(-1) for p in named.values()])
        out, start = {}, 0
        for n, p in named.items():
            size = p.numel()
            out[n] = flat[start:start + size].reshape(p.shape)
            start += size
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Strictly (names, shapes, finite values), through the weight bridge; arrays are cast to
        this side's dtype first."""
        from differential.weights import load_into_torch

        load_into_torch(self.model, _cast_floats(arrays, self.dtype))
        for p in self._named().values():
            p.grad = None

    def _tokens(self, tokens: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(tokens), dtype=self.torch.long, device=self.device)

    def _forward(self, tokens: np.ndarray) -> Any:
        """The logits of the whole model (a user's model may return them first in a tuple)."""
        return first_tensor(self.model(self._tokens(tokens), **mask_kwargs(self.model.forward, self.mask)))

    def _log(self) -> CallLog:
        torch = self.torch

        def alias(x: Any) -> Any:
            if not x.requires_grad:
                return x
            a = x.view_as(x)
            a.retain_grad()
            return a

        log = CallLog(is_tensor=lambda x: isinstance(x, torch.Tensor), alias=alias,
                      requires_grad=lambda x: bool(getattr(x, "requires_grad", False)))
        log.float_dtype = lambda x: x.is_floating_point()  # type: ignore[method-assign]
        return log

    def _loss(self, logits: Any, targets: np.ndarray) -> Any:
        v = logits.shape[-1]
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, v), self._tokens(targets).reshape(-1))

    def loss_source(self) -> str:
        return source_location(TorchSide._loss)

    def optimizer_source(self) -> str:
        from torch_reference.optim import TorchOptimizer

        return source_location(TorchOptimizer.step)

    def capture(self, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        with collector_paused():  # see there: the captures' objects would set off full collections
            return self._capture(tokens, targets)

    def _capture(self, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        from torch.nn.modules import module as torch_module

        recorded, named = self._recording()
        for p in named.values():
            p.grad = None  # zero_grad(set_to_none=True)
        log = self._log()
        tensor_type = self.torch.Tensor

        def leave(path: str, out: Any) -> None:
            out = first_tensor(out)  # a module that returns (output, extras): its output
            if not isinstance(out, tensor_type):
                log.drop(path)  # no tensor to compare (a user's module returning None)
                return
            if out.requires_grad:
                out.retain_grad()
            log.after(path, out)

        if torch_module._global_forward_pre_hooks or torch_module._global_forward_hooks or \
                any(m._forward_pre_hooks or m._forward_hooks for _, m in recorded):
            # hooks of the model's own (or anyone's global ones) run before the recording, as they always did
            handles = [h for path, module in recorded for h in (
                module.register_forward_pre_hook(lambda m, args, path=path: log.before(path, args)),
                module.register_forward_hook(lambda m, args, out, path=path: leave(path, out)))]
            restore = lambda: [h.remove() for h in handles]  # noqa: E731
        else:
            restore = _record_forwards(recorded, log.before, leave)
        try:
            logits = self._forward(tokens)
        finally:
            restore()
        logits.retain_grad()
        loss = self._loss(logits, targets)
        loss.backward()
        calls = finish_calls(log, self._recorded, self._recorded_grad)
        self._stacks = {path.split("#")[0]: c.stack for path, c in reversed(calls.items())}
        self._sources: dict[str, str] = {}  # source() follows the stacks just recorded
        # the gradients as torch left them: every backward here starts from zero_grad(set_to_none=True),
        # so nothing adds to these tensors in place later
        return Capture("torch", self.dtype, calls, float(loss.item()), self._np(logits), self.params(),
                       {n: self._recorded_grad(p) for n, p in named.items()},
                       {n: p.requires_grad for n, p in named.items()}, logits_grad=self._grad(logits),
                       tied=self.users)

    def _recording(self) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
        """The recorded modules (path, module) and the parameters by name (found once: the side's
        model is its own copy, whose structure never changes)."""
        known = self._facts.get("recorded")
        if known is None:  # kept without the model itself, which holds them (see `_STRUCTURES`)
            known = self._facts["recorded"] = [(path, None if m is self.model else m)
                                               for path, m in recorded_modules(self.model)]
        return [(path, self.model if m is None else m) for path, m in known], self._named()

    def loss_on(self, logits, targets):
        given = self.torch.tensor(np.asarray(logits), dtype=self.tdtype, device=self.device, requires_grad=True)
        loss = self._loss(given, targets)
        loss.backward()
        return float(loss.item()), self._grad(given), True

    @staticmethod
    def _np(t: Any) -> np.ndarray:
        t = t.detach()
        return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()  # .cpu() copies already

    @staticmethod
    def _recorded(t: Any) -> np.ndarray:
        """A module call's tensor for the capture: a result torch computed, on the CPU, as it is
        (nothing writes to it once the backward is done), also seen through a view of the whole of
        another such result (a Linear's output on (B, T, D) views its 2-D product); a copy of
        anything that may still change: a leaf (a parameter, a buffer) or a view of one, and of a
        part of a larger tensor (kept alone, it would keep the whole alive)."""
        if t.is_cpu and t.grad_fn is not None:
            base = t._base
            if base is None or (base.grad_fn is not None and base.numel() == t.numel()):
                return t.detach().numpy()
        return TorchSide._np(t)

    @staticmethod
    def _recorded_grad(t: Any) -> np.ndarray | None:
        """A module call's gradient for the capture: as it is on the CPU unless it is a view (the
        next backward gives every tensor a fresh one), else a copy."""
        g = t.grad
        if g is None:
            return None
        return g.numpy() if g.is_cpu and g._base is None else TorchSide._np(g)

    def _grad(self, t: Any) -> np.ndarray | None:
        return None if t.grad is None else self._np(t.grad)

    def run_module(self, path, inputs, tokens, grad_output):
        torch = self.torch
        self.model.zero_grad(set_to_none=True)
        base = path.split("#")[0]
        module = self._module(base)
        args = [torch.tensor(np.asarray(x), dtype=self.tdtype, device=self.device, requires_grad=True)
                for x in inputs]
        out = first_tensor(module(*(args or [self._tokens(tokens)]), **mask_kwargs(module.forward, self.mask)))
        if grad_output is not None and out.requires_grad:
            out.backward(torch.as_tensor(np.asarray(grad_output), dtype=self.tdtype, device=self.device))
        own = {n: self._grad(p) for n, p in self._charged(base)}
        return self._np(out), [self._grad(a) for a in args], own

    def _charged(self, base: str) -> list[tuple[str, Any]]:
        """(name, parameter) of the parameters a module run alone answers for (`charged_index`, in the
        model's order, worked out once per side)."""
        index = getattr(self, "_charged_params", None)
        if index is None:
            index = self._charged_params = charged_index(((n, (n, p)) for n, p in self._named().items()), self.users)
        return index.get(base, [])

    def source(self, path: str) -> str:
        """The module's forward, or, for a module of torch's own (nn.Linear), the line of the
        project's code that calls it: a pointer into site-packages helps nobody port a fix."""
        base = path.split("#")[0]
        known = getattr(self, "_sources", None)
        if known is None:
            known = self._sources = {}
        if base not in known:  # every table row asks; the answer reads source files
            known[base] = self._source(base)
        return known[base]

    def _source(self, base: str) -> str:
        module = self._module(base)
        here = source_location(type(module).forward)
        if not base or not type(module).__module__.startswith("torch."):
            return here
        parent, _, leaf = base.rpartition(".")
        while parent and isinstance(self._module(parent), self.torch.nn.ModuleList):
            parent, _, _ = parent.rpartition(".")
        return _call_site(self.source(parent), leaf, getattr(self, "_stacks", {}).get(base, ()))

    def _module(self, path: str) -> Any:
        """The submodule at ``path``, from a table of them all made once (the side's model is its own
        copy, whose structure never changes; torch's get_submodule walks attributes every time)."""
        modules = getattr(self, "_modules_by_path", None)
        if modules is None:
            modules = self._modules_by_path = dict(self.model.named_modules())
        return modules[path] if path in modules else self.model.get_submodule(path)

    def _optimizer(self, optimizer: str, lr: float, params: list[Any] | None = None) -> Any:
        from torch_reference.optim import TorchOptimizer

        return TorchOptimizer(list(self.model.parameters()) if params is None else params, optimizer, lr)

    def optimizer_step(self, grads, optimizer, lr, current=None):
        """One fresh optimizer's step on copies of the parameters (the model is never touched, so
        there is nothing to restore and ``current`` is not needed). The
        parameters with a gradient are stepped as flat buffers, one per dtype and device: torch's
        update is elementwise, so that gives the bits a step parameter by parameter gives
        (tests/differential/test_flat_optimizer_step.py), in a few tensor calls instead of a few per
        parameter."""
        torch = self.torch
        named = self._named()
        groups: dict[tuple[Any, Any], list[str]] = {}
        for name, p in named.items():
            g = grads.get(name)
            if g is None:
                continue
            if np.shape(g) != tuple(p.shape):
                raise ValueError(f"the gradient of {name!r} has shape {np.shape(g)}, the parameter {tuple(p.shape)}")
            groups.setdefault((p.dtype, p.device), []).append(name)
        with torch.no_grad():
            flats = [torch.cat([named[n].detach().reshape(-1) for n in names]) for names in groups.values()]
        for flat, names in zip(flats, groups.values(), strict=True):
            flat.grad = torch.from_numpy(np.concatenate([np.reshape(grads[n], -1) for n in names])).to(flat)
        if flats:
            self._optimizer(optimizer, lr, flats).step()
        stepped: dict[str, np.ndarray] = {}
        for flat, names in zip(flats, groups.values(), strict=True):
            values, start = flat.cpu().numpy(), 0  # this step's own buffer: no copy needed on the CPU
            for name in names:
                size = named[name].numel()
                stepped[name] = values[start:start + size].reshape(tuple(named[name].shape))
                start += size
        return {name: stepped[name] if name in stepped else self._np(p) for name, p in named.items()}

    def train_steps(self, batches, optimizer, lr):
        opt = self._optimizer(optimizer, lr)
        losses, snapshots = [], []
        for tokens, targets in batches:
            opt.zero_grad()
            loss = self._loss(self._forward(tokens), targets)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            snapshots.append(self.params())
        return losses, snapshots


def _record_forwards(recorded: list[tuple[str, Any]], enter: Callable[[str, tuple], tuple],
                     leave: Callable[[str, Any], None]) -> Callable[[], None]:
    """Record every call of the ``recorded`` (path, module) torch modules: each instance's ``forward``
    is wrapped (``enter(path, positional args)`` gives the arguments it runs on, ``leave(path,
    output)`` sees the result) until the returned function puts the originals back. A hook on a
    module would do the same but send every module call through torch's slow call path (a few
    microseconds each); a wrapped ``forward`` keeps the fast one."""
    def wrap(path: str, forward: Callable[..., Any]) -> Callable[..., Any]:
        def recording(*args: Any, **kwargs: Any) -> Any:
            out = forward(*enter(path, args), **kwargs)
            leave(path, out)
            return out

        recording.__wrapped__ = forward  # type: ignore[attr-defined]  # its signature is forward's (mask_kwargs)
        return recording

    saved = []
    for path, module in recorded:
        saved.append((module, module.__dict__.get("forward", _NO_FORWARD)))
        module.__dict__["forward"] = wrap(path, module.forward)  # a plain instance attribute, not __setattr__

    def restore() -> None:
        for module, own in saved:
            if own is _NO_FORWARD:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = own

    return restore


_NO_FORWARD = object()


# `child_line` reads the container's source file and resolves every frame of the stack; the same
# question comes back for every table row and every report of a process (zoo, sweep, three-way),
# like `source_location`, whose answers are kept the same way
_call_site = functools.lru_cache(maxsize=4096)(child_line)


def crash_location(error: BaseException) -> str:
    """"path:line" of the innermost traceback frame inside the project (outside the venv)."""
    best = "?"
    tb = error.__traceback__
    while tb is not None:
        file = Path(tb.tb_frame.f_code.co_filename).resolve()
        try:
            rel = file.relative_to(PROJECT_ROOT)
            if not rel.parts or rel.parts[0] != ".venv":
                best = f"{rel}:{tb.tb_lineno}"
        except ValueError:
            if "site-packages" not in str(file):
                best = f"{file}:{tb.tb_lineno}"
        tb = tb.tb_next
    return best


def mask_kwargs(fn: Any, mask: Any) -> dict[str, Any]:
    """Pass the attention mask to the modules that take one (the model, blocks, attention)."""
    if mask is None:
        return {}
    try:
        return {"mask": mask} if "mask" in inspect.signature(fn).parameters else {}
    except (TypeError, ValueError):
        return {}
