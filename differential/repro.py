"""Minimal reproductions (`scratchdiff repro`): one small, standalone pytest file per finding.

For each finding of a report, the case is first shrunk (batch, sequence length, then heads and
widths where the model's weights are drawn from its config) to the smallest one whose report
still has a finding at the same module, in the same phase, of the same kind. At that size the
reference (torch) runs once more: the blamed module alone on its captured inputs and output
gradient (teacher forcing, as `differential.findings` does), the loss alone on the reference's
logits, or one optimizer step on the reference's gradients (a batch that fails data sanity: the
data code draws it again and the task's rule judges it). Its results, the module's weights
and its inputs go into a ``.npz`` file beside a test that rebuilds the implementation's module
from those weights, runs that phase only and compares under the report's tolerance model
(`differential.repro_case`): no torch, no rest of the model.

Findings with nothing to isolate get no file, and `Written.reason` says why: a training
divergence that needs several steps (rerun `scratchdiff report --steps N`), a disagreement no
rule attributed to one module.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from differential import phases
from differential import repro_case as rc
from differential.diagnose import Divergence
from differential.implementations import build_sides
from differential.options import ReportOptions
from differential.report import Report, initial_weights, run_report

# candidates for each size, tried smallest first; a size is kept only while the finding stays
BATCHES = (1, 2, 4, 8)
LENGTHS = (1, 2, 3, 4, 6)
HEADS = (1, 2)
WIDTHS = (1, 2, 4, 8, 16)  # per head
HIDDEN = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Sizes:
    batch: int
    seq_len: int
    heads: int
    width: int
    hidden: int

    @classmethod
    def of(cls, options: ReportOptions) -> Sizes:
        m = options.model
        return cls(options.batch_size, m.seq_len, m.num_heads, m.embed_dim, m.ff_dim)

    def apply(self, options: ReportOptions) -> ReportOptions:
        model = replace(options.model, seq_len=self.seq_len, num_heads=self.heads, embed_dim=self.width,
                        ff_dim=self.hidden)
        return replace(options, batch_size=self.batch, model=model)

    def reduced(self, before: Sizes) -> str:
        """What shrinking changed, e.g. "batch 16 -> 1, sequence 8 -> 2" ("nothing" when it could not)."""
        words = {"batch": "batch", "seq_len": "sequence", "heads": "heads", "width": "width", "hidden": "hidden"}
        parts = [f"{words[k]} {v} -> {getattr(self, k)}" for k, v in asdict(before).items() if getattr(self, k) != v]
        return ", ".join(parts) or "nothing (no smaller case diverges the same way)"


@dataclass
class Written:
    """The repro of one finding: its files, or why none was written."""

    finding: Divergence
    test: Path | None = None
    data: Path | None = None
    reason: str | None = None  # why no repro was written
    before: Sizes | None = None
    after: Sizes | None = None
    reports: int = 0  # reports run while shrinking
    fails_now: bool | None = None  # the written test fails on the implementation as it is (it should)


def target_of(d: Divergence) -> tuple[str | None, str | None]:
    """What a repro of finding ``d`` runs: "module", "loss" or "optimizer"; or None and why not."""
    if d.module == "(data)":
        return "data", None
    if d.module == "(loss)":
        return "loss", None
    if d.phase == "optimizer":
        return "optimizer", None
    if d.phase == "training":
        return None, ("every module and one optimizer step match alone; the divergence needs several training "
                      "steps: rerun `scratchdiff report --steps N` after each change instead")
    if "no rule could attribute it" in d.hint:
        return None, "no rule attributed this disagreement to one module's own code: there is no module to isolate"
    return "module", None


def _path(d: Divergence) -> str:
    return "" if d.module == "(model)" else d.module


def _same_way(report: Report, d: Divergence) -> bool:
    return any((f.module, f.phase, f.kind) == (d.module, d.phase, d.kind) for f in report.findings)


def _with_adapter(options: ReportOptions, adapter_spec: str | None) -> ReportOptions | None:
    """``options`` with a user's adapter built for its config (None: it cannot be)."""
    if options.adapter is None:
        return options
    if adapter_spec is None:
        return None
    from differential.adapter import AdapterOptions, load_adapter, run_config

    adapter = load_adapter(adapter_spec, AdapterOptions(options.model, options.dtype, options.seed))
    run_config(adapter, options.model)
    return replace(options, adapter=adapter)


