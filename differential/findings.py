"""Every independent root cause in one run: the report's ``findings``.

The joint run (both models on one batch) names the first divergence; but once a forward diverges,
every output and gradient after it differs too, and a second or third bug hides behind the first.
Teacher forcing separates them:

- every module whose joint checks disagree also runs alone on the reference's inputs (forward)
  and the reference's output gradient (backward), so it is blamed only for the error it adds
  itself. A container is blamed for a phase only when none of its recorded descendants is;
- the loss runs alone on the reference's logits: its value and its own backward (the gradient
  with respect to the logits) are judged apart from the model;
- graph cuts are read from ``requires_grad`` and gradient presence in the joint run, so they stay
  visible when values diverge upstream;
- every parameter the optimizer step gets wrong is listed, grouped by module.

Finally the soundness rule: if anything the report compared disagrees and no finding names it,
the disagreement itself becomes a finding. The verdict is "match" only when nothing disagrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from differential import diagnose
from differential.capture import Capture, parent_call
from differential.compare import agrees, compare
from differential.diagnose import Divergence, display_path
from differential.localize import Check, ModuleResult, Origin, relative_name

if TYPE_CHECKING:
    from differential.side import Side


class NotAvailable(Exception):
    """A side cannot run a check (an adapter without the hooks teacher forcing needs)."""


# --- modules run alone -----------------------------------------------------------------------

@dataclass
class Forced:
    """One module call run alone on the reference's inputs and output gradient. Its check lists
    hold only the checks that disagree (metrics and both arrays): a finding reads nothing else."""

    path: str
    forward: list[Check] = field(default_factory=list)
    backward: list[Check] = field(default_factory=list)
    param_grad: list[Check] = field(default_factory=list)
    error: BaseException | None = None
    grads: dict[str, np.ndarray | None] = field(default_factory=dict)  # every parameter inside it, run alone

    def bad(self, phase: str) -> Check | None:
        return next((c for c in getattr(self, phase) if not c.match), None)


def needs_forcing(res: ModuleResult) -> bool:
    """Whether any joint check of the module disagrees (a module that fully matches in the joint
    run matches alone too: same code, same inputs)."""
    return res.missing or any(not c.match for c in res.forward + res.backward + res.param_grad)


def force_modules(side: Side, expected: Capture, noise: Capture | None, tokens: np.ndarray,
                  paths: list[str], every: bool = True, missing: frozenset[str] | set[str] = frozenset(),
                  keep: frozenset[str] | set[str] = frozenset()) -> dict[str, Forced]:
    """Run each module call in ``paths`` (children before parents) alone on the reference's inputs;
    backward the reference's output gradient. Raises NotAvailable when ``side`` cannot run modules
    alone.

    ``every=False`` skips a container once one of its recorded descendants is already blamed for
    its forward (it diverged or raised alone, or is in ``missing``: never called): `module_origins`
    blames no phase of such a container, so running it alone (often the whole model again) could
    not add a finding. Paths in ``keep`` (graph cuts, which `refine_cut` reads) always run."""
    recorded = {p.split("#")[0] for p in expected.calls}
    covered: set[str] = set()  # containers with a descendant blamed for its forward
    for path in missing:
        _mark(path, covered, recorded)
    out: dict[str, Forced] = {}
    for path in paths:
        if not every and path in covered and path not in keep:
            continue
        call = expected.calls[path]
        nz = noise.calls.get(path) if noise else None
        forced = Forced(path)
        out[path] = forced
        try:
            got, grad_in, grads = side.run_module(path, call.inputs, tokens, call.grad_output)
        except NotAvailable:
            raise
        except Exception as err:  # noqa: BLE001 - the code under test raised: that is the finding
            forced.error = err
            _mark(path, covered, recorded)
            continue
        forced.grads = grads
        forced.forward += _disagreement("output", got, call.output, nz.output if nz else None)
        if forced.bad("forward") is not None:
            _mark(path, covered, recorded)
        if call.grad_output is None:
            continue  # the reference's module does not reach the loss: nothing to backward
        scale = float(np.max(np.abs(call.grad_output), initial=0.0))
        for i, ref in enumerate(call.grad_inputs):
            g = grad_in[i] if i < len(grad_in) else None
            if ref is None and g is None:
                continue
            n = nz.grad_inputs[i] if nz and i < len(nz.grad_inputs) else None
            forced.backward += _disagreement(f"grad_input[{i}]", g, ref, n, scale)
        for name in expected.direct_params(path):
            if name in expected.tied:
                continue  # alone, a module gives only its own share of a shared gradient (differential.tied)
            ref = expected.param_grads[name]
            n = noise.param_grads.get(name) if noise else None
            g = grads.get(name)
            forced.param_grad += _disagreement(f"param_grad[{relative_name(name, path)}]", g, ref, n, scale)
    return out


def _disagreement(tensor: str, actual: np.ndarray | None, expected: np.ndarray | None, noise: np.ndarray | None,
                  scale: float = 0.0) -> list[Check]:
    """The check of one tensor of a module run alone, if it disagrees (its verdict alone is the cheap
    part of a comparison; the metrics are worked out only for a check a finding will read)."""
    if agrees(actual, expected, noise, scale):
        return []
    return [Check(tensor, compare(actual, expected, noise, scale), actual, expected)]


def refine_cut(origin: Origin, forced: dict[str, Forced]) -> Origin:
    """A graph cut seen in the joint run, judged on the module's backward run alone: when a tiny
    share of the reference's gradient still gets through, the kind says so (in the joint run a
    wrong output gradient can hide that)."""
    f = forced.get(origin.path)
    bad = f.bad("backward") if f is not None and f.error is None else None
    if origin.kind != diagnose.GRAPH_BREAK or bad is None or bad.actual is None:
        return origin
    kind, words = diagnose.classify(bad.actual, bad.expected, is_grad=True)
    if kind != diagnose.MOSTLY_DETACHED:
        return origin
    return replace(origin, kind=kind, check=bad, reason=f"run alone, its {bad.tensor} {words}; {origin.reason}")


def _cut_inside(path: str, f: Forced, expected: Capture, actual: Capture) -> list[str]:
    """Parameters inside the module that require grad but got none when it ran alone, where the
    reference's did: the graph is cut somewhere inside it."""
    return [n for n, g in f.grads.items()
            if g is None and expected.param_grads.get(n) is not None and actual.param_requires_grad.get(n, False)]


