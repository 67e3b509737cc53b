"""The zoo: run the report with every fault of the catalogue switched on, one at a time, and
check that each is detected and localized; optionally, the effect of each on training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from differential import faults
from differential.report import Report, ReportOptions, run_report


@dataclass
class ZooRow:
    fault: str
    bug_class: int
    impl: str
    expected_module: str
    expected_phase: str
    expected_kind: str
    reported_module: str | None
    reported_phase: str | None
    reported_kind: str | None
    detected: bool
    localized: bool  # module and phase right
    kind_right: bool
    naive_all_have_grad: bool | None  # the original report's checks: they pass although the model is broken
    naive_all_changed: bool | None
    exact_match_after_training: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def options_for(fault: faults.Fault, base: ReportOptions) -> ReportOptions:
    """``base`` with an implementation the fault lives in and the architecture it needs."""
    impl = base.impl if fault.applies_to(base.impl) else ("functional" if fault.impl == "functional" else "class")
    return replace(base, impl=impl, model=fault.model_for(base.model), **fault.report)


def report_with_fault(name: str | None, options: ReportOptions) -> Report:
    """The report with fault ``name`` switched on (None: the clean model)."""
    if name is not None:
        fault = faults.get_fault(name)
        if not fault.applies_to(options.impl):
            raise ValueError(f"fault {name!r} lives in the {fault.impl} implementation; "
                             f"run it with --impl {fault.impl}")
        options = replace(options, model=fault.model_for(options.model), **fault.report)
    with faults.activate(name):
        return run_report(options)


def _naive(report: Report) -> tuple[bool | None, bool | None]:
    if not report.gradient_flow:
        return None, None
    has_grad = all(r["has_grad"] for r in report.gradient_flow)
    changed = all(r["changed_after_step"] for r in report.weight_update)
    return has_grad, changed


def run_zoo(base: ReportOptions | None = None, names: list[str] | None = None, train: bool = False,
            on_fault: Callable[[str], None] | None = None) -> tuple[list[ZooRow], Report]:
    """Every fault (or ``names``) through the report; returns the rows and the clean report."""
    base = base or ReportOptions()
    rows = []
    for name in names or faults.names():
        fault = faults.get_fault(name)
        options = options_for(fault, base)
        report = report_with_fault(name, options)
        d = report.first_divergence
        has_grad, changed = _naive(report)
        module, phase, kind = fault.expected(options.model)[0]
        row = ZooRow(fault=name, bug_class=fault.bug_class, impl=options.impl, expected_module=module,
                     expected_phase=phase, expected_kind=kind,
                     reported_module=d.module if d else None, reported_phase=d.phase if d else None,
                     reported_kind=d.kind if d else None, detected=d is not None,
                     localized=bool(d and d.module == module and d.phase == phase),
                     kind_right=bool(d and d.kind == kind),
                     naive_all_have_grad=has_grad, naive_all_changed=changed)
        if train:
            row.exact_match_after_training = train_with_fault(name, options.impl, base.seed)
        rows.append(row)
        if on_fault is not None:
            on_fault(name)
    clean = run_report(base)
    return rows, clean


def train_with_fault(name: str | None, impl: str, seed: int = 0) -> float | None:
    """Test exact-sequence accuracy after the standard training budget with the fault on (None if
    training crashes, as some faults make it do)."""
    from differential import training

    with faults.activate(name):
        try:
            result = training.run(training.TrainPlan(impl=impl, seed=seed))
        except (ValueError, IndexError, RuntimeError, TypeError):
            return None
    return result["exact_match"]


# --- several faults at once -----------------------------------------------------------------------

@dataclass
class ComboRow:
    faults: list[str]
    expected: list[tuple[str, str, str]]  # (module, phase, kind) each fault must show among the findings
    found: list[bool]  # per expected finding
    all_found: bool
    findings: list[tuple[str, str, str]]  # what the report listed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combinable(base: ReportOptions) -> list[faults.Fault]:
    """The faults that can share a run with others: they apply to ``base.impl`` and let the report
    go on after them (bad data stops it before any model runs; a crash stops the capture)."""
    return [f for f in (faults.get_fault(n) for n in faults.names())
            if f.applies_to(base.impl) and f.module != "(data)" and f.kind != "exception"]


def footprint(fault: faults.Fault, base: ReportOptions) -> frozenset[str]:
    """The modules a fault shows in when it is the only one: every finding's module and the modules
    listed beside it. Two faults that show in the same module cannot be told apart there by
    comparing modules (an autograd op broken everywhere, and a slip in one layer that uses it)."""
    report = report_with_fault(fault.name, options_for(fault, base))
    return frozenset(m for d in report.findings for m in (d.module, *d.also_in))


def _apart(one: frozenset[str], other: frozenset[str]) -> bool:
    """No module of one footprint is, or contains, a module of the other (the model root and the
    loss, judged by checks of their own, do not count as containing)."""
    def within(inner: str, outer: str) -> bool:
        return inner == outer or (not outer.startswith("(") and inner.startswith(outer + "."))

    return not any(within(a, b) or within(b, a) for a in one for b in other)


def combos(base: ReportOptions, sizes: tuple[int, ...] = (2, 3)) -> list[tuple[faults.Fault, ...]]:
    """Pairs and triples of faults from different phases that patch different code and show in
    different modules (`footprint`), in catalogue order. The loss's value and its backward count as
    phases of their own."""
    import itertools

    pool = combinable(base)
    reach = {f.name: footprint(f, base) for f in pool}

    def phase(f: faults.Fault) -> str:
        return f"loss-{f.phase}" if f.module == "(loss)" else f.phase

    out = []
    for size in sizes:
        for group in itertools.combinations(pool, size):
            phases = {phase(f) for f in group}
            targets = [(owner, attr) for f in group for owner, attr, _ in f.targets]
            options = [(f.report, f.needs) for f in group if f.report or f.needs]  # at most one architecture
            apart = all(_apart(reach[a.name], reach[b.name]) for a, b in itertools.combinations(group, 2))
            if apart and len(phases) == size and len(set(targets)) == len(targets) \
                    and len({str(o) for o in options}) <= 1:
                out.append(group)
    return out


def run_combos(base: ReportOptions | None = None, sizes: tuple[int, ...] = (2, 3),
               on_combo: Callable[[list[str]], None] | None = None) -> list[ComboRow]:
    """Every combo of `combos` through the report: each fault must appear among the findings with
    its module, phase and kind."""
    base = base or ReportOptions()
    rows = []
    for group in combos(base, sizes):
        names = [f.name for f in group]
        model = base.model
        for f in group:
            model = f.model_for(model)
        options = replace(base, model=model, **{k: v for f in group for k, v in f.report.items()})
        with faults.activate_all(names):
            report = run_report(options)
        listed = [(d.module, d.phase, d.kind) for d in report.findings]
        expected = [e for f in group for e in f.expected(options.model)]
        found = [e in listed for e in expected]
        rows.append(ComboRow(names, expected, found, all(found), listed))
        if on_combo is not None:
            on_combo(names)
    return rows


# --- every fault in every architecture variant ---------------------------------------------------

SHORT = {"seed": "seed", "pre_ln": "pre", "final_norm": "ln_f", "gelu": "gelu", "gelu_tanh": "gtanh",
         "causal": "causal", "no_bias": "nobias", "ln_eps_1e-6": "eps", "tied_head": "tied",
         "sinusoidal": "sin", "no_positions": "nopos", "gpt": "gpt", "gpt_no_bias_sinusoidal": "gpt2"}


@dataclass
class MatrixCell:
    fault: str
    variant: str
    impl: str
    expected: list[tuple[str, str, str]]
    reported: list[tuple[str, str, str]]  # every finding, the first divergence first
    localized: bool  # the first divergence's module and phase are the expected ones
    kind_right: bool
    all_found: bool  # every expected finding (module, phase, kind) is among the findings


@dataclass
class Matrix:
    variants: list[str]
    faults: list[str]
    cells: list[MatrixCell]
    clean: dict[str, str]  # variant -> the clean model's verdict

    @property
    def all_localized(self) -> bool:
        return all(c.localized for c in self.cells) and all(v == "match" for v in self.clean.values())

    def to_dict(self) -> dict[str, Any]:
        return {"variants": self.variants, "faults": self.faults, "clean": self.clean,
                "cells": [asdict(c) for c in self.cells], "all_localized": self.all_localized}

    def text(self) -> str:
        """Faults down, variants across: ok (localized, right kind), ok~ (localized, other kind),
        XX (not localized), . (the fault's code does not run in that architecture)."""
        at = {(c.fault, c.variant): c for c in self.cells}
        width = max(len(f) for f in [*self.faults, "clean model"])
        heads = [SHORT.get(v, v) for v in self.variants]
        cols = [max(len(h), 3) for h in heads]
        lines = [" " * width + "  " + " ".join(h.rjust(w) for h, w in zip(heads, cols, strict=True))]

        def mark(cell: MatrixCell | None) -> str:
            if cell is None:
                return "."
            return ("ok" if cell.kind_right else "ok~") if cell.localized else "XX"

        lines.append("clean model".ljust(width) + "  " + " ".join(
            ("ok" if self.clean.get(v) == "match" else "XX").rjust(w) for v, w in zip(self.variants, cols,
                                                                                      strict=True)))
        for fault in self.faults:
            lines.append(fault.ljust(width) + "  " + " ".join(
                mark(at.get((fault, v))).rjust(w) for v, w in zip(self.variants, cols, strict=True)))
        total = len(self.cells)
        localized = sum(c.localized for c in self.cells)
        kinds = sum(c.localized and c.kind_right for c in self.cells)
        found = sum(c.all_found for c in self.cells)
        clean = sum(v == "match" for v in self.clean.values())
        legend = ", ".join(f"{SHORT.get(v, v)} = {v}" for v in self.variants if SHORT.get(v, v) != v)
        lines += ["", f"{localized} of {total} applicable fault x variant cells localized (module and phase), "
                      f"{kinds} with the right kind, {found} with every expected finding; clean model: "
                      f"{clean} of {len(self.clean)} variants match",
                  "ok: localized, right kind; ok~: localized, another kind; XX: not localized; "
                  ".: the fault's code does not run in that architecture",
                  f"variants: {legend}"]
        return "\n".join(lines)


def matrix_cells(names: list[str] | None = None, variants: list[str] | None = None) -> list[tuple[str, str]]:
    """(fault, variant) for every fault (or ``names``) and every variant whose architecture runs the
    fault's code (`Fault.lives_in`)."""
    from scratch_model.config import VARIANTS, variant

    return [(name, v) for name in names or faults.names() for v in variants or list(VARIANTS)
            if faults.get_fault(name).lives_in(variant(v))]


def run_matrix(base: ReportOptions | None = None, cells: list[tuple[str, str]] | None = None,
               on_cell: Callable[[str, str], None] | None = None) -> Matrix:
    """The report on every (fault, variant) cell, the sizes of ``base.model`` kept; and the clean
    model in every variant."""
    from scratch_model.config import SIZE_FIELDS, VARIANTS, variant

    base = base or ReportOptions()
    cells = matrix_cells() if cells is None else cells
    sizes = {name: getattr(base.model, name) for name in SIZE_FIELDS}
    names = list(dict.fromkeys(f for f, _ in cells))
    shown = [v for v in VARIANTS if any(cv == v for _, cv in cells)]
    out = []
    for name, vname in cells:
        fault = faults.get_fault(name)
        options = options_for(fault, replace(base, model=variant(vname, **sizes)))
        report = report_with_fault(name, options)
        expected = fault.expected(options.model)
        reported = [(d.module, d.phase, d.kind) for d in report.findings]
        first = reported[0] if reported else None
        out.append(MatrixCell(name, vname, options.impl, expected, reported,
                              localized=bool(first and first[:2] == expected[0][:2]),
                              kind_right=bool(first and first[2] == expected[0][2]),
                              all_found=all(e in reported for e in expected)))
        if on_cell is not None:
            on_cell(name, vname)
    clean = {v: run_report(replace(base, model=variant(v, **sizes))).verdict for v in shown}
    return Matrix(shown, names, out, clean)