def _builds_to_size(adapter_spec: str | None) -> bool:
    """Whether the adapter's factory builds the model the run's options ask for (it takes them):
    only then can a smaller model be asked of it. A fixed model would be compared with a reference
    of other sizes, and differ for that reason alone."""
    if adapter_spec is None:
        return False
    import importlib

    from differential.adapter import Adapter, takes_options

    module_name, _, attr = adapter_spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return not isinstance(obj, Adapter) and callable(obj) and takes_options(obj) and \
        getattr(obj, "config", None) is None


def shrink(options: ReportOptions, d: Divergence, adapter_spec: str | None = None) -> tuple[ReportOptions, int]:
    """The smallest options (greedy: batch, sequence, heads, width per head, hidden width, each
    tried smallest first) whose report still has a finding at ``d``'s module, phase and kind; and
    the number of reports run. Sizes that change the model's weights (everything but the batch)
    are tried only when the weights are drawn from the config, not given."""
    best, chosen = Sizes.of(options), options
    tries = 0
    resize = options.weights is None and (options.adapter is None or _builds_to_size(adapter_spec))

    def diverges(sizes: Sizes) -> bool:
        nonlocal tries, chosen
        tries += 1
        trial: ReportOptions | None = sizes.apply(options)
        try:
            if trial.model != options.model:  # a user's model is rebuilt at the new sizes
                trial = _with_adapter(trial, adapter_spec)
            if trial is None or not _same_way(run_report(trial), d):
                return False
        except Exception:  # noqa: BLE001 - a size the model cannot run at is simply not smaller
            return False
        chosen = trial
        return True

    steps: list[tuple[str, tuple[int, ...]]] = [("batch", BATCHES)]
    if resize:
        steps.append(("seq_len", LENGTHS))
    if resize and d.module != "(data)":  # the batch does not depend on the model's widths
        steps += [("heads", HEADS), ("width", WIDTHS), ("hidden", HIDDEN)]
    for field, values in steps:
        current = getattr(best, field)
        for value in values:
            if field == "width":
                value *= best.heads
            if value >= current:
                break
            if field == "heads" and best.width % value:
                continue
            trial = replace(best, **{field: value})
            if diverges(trial):
                best = trial
                break
    return chosen, tries


# --- the case: the reference's values at the shrunk size -------------------------------------------

