"""Build a differential report: capture both sides, judge every module, localize, diagnose, and
answer the original report's questions (gradient flow, weight update, data sanity).

`run_report(ReportOptions(...))` is the Python API; `Report.to_dict()` is the JSON schema
(documented in README.md). Nothing here prints.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from differential import diagnose
from differential.adapter import AdapterSide
from differential.capture import Capture, ModuleCrash
from differential.compare import compare, compare_many
from differential.localize import Check, ModuleResult, Origin, backward_origin, forward_origin, judge
from differential.sides import ScratchSide, Side, _mask_kw, make_side, source_location
from scratch_model import data as data_module
from scratch_model.config import TransformerConfig

SCHEMA_VERSION = 1
PHASES = ("forward", "backward", "param_grad", "optimizer", "training")


@dataclass(frozen=True)
class ReportOptions:
    impl: str = "class"  # the implementation under test: class | functional | torch
    against: str = "torch"  # the reference: torch | class | functional
    dtype: str = "float64"
    seed: int = 0
    batch_size: int = 16
    model: TransformerConfig = field(default_factory=TransformerConfig)
    isolated: bool = False
    steps: int = 0  # training steps side by side (0: skip the training phase)
    optimizer: str = "adam"
    lr: float = 3e-3
    mask: str = "none"  # attention mask for the batch: none | causal (True where a query may attend)
    weights: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    device: str = "cpu"
    # [adapter] a user's model through a differential.adapter.Adapter: it becomes the implementation under test
    adapter: object | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        impls = ("class", "functional", "torch")
        if self.adapter is not None:  # [adapter]
            object.__setattr__(self, "impl", "adapter")
            if self.isolated or self.mask != "none":
                raise ValueError("an adapter's model runs whole on tokens alone: isolated mode and masks are "
                                 "not available")
        if self.impl not in impls + ("adapter",):
            raise ValueError(f"impl must be one of {', '.join(impls)}, got {self.impl!r}")
        if self.against not in impls:
            raise ValueError(f"against must be one of {', '.join(impls)}, got {self.against!r}")
        if self.impl == self.against:
            raise ValueError(f"impl and against are both {self.impl!r}: compare two different implementations")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be 0 or more, got {self.steps}")
        if self.mask not in ("none", "causal"):
            raise ValueError(f"mask must be none or causal, got {self.mask!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")


@dataclass
class Divergence:
    module: str
    phase: str
    kind: str
    hint: str
    scratch_source: str
    reference_source: str
    tensor: str | None = None
    metrics: dict[str, Any] | None = None
    op: dict[str, str] | None = None  # the primitive whose backward disagrees with finite differences
    port_from: str | None = None  # three-way: where the implementation that agrees with torch does it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    options: dict[str, Any]
    verdict: str  # "match" | "diverged"
    first_divergence: Divergence | None
    modules: list[dict[str, Any]]
    gradient_flow: list[dict[str, Any]]
    weight_update: list[dict[str, Any]]
    data: dict[str, Any]
    loss: dict[str, Any]
    training: dict[str, Any]
    isolated: list[Divergence] | None = None
    three_way: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None  # [adapter] AdapterSide.summary(): transposed, unchecked phases, names

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["schema_version"] = SCHEMA_VERSION
        out["first_divergence"] = None if self.first_divergence is None else self.first_divergence.to_dict()
        return out


def display_path(path: str) -> str:
    return path or "(model)"


# --- three-way ---------------------------------------------------------------------------------

def run_three_way(options: ReportOptions) -> Report:
    """class vs torch, functional vs torch and class vs functional on the same batch and weights.

    The main report is ``options.impl`` (class or functional) against torch. Where the two scratch
    implementations disagree, the report names both source locations; the one that agrees with
    torch is where to port the fix from.
    """
    if options.impl not in ("class", "functional"):
        raise ValueError(f"the three-way view needs --impl class or functional, got {options.impl!r}")
    other = "functional" if options.impl == "class" else "class"
    main = run_report(replace(options, against="torch"))
    other_vs_torch = run_report(replace(options, impl=other, against="torch"))
    between = run_report(replace(options, against=other))

    def summary(r: Report) -> dict[str, Any]:
        d = r.first_divergence
        return {"verdict": r.verdict, "first_divergence": None if d is None else d.to_dict()}

    port_from = None
    if between.first_divergence is not None:
        d = between.first_divergence
        mine, theirs = d.scratch_source, d.reference_source
        if main.verdict == "diverged" and other_vs_torch.verdict == "match":
            port_from = theirs
        elif main.verdict == "match" and other_vs_torch.verdict == "diverged":
            port_from = mine
        if main.first_divergence is not None and port_from is not None:
            main.first_divergence.port_from = port_from
    main.three_way = {
        f"{options.impl}_vs_torch": summary(main),
        f"{other}_vs_torch": summary(other_vs_torch),
        f"{options.impl}_vs_{other}": summary(between),
        "port_from": port_from,
        "agrees_with_torch": [impl for impl, r in ((options.impl, main), (other, other_vs_torch))
                              if r.verdict == "match"],
    }
    return main


# --- the run ---------------------------------------------------------------------------------

def initial_weights(config: TransformerConfig, seed: int) -> dict[str, np.ndarray]:
    """The seeded float64 initial weights every side starts from."""
    from scratch_model.functional import build_simple_transformer

    params, _ = build_simple_transformer(config, seed=seed, dtype=np.float64)
    return {name: np.array(t.data) for name, t in params.items()}


def _checked_weights(options: ReportOptions) -> dict[str, np.ndarray]:
    """The weights to share: the seeded initial ones, or the user's, checked strictly against the
    model's names and shapes (float32 arrays are widened; every side casts to its own dtype)."""
    from differential.weights import check_arrays

    initial = initial_weights(options.model, options.seed)
    if options.weights is None:
        return initial
    given = {n: a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a
             for n, a in options.weights.items()}
    check_arrays({n: (a.shape, "float64") for n, a in initial.items()}, given, "the report's models")
    return given


