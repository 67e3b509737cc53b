"""Turn a localized origin into a `Divergence`: the kind, the hint, the source lines (the child's
line inside a container), where a graph break's chain stops, and the autograd op whose backward
disagrees with finite differences."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from differential import diagnose, phases
from differential.capture import Capture
from differential.diagnose import Divergence, display_path
from differential.findings import Forced
from differential.localize import Check, ModuleResult, Origin, children
from differential.sides import Side, child_line

if TYPE_CHECKING:
    from differential.options import ReportOptions


def describe(origin: Origin, results: dict[str, ModuleResult], actual_side: Side, oracle_side: Side,
              actual: Capture, expected: Capture, options: ReportOptions,
              forced: dict[str, Forced] | None = None) -> Divergence:
    """``forced``: the modules run alone (teacher forcing), which lets a container's hint say that
    its children were checked."""
    check = origin.check
    is_grad = origin.phase != "forward"
    if origin.kind is not None:
        kind = origin.kind
        words = origin.reason
    elif check is not None:
        kind, words = diagnose.classify(check.actual, check.expected, is_grad)
        if origin.phase == "param_grad" and kind == diagnose.VALUE:
            kind = diagnose.PARAM_GRAD
        words = f"{check.tensor} {words}"
    else:
        kind, words = diagnose.VALUE, origin.reason
    scratch_src = code = actual_side.source(origin.path)
    reference_src = oracle_side.source(origin.path)
    where = display_path(origin.path)
    alone = "run alone on the reference's inputs" + ("" if origin.phase == "forward" else " and output gradient")
    if origin.kind == diagnose.GRAPH_BREAK and origin.reason and not origin.container_code:
        hint = f"{where}: {words}"
    elif origin.kind == diagnose.CRASH:
        hint = f"{where}: {words}"
    elif origin.phase == "forward":
        hint = f"{alone}, {where}'s output does not match: {words}" if origin.forced else \
            f"{where}'s inputs match but its output does not: {words}"
    elif origin.phase == "backward":
        hint = f"{alone}, {where}'s {words}" if origin.forced else f"{where}'s output gradient matches but {words}"
    else:
        name = check.tensor if check else "a parameter gradient"
        lead = f"{alone}, {where}'s output and input gradients match" if origin.forced else \
            f"{where}'s inputs and output gradient match"
        hint = (f"{lead} but {name} does not: the weight-gradient formula is wrong ({words})"
                if kind == diagnose.PARAM_GRAD else f"{where}: {words}")
        if kind == diagnose.GRAPH_BREAK:
            pname = _param_name(origin.path, check)
            if not actual.param_requires_grad.get(pname, True):
                hint = f"{pname} was created without requires_grad, so it never gets a gradient"
            else:
                hint = f"{where}: {pname} gets no gradient: the path from it to the output is cut in this module"
    if origin.container_code:
        claim = _children_claim(origin.path, origin.phase, results, expected, forced)
        if origin.kind is None and claim:
            hint += f" — {claim}, so the fault is in {where}'s own code"
        elif origin.kind is None:
            hint += f" — not every child of {where} could be checked, so the fault is in {where}'s own code or in a " \
                    "child that diverges only inside it"
        child = None if origin.forced else _first_child_with_bad_input(origin.path, origin.phase, results, expected)
        if child:
            leaf = child.split("#")[0].rpartition(".")[2]
            scratch_src = child_line(scratch_src, leaf, _stack(actual, child))
            reference_src = child_line(reference_src, leaf, _stack(expected, child))
            hint += f" (the input it builds for {child})" if origin.phase == "forward" else \
                f" (around its call of {child})"
    if origin.forced and origin.phase == "backward" and kind not in (diagnose.GRAPH_BREAK, diagnose.MOSTLY_DETACHED):
        # run alone, a backward that differs while the module makes a tensor from raw data: a partial cut
        tokens, targets = phases.batches(options)[0]
        call = expected.calls.get(origin.path)
        site = actual_side.first_raw_tensor(tokens, targets, origin.path, call.inputs if call else [])
        if site:
            kind = diagnose.GRAPH_BREAK
            hint += f"; the module builds a tensor from raw data, so part of the gradient stops there: the chain " \
                    f"stops at a tensor made by {site}"
    if kind == diagnose.GRAPH_BREAK and "chain stops" not in hint:
        hint += _where_the_chain_stops(actual_side, origin, actual, options)
    op = None
    if is_grad and "chain stops" not in hint:
        op = _op_check(actual_side, origin.path, expected if origin.forced else actual)
        if op:
            hint += f"; inside it, the backward of `{op['op']}` ({op['source']}) disagrees with finite differences"
    metrics = check.metrics.to_dict() if check is not None else None
    return Divergence(module=where, phase=origin.phase, kind=kind, hint=hint, scratch_source=scratch_src,
                      reference_source=reference_src, tensor=check.tensor if check else None,
                      metrics=metrics, op=op, code=code)


def _children_claim(path: str, phase: str, results: dict[str, ModuleResult], expected: Capture,
                    forced: dict[str, Forced] | None) -> str:
    """What was checked of a container's children, in words ("" when not all of them were)."""
    kids = [c.path for c in children(path, expected.calls)]
    phases_checked = ("forward",) if phase == "forward" else ("forward", "backward", "param_grad")

    def joint_ok(p: str) -> bool:
        res = results[p]
        return not res.missing and all(c.match for ph in phases_checked for c in getattr(res, ph))

    def alone_ok(p: str) -> bool:
        f = (forced or {}).get(p)
        return f is not None and f.error is None and all(f.bad(ph) is None for ph in phases_checked)

    if all(joint_ok(p) for p in kids):
        return f"every child of {display_path(path)} matches"
    if all(joint_ok(p) or alone_ok(p) for p in kids):
        return f"every child of {display_path(path)} matches when run alone on the reference's inputs"
    return ""