def module_origins(forced: dict[str, Forced], results: dict[str, ModuleResult], expected: Capture,
                   breaks: list[Origin], actual: Capture) -> list[Origin]:
    """The modules whose own code diverges when run alone, children before parents.

    A module's forward is its own fault when no recorded descendant's forward diverges alone; its
    backward or parameter gradient when no descendant diverges alone in any phase and no graph
    cut at it or below it explains the gradient. A module that raises when run alone is a
    finding of its own."""
    recorded = {p.split("#")[0] for p in expected.calls}
    cut_at = {o.path for o in breaks}
    fwd_bad: set[str] = set()  # modules (and their ancestors) whose forward diverges alone
    any_bad: set[str] = set()  # ... in any phase, or cut
    for path in cut_at:
        _mark(path, any_bad, recorded)
    origins = []
    for call in expected.ordered("exit"):
        path = call.path
        res = results[path]
        f = forced.get(path)
        if res.missing:
            origins.append(Origin(path, "forward", None, reason="the implementation never called this module",
                                  kind=diagnose.VALUE))
            _mark(path, fwd_bad, recorded)
            _mark(path, any_bad, recorded)
            continue
        if f is None:
            continue
        kids_fwd = path in fwd_bad  # a descendant already marked this path
        kids_any = path in any_bad
        if f.error is not None:
            if not kids_any:
                origins.append(Origin(path, "forward", None, kind=diagnose.CRASH, forced=True,
                                      reason=f"it raised when run alone on the reference's inputs: "
                                             f"{type(f.error).__name__}: {f.error}"))
            _mark(path, fwd_bad, recorded)
            _mark(path, any_bad, recorded)
            continue
        bad_fwd, bad_bwd, bad_par = f.bad("forward"), f.bad("backward"), f.bad("param_grad")
        if bad_fwd is not None:
            if not kids_fwd:
                origins.append(Origin(path, "forward", bad_fwd, container_code=_has_children(path, recorded),
                                      forced=True))
            _mark(path, fwd_bad, recorded)
            _mark(path, any_bad, recorded)
            continue
        if bad_bwd is None and bad_par is None:
            continue
        if not kids_any and path not in cut_at:
            cut = _cut_inside(path, f, expected, actual) if bad_bwd is not None else []
            if cut:
                kind, words = diagnose.classify(bad_bwd.actual, bad_bwd.expected, is_grad=True)
                lead = f"its {bad_bwd.tensor} {words}; " if kind == diagnose.MOSTLY_DETACHED else ""
                origins.append(Origin(path, "backward", bad_bwd, forced=True,
                                      kind=kind if kind == diagnose.MOSTLY_DETACHED else diagnose.GRAPH_BREAK,
                                      reason=f"run alone on the reference's inputs and output gradient, {lead}no "
                                             f"gradient reaches {', '.join(cut)}: the graph is cut inside this module "
                                             "(a result rebuilt from raw data, or an op without a backward)"))
            elif bad_bwd is not None:
                origins.append(Origin(path, "backward", bad_bwd, container_code=_has_children(path, recorded),
                                      forced=True))
            else:
                origins.append(Origin(path, "param_grad", bad_par, forced=True))
        _mark(path, any_bad, recorded)
    return origins


