"""Your own torch model as the reference (``--reference MODULE:OBJECT``, or
``ReportOptions(reference=module)``): the model you are porting from, instead of the bundled
`torch_reference` one.

Any ``torch.nn.Module`` works whose ``forward(tokens)`` takes integer ids (B, T) and returns the
logits (B, T, vocab) (or a tuple whose first item they are). The report copies it (your module
is never changed), casts the copy to the run's precision, puts it in eval mode (dropout off: the
runs must be deterministic) and records every submodule call through forward hooks, under the
module's own dotted names (``transformer.h.0.attn``). The adapter's ``name_map`` then points at
those names.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from differential.errors import InputError


def load_reference(spec: str) -> Any:
    """The ``torch.nn.Module`` that ``"module:object"`` names: a module instance, or a function or
    class called with no arguments that returns one. The current folder is importable."""
    import torch

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"--reference {spec!r}: expected MODULE:OBJECT, e.g. my_project.model:make_model")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"--reference {spec!r}: cannot import {module_name!r} ({err})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--reference {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"--reference {spec!r}: expected a torch.nn.Module (or a function returning one), "
                         f"got {type(obj).__name__}")
    return obj


def prepared(module: Any, dtype: Any, device: str = "cpu") -> Any:
    """A copy of ``module`` in ``dtype`` on ``device``, in eval mode."""
    import copy

    return copy.deepcopy(module).to(device=device, dtype=dtype).eval()


def recorded_modules(model: Any) -> list[tuple[str, Any]]:
    """The submodules whose calls are recorded: all but the containers that never run (lists and
    dicts of modules)."""
    import torch

    return [(path, m) for path, m in model.named_modules()
            if not isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict))]


def module_layout(model: Any) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
    """A torch module's parameter shapes by name (a parameter held twice, as a tied head is, under
    its first name) and its recorded module paths."""
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return params, tuple(path for path, _ in recorded_modules(model))


def first_tensor(out: Any) -> Any:
    """A module's output as one tensor: itself, or the first tensor of a tuple or list (a model that
    returns (logits, loss), an attention that returns (output, weights))."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    return out
