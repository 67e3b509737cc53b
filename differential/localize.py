"""Pair two captures module by module, judge each phase, and find where a divergence starts.

Rules (module calls are ordered as they ran):
- forward origin: the first module to *return* (children before parents) whose inputs match but
  whose output does not. A container is blamed only when every child it called matched, which
  means its own code (a residual add, a reshape between children) is wrong.
- backward origin: walking modules in the order their backward finishes (the reverse of the order
  they were entered), the first whose output gradient matches but whose input gradients or own
  parameter gradients do not. An input that the scratch side built without a link to the graph
  (it does not require grad where the reference's does) is not its consumer's fault: it is
  charged to the code that built it.
- a module whose output does not require grad although its inputs or parameters do has cut the
  graph inside its own forward: it is the origin as soon as the walk reaches it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from differential import diagnose
from differential.capture import Call, Capture, parent_call
from differential.compare import Metrics, compare_many


@dataclass
class Check:
    """One compared tensor of one module."""

    tensor: str  # "output", "input[0]", "grad_output", "grad_input[0]", "param_grad[weight]"
    metrics: Metrics
    actual: np.ndarray | None = field(default=None, repr=False)
    expected: np.ndarray | None = field(default=None, repr=False)

    @property
    def match(self) -> bool:
        return self.metrics.match


@dataclass
class ModuleResult:
    path: str
    forward: list[Check] = field(default_factory=list)  # inputs then output
    backward: list[Check] = field(default_factory=list)  # grad_output then grad_inputs
    param_grad: list[Check] = field(default_factory=list)
    missing: bool = False  # the scratch side never called this module
    detached_inputs: list[int] = field(default_factory=list)
    output_detached: bool = False

    def status(self, phase: str) -> str:
        checks = getattr(self, phase)
        if self.missing:
            return "diverged"
        if not checks:
            return "not_checked"
        return "match" if all(c.match for c in checks) else "diverged"

    def inputs_match(self) -> bool:
        return all(c.match for c in self.forward if c.tensor.startswith("input"))

    def output_match(self) -> bool:
        return all(c.match for c in self.forward if c.tensor == "output")


@dataclass
class Origin:
    """Where a divergence starts, before it is dressed up for the report."""

    path: str
    phase: str  # forward | backward | param_grad
    check: Check | None
    container_code: bool = False
    reason: str = ""  # extra words for the hint (graph breaks)
    kind: str | None = None
    culprit: tuple[str, int | str] | None = None  # (module call, input index or "output") that was cut
    forced: bool = False  # found by running the module alone on the reference's inputs (teacher forcing)


def _noise_lookup(noise: Capture | None, path: str) -> Call | None:
    return None if noise is None else noise.calls.get(path)


def judge(actual: Capture, expected: Capture, noise: Capture | None = None) -> dict[str, ModuleResult]:
    """Compare every module call of ``actual`` with the same path in ``expected``."""
    results: dict[str, ModuleResult] = {}
    pending: list[tuple[Check, tuple]] = []  # compared together at the end (compare_many)
    for path, ref in expected.calls.items():
        res = ModuleResult(path)
        results[path] = res
        got = actual.calls.get(path)
        if got is None:
            res.missing = True
            continue
        nz = _noise_lookup(noise, path)

        grad_scale = _scale(ref.grad_output)

        def check(name: str, a: np.ndarray | None, e: np.ndarray | None, n: np.ndarray | None,
                  scale: float = 0.0) -> Check:
            made = Check(name, None, a, e)  # type: ignore[arg-type]  # metrics filled in below
            pending.append((made, (a, e, n, scale)))
            return made

        n_in = max(len(ref.inputs), len(got.inputs))
        for i in range(n_in):
            a = got.inputs[i] if i < len(got.inputs) else None
            e = ref.inputs[i] if i < len(ref.inputs) else None
            res.forward.append(check(f"input[{i}]", a, e, nz.inputs[i] if nz and i < len(nz.inputs) else None))
        res.forward.append(check("output", got.output, ref.output, nz.output if nz else None))

        res.backward.append(check("grad_output", got.grad_output, ref.grad_output,
                                  nz.grad_output if nz else None))
        for i in range(min(len(ref.grad_inputs), len(got.grad_inputs))):
            if ref.grad_inputs[i] is None and got.grad_inputs[i] is None:
                continue
            n = nz.grad_inputs[i] if nz and i < len(nz.grad_inputs) else None
            res.backward.append(check(f"grad_input[{i}]", got.grad_inputs[i], ref.grad_inputs[i], n, grad_scale))
            if ref.input_requires_grad[i] and not got.input_requires_grad[i]:
                res.detached_inputs.append(i)
        for name in expected.direct_params(path):
            n = noise.param_grads.get(name) if noise else None
            res.param_grad.append(check(f"param_grad[{relative_name(name, path)}]",
                                        actual.param_grads.get(name), expected.param_grads[name], n, grad_scale))
        own_params = [actual.param_requires_grad.get(n, False) for n in actual.direct_params(path)]
        feeds = any(got.input_requires_grad) or any(own_params)
        res.output_detached = ref.output_requires_grad and not got.output_requires_grad and feeds
    for (made, _), metrics in zip(pending, compare_many([pair for _, pair in pending]), strict=True):
        made.metrics = metrics
    return results


def relative_name(param: str, path: str) -> str:
    """A parameter's name inside the module call ``path`` (``weight``; ``q_proj.weight`` for one
    charged to an ancestor)."""
    base = path.split("#")[0]
    return param[len(base) + 1:] if base and param.startswith(base + ".") else param


def _scale(array: np.ndarray | None) -> float:
    return 0.0 if array is None or array.size == 0 else float(np.maximum.reduce(np.abs(array), axis=None))


def children(path: str, calls: dict[str, Call]) -> list[Call]:
    """The recorded calls whose nearest recorded ancestor is ``path``, in entry order (a block
    behind an unrecorded list is still a child of the model)."""
    if "#" in path:
        return []
    return [calls[p] for p in _child_paths(tuple(calls)).get(path, ())]


def _children_index(calls: dict[str, Call]) -> dict[str, list[Call]]:
    """`children` of every recorded call at once (a walk over all modules asks each); a repeated call
    ("x#2") has none in it, as in `children`."""
    return {parent: [calls[p] for p in kids] for parent, kids in _child_paths(tuple(calls)).items()}


@functools.lru_cache(maxsize=64)
def _child_paths(paths: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The paths of `children` of every call in ``paths`` (entry order), by parent: worked out once
    per set of recorded calls (every description of a container asks for its children, and a report
    describes a container once per finding it is the origin of)."""
    recorded = {p.split("#")[0] for p in paths}
    index: dict[str, list[str]] = {}
    for p in paths:
        parent = parent_call(p, recorded)
        if parent is not None and parent != p and "#" not in parent:
            index.setdefault(parent, []).append(p)
    return {parent: tuple(kids) for parent, kids in index.items()}


