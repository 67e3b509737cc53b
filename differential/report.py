"""Build a differential report: capture both sides, judge every module, localize, diagnose, and
answer the original report's questions (gradient flow, weight update, data sanity).

`run_report(ReportOptions(...))` is the Python API; `Report.to_dict()` is the JSON schema
(documented in README.md). Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from differential import describe, diagnose, phases, tied
from differential import findings as fnd
from differential.capture import Capture, ModuleCrash
from differential.diagnose import Divergence, display_path
from differential.implementations import build_sides
from differential.localize import forward_origin, graph_breaks
from differential.options import ReportOptions
from differential.side import Side, source_location
from scratch_model.config import TransformerConfig

SCHEMA_VERSION = 1




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
    findings: list[Divergence] = field(default_factory=list)  # every root cause, pipeline order; [0] is the first
    not_checked: dict[str, str] = field(default_factory=dict)  # checks that could not run, with the reason
    three_way: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None  # Side.summary() of a user's framework: names, notes, unchecked phases

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["schema_version"] = SCHEMA_VERSION
        out["first_divergence"] = None if self.first_divergence is None else self.first_divergence.to_dict()
        out["findings"] = [d.to_dict() for d in self.findings]
        return out


def run_three_way(options: ReportOptions, other: str | None = None) -> Report:
    """Three implementations on the same batch and weights: the one under test (``options.impl``:
    class, functional, or a user's model through ``options.adapter``), a second one (``other``:
    class or functional; by default the bundled model that is not under test, class for an
    adapter) and torch, each pair compared.

    The main report is the implementation under test against torch. Where the two disagree with each
    other, the report names both source locations; the one that agrees with torch is where to port
    the fix from.
    """
    if options.impl not in ("class", "functional", "adapter") or options.reference is not None:
        raise ValueError(f"the three-way view needs --impl class or functional, or an adapter, with the bundled "
                         f"reference, got {options.impl!r}")
    other = other or ("class" if options.impl != "class" else "functional")
    if other not in ("class", "functional") or other == options.impl:
        raise ValueError(f"the second implementation of a three-way view is class or functional, other than the one "
                         f"under test ({options.impl}), got {other!r}")
    main = run_report(replace(options, against="torch"))
    other_vs_torch = run_report(replace(options, impl=other, adapter=None, against="torch"))
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
        "implementations": [options.impl, other],
        "port_from": port_from,
        "agrees_with_torch": [impl for impl, r in ((options.impl, main), (other, other_vs_torch))
                              if r.verdict == "match"],
    }
    return main


def initial_weights(config: TransformerConfig, seed: int) -> dict[str, np.ndarray]:
    """The seeded float64 initial weights every side starts from, drawn from the config alone (no
    implementation under test is built for them)."""
    from scratch_model.init import seeded_weights

    return seeded_weights(config, seed, np.float64)


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


class Stopwatch:
    """Wall time per stage of a report, in seconds (summed when one stopwatch times many reports)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def resume(self) -> None:
        """Start timing from now (time since the last lap is not charged to any stage)."""
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or since creation) to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def run_report(options: ReportOptions, stopwatch: Stopwatch | None = None) -> Report:
    """Run the implementation under test and the reference on one batch and report.
    ``stopwatch`` (optional) receives the time spent in each stage."""
    from torch_reference.train import cpu_threads

    # The models are tiny: torch and numpy's BLAS on one thread (SCRATCHDIFF_THREADS overrides) are
    # faster, and steady on a busy machine.
    with cpu_threads():
        return _run_report(options, stopwatch or Stopwatch())


