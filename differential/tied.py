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
    from differential.side import Side


def users_of(named: Iterable[tuple[str, Any]]) -> dict[str, tuple[str, ...]]:
    """From every (name, parameter) pair, duplicates included: for each parameter held by more than
    one module, its first name -> the paths of the modules that hold it."""
    groups: dict[int, list[str]] = {}
    for name, param in named:
        groups.setdefault(id(param), []).append(name)
    return {names[0]: tuple(n.rpartition(".")[0] for n in names) for names in groups.values() if len(names) > 1}


def _shares(name: str, holders: tuple[str, ...], actual_side: Side, oracle_side: Side, expected: Capture,
            tokens: Any) -> list[tuple[str, Check]] | None:
    """Each holder of the shared parameter ``name`` run alone on both sides (the reference's inputs
    and output gradient): the holders whose share of the gradient differs, with the check. None
    when a holder cannot be run alone."""
    short = name.rpartition(".")[2]
    differing = []
    for path in holders:
        call = expected.calls.get(path)
        if call is None or call.grad_output is None:
            return None
        try:
            _, _, mine = actual_side.run_module(path, call.inputs, tokens, call.grad_output)
            _, _, theirs = oracle_side.run_module(path, call.inputs, tokens, call.grad_output)
        except Exception:  # noqa: BLE001 - a side that cannot run it alone: nothing to say here
            return None
        if name not in mine:
            return None  # this side does not say which parameters a module alone touches
        got, want = mine.get(name), theirs.get(name)
        m = compare(got, want, None, float(np.max(np.abs(call.grad_output), initial=0.0)))
        if _differs(got, want, m.match, actual_side.dtype):
            differing.append((path, Check(f"param_grad[{short}]", m, got, want)))
    return differing


def _origin(name: str, holders: tuple[str, ...], path: str, check: Check, base: Origin | None = None) -> Origin:
    """The divergence of holder ``path``'s share of the shared ``name``."""
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
    if base is None:
        return Origin(path, "param_grad", check, kind=kind, reason=reason, forced=True)
    return replace(base, path=path, check=check, kind=kind, reason=reason, forced=True)


def retarget(origin: Origin | None, actual_side: Side, oracle_side: Side, expected: Capture,
             tokens: Any) -> Origin | None:
    """A parameter-gradient origin whose bad parameter is shared: when exactly one holder's share
    differs, that holder is the origin. Anything else (no shared parameter, several or no
    differing shares, a side that cannot run modules alone) keeps ``origin``."""
    if origin is None or origin.phase != "param_grad" or origin.check is None:
        return origin
    short = origin.check.tensor[len("param_grad["):-1]
    name = f"{origin.path.split('#')[0]}.{short}" if origin.path else short
    holders = expected.tied.get(name, ())
    if len(holders) < 2:
        return origin
    differing = _shares(name, holders, actual_side, oracle_side, expected, tokens)
    if not differing or len(differing) != 1:
        return origin
    return _origin(name, holders, *differing[0], base=origin)


def shared_origins(actual_side: Side, oracle_side: Side, expected: Capture, actual: Capture,
                   noise: Capture | None, tokens: Any) -> list[Origin]:
    """For the findings: every holder whose share of a shared parameter's gradient differs, for
    each shared parameter whose (summed) gradient disagrees in the joint run. (Teacher forcing
    leaves shared parameters out: alone, a module gives only its share.)"""
    out = []
    for name, holders in expected.tied.items():
        joint = compare(actual.param_grads.get(name), expected.param_grads.get(name),
                        noise.param_grads.get(name) if noise else None)
        if joint.match:
            continue
        out += [_origin(name, holders, path, check)
                for path, check in _shares(name, holders, actual_side, oracle_side, expected, tokens) or []]
    return out


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


def holders(config: Any, reference: Any = None) -> dict[str, tuple[str, ...]]:
    """The shared parameters of the reference: of ``reference`` (a user's torch module) or of the
    bundled model built from ``config`` (whose only shared parameter is a tied head's table)."""
    if reference is not None:
        return users_of(reference.named_parameters(remove_duplicate=False))
    return {"embedding.weight": ("embedding", "head")} if config.tie_head else {}