def _batches(options: ReportOptions) -> list[tuple[np.ndarray, np.ndarray]]:
    count = max(options.steps, 1)
    data = data_module.make_reversal_data(options.model, num_train=options.batch_size * count, num_test=1,
                                          seed=options.seed)
    return list(data.batches(0, options.batch_size))


def run_report(options: ReportOptions) -> Report:
    """Run the implementation under test and the reference on one batch and report."""
    from torch_reference.train import cpu_threads

    # The models are tiny: torch on one thread is faster, and steady on a busy machine.
    with cpu_threads(1):
        return _run_report(options)


def _run_report(options: ReportOptions) -> Report:
    arrays = _checked_weights(options)
    batches = _batches(options)
    tokens, targets = batches[0]
    data = _data_sanity(options, batches)
    if not data["ok"]:
        return _data_report(data, options)
    mask = _mask(options, tokens.shape[1])

    # [adapter] a user's model keeps its own weights (unless options.weights); the reference copies them
    own = None if options.adapter is not None and options.weights is None else arrays
    actual_side = make_side(options.impl, options.model, own, options.dtype, options.device, mask, options.adapter)
    if isinstance(actual_side, AdapterSide):
        arrays = actual_side.params()
    oracle_side = make_side(options.against, options.model, arrays, "float64", options.device, mask)
    noise_side = make_side(options.against, options.model, arrays, "float32", options.device, mask) \
        if options.dtype == "float32" else None

    expected = oracle_side.capture(tokens, targets)
    try:
        actual = actual_side.capture(tokens, targets)
    except ModuleCrash as crash:
        return _crash_report(crash, actual_side, oracle_side, expected, options, data)
    noise = noise_side.capture(tokens, targets) if noise_side else None
    data["logits_shape"] = list(actual.logits.shape)

    adapted = isinstance(actual_side, AdapterSide)  # [adapter] judge only what the user's framework shows
    if adapted:
        expected, results = actual_side.judge(actual, expected, noise)
    else:
        results = judge(actual, expected, noise)
    loss = _loss_check(actual, expected, noise)
    optimizer_checks, weight_update = ([], []) if adapted and not actual_side.has_optimizer else \
        _optimizer_phase(actual_side, oracle_side, noise_side, actual, expected, options)
    training = _training_phase(actual_side, oracle_side, noise_side, batches, options)

    # Pipeline order: forward modules, the loss, the backward, the optimizer, training.
    first = None
    origin = forward_origin(results, expected)
    if origin is not None:
        first = _describe(origin, results, actual_side, oracle_side, actual, expected, options)
    if first is None:
        first = _loss_divergence(loss, actual, expected, options, actual_side)
    if first is None:
        origin = (actual_side.backward_origin if adapted else backward_origin)(results, expected, actual)  # [adapter]
        if origin is not None:
            first = _describe(origin, results, actual_side, oracle_side, actual, expected, options)
    if first is None and actual.max_backward_calls > 1:
        first = Divergence(module=display_path(""), phase="backward", kind=diagnose.REPEATED_BACKWARD,
                           hint=f"gradients match, but one node's backward ran {actual.max_backward_calls} times in "
                                "a single backward pass: the engine re-walks shared subgraphs once per path, which "
                                "is exponential in depth (deep models seem to hang); walk a topological order once",
                           scratch_source=_backward_source(), reference_source="")
    if first is None:
        first = _first_optimizer_divergence(optimizer_checks, actual_side, oracle_side)
    if first is None and training.get("first_divergent_step") is not None:
        step = training["first_divergent_step"]
        first = Divergence(module=display_path(""), phase="training", kind=diagnose.VALUE,
                           hint=f"every module and the optimizer step match, but training diverges at step "
                                f"{step} ({training['first_divergent_what']})",
                           scratch_source=actual_side.source(""), reference_source=oracle_side.source(""))

    isolated = _isolated(actual_side, expected, noise, options, tokens) if options.isolated else None
    if isolated and first is None:
        first = isolated[0]

    modules = [_module_entry(results[c.path], actual_side, oracle_side, _depth(c.path, expected))
               for c in expected.ordered("enter")]
    return Report(
        options=_options_dict(options),
        verdict="match" if first is None else "diverged",
        first_divergence=first,
        modules=modules,
        gradient_flow=_gradient_flow(results, actual, expected, noise),
        weight_update=weight_update,
        data=data,
        loss=loss,
        training=training,
        isolated=isolated,
        adapter=actual_side.summary() if adapted else None,  # [adapter]
    )