def forward_origin(results: dict[str, ModuleResult], expected: Capture) -> Origin | None:
    for call in expected.ordered("exit"):
        res = results[call.path]
        if res.missing:
            return Origin(call.path, "forward", None, reason="the scratch model never called this module",
                          kind=diagnose.VALUE)
        if res.inputs_match() and not res.output_match():
            out = next(c for c in res.forward if c.tensor == "output")
            kids = children(call.path, expected.calls)
            return Origin(call.path, "forward", out, container_code=bool(kids))
    return None


def _first_bad(checks: list[Check], skip: set[str] = frozenset()) -> Check | None:
    return next((c for c in checks if not c.match and c.tensor not in skip), None)


_OUTPUT_CUT = ("its output does not require grad although its inputs or parameters do: the graph is cut inside "
               "this module's forward (a result rebuilt from raw data, or an op without a backward)")


def graph_breaks(results: dict[str, ModuleResult], expected: Capture, actual: Capture) -> list[Origin]:
    """Every cut in the graph the joint run shows, in backward order: a module whose output does not
    require grad although it should, and a container whose own code cuts the graph between its
    children. These are read from ``requires_grad`` and gradient presence alone, so they stay
    visible when values diverge upstream."""
    out = []
    kids_of = _children_index(expected.calls)
    for call in reversed(expected.ordered("enter")):
        res = results[call.path]
        if res.missing:
            continue
        if res.output_detached:
            out.append(Origin(call.path, "backward", _first_bad(res.backward), kind=diagnose.GRAPH_BREAK,
                              culprit=(call.path, "output"), reason=_OUTPUT_CUT))
            continue
        if not res.backward:
            continue  # gradients were not compared (a framework that keeps none on module outputs)
        cut, culprit = _cut_children(call.path, results, actual, kids_of.get(call.path, []))
        if cut:
            out.append(_cut_origin(call.path, res, cut, culprit))
    return out


