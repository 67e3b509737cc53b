"""Parameters that two modules share (a head tied to the token embedding).

A shared parameter's gradient is the sum of one share per module that uses it. The joint run
sees only the sum, charged to the module the parameter is named after (``embedding.weight`` to
the embedding); running one user alone (the reference's inputs and output gradient) gives that
user's share. So a wrong sum is localized by running every user alone on both sides and
comparing share with share: the user whose share differs is where the fault is (the head that
reads the table through ``.data``, so its share never reaches the sum).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from differential import diagnose
from differential.compare import compare
from differential.localize import Check, Origin

if TYPE_CHECKING:
    from differential.capture import Capture
    from differential.sides import Side


def users_of(named: Iterable[tuple[str, Any]]) -> dict[str, tuple[str, ...]]:
    """From every (name, parameter) pair, duplicates included: for each parameter held by more than
    one module, its first name -> the paths of the modules that hold it."""
    groups: dict[int, list[str]] = {}
    for name, param in named:
        groups.setdefault(id(param), []).append(name)
    return {names[0]: tuple(n.rpartition(".")[0] for n in names) for names in groups.values() if len(names) > 1}


def retarget(origin: Origin | None, actual_side: Side, oracle_side: Side, expected: Capture,
             tokens: Any) -> Origin | None:
    """A parameter-gradient origin whose bad parameter is shared: run each user alone on both
    sides; when exactly one user's share differs, that user is the origin. Anything else (no
    shared parameter, several or no differing shares, a side that cannot run modules alone) keeps
    ``origin``."""
    if origin is None or origin.phase != "param_grad" or origin.check is None:
        return origin
    short = origin.check.tensor[len("param_grad["):-1]
    name = f"{origin.path.split('#')[0]}.{short}" if origin.path else short
    holders = expected.tied.get(name, ())
    if len(holders) < 2:
        return origin
    differing = []
    for path in holders:
        call = expected.calls.get(path)
        if call is None or call.grad_output is None:
            return origin
        try:
            _, _, mine = actual_side.run_module(path, call.inputs, tokens, call.grad_output)
            _, _, theirs = oracle_side.run_module(path, call.inputs, tokens, call.grad_output)
        except Exception:  # noqa: BLE001 - a side that cannot run it alone: keep the joint run's origin
            return origin
        got, want = mine.get(name), theirs.get(name)
        m = compare(got, want, None, float(np.max(np.abs(call.grad_output), initial=0.0)))
        if _differs(got, want, m.match, actual_side.dtype):
            differing.append((path, Check(f"param_grad[{short}]", m, got, want)))
    if len(differing) != 1:
        return origin
    path, check = differing[0]
    kind, words = diagnose.classify(check.actual, check.expected, is_grad=True)
    others = [p for p in holders if p != path]
    reason = (f"{name} is shared with {', '.join(others)}; its gradient differs, and run alone on the reference's "
              f"inputs and output gradient, only {path}'s share of it does: {check.tensor} {words}")
    if kind == diagnose.GRAPH_BREAK or check.actual is None:
        reason = (f"{name} is shared with {', '.join(others)}, but {path}'s share of its gradient is missing (run "
                  f"alone on the reference's inputs and output gradient): {path} uses it outside the graph, so the "
                  f"gradient is not summed from both uses")
        kind = diagnose.GRAPH_BREAK
    elif kind == diagnose.VALUE:
        kind = diagnose.PARAM_GRAD
    return replace(origin, path=path, check=check, kind=kind, reason=reason, forced=True)


def _differs(got: Any, want: Any, match: bool, dtype: str) -> bool:
    """Whether one share differs beyond round-off. float64: the report's tolerance (``match``).
    float32 against the float64 reference, with no float32 run of the reference alone to take a
    noise floor from: more than 1e-4 of the share's norm (float32 round-off stays near 1e-6)."""
    if got is None or want is None:
        return (got is None) != (want is None)
    if dtype == "float64":
        return not match
    size = float(np.linalg.norm(want))
    return float(np.linalg.norm(np.asarray(got, dtype=np.float64) - want)) > 1e-4 * max(size, 1e-30)