def _has_children(path: str, recorded: set[str]) -> bool:
    return "#" not in path and any(p != path and parent_call(p, recorded) == path for p in recorded)


def _mark(path: str, marked: set[str], recorded: set[str]) -> None:
    """Mark every recorded proper ancestor of ``path`` (a descendant's fault reaches them)."""
    parent = parent_call(path, recorded)
    while parent is not None:
        marked.add(parent)
        parent = parent_call(parent, recorded)


# --- the loss alone ---------------------------------------------------------------------------

def loss_phase(side: Side, actual: Capture, expected: Capture, noise: Capture | None,
               targets: np.ndarray) -> dict[str, Any]:
    """The loss judged on its own: on the reference's logits (teacher forcing), or on the joint
    logits when they already match. Its value, and its own backward: d loss / d logits."""
    logits_match = compare(actual.logits, expected.logits, None if noise is None else noise.logits).match
    if logits_match and actual.logits_grad_known:
        value, grad, how = actual.loss, actual.logits_grad, "joint"
    else:
        try:
            value, grad, forced_requires_grad = side.loss_on(expected.logits, targets)
            how = "reference logits"
        except NotAvailable as err:
            return {"on": None, "value": None, "value_match": None, "grad_match": None, "grad_metrics": None,
                    "not_checked": str(err)}
    requires_grad = actual.loss_requires_grad if how == "joint" else forced_requires_grad
    value_m = compare(np.array(value), np.array(expected.loss), None if noise is None else np.array(noise.loss))
    ref_grad = expected.logits_grad
    grad_m = compare(grad, ref_grad, None if noise is None else noise.logits_grad)
    return {"on": how, "value": value, "value_match": value_m.match, "value_metrics": value_m.to_dict(),
            "requires_grad": requires_grad,
            "grad_match": grad_m.match, "grad_metrics": grad_m.to_dict(), "not_checked": None,
            "_grad": grad}


def loss_backward_finding(phase: dict[str, Any], expected: Capture, source: str, reference_source: str
                          ) -> Divergence | None:
    """The loss's own backward diverges. When the loss value is wrong by a factor and its gradient by
    the same factor (a sum where a mean belongs), that is one fault, already named by the value."""
    if phase["grad_match"] in (None, True):
        return None
    grad, ref = phase["_grad"], expected.logits_grad
    if not phase["value_match"] and grad is not None and ref is not None and expected.loss:
        ratio, factor = phase["value"] / expected.loss, diagnose.scale_of(grad, ref)
        if factor is not None and abs(factor - ratio) <= 1e-4 * abs(ratio):
            return None
    kind, words = diagnose.classify(grad, ref, is_grad=True)
    where = "on the reference's logits, " if phase["on"] == "reference logits" else ""
    value = "matches" if phase["value_match"] else "differs too"
    return Divergence(module="(loss)", phase="backward", kind=kind,
                      hint=f"{where}the loss value {value}, but its gradient with respect to the logits {words}: "
                           "the loss's own backward is wrong, and every gradient in the model inherits the error",
                      scratch_source=source, reference_source=reference_source, tensor="grad_logits",
                      metrics=phase["grad_metrics"])