def _where_the_chain_stops(side: Side, origin: Origin, actual: Capture, options: ReportOptions) -> str:
    """Words naming the code that made the tensor where the gradient chain stops, if it can be found."""
    tokens, targets = phases.batches(options)[0]
    # the cut tensor's maker when it was built from raw data (an op's result is none: the cut is elsewhere)
    site = None if origin.culprit is None else side.creation_site(tokens, *origin.culprit)
    if site is None:
        call = actual.calls.get(origin.path)
        site = side.first_raw_tensor(tokens, targets, origin.path, call.inputs if call else [])
    return f"; the chain stops at a tensor made by {site}" if site else ""


def _stack(capture: Capture, path: str) -> tuple[tuple[str, int], ...]:
    """The recorded call stack of one module call (empty when that side did not record it)."""
    call = capture.calls.get(path)
    return call.stack if call is not None else ()


def _param_name(path: str, check: Check | None) -> str:
    short = check.tensor[len("param_grad["):-1] if check and check.tensor.startswith("param_grad[") else "?"
    return f"{path}.{short}" if path else short


def _first_child_with_bad_input(path: str, phase: str, results: dict[str, ModuleResult],
                                expected: Capture) -> str | None:
    """The child whose input the container got wrong: in the forward, the first child (in call
    order) whose inputs diverge; in the backward, the last child (the first the gradient reaches)
    whose input is detached or whose output gradient diverges."""
    kids = [c.path for c in sorted(children(path, expected.calls), key=lambda c: c.enter)]
    if phase == "forward":
        return next((p for p in kids if not results[p].inputs_match()), None)
    for p in reversed(kids):
        res = results[p]
        if res.detached_inputs:
            return p
    return next((p for p in reversed(kids) if any(not c.match for c in results[p].backward[:1])), None)


def _op_check(side: Side, path: str, actual: Capture) -> dict[str, str] | None:
    """Re-run the blamed module in float64 on ``actual``'s inputs of it and check each of its ops'
    backward (where the side can)."""
    call = actual.calls.get(path)
    return None if call is None else side.op_check(path, call.inputs)


def loss_divergence(loss: dict[str, Any], actual: Capture, expected: Capture, options: ReportOptions,
                     side: Side, oracle_side: Side) -> Divergence | None:
    root = actual.calls.get("")
    logits_in_graph = root is None or root.output_requires_grad
    if expected.loss_requires_grad and not actual.loss_requires_grad and logits_in_graph:
        tokens, targets = phases.batches(options)[0]
        site = side.first_raw_tensor(tokens, targets, None, [])
        return Divergence(module="(loss)", phase="training", kind=diagnose.GRAPH_BREAK,
                          hint="the loss does not require grad: it is built from raw arrays (e.g. "
                               "np.sum(out.data)) or through an op without a backward, so no gradient reaches "
                               "any parameter" + (f"; the chain stops at a tensor made by {site}" if site else ""),
                          scratch_source=side.loss_source(), reference_source=oracle_side.loss_source(),
                          tensor="loss")
    if loss["match"]:
        return None
    ratio = actual.loss / expected.loss if expected.loss else float("inf")
    return Divergence(module="(loss)", phase="training", kind=diagnose.LOSS,
                      hint=f"every module's output matches but the loss differs ({actual.loss:.6g} vs "
                           f"{expected.loss:.6g}, ratio {diagnose.name_factor(ratio)}): the loss function is wrong "
                           "(a sum where a mean is needed gives a ratio of batch x sequence length)",
                      scratch_source=side.loss_source(), reference_source=oracle_side.loss_source(),
                      tensor="loss", metrics=loss["metrics"])