def _crash_report(crash: ModuleCrash, actual_side: Side, oracle_side: Side, expected: Capture,
                  options: ReportOptions, data: dict[str, Any]) -> Report:
    from differential.sides import crash_location

    path = crash.path
    phase = "forward" if path is not None else "backward"
    where = display_path(path) if path is not None else "the backward pass"
    first = Divergence(module=display_path(path or ""), phase=phase, kind=diagnose.CRASH,
                       hint=f"the {options.impl} implementation raised in {where}: {crash}",
                       scratch_source=crash_location(crash.error),
                       reference_source=oracle_side.source(path or ""))
    return _early_report(options, first, data, expected.loss)


def _early_report(options: ReportOptions, first: Divergence, data: dict[str, Any],
                  expected_loss: float | None) -> Report:
    """A report that stops before comparing modules (bad data, or a crash)."""
    return Report(options=_options_dict(options), verdict="diverged", first_divergence=first, modules=[],
                  gradient_flow=[], weight_update=[], data=data,
                  loss={"actual": None, "expected": expected_loss, "match": False, "metrics": None},
                  training={"steps": options.steps, "status": "not_checked", "first_divergent_step": None,
                            "first_divergent_what": None, "loss_actual": [], "loss_expected": []})


def _data_report(data: dict[str, Any], options: ReportOptions) -> Report:
    from scratch_model import data as scratch_data

    failed = [name.replace("_", " ") for name, ok in data["checks"].items() if not ok]
    first = Divergence(module="(data)", phase="training", kind=diagnose.DATA,
                       hint=f"the batch fails data sanity before any model runs: {', '.join(failed)} "
                            f"(token range {data['token_range']}, vocab_size {data['vocab_size']})",
                       scratch_source=source_location(scratch_data.make_reversal_data), reference_source="")
    return _early_report(options, first, data, None)