def loss_value_finding(phase: dict[str, Any], expected: Capture, source: str, reference_source: str
                       ) -> Divergence | None:
    """The loss value, computed alone on the reference's logits, diverges."""
    if phase["value_match"] in (None, True):
        return None
    value = phase["value"]
    ratio = value / expected.loss if expected.loss else float("inf")
    where = "on the reference's logits" if phase["on"] == "reference logits" else "on logits that match"
    return Divergence(module="(loss)", phase="training", kind=diagnose.LOSS,
                      hint=f"{where}, the loss differs ({value:.6g} vs {expected.loss:.6g}, ratio "
                           f"{diagnose.name_factor(ratio)}): the loss function is wrong (a sum where a mean is "
                           "needed gives a ratio of batch x sequence length)",
                      scratch_source=source, reference_source=reference_source, tensor="loss",
                      metrics=phase["value_metrics"])


# --- the optimizer: every parameter ------------------------------------------------------------

def optimizer_findings(checks: list[Check], actual: Capture, expected: Capture, noise: Capture | None,
                       source: str, reference_source: str) -> list[Divergence]:
    """One finding per module whose parameters the optimizer step (given the reference's
    gradients) gets wrong, naming every such parameter."""
    by_module: dict[str, list[tuple[str, Check]]] = {}
    for check in checks:
        if not check.match:
            name = check.tensor[len("param["):-1]
            by_module.setdefault(name.rpartition(".")[0], []).append((name, check))
    out = []
    for module, bad in by_module.items():
        name, check = bad[0]
        names = ", ".join(n for n, _ in bad)
        frozen = [n for n, c in bad if c.actual is not None and not np.any(c.actual) and np.any(c.expected)]
        if len(frozen) == len(bad):
            kind = diagnose.NOT_UPDATED
            own = [_own_gradient(n, actual, expected, noise) for n, _ in bad]
            hint = (f"given the reference's gradients, one optimizer step leaves {names} unchanged: "
                    f"{'it is' if len(bad) == 1 else 'they are'} missing from the parameter list the optimizer "
                    f"was given ({'; '.join(own)})")
        else:
            kind, words = diagnose.classify(check.actual, check.expected, is_grad=True)
            hint = f"one optimizer step with the reference's gradients: the update of {name} {words}" + (
                f" (also wrong: {', '.join(n for n, _ in bad[1:])})" if len(bad) > 1 else "")
        out.append(Divergence(module=display_path(module), phase="optimizer", kind=kind, hint=hint,
                              scratch_source=source, reference_source=reference_source, tensor=check.tensor,
                              metrics=check.metrics.to_dict()))
    return out


def _own_gradient(name: str, actual: Capture, expected: Capture, noise: Capture | None) -> str:
    got = actual.param_grads.get(name)
    if got is None:
        return f"{name} has no gradient of its own either"
    n = noise.param_grads.get(name) if noise else None
    right = compare(got, expected.param_grads.get(name), n).match
    return f"{name}'s own gradient {'matches' if right else 'differs from'} the reference"


# --- soundness ---------------------------------------------------------------------------------

def disagreements(results: dict[str, ModuleResult], loss: dict[str, Any], gradient_flow: list[dict[str, Any]],
                  weight_update: list[dict[str, Any]], optimizer_checks: list[Check], training: dict[str, Any]
                  ) -> list[tuple[str, str, str, Check | None]]:
    """Every compared item that disagrees: (module path, phase, what, check)."""
    out: list[tuple[str, str, str, Check | None]] = []
    for res in results.values():
        if res.missing:
            out.append((res.path, "forward", "the module was never called", None))
            continue
        for phase in ("forward", "backward", "param_grad"):
            out += [(res.path, phase, c.tensor, c) for c in getattr(res, phase) if not c.match]
    if not loss.get("match", True):
        out.append(("(loss)", "training", "loss", None))
    if loss.get("grad_match") is False:
        out.append(("(loss)", "backward", "grad_logits", None))
    for row in gradient_flow:
        if not (row["has_grad"] and row["nonzero"] and row["matches_reference"]):
            out.append((row["parameter"].rpartition(".")[0], "param_grad", f"gradient flow row {row['parameter']}",
                        None))
    for row in weight_update:
        if not (row["changed_after_step"] and row["updated_by_optimizer"] and row["update_matches_reference"]):
            out.append((row["parameter"].rpartition(".")[0], "optimizer", f"weight update row {row['parameter']}",
                        None))
    out += [(c.tensor[len("param["):-1].rpartition(".")[0], "optimizer", c.tensor, c)
            for c in optimizer_checks if not c.match]
    if training.get("status") == "diverged":
        out.append(("", "training", f"training step {training['first_divergent_step']}", None))
    return out


