"""The `Module` base: automatic registration of parameters and children, and forward hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from scratch_model.autograd import Tensor


class Parameter(Tensor):
    """A leaf tensor that a module owns and an optimizer updates."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)


class HookHandle:
    def __init__(self, hooks: dict[int, Callable], key: int) -> None:
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Module:
    """Base class. Assigning a Parameter or a Module to an attribute registers it by name."""

    _next_hook_id = 0

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_pre_hooks", {})
        object.__setattr__(self, "_post_hooks", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # --- calling --------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for hook in list(self._pre_hooks.values()):
            replaced = hook(self, args)
            if replaced is not None:
                args = replaced if isinstance(replaced, tuple) else (replaced,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._post_hooks.values()):
            replaced = hook(self, args, out)
            if replaced is not None:
                out = replaced
        return out

    def register_forward_pre_hook(self, hook: Callable[[Module, tuple], Any]) -> HookHandle:
        """``hook(module, inputs)`` runs before every forward; a non-None return replaces the
        positional inputs."""
        return self._add_hook(self._pre_hooks, hook)

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], Any]) -> HookHandle:
        """``hook(module, inputs, output)`` runs after every forward; a non-None return replaces
        the output."""
        return self._add_hook(self._post_hooks, hook)

    @staticmethod
    def _add_hook(table: dict[int, Callable], hook: Callable) -> HookHandle:
        key = Module._next_hook_id
        Module._next_hook_id += 1
        table[key] = hook
        return HookHandle(table, key)

    # --- traversal ------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``) and every descendant, depth first, in registration order."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter by dotted name. A parameter shared by two modules (a head tied to the
        embedding) is listed once, under the first name it is found at, as torch does; with
        ``remove_duplicate=False`` under every name."""
        seen: set[int] = set()
        for path, module in self.named_modules():
            for name, param in module._parameters.items():
                if remove_duplicate and id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{path}.{name}" if path else name), param

    def get(self, path: str) -> Module:
        """The descendant at a dotted ``path`` (``""`` is this module)."""
        module: Module = self
        for part in path.split(".") if path else []:
            if part not in module._modules:
                raise ValueError(f"no module at path {path!r} (no child {part!r} in "
                                 f"{type(module).__name__})")
            module = module._modules[part]
        return module

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameter arrays by dotted name (copies, so later training does not change them)."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays into parameters of the same name; names, shapes and dtypes must agree."""
        own = dict(self.named_parameters())
        missing, unexpected = sorted(own.keys() - arrays.keys()), sorted(arrays.keys() - own.keys())
        wrong = sorted(n for n in own.keys() & arrays.keys()
                       if np.shape(arrays[n]) != own[n].shape or np.asarray(arrays[n]).dtype != own[n].dtype)
        if missing or unexpected or wrong:
            raise ValueError(f"cannot load arrays: missing {missing}, unexpected {unexpected}, "
                             f"wrong shape or dtype {wrong}")
        for name, param in own.items():
            param.data = np.array(arrays[name], copy=True)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)


class ModuleList(Module):
    """Children registered as ``"0"``, ``"1"``, ... so their paths read ``blocks.0.attn``."""

    def __init__(self, modules: list[Module]) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __getitem__(self, i: int) -> Module:
        return self._modules[str(i)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