def _mask(options: ReportOptions, length: int) -> np.ndarray | None:
    if options.mask == "none":
        return None
    return np.tril(np.ones((length, length), dtype=bool))  # (T, T): query i sees keys 0..i


def _backward_source() -> str:
    from scratch_model.autograd import Tensor

    return source_location(Tensor.backward)


def _loss_divergence(loss: dict[str, Any], actual: Capture, expected: Capture, options: ReportOptions,
                     side: Side) -> Divergence | None:
    root = actual.calls.get("")
    logits_in_graph = root is None or root.output_requires_grad
    if expected.loss_requires_grad and not actual.loss_requires_grad and logits_in_graph:
        site = None
        if isinstance(side, ScratchSide):
            tokens, targets = _batches(options)[0]
            site = side.first_raw_tensor(tokens, targets, None, [])
        return Divergence(module="(loss)", phase="training", kind=diagnose.GRAPH_BREAK,
                          hint="the loss does not require grad: it is built from raw arrays (e.g. "
                               "np.sum(out.data)) or through an op without a backward, so no gradient reaches "
                               "any parameter" + (f"; the chain stops at a tensor made by {site}" if site else ""),
                          scratch_source=_loss_source(options.impl, options.adapter),
                          reference_source=_loss_source(options.against), tensor="loss")
    if loss["match"]:
        return None
    ratio = actual.loss / expected.loss if expected.loss else float("inf")
    return Divergence(module="(loss)", phase="training", kind=diagnose.LOSS,
                      hint=f"every module's output matches but the loss differs ({actual.loss:.6g} vs "
                           f"{expected.loss:.6g}, ratio {diagnose.name_factor(ratio)}): the loss function is wrong "
                           "(a sum where a mean is needed gives a ratio of batch x sequence length)",
                      scratch_source=_loss_source(options.impl, options.adapter),
                      reference_source=_loss_source(options.against), tensor="loss", metrics=loss["metrics"])


def _options_dict(options: ReportOptions) -> dict[str, Any]:
    out = asdict(replace(options, weights=None, adapter=None))
    out.pop("weights")
    adapter = options.adapter  # [adapter] named, not serialized
    out["adapter"] = None if adapter is None else f"{type(adapter).__module__}.{type(adapter).__qualname__}"
    return out


def _loss_source(impl: str, adapter: object | None = None) -> str:

    if adapter is not None:  # [adapter]
        return source_location(type(adapter).loss_and_backward)
    if impl == "torch":
        from differential.sides import TorchSide

        return source_location(TorchSide._loss)
    from scratch_model.train import cross_entropy

    return source_location(cross_entropy)


def _loss_check(actual: Capture, expected: Capture, noise: Capture | None) -> dict[str, Any]:
    m = compare(np.array(actual.loss), np.array(expected.loss), None if noise is None else np.array(noise.loss))
    return {"actual": actual.loss, "expected": expected.loss, "match": m.match, "metrics": m.to_dict()}


# --- describing the origin ---------------------------------------------------------------------

def _child_line(container_source: str, child: str) -> str:
    """Point at the line in a container's source that uses ``child`` (e.g. ``self.ln1(``)."""
    file, _, line = container_source.rpartition(":")
    if not file or not line.isdigit():
        return container_source
    from differential.sides import PROJECT_ROOT

    path = PROJECT_ROOT / file
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return container_source
    start = int(line) - 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    pattern = re.compile(rf"\b{re.escape(child)}\b")
    for i in range(start + 1, len(lines)):
        text = lines[i]
        if text.strip() and len(text) - len(text.lstrip()) <= indent:
            break
        if pattern.search(text):
            return f"{file}:{i + 1}"
    return container_source