def build_case(options: ReportOptions, d: Divergence, target: str, adapter_spec: str | None = None
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The meta and arrays of the repro of finding ``d`` at ``options``: the implementation's weights
    it needs, the captured inputs (and output gradient), and the reference's results alone."""
    if target == "data":  # the rule (reversed inputs, tokens in range) judges the batch the test draws
        return {"impl": options.impl, "dtype": options.dtype, "config": asdict(options.model), "seed": options.seed,
                "batch": options.batch_size, "target": target, "module": d.module, "path": "", "phase": d.phase,
                "kind": d.kind, "adapter": None, "compared": ["targets", "tokens_outside_vocabulary"]}, {}
    arrays = initial_weights(options.model, options.seed) if options.weights is None else dict(options.weights)
    actual, oracle, noise, arrays = build_sides(options, arrays)
    tokens, targets = phases.batches(options)[0]
    expected = oracle.capture(tokens, targets)
    noise_capture = noise.capture(tokens, targets) if noise is not None else None
    adapter = options.adapter is not None
    if adapter:  # a user's module is judged as the report judges it: against the capture as compared
        expected, _ = actual.judge(actual.capture(tokens, targets), expected, noise_capture)
    meta: dict[str, Any] = {
        "impl": options.impl, "dtype": options.dtype, "config": asdict(options.model), "seed": options.seed,
        "target": target, "module": d.module, "path": _path(d), "phase": d.phase, "kind": d.kind,
        "adapter": adapter_spec if adapter else None, "optimizer": options.optimizer, "lr": options.lr,
        "inputs": 0, "count_backward_calls": d.kind == "repeated_backward",
    }
    out: dict[str, np.ndarray] = {"tokens": tokens, "targets": targets}
    results: dict[str, dict[str, Any]] = {}
    if target == "module":
        path = meta["path"]
        if path not in expected.calls:
            raise LookupError(f"the reference records no call of {d.module!r}")
        call = expected.calls[path]
        grad_output = None if d.phase == "forward" else call.grad_output
        base = path.split("#")[0]
        inside = {n for n in arrays if not base or n.startswith(base + ".") or base in oracle.users.get(n, ())}
        weights = arrays if adapter else {n: arrays[n] for n in inside}  # a user's model is rebuilt whole
        out.update({f"weight/{n}": np.asarray(a) for n, a in weights.items()})
        out.update({f"input/{i}": np.asarray(x) for i, x in enumerate(call.inputs)})
        meta["inputs"] = len(call.inputs)
        if grad_output is not None:
            out["grad_output"] = np.asarray(grad_output)
        if adapter:
            meta["adapter_state"] = _adapter_state(actual, path)
            results = _judged_results(d, expected, noise_capture, path)
        for name, side in (("expected", oracle), ("noise", noise)) if not adapter else ():
            if side is None:
                continue
            got, grad_in, grads = side.run_module(path, call.inputs, tokens, grad_output)
            results[name] = {"output": got} if d.phase == "forward" else \
                {**{f"grad_input/{i}": g for i, g in enumerate(grad_in)},
                 **{f"param_grad/{n}": g for n, g in grads.items()}}
    elif target == "loss":
        out["logits"] = expected.logits
        out.update({f"weight/{n}": np.asarray(a) for n, a in arrays.items()} if adapter else {})
        for name, side in (("expected", oracle), ("noise", noise)):
            if side is not None:
                value, grad, _ = side.loss_on(expected.logits, targets)
                results[name] = {"loss": np.array(value), "grad_logits": grad}
    else:  # one optimizer step from the saved weights with the reference's gradients
        modules = {_path(d), *(_path(replace(d, module=m)) for m in d.also_in)}
        meta["compared_params"] = sorted(n for n in arrays if n.rpartition(".")[0] in modules)
        out.update({f"weight/{n}": np.asarray(a) for n, a in arrays.items()})
        out.update({f"grad/{n}": g for n, g in expected.param_grads.items() if g is not None})
        for name, side in (("expected", oracle), ("noise", noise)):
            if side is not None:
                after = side.optimizer_step(expected.param_grads, options.optimizer, options.lr)
                results[name] = {f"update/{n}": after[n] - arrays[n] for n in meta["compared_params"]}
    meta["compared"] = sorted(k for k, v in results["expected"].items() if v is not None)
    for name, values in results.items():
        out.update({f"{name}/{k}": np.asarray(v) for k, v in values.items() if v is not None})
    return meta, out


def _adapter_state(side: Any, path: str) -> dict[str, Any]:
    """How the report reads the user's module at ``path`` (reshaped from (batch*time, ...), a
    positional table, integer inputs that are ids): the test's adapter side reads it the same way."""
    return {"reshaped": side.reshaped.get(path), "ref_shapes": side.ref_shapes.get(path),
            "table": side.tables.get(path), "ignored": side.ignored.get(path)}


def _judged_results(d: Divergence, expected: Any, noise: Any, path: str) -> dict[str, dict[str, Any]]:
    """The reference's values for a user's module, as teacher forcing compares them (the capture the
    report judged; a shared parameter is judged by its holders' shares, not here)."""
    out: dict[str, dict[str, Any]] = {}
    for name, capture in (("expected", expected), ("noise", noise)):
        if capture is None:
            continue
        call = capture.calls[path]
        if d.phase == "forward":
            out[name] = {"output": call.output}
            continue
        values = {f"grad_input/{i}": g for i, g in enumerate(call.grad_inputs)}
        values.update({f"param_grad/{n}": capture.param_grads.get(n) for n in expected.direct_params(path)
                       if n not in expected.tied})
        out[name] = values
    return out


# --- the test file ---------------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "model"


def _metrics_line(tensor: str | None, metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "(none recorded)"
    if metrics.get("missing"):
        return f"{tensor}: missing on the {metrics['missing']} side"
    keys = (("max_abs", "max abs"), ("cosine", "cosine"), ("norm_ratio", "norm ratio"),
            ("tolerance_ratio", "tolerance ratio"))
    parts = [f"{label} {metrics[k]:.4g}" for k, label in keys if isinstance(metrics.get(k), (int, float))]
    return f"{tensor}: " + ", ".join(parts)


def _wrap(text: str, indent: str = "    ", width: int = 100) -> str:
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)


def _compared(keys: list[str]) -> str:
    """The compared tensors in a few words: a module's many parameter gradients are counted."""
    params = [k for k in keys if k.startswith(("param_grad/", "update/"))]
    named = [k for k in keys if k not in params] + params[:2]
    rest = f" and {len(params) - 2} more parameters" if len(params) > 2 else ""
    return ", ".join(named) + rest


def render_test(name: str, data_file: str, d: Divergence, meta: dict[str, Any], command: str, reduced: str,
                now: list[str]) -> str:
    """The generated test: its docstring says where it came from; its body runs the saved case."""
    what = {"module": f"runs {d.module} alone on the saved inputs" +
                      (" and output gradient" if d.phase != "forward" else ""),
            "loss": "runs the loss alone on the reference's saved logits",
            "optimizer": "takes one optimizer step from the saved weights with the reference's saved gradients",
            "data": "draws the report's first batch with the data code"}
    impl = f"your framework (through {meta['adapter']})" if meta["adapter"] else f"the {meta['impl']} model"
    against = "task's rule applied to that batch" if meta["target"] == "data" else "reference's saved results"
    doc = [f'"""Repro: {d.module}, {d.phase}, {d.kind}.', "",
           "Written by:", f"    {command}", "",
           _wrap(f"It {what[meta['target']]} of {impl} ({meta['dtype']}) and compares with the {against} "
                 f"({_compared(meta['compared'])}) under the report's tolerance model. It fails while the bug is "
                 "there and passes once it is fixed; keep it as a regression test.", indent=""),
           "", "Seen in the report:", _wrap(_metrics_line(d.tensor, d.metrics)),
           f"    scratch source: {d.scratch_source}", f"    reference source: {d.reference_source}",
           "Hint:", _wrap(d.hint), "", f"Shrunk: {reduced}.", "At this size:",
           *[_wrap(line) for line in now[:4]], *([f"    ... and {len(now) - 4} more"] if len(now) > 4 else []), '"""']
    return "\n".join(doc) + f'''

from pathlib import Path

from differential import repro_case

DATA = Path(__file__).with_name("{data_file}")


def test_{name}() -> None:
    case = repro_case.load(DATA)  # weights, inputs and the reference's results (numpy only)
    got = repro_case.run(case)  # the implementation under test, this phase only
    repro_case.assert_matches(case, got)  # the report's tolerance model
'''


def write_repros(options: ReportOptions, out_dir: Path, command: str, adapter_spec: str | None = None,
                 shrink_cases: bool = True, report: Report | None = None) -> list[Written]:
    """One repro per finding of the report at ``options`` (run here unless ``report`` is given),
    written into ``out_dir``. Faults stay as the caller switched them on."""
    report = report if report is not None else run_report(options)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for d in report.findings:
        target, reason = target_of(d)
        w = Written(d, reason=reason, before=Sizes.of(options))
        written.append(w)
        if target is None:
            continue
        small, w.reports = shrink(options, d, adapter_spec) if shrink_cases else (options, 0)
        w.after = Sizes.of(small)
        try:
            meta, arrays = build_case(small, d, target, adapter_spec)
        except LookupError as err:
            w.reason = str(err)
            continue
        name = f"{slug(d.module)}_{d.phase}_{slug(d.kind)}"
        while name in used:
            name += "_2"
        used.add(name)
        w.test, w.data = out_dir / f"test_{name}.py", out_dir / f"test_{name}.npz"
        rc.save(w.data, meta, arrays)
        case = rc.load(w.data)
        try:
            checks = rc.check(case, rc.run(case))
            now = [rc.describe(k, m) for k, m in checks if not m.match] or ["every compared tensor matches"]
            w.fails_now = any(not m.match for _, m in checks)
        except Exception as err:  # noqa: BLE001 - the code under test raised: the repro shows that too
            now, w.fails_now = [f"raises {type(err).__name__}: {err}"], True
        w.test.write_text(render_test(name, w.data.name, d, meta, command, w.after.reduced(w.before), now))
    return written


# --- rerunning the repros of a folder -------------------------------------------------------------

@dataclass
class Outcome:
    test: Path
    passed: bool
    message: str
    seconds: float


def run_test_file(path: Path) -> Outcome:
    """Import one generated test and run its test functions in this process."""
    start = time.perf_counter()
    spec = importlib.util.spec_from_file_location(f"scratchdiff_repro_{slug(str(path))}", path)
    try:
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        tests = [getattr(module, n) for n in dir(module) if n.startswith("test_") and callable(getattr(module, n))]
        for test in tests:
            test()
        return Outcome(path, True, "passes", time.perf_counter() - start)
    except AssertionError as err:
        message = str(err).splitlines()
        return Outcome(path, False, " ".join(line.strip() for line in message[:3]), time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - the code under test raised: the repro fails
        return Outcome(path, False, f"raises {type(err).__name__}: {err}", time.perf_counter() - start)
    finally:
        sys.modules.pop(spec.name if spec else "", None)


def check_dir(folder: Path) -> list[Outcome]:
    """Rerun every generated repro (``test_*.py`` with its ``.npz``) in ``folder``."""
    return [run_test_file(p) for p in sorted(folder.glob("test_*.py")) if p.with_suffix(".npz").exists()]