def backward_origin(results: dict[str, ModuleResult], expected: Capture, actual: Capture) -> Origin | None:
    kids_of = _children_index(expected.calls)
    for call in reversed(expected.ordered("enter")):
        res = results[call.path]
        if res.missing:
            continue
        if res.output_detached:
            return Origin(call.path, "backward", _first_bad(res.backward), kind=diagnose.GRAPH_BREAK,
                          culprit=(call.path, "output"), reason=_OUTPUT_CUT)
        grad_out = res.backward[0] if res.backward else None
        if grad_out is None or not grad_out.match:
            continue
        cut, culprit = _cut_children(call.path, results, actual, kids_of.get(call.path, []))
        if cut:
            return _cut_origin(call.path, res, cut, culprit)
        skip = {f"grad_input[{i}]" for i in res.detached_inputs}
        bad_input = _first_bad(res.backward[1:], skip)
        if bad_input is not None:
            return Origin(call.path, "backward", bad_input,
                          container_code=bool(kids_of.get(call.path)))
        bad_param = _first_bad(res.param_grad)
        if bad_param is not None:
            return Origin(call.path, "param_grad", bad_param)
    return None


def _cut_origin(path: str, res: ModuleResult, cut: str, culprit: tuple[str, int | str] | None) -> Origin:
    """A container whose own code cuts the graph; when some gradient still reaches its input, only a
    tiny share of the reference's (a result rebuilt from raw data plus a small connected part), the
    kind says so."""
    bad = _first_bad(res.backward[1:]) or _first_bad(res.param_grad)
    if bad is not None and bad.actual is not None and bad.tensor.startswith("grad_input"):
        kind, words = diagnose.classify(bad.actual, bad.expected, is_grad=True)
        if kind == diagnose.MOSTLY_DETACHED:
            return Origin(path, "backward", bad, container_code=True, kind=kind, reason=f"{bad.tensor} {words}; {cut}",
                          culprit=culprit)
    return Origin(path, "backward", bad, container_code=True, kind=diagnose.GRAPH_BREAK, reason=cut, culprit=culprit)


def _cut_children(path: str, results: dict[str, ModuleResult], actual: Capture, found: list[Call]
                  ) -> tuple[str, tuple[str, int | str] | None]:
    """Words on where ``path``'s own code cuts the graph between its ``found`` children (from
    `_children_index`) ("" if it does not), and the cut tensor when it is a child's input.

    Two signs: a child's input that ``path`` built from raw data (it does not require grad and no
    module returned it), or a child's output that never reaches the loss (its gradient is None
    where the reference's is not) although the child itself kept its graph.
    """
    where = path or "the model"
    kids = [(c, results[c.path], actual.calls.get(c.path)) for c in found]
    for child, res, got in kids:
        cut = [i for i in res.detached_inputs if got is not None and i < len(got.produced_by)
               and got.produced_by[i] is None]
        if cut:
            return (f"the input of {child.path} is detached from the graph: {where}'s own code builds it "
                    "from raw data (or with an op that has no backward), so no gradient flows back through it",
                    (child.path, cut[0]))
    own = actual.calls.get(path)
    if own is None or own.grad_output is None:
        return "", None  # no gradient reaches this module: the cut is further down the backward
    for n, (child, _, got) in enumerate(kids):
        if got is not None and got.grad_output is None and child.grad_output is not None and got.output_requires_grad \
                and all(_passes_gradient(later, res) for later, res, _ in kids[n + 1:]):
            return (f"the output of {child.path} never reaches the loss (its gradient is None): {where}'s own "
                    "code uses it through raw data or an op without a backward", None)
    return "", None


def _passes_gradient(call: Call, res: ModuleResult) -> bool:
    """Whether a module called later got a gradient and handed one to every input that needs one
    (if not, a missing gradient before it is its doing, or of what comes after it)."""
    grads = [c for c in res.backward if c.tensor.startswith("grad_input")]
    return call.grad_output is not None and res.backward[:1] != [] and res.backward[0].actual is not None \
        and all(c.actual is not None or c.expected is None for c in grads)