def _describe(origin: Origin, results: dict[str, ModuleResult], actual_side: Side, oracle_side: Side,
              actual: Capture, expected: Capture, options: ReportOptions) -> Divergence:
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
    scratch_src = actual_side.source(origin.path)
    reference_src = oracle_side.source(origin.path)
    where = display_path(origin.path)
    if origin.kind == diagnose.GRAPH_BREAK and origin.reason and not origin.container_code:
        hint = f"{where}: {words}"
    elif origin.phase == "forward":
        hint = f"{where}'s inputs match but its output does not: {words}"
    elif origin.phase == "backward":
        hint = f"{where}'s output gradient matches but {words}"
    else:
        name = check.tensor if check else "a parameter gradient"
        hint = (f"{where}'s inputs and output gradient match but {name} does not: the weight-gradient "
                f"formula is wrong ({words})") if kind == diagnose.PARAM_GRAD else f"{where}: {words}"
        if kind == diagnose.GRAPH_BREAK:
            pname = _param_name(origin.path, check)
            if not actual.param_requires_grad.get(pname, True):
                hint = f"{pname} was created without requires_grad, so it never gets a gradient"
            else:
                hint = f"{where}: {pname} gets no gradient: the path from it to the output is cut in this module"
    if origin.container_code:
        if kind != diagnose.GRAPH_BREAK:
            hint += f" — every child of {where} matches, so the fault is in {where}'s own code"
        child = _first_child_with_bad_input(origin.path, origin.phase, results, expected)
        if child:
            scratch_src = _child_line(scratch_src, child.rpartition(".")[2])
            reference_src = _child_line(reference_src, child.rpartition(".")[2])
            hint += f" (the input it builds for {child})" if origin.phase == "forward" else \
                f" (around its call of {child})"
    if kind == diagnose.GRAPH_BREAK and isinstance(actual_side, ScratchSide):
        hint += _where_the_chain_stops(actual_side, origin, actual, options)
    op = None
    if is_grad and isinstance(actual_side, ScratchSide) and "chain stops" not in hint:
        op = _op_check(actual_side, origin.path, actual, options)
        if op:
            hint += f"; inside it, the backward of `{op['op']}` ({op['source']}) disagrees with finite differences"
    metrics = check.metrics.to_dict() if check is not None else None
    return Divergence(module=where, phase=origin.phase, kind=kind, hint=hint, scratch_source=scratch_src,
                      reference_source=reference_src, tensor=check.tensor if check else None,
                      metrics=metrics, op=op)


def _where_the_chain_stops(side: ScratchSide, origin: Origin, actual: Capture, options: ReportOptions) -> str:
    """Words naming the code that made the tensor where the gradient chain stops, if it can be found."""
    tokens, targets = _batches(options)[0]
    site = None
    if origin.culprit is not None:
        site = side.creation_site(tokens, *origin.culprit)
        if site and site.startswith("wrapper at scratch_model/autograd/"):
            site = None  # an ordinary op result: the cut is elsewhere
    if site is None:
        call = actual.calls.get(origin.path)
        site = side.first_raw_tensor(tokens, targets, origin.path, call.inputs if call else [])
    return f"; the chain stops at a tensor made by {site}" if site else ""


def _param_name(path: str, check: Check | None) -> str:
    short = check.tensor[len("param_grad["):-1] if check and check.tensor.startswith("param_grad[") else "?"
    return f"{path}.{short}" if path else short


def _first_child_with_bad_input(path: str, phase: str, results: dict[str, ModuleResult],
                                expected: Capture) -> str | None:
    """The child whose input the container got wrong: in the forward, the first child (in call
    order) whose inputs diverge; in the backward, the last child (the first the gradient reaches)
    whose input is detached or whose output gradient diverges."""
    prefix = f"{path}." if path else ""
    depth = path.count(".") + 1 if path else 0
    kids = [c.path for c in expected.ordered("enter")
            if c.path.startswith(prefix) and c.path != path and c.path.count(".") == depth]
    if phase == "forward":
        return next((p for p in kids if not results[p].inputs_match()), None)
    for p in reversed(kids):
        res = results[p]
        if res.detached_inputs:
            return p
    return next((p for p in reversed(kids) if any(not c.match for c in results[p].backward[:1])), None)


