"""Repro sizes and times: for every fault of the catalogue (and, with --foreign, every fault of the two
foreign frameworks in tests/foreign and tests/foreign_course, through their adapters), write the
repros of its findings (`scratchdiff repro`), then rerun each one with the fault on and with it off.
Prints one row per repro: the finding, the shrunk sizes (batch, sequence, heads, width, hidden) beside
the report's, whether it fails with the fault and passes without, and the median time of one run
of the test body in this process (load the case, run the module, compare). Then the counts.

    .venv/bin/python benchmarks/repro_sizes.py [--foreign] [--fault NAME ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from differential import faults, repro  # noqa: E402
from differential.report import ReportOptions  # noqa: E402


def catalogue_cases(names: list[str]) -> Iterator[tuple[str, ReportOptions, Callable[[], Any], str | None]]:
    for name in names:
        fault = faults.get_fault(name)
        impl = "functional" if fault.impl == "functional" else "class"
        options = ReportOptions(impl=impl, model=fault.model_for(ReportOptions().model), **fault.report)
        yield name, options, lambda name=name: faults.activate(name), None


@contextlib.contextmanager
def patched(fault: Any) -> Iterator[None]:
    original = getattr(fault.target, fault.attribute)
    setattr(fault.target, fault.attribute, fault.replacement)
    try:
        yield
    finally:
        setattr(fault.target, fault.attribute, original)


def foreign_cases() -> Iterator[tuple[str, ReportOptions, Callable[[], Any], str | None]]:
    from differential.adapter import AdapterOptions, load_adapter, run_config

    for package in ("foreign", "foreign_course"):
        spec = f"tests.{package}.adapter:make_adapter"
        for fault in importlib.import_module(f"tests.{package}.faults").FAULTS:
            adapter = load_adapter(spec, AdapterOptions())
            options = ReportOptions(adapter=adapter, model=run_config(adapter, ReportOptions().model), batch_size=8,
                                    optimizer=getattr(fault, "optimizer", None) or "adam")
            yield f"{package}:{fault.name}", options, lambda fault=fault: patched(fault), spec


def sizes(s: repro.Sizes | None) -> str:
    return "-" if s is None else f"{s.batch},{s.seq_len},{s.heads},{s.width},{s.hidden}"


def median_run(test: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        repro.run_test_file(test)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh_pytest(per_fault: list[tuple[str, bool, list[repro.Written]]]) -> float:
    """Wall time of `python -m pytest` on one written repro (written again: the first folder is gone)."""
    import subprocess

    name, options, fault_on, spec = next(catalogue_cases([per_fault[0][0].split(":")[-1]])) \
        if ":" not in per_fault[0][0] else next(foreign_cases())
    with tempfile.TemporaryDirectory() as tmp, fault_on():
        written = repro.write_repros(options, Path(tmp), "benchmark", adapter_spec=spec)
        test = next(w.test for w in written if w.test is not None)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], cwd=ROOT,
                       capture_output=True, check=False)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foreign", action="store_true", help="also every fault of the two foreign frameworks")
    parser.add_argument("--fault", action="append", default=None, help="only this catalogue fault (repeatable)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each repro for the median time (default: 5)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    cases = list(catalogue_cases(args.fault or faults.names()))
    if args.foreign:
        cases += list(foreign_cases())
    rows, per_fault, times = [], [], []
    print(f"{'fault':40} {'finding':50} {'report B,T,H,D,F':17} {'repro B,T,H,D,F':16} {'on':5} {'off':5} run ms")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, options, fault_on, spec) in enumerate(cases):
            folder = Path(tmp) / str(i)
            with fault_on():
                written = repro.write_repros(options, folder, "benchmark", adapter_spec=spec)
                on = {o.test: o for o in repro.check_dir(folder)}
            off = {o.test: o for o in repro.check_dir(folder)}
            ok = bool(on) and not any(o.passed for o in on.values()) and all(o.passed for o in off.values())
            per_fault.append((name, ok, written))
            for w in written:
                d = w.finding
                finding = f"{d.module} {d.phase} {d.kind}"
                if w.test is None:
                    print(f"{name:40} {finding:50} {sizes(w.before):17} {'no repro: ' + (w.reason or '')[:60]}")
                    continue
                ms = 1e3 * median_run(w.test, args.runs)
                times.append(ms)
                rows.append(w)
                print(f"{name:40} {finding:50} {sizes(w.before):17} {sizes(w.after):16} "
                      f"{'fails' if not on[w.test].passed else 'PASS':5} {'pass' if off[w.test].passed else 'FAIL':5} "
                      f"{ms:6.1f}")
    good = sum(ok for _, ok, _ in per_fault)
    print()
    print(f"faults whose every repro fails with the fault on and passes with it off: {good} of {len(per_fault)}")
    print(f"repros written: {len(rows)}; findings without a repro: "
          f"{sum(w.test is None for _, _, ws in per_fault for w in ws)}")
    if rows:
        smaller_b = sum(w.after.batch < w.before.batch for w in rows)
        smaller_t = sum(w.after.seq_len < w.before.seq_len for w in rows)
        smaller_both = sum(w.after.batch < w.before.batch and w.after.seq_len < w.before.seq_len for w in rows)
        narrower = sum(w.after.width < w.before.width for w in rows)
        print(f"shrunk below the report's batch: {smaller_b} of {len(rows)}; below its sequence length: {smaller_t}; "
              f"both: {smaller_both}; narrower model: {narrower}")
        print("median shrunk sizes (B, T, H, D, F): " + ", ".join(
            f"{statistics.median(getattr(w.after, f) for w in rows):g}"
            for f in ("batch", "seq_len", "heads", "width", "hidden")))
        print(f"one repro run (load, run the module, compare), median of {args.runs}: "
              f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms")
        print(f"the first repro under pytest in a fresh interpreter, startup and imports included: "
              f"{fresh_pytest(per_fault):.2f} s")
    return 0 if good == len(per_fault) else 1


if __name__ == "__main__":
    sys.exit(main())