def _run_report(options: ReportOptions, watch: Stopwatch) -> Report:
    watch.resume()
    arrays = _checked_weights(options)
    batches = phases.batches(options)
    tokens, targets = batches[0]
    data = phases.data_sanity(options, batches)
    if not data["ok"]:
        return _data_report(data, options)
    mask = None  # a causal model masks itself (options.model.mask); no extra mask
    watch.lap("weights and batch")

    actual_side, oracle_side, noise_side, arrays = build_sides(options, arrays, mask)
    watch.lap("build sides")

    expected = oracle_side.capture(tokens, targets)
    noise = noise_side.capture(tokens, targets) if noise_side else None
    watch.lap("capture reference")
    try:
        actual = actual_side.capture(tokens, targets)
    except ModuleCrash as crash:
        return _crash_report(crash, actual_side, oracle_side, expected, options, data)
    data["logits_shape"] = list(actual.logits.shape)
    watch.lap("capture implementation")

    expected, results = actual_side.judge(actual, expected, noise)  # only what the side can show is judged
    loss = phases.loss_check(actual, expected, noise)
    watch.lap("compare")
    optimizer_checks, weight_update = ([], []) if not actual_side.can_optimize(options.optimizer) else \
        phases.optimizer_phase(actual_side, oracle_side, noise_side, actual, expected, noise, options)
    watch.lap("optimizer step")
    training = phases.training_phase(actual_side, oracle_side, noise_side, batches, options)
    watch.lap("training")

    searching = options.findings or options.isolated
    forced, not_checked = ({}, {}) if not searching else \
        _force(results, actual_side, actual, expected, noise, options, tokens)
    loss_cut = describe.loss_divergence(loss, actual, expected, options, actual_side, oracle_side)
    first = _first_divergence(results, loss, loss_cut, optimizer_checks, actual_side, oracle_side, actual, expected,
                              noise, options, forced)
    watch.lap("localize and diagnose")
    found = [] if not searching else \
        _independent_findings(results, loss, loss_cut, optimizer_checks, actual_side, oracle_side, actual, expected,
                              noise, options, targets, forced, not_checked, first)
    isolated = None
    if options.isolated:
        isolated = [d for d in found if d.module not in ("(loss)", "(data)") and d.phase != "optimizer"
                    and d.kind != diagnose.REPEATED_BACKWARD]
    all_found = fnd.merge(first, found, expected)
    watch.lap("findings")

    flow = phases.gradient_flow(results, actual, expected, noise)
    if not all_found and training.get("first_divergent_step") is not None:
        step = training["first_divergent_step"]
        all_found = [Divergence(module=display_path(""), phase="training", kind=diagnose.VALUE,
                                hint=f"every module and the optimizer step match, but training diverges at step "
                                     f"{step} ({training['first_divergent_what']})",
                                scratch_source=actual_side.source(""), reference_source=oracle_side.source(""))]
    if not all_found:  # soundness: nothing that disagrees goes unreported
        left = fnd.disagreements(results, loss, flow, weight_update, optimizer_checks, training)
        if left:
            all_found = [fnd.unexplained(left[0], actual_side.source(""), oracle_side.source(""))]
    if not (options.findings or options.isolated):
        all_found = all_found[:1]

    modules = [phases.module_entry(results[c.path], actual_side, oracle_side, phases.depth(c.path, expected))
               for c in expected.ordered("enter")]
    report = Report(
        options=_options_dict(options),
        verdict="match" if not all_found else "diverged",
        first_divergence=all_found[0] if all_found else None,
        findings=all_found,
        modules=modules,
        gradient_flow=flow,
        weight_update=weight_update,
        data=data,
        loss=loss,
        training=training,
        isolated=isolated,
        not_checked=not_checked,
        adapter=actual_side.summary(),
    )
    watch.lap("tables")
    return report


def _first_divergence(results: dict[str, Any], loss: dict[str, Any], loss_cut: Divergence | None,
                      optimizer_checks: list, actual_side: Side, oracle_side: Side, actual: Capture,
                      expected: Capture, noise: Capture | None, options: ReportOptions,
                      forced: dict[str, fnd.Forced]) -> Divergence | None:
    """The joint run's first divergence, in pipeline order: forward modules, the loss, the loss's
    own backward, the module backward, the optimizer. ``forced`` (modules run alone) lets a
    container's hint say its children were checked."""
    origin = forward_origin(results, expected)
    if origin is not None:
        return describe.describe(origin, results, actual_side, oracle_side, actual, expected, options, forced)
    if loss_cut is not None:
        return loss_cut
    if actual.loss_requires_grad:
        alone = {"on": "joint", "value": actual.loss, "value_match": loss["match"], "_grad": actual.logits_grad,
                 "grad_match": loss["grad_match"], "grad_metrics": loss["grad_metrics"]}
        first = fnd.loss_backward_finding(alone, expected, actual_side.loss_source(), oracle_side.loss_source())
        if first is not None:
            return first
    origin = actual_side.backward_origin(results, expected, actual)
    if origin is not None and expected.tied:  # a shared parameter: which user's share is wrong
        origin = tied.retarget(origin, actual_side, oracle_side, expected, phases.batches(options)[0][0])
    if origin is not None:
        return describe.describe(origin, results, actual_side, oracle_side, actual, expected, options, forced)
    if actual.max_backward_calls > 1:
        return _repeated_backward(actual.max_backward_calls, actual_side.backward_source(), gradients_match=True)
    optimizer = fnd.optimizer_findings(optimizer_checks, actual, expected, noise,
                                       actual_side.optimizer_source(), oracle_side.optimizer_source())
    return optimizer[0] if optimizer else None


def _repeated_backward(calls: int, source: str, gradients_match: bool = False) -> Divergence:
    lead = "gradients match, but " if gradients_match else ""
    return Divergence(module=display_path(""), phase="backward", kind=diagnose.REPEATED_BACKWARD,
                      hint=f"{lead}one node's backward ran {calls} times in a single backward pass: the engine "
                           "re-walks shared subgraphs once per path, which is exponential in depth (deep models "
                           "seem to hang); walk a topological order once",
                      scratch_source=source, reference_source="")