def _op_check(side: Side, path: str, actual: Capture, options: ReportOptions) -> dict[str, str] | None:
    """Re-run the blamed scratch module in float64 and check each of its ops' backward."""
    from scratch_model.autograd import Tensor
    from scratch_model.autograd.gradcheck import check_node, nodes_between

    call = actual.calls.get(path)
    if call is None:
        return None
    mask = _mask(options, call.inputs[0].shape[1] if call.inputs else options.model.seq_len)
    probe = ScratchSide(side.impl, options.model, side.params(), "float64", mask)
    fn = probe._module_fn(path.split("#")[0])
    args = [Tensor(np.array(x, dtype=np.float64), requires_grad=True) for x in call.inputs]
    tokens = _batches(options)[0][0]
    out = fn(*(args or [tokens]), **_mask_kw(fn, mask))
    if not isinstance(out, Tensor) or not out.requires_grad:
        return None
    rng = np.random.default_rng(0)
    for node in nodes_between(out, {id(a) for a in args}):
        bad = check_node(node, rng)
        if bad is not None:
            return {"op": bad.op, "source": source_location(bad.function), "input": str(bad.input_index),
                    "relative_error": f"{bad.relative_error:.3g}"}
    return None


# --- module table --------------------------------------------------------------------------------

def _phase_summary(checks: list[Check], missing: bool) -> dict[str, Any]:
    if missing:
        return {"status": "diverged", "worst": None, "tensors": {}}
    if not checks:
        return {"status": "not_checked", "worst": None, "tensors": {}}
    bad = [c for c in checks if not c.match]
    worst = max(checks, key=lambda c: (not c.match, c.metrics.max_abs or 0.0))
    return {"status": "diverged" if bad else "match",
            "worst": {"tensor": worst.tensor, **worst.metrics.to_dict()},
            "tensors": {c.tensor: c.match for c in checks}}


def _depth(path: str, expected: Capture) -> int:
    """How many recorded modules contain ``path`` (the root contains everything)."""
    base = path.split("#")[0]
    return sum(1 for p in expected.calls if p != path and (p == "" or base.startswith(p + ".")))


def _module_entry(res: ModuleResult, actual_side: Side, oracle_side: Side, depth: int) -> dict[str, Any]:
    return {
        "module": display_path(res.path),
        "depth": depth,
        "scratch_source": actual_side.source(res.path) if not res.missing else None,
        "reference_source": oracle_side.source(res.path),
        "forward": _phase_summary(res.forward, res.missing),
        "backward": _phase_summary(res.backward, res.missing),
        "param_grad": _phase_summary(res.param_grad, res.missing),
    }


# --- the original report's questions -----------------------------------------------------------

def _gradient_flow(results: dict[str, ModuleResult], actual: Capture, expected: Capture,
                   noise: Capture | None) -> list[dict[str, Any]]:
    """Per parameter: has a gradient, non-zero, norm, matches the reference (the verdicts the
    module comparison already reached; parameters of modules it did not reach are compared here)."""
    verdicts: dict[str, bool] = {}
    for res in results.values():
        base = res.path.split("#")[0]
        for check in res.param_grad:
            short = check.tensor[len("param_grad["):-1]
            name = f"{base}.{short}" if base else short
            verdicts[name] = verdicts.get(name, True) and check.match
    rest = [name for name in expected.param_grads if name not in verdicts]
    pairs = [(actual.param_grads.get(n), expected.param_grads[n], noise.param_grads.get(n) if noise else None, 0.0)
             for n in rest]
    verdicts.update({n: m.match for n, m in zip(rest, compare_many(pairs), strict=True)})
    rows = []
    for name, ref in expected.param_grads.items():
        got = actual.param_grads.get(name)
        rows.append({"parameter": name, "has_grad": got is not None,
                     "nonzero": bool(got is not None and np.any(got)),
                     "norm": None if got is None else float(np.sqrt(np.vdot(got, got))),
                     "reference_norm": None if ref is None else float(np.sqrt(np.vdot(ref, ref))),
                     "matches_reference": verdicts[name]})
    return rows


