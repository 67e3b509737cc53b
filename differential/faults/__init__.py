"""The fault catalogue: realistic mistakes in a from-scratch transformer, switched on by name.

Each fault is a small piece of faulty code (in this package, so the report's file:line points at
it) and the attribute it replaces. `activate(name)` swaps it in and always restores the clean code;
nothing is active by default and the clean code carries no fault branches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from differential.faults.catalogue import FAULTS, Fault

__all__ = ["FAULTS", "Fault", "activate", "activate_all", "get_fault", "names"]

_INHERITED = object()


def names() -> list[str]:
    return list(FAULTS)


def get_fault(name: str) -> Fault:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; `scratchdiff faults` lists the {len(FAULTS)} known ones")
    return FAULTS[name]


@contextlib.contextmanager
def activate(name: str | None) -> Iterator[Fault | None]:
    """Switch fault ``name`` on for the duration of the block (None: no fault)."""
    if name is None:
        yield None
        return
    fault = get_fault(name)
    saved = []
    try:
        for owner, attr, replacement in fault.patches():
            # A class may inherit the attribute: then restoring means deleting the override.
            own = owner.__dict__ if isinstance(owner, type) else vars(owner)
            saved.append((owner, attr, own.get(attr, _INHERITED)))
            setattr(owner, attr, replacement)
        yield fault
    finally:
        for owner, attr, original in reversed(saved):
            if original is _INHERITED:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


@contextlib.contextmanager
def activate_all(names: list[str]) -> Iterator[list[Fault]]:
    """Switch several faults on at once (they must patch different code)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(activate(name)) for name in names]