def unexplained(item: tuple[str, str, str, Check | None], source: str, reference_source: str) -> Divergence:
    """A disagreement no localization rule attributed: named as it is, without a claimed cause."""
    path, phase, what, check = item
    if check is not None:
        kind, words = diagnose.classify(check.actual, check.expected, is_grad=phase != "forward")
        words = f"{check.tensor} {words}"
    else:
        kind, words = diagnose.VALUE, f"{what} disagrees with the reference"
    return Divergence(module=display_path(path) if not path.startswith("(") else path, phase=phase, kind=kind,
                      hint=f"{words}; no rule could attribute it to one module's own code (the value may change "
                           "between modules, outside any recorded module)",
                      scratch_source=source, reference_source=reference_source,
                      tensor=check.tensor if check else what,
                      metrics=check.metrics.to_dict() if check else None)


# --- order --------------------------------------------------------------------------------------

def pipeline_key(d: Divergence, order: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Where a finding sits in the pipeline: the forward (modules in the order they return), the
    loss, the loss's backward, the module backward (in the order the gradient reaches them),
    repeated backward, the optimizer, training."""
    path = "" if d.module == "(model)" else d.module
    exit_at, enter_at = order.get(path, (0, 0))
    if d.module == "(data)":
        return (0, 0)
    if d.module == "(loss)":
        return (2, 0) if d.phase != "backward" else (3, 0)
    if d.phase == "forward":
        return (1, exit_at)
    if d.phase in ("backward", "param_grad"):
        return (4 if d.kind != diagnose.REPEATED_BACKWARD else 5, -enter_at)
    if d.phase == "optimizer":
        return (6, enter_at)
    return (7, 0)


def root_cause(d: Divergence) -> tuple[str, ...]:
    """Findings with the same key are one root cause seen in several modules: the same autograd op
    whose backward fails finite differences, the same place where a gradient chain stops, or the
    same code (one class's forward, one function) failing in the same phase and kind."""
    if d.op:
        return ("op", d.op["source"])
    stop = _CHAIN_STOPS.search(d.hint)
    if stop:
        return ("cut", stop.group(1))
    if d.module.startswith("("):
        return ("module", d.module, d.phase, d.kind)
    return ("code", d.phase, d.kind, d.code or d.scratch_source)


_CHAIN_STOPS = re.compile(r"the chain stops at a tensor made by (\S+ at \S+)")


def merge(first: Divergence | None, found: list[Divergence], expected: Capture) -> list[Divergence]:
    """The findings in pipeline order, one per root cause (`root_cause`; the others it shows in are
    listed in ``also_in``); the joint run's first divergence (the richest description) comes first."""
    order = {c.path: (c.exit, c.enter) for c in expected.calls.values()}
    unique: dict[tuple[str, str], Divergence] = {}
    for d in found:
        unique.setdefault((d.module, d.phase), d)
    if first is not None:
        unique[(first.module, first.phase)] = first
    ranked = sorted(unique.values(), key=lambda d: pipeline_key(d, order))
    if first is not None and ranked[0] is not first:
        ranked.remove(first)
        ranked.insert(0, first)  # the joint run saw it first: the pipeline's own first divergence
    causes: dict[tuple[str, ...], Divergence] = {}
    for d in ranked:
        seen = causes.setdefault(root_cause(d), d)
        if seen is not d and d.module != seen.module and d.module not in seen.also_in:
            seen.also_in.append(d.module)  # the same module in another phase is the same place
    return list(causes.values())