def _optimizer_phase(actual_side: Side, oracle_side: Side, noise_side: Side | None, actual: Capture,
                     expected: Capture, options: ReportOptions) -> tuple[list[Check], list[dict[str, Any]]]:
    """One optimizer step with the reference's gradients on both sides, compared parameter by
    parameter; plus the naive question "did the weight change after a step with its own gradients"."""
    ref_grads = expected.param_grads
    stepped = actual_side.optimizer_step(ref_grads, options.optimizer, options.lr)
    ref_stepped = oracle_side.optimizer_step(ref_grads, options.optimizer, options.lr)
    noise_stepped = noise_side.optimizer_step(ref_grads, options.optimizer, options.lr) if noise_side else None
    own_stepped = actual_side.optimizer_step(actual.param_grads, options.optimizer, options.lr)
    before = actual.params
    names = list(ref_stepped)
    updates = {n: None if stepped.get(n) is None else stepped[n] - before[n] for n in names}
    ref_updates = {n: ref_stepped[n] - expected.params[n] for n in names}
    pairs = [(updates[n], ref_updates[n], None if noise_stepped is None else noise_stepped[n] - before[n], 0.0)
             for n in names]
    checks, rows = [], []
    for name, m in zip(names, compare_many(pairs), strict=True):
        update = updates[name]
        checks.append(Check(f"param[{name}]", m, update, ref_updates[name]))
        rows.append({"parameter": name,
                     "changed_after_step": bool(name in own_stepped and np.any(own_stepped[name] != before[name])),
                     "update_matches_reference": m.match,
                     "updated_by_optimizer": bool(update is not None and np.any(update)),
                     "reference_updated": bool(np.any(ref_updates[name]))})
    return checks, rows


def _first_optimizer_divergence(checks: list[Check], actual_side: Side, oracle_side: Side) -> Divergence | None:

    for check in checks:
        if check.match:
            continue
        name = check.tensor[len("param["):-1]
        if check.actual is not None and not np.any(check.actual) and np.any(check.expected):
            kind = diagnose.NOT_UPDATED
            hint = (f"{name} is not updated by the optimizer although its gradient is right: it is missing "
                    "from the parameter list the optimizer was given")
        else:
            kind, words = diagnose.classify(check.actual, check.expected, is_grad=True)
            hint = f"one optimizer step with the reference's gradients: the update of {name} {words}"
        module = name.rpartition(".")[0]
        scratch_src = _optimizer_source(actual_side)
        return Divergence(module=display_path(module), phase="optimizer", kind=kind, hint=hint,
                          scratch_source=scratch_src, reference_source=_optimizer_source(oracle_side),
                          tensor=check.tensor, metrics=check.metrics.to_dict())
    return None


def _optimizer_source(side: Side) -> str:

    if isinstance(side, AdapterSide):  # [adapter]
        return side.optimizer_source()
    if side.impl == "torch":
        import torch

        return source_location(torch.optim.Adam.step)
    from scratch_model.optim import Optimizer

    return source_location(Optimizer.step)


def _training_phase(actual_side: Side, oracle_side: Side, noise_side: Side | None,
                    batches: list[tuple[np.ndarray, np.ndarray]], options: ReportOptions) -> dict[str, Any]:
    if options.steps == 0:
        return {"steps": 0, "status": "not_checked", "first_divergent_step": None, "first_divergent_what": None,
                "loss_actual": [], "loss_expected": []}
    start = actual_side.params()
    losses, params = actual_side.train_steps(batches, options.optimizer, options.lr)
    ref_losses, ref_params = oracle_side.train_steps(batches, options.optimizer, options.lr)
    noise_losses, noise_params = (noise_side.train_steps(batches, options.optimizer, options.lr)
                                  if noise_side else (None, None))
    for side in (actual_side, oracle_side, noise_side):
        if side is not None:
            side.load(start)
    first, what = None, None
    for step in range(len(batches)):
        n_loss = None if noise_losses is None else np.array(noise_losses[step])
        if not compare(np.array(losses[step]), np.array(ref_losses[step]), n_loss).match:
            first, what = step + 1, "loss"
            break
        bad = [n for n in ref_params[step]
               if not compare(params[step][n], ref_params[step][n],
                              None if noise_params is None else noise_params[step][n]).match]
        if bad:
            first, what = step + 1, f"parameter {bad[0]}"
            break
    return {"steps": options.steps, "status": "match" if first is None else "diverged",
            "first_divergent_step": first, "first_divergent_what": what,
            "loss_actual": [float(f"{x:.10g}") for x in losses],
            "loss_expected": [float(f"{x:.10g}") for x in ref_losses]}