def _force(results: dict[str, Any], actual_side: Side, actual: Capture, expected: Capture, noise: Capture | None,
           options: ReportOptions, tokens: np.ndarray) -> tuple[dict[str, fnd.Forced], dict[str, str]]:
    """Run alone every module whose joint checks disagree (every module with ``isolated``); and the
    checks that could not run, with the reason."""
    paths = [c.path for c in expected.ordered("exit") if options.isolated or fnd.needs_forcing(results[c.path])]
    missing = {p for p, res in results.items() if res.missing}
    cuts = {o.path for o in graph_breaks(results, expected, actual)}
    try:
        return fnd.force_modules(actual_side, expected, noise, tokens, paths, every=options.isolated,
                                 missing=missing, keep=cuts), {}
    except fnd.NotAvailable as err:
        return {}, {"modules alone": str(err)}


def _independent_findings(results: dict[str, Any], loss: dict[str, Any], loss_cut: Divergence | None,
                          optimizer_checks: list, actual_side: Side, oracle_side: Side, actual: Capture,
                          expected: Capture, noise: Capture | None, options: ReportOptions, targets: np.ndarray,
                          forced: dict[str, fnd.Forced], not_checked: dict[str, str],
                          first: Divergence | None = None) -> list[Divergence]:
    """Every root cause, by teacher forcing (see differential.findings); checks that cannot run are
    added to ``not_checked``. ``first``: the joint run's first divergence, which `fnd.merge` keeps
    over any finding in the same module and phase."""
    breaks = [fnd.refine_cut(o, forced) for o in graph_breaks(results, expected, actual)]
    origins = breaks + fnd.module_origins(forced, results, expected, breaks, actual)
    if expected.tied:  # shared parameters, left out of teacher forcing: each holder's share alone
        origins += tied.shared_origins(actual_side, oracle_side, expected, actual, noise, phases.batches(options)[0][0])
    # merge keeps one finding per module and phase (the first divergence's, else the earliest): an origin
    # whose finding it would drop is not described (a description may re-run the module for an op check),
    # except in the isolated view, which lists every one
    found, described = [], set() if first is None else {(first.module, first.phase)}
    for o in origins:
        key = (display_path(o.path), o.phase)
        if options.isolated or key not in described:
            described.add(key)
            found.append(describe.describe(o, results, actual_side, oracle_side, actual, expected, options, forced))
    scratch_loss, reference_loss = actual_side.loss_source(), oracle_side.loss_source()
    if loss_cut is not None and loss_cut.kind == diagnose.GRAPH_BREAK:
        found.append(loss_cut)
    else:
        alone = fnd.loss_phase(actual_side, actual, expected, noise, targets)
        loss["alone"] = {k: v for k, v in alone.items() if not k.startswith("_")}
        if alone["not_checked"]:
            not_checked["loss alone"] = alone["not_checked"]
        elif not alone["requires_grad"]:
            found.append(Divergence(module="(loss)", phase="training", kind=diagnose.GRAPH_BREAK, tensor="loss",
                                    hint="run alone on the reference's logits, the loss does not require grad: it is "
                                         "built from raw arrays or through an op without a backward, so no gradient "
                                         "reaches any parameter", scratch_source=scratch_loss,
                                    reference_source=reference_loss))
        else:
            found += [d for d in (fnd.loss_value_finding(alone, expected, scratch_loss, reference_loss),
                                  fnd.loss_backward_finding(alone, expected, scratch_loss, reference_loss))
                      if d is not None]
    calls = max(actual.max_backward_calls, actual_side.most_backward_calls)
    if calls > 1:
        found.append(_repeated_backward(calls, actual_side.backward_source()))
    found += fnd.optimizer_findings(optimizer_checks, actual, expected, noise, actual_side.optimizer_source(),
                                    oracle_side.optimizer_source())
    return found


def _crash_report(crash: ModuleCrash, actual_side: Side, oracle_side: Side, expected: Capture,
                  options: ReportOptions, data: dict[str, Any]) -> Report:
    from differential.sides import crash_location

    path = crash.path
    phase = crash.phase
    where = display_path(path) if path is not None else \
        ("the forward, outside every recorded module" if phase == "forward" else "the loss or the backward pass")
    first = Divergence(module=display_path(path or ""), phase=phase, kind=diagnose.CRASH,
                       hint=f"{actual_side.shown_as} raised in {where}: {crash}",
                       scratch_source=crash_location(crash.error),
                       reference_source=oracle_side.source(path or ""))
    return _early_report(options, first, data, expected.loss)


def _early_report(options: ReportOptions, first: Divergence, data: dict[str, Any],
                  expected_loss: float | None) -> Report:
    """A report that stops before comparing modules (bad data, or a crash)."""
    return Report(options=_options_dict(options), verdict="diverged", first_divergence=first, findings=[first],
                  modules=[],
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


def _options_dict(options: ReportOptions) -> dict[str, Any]:
    out = asdict(replace(options, weights=None, adapter=None, reference=None))
    out.pop("weights")
    reference = options.reference  # a user's torch model: named, not serialized
    out["reference"] = None if reference is None else f"{type(reference).__module__}.{type(reference).__qualname__}"
    adapter = options.adapter  # named, not serialized
    out["adapter"] = None if adapter is None else f"{type(adapter).__module__}.{type(adapter).__qualname__}"
    return out