def _data_sanity(options: ReportOptions, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Checks on the batch itself, written independently of the data code they check."""
    tokens, targets = batches[0]
    config = options.model
    checks = {
        "targets_are_reversed_inputs": bool(np.array_equal(targets, tokens[:, ::-1])),
        "tokens_in_range": bool(tokens.min() >= 1 and tokens.max() <= config.vocab_size - 1),
        "integer_tokens": bool(np.issubdtype(tokens.dtype, np.integer)),
        "shapes_consistent": tokens.shape == targets.shape and tokens.shape[1] <= config.seq_len,
    }
    return {"checks": checks, "ok": all(checks.values()), "batch_shape": list(tokens.shape),
            "token_range": [int(tokens.min()), int(tokens.max())], "vocab_size": config.vocab_size,
            "logits_shape": None}


# --- isolated mode -------------------------------------------------------------------------------

def _isolated(actual_side: Side, expected: Capture, noise: Capture | None, options: ReportOptions,
              tokens: np.ndarray) -> list[Divergence]:
    """Run every module alone on the reference's inputs and output gradient; list every module
    whose own code diverges (containers only when all their children pass alone)."""
    own_bad: dict[str, tuple[str, Check]] = {}
    for call in expected.ordered("exit"):
        out, grad_in, param_grads = actual_side.run_module(call.path, call.inputs, tokens, call.grad_output)
        nz = noise.calls.get(call.path) if noise else None
        gs = float(np.max(np.abs(call.grad_output))) if call.grad_output is not None else 0.0
        checks = [("forward", Check("output", compare(out, call.output, nz.output if nz else None), out, call.output))]
        for i, g in enumerate(grad_in):
            ref_g = call.grad_inputs[i] if i < len(call.grad_inputs) else None
            ng = nz.grad_inputs[i] if nz and i < len(nz.grad_inputs) else None
            checks.append(("backward", Check(f"grad_input[{i}]", compare(g, ref_g, ng, gs), g, ref_g)))
        for name in expected.direct_params(call.path):
            ref_g = expected.param_grads[name]
            ng = noise.param_grads.get(name) if noise else None
            got = param_grads.get(name)
            checks.append(("param_grad", Check(f"param_grad[{name.rpartition('.')[2]}]",
                                               compare(got, ref_g, ng, gs), got, ref_g)))
        bad = next(((phase, c) for phase, c in checks if not c.match), None)
        prefix = f"{call.path}." if call.path else ""
        child_bad = any(p.startswith(prefix) and p != call.path for p in own_bad)
        if bad and not child_bad:
            own_bad[call.path] = bad
        elif bad:
            own_bad.setdefault(call.path + "\0inherited", bad)
    out = []
    for path, (phase, check) in own_bad.items():
        if path.endswith("\0inherited"):
            continue
        kind, words = diagnose.classify(check.actual, check.expected, phase != "forward")
        if phase == "param_grad" and kind == diagnose.VALUE:
            kind = diagnose.PARAM_GRAD
        out.append(Divergence(module=display_path(path), phase=phase, kind=kind,
                              hint=(f"run alone on the reference's inputs, "
                                    f"{display_path(path)}'s {check.tensor} {words}"),
                              scratch_source=actual_side.source(path), reference_source="",
                              tensor=check.tensor, metrics=check.metrics.to_dict()))
    return out
