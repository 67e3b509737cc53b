"""The cost of a report on the default model, against the bare work it must do.

Bare work: one scratch (class) forward + backward and one torch forward + backward on the same
batch, float64, with both models built and loaded beforehand. Report: `run_report` with default
options (building both sides, both captures, every comparison, localization, the optimizer-step
check, the report tables), with all findings (teacher forcing) and with the first divergence only
(`--first-only`). They are timed side by side in one process, interleaved, after a warm-up, with
numpy's BLAS and torch pinned to the report's threads (`scratch_model.threads.cpu_threads`);
medians are printed with their ratios, then where the report's time goes (median per stage, as a
share of the bare work), the floor: the two hooked captures alone, and the time each job spent in
Python's garbage collector (with means: a full collection comes every few runs, and medians hide
it). One run covers every
number of layers in ``--layers`` and every fault in ``--fault`` ("none": the clean model), and
ends with a table of the ratios.

With --memory it also prints the peak memory (tracemalloc: numpy and Python allocations) of one
report (all findings) against one plain scratch (class) training step (forward, backward, Adam
step) at each size, and what the report holds at the end of each stage and its peak within it.

With --end-to-end it times whole processes instead, alternating: `python benchmarks/bare_work.py`
(imports, models, weights, one forward and backward of each) against `python -m differential.cli
report` (the README's main job), and prints their medians and ratio.

    .venv/bin/python benchmarks/report_cost.py [--repeats 15] [--layers 1,4,12] [--fault none,attention_no_scale]
    .venv/bin/python benchmarks/report_cost.py --memory
    .venv/bin/python benchmarks/report_cost.py --end-to-end [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from bare_work import prepare  # this folder's bare_work.py

from differential import faults, localize
from differential import findings as fnd
from differential.compare import verdicts
from differential.implementations import make_side
from differential.report import ReportOptions, Stopwatch, initial_weights, run_report
from scratch_model.data import make_reversal_data
from scratch_model.threads import cpu_threads


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _fault_list(text: str) -> list[str | None]:
    names = [v.strip() for v in text.split(",")]
    unknown = [n for n in names if n != "none" and n not in faults.names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault {unknown[0]!r} (see differential/faults)")
    return [None if n == "none" else n for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of each (default 15; 7 with --end-to-end)")
    parser.add_argument("--batch-size", type=int, default=ReportOptions.batch_size,
                        help=f"batch size of both (default: the report's, {ReportOptions.batch_size})")
    parser.add_argument("--layers", type=_int_list, default=[1, 4, 12],
                        help="transformer blocks, comma-separated sizes to time (default 1,4,12)")
    parser.add_argument("--fault", type=_fault_list, default=[None, "attention_no_scale"], metavar="NAMES",
                        help="catalogue faults switched on for every run, comma-separated; 'none' is the clean "
                             "model (default none,attention_no_scale)")
    parser.add_argument("--memory", action="store_true",
                        help="also print the report's peak memory against a plain scratch training step's")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time whole processes: bare_work.py against `scratchdiff report`")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args.repeats or 7)
        return
    args.repeats = args.repeats or 15
    rows = []
    with cpu_threads():  # numpy's BLAS and torch on the report's threads, for the bare work too
        for layers in args.layers:
            for fault in args.fault:
                with faults.activate(fault):
                    rows.append((layers, fault, *in_process(args, layers, fault)))
        memory = [(layers, *peak_memory(args, layers)) for layers in args.layers] if args.memory else []
    print(f"\nsummary ({args.repeats} interleaved runs each, medians; batch {args.batch_size}, float64):")
    print(f"  {'layers':>6s}  {'fault':24s} {'bare ms':>8s} {'first-only':>11s} {'(floor)':>8s} {'all findings':>13s} "
          f"{'(floor)':>8s}")
    for layers, fault, bare, first, full, floor, floor_all in rows:
        print(f"  {layers:6d}  {fault or 'none':24s} {bare * 1e3:8.2f} {first / bare:10.2f}x {floor / bare:7.2f}x "
              f"{full / bare:12.2f}x {floor_all / bare:7.2f}x")
    print("  floor, first-only: the two hooked captures, the optimizer-step check's three steps and the compared "
          "pairs' verdicts, each timed alone; all findings: and the modules the report runs alone")
    if memory:
        print("\npeak memory (tracemalloc, numpy and Python allocations):")
        for layers, report_mb, step_mb, stages in memory:
            print(f"  {layers:2d} layer(s): report {report_mb:7.2f} MB, scratch training step {step_mb:7.2f} MB, "
                  f"ratio {report_mb / step_mb:.2f}")
            print("     the report's stages, held at the end / peak within (MB): " +
                  ", ".join(f"{stage} {held:.1f}/{peak:.1f}" for stage, (held, peak) in stages.items()))


def _options(args: argparse.Namespace, layers: int) -> ReportOptions:
    base = ReportOptions()
    return replace(base, batch_size=args.batch_size, model=replace(base.model, num_layers=layers))


def in_process(args: argparse.Namespace, layers: int, fault: str | None) -> tuple[float, float, float]:
    """Time one size with one fault; print the details; return the medians (bare, first only, all)."""
    options = _options(args, layers)
    config = options.model
    bare = prepare(options)
    weights = initial_weights(config, options.seed)
    tokens, targets = next(make_reversal_data(config, options.batch_size, 1, seed=options.seed)
                           .batches(0, options.batch_size))
    sides = {impl: make_side(impl, config, weights, "float64") for impl in ("class", "torch")}

    def captures() -> None:  # the floor: what any per-module capture of both sides costs
        for side in sides.values():
            side.capture(tokens, targets)

    steps, verdicts_alone = _floor_parts(sides, tokens, targets, options)

    stages: list[dict[str, float]] = []

    def report() -> None:
        watch = Stopwatch()
        run_report(options, watch)
        stages.append(watch.seconds)

    first_only = replace(options, findings=False)

    def report_first() -> None:  # the first divergence only: no teacher forcing
        run_report(first_only)

    jobs = {"bare": bare, "report": report, "report_first": report_first, "captures": captures,
            "steps": steps, "verdicts": verdicts_alone, "alone": _forcing(options)}
    for _ in range(3):
        for fn in jobs.values():
            fn()
    stages.clear()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    collections = Collections()
    gc.callbacks.append(collections)
    try:
        for _ in range(args.repeats):
            for name, fn in jobs.items():
                collections.job = name
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                collections.job = None
    finally:
        gc.callbacks.remove(collections)
    b, r, f = (statistics.median(times[name]) for name in ("bare", "report", "report_first"))
    print(f"\nmodel: {layers} layer(s), batch {options.batch_size}, float64, fault {fault or 'none'}; "
          f"{args.repeats} runs each, interleaved")
    print(f"bare work (scratch + torch forward and backward): median {b * 1e3:.2f} ms")
    print(f"report, all findings:                             median {r * 1e3:.2f} ms")
    print(f"report, first divergence only (--first-only):     median {f * 1e3:.2f} ms")
    print(f"ratio report / bare: {r / b:.2f} (all findings), {f / b:.2f} (first only)  "
          f"(threads: torch {torch.get_num_threads()}, numpy's BLAS pinned alike; numpy {np.__version__})")
    c, o, v = (statistics.median(times[name]) for name in ("captures", "steps", "verdicts"))
    print(f"floor: the two hooked captures alone, median {c * 1e3:.2f} ms = {c / b:.2f} x bare")
    print(f"       the optimizer-step check's three steps alone {o * 1e3:.2f} ms = {o / b:.2f} x bare; "
          f"the compared pairs' verdicts alone {v * 1e3:.2f} ms = {v / b:.2f} x bare")
    m = statistics.median(times["alone"])
    print(f"       together {(c + o + v) * 1e3:.2f} ms = {(c + o + v) / b:.2f} x bare: what a first-only report cannot "
          "go below")
    print(f"       the modules the report runs alone (all findings), alone: {m * 1e3:.2f} ms = {m / b:.2f} x bare; "
          f"with the rest {(c + o + v + m) / b:.2f} x bare: what a report with all findings cannot go below")
    print("where the report's time goes (all findings, median per stage):")
    for stage in stages[0]:
        ms = statistics.median(s[stage] for s in stages) * 1e3
        print(f"  {stage:24s} {ms:7.2f} ms  {ms / (b * 1e3):5.2f} x bare")
    print("garbage collection (Python's cyclic collector; medians hide the full collections that come every few "
          "runs, so means):")
    for name, label in (("bare", "bare work"), ("report", "report, all findings"),
                        ("report_first", "report, first only")):
        print(f"  {label:22s} mean {statistics.mean(times[name]) * 1e3:7.2f} ms, of which collecting "
              f"{collections.seconds.get(name, 0.0) / args.repeats * 1e3:6.2f} ms; full collections per run "
              f"{collections.full.get(name, 0) / args.repeats:.2f}")
    return b, f, r, c + o + v, c + o + v + m


def _floor_parts(sides: dict[str, Any], tokens: np.ndarray, targets: np.ndarray, options: ReportOptions
                 ) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two jobs the report does beyond the bare work, each as the report does it but alone: the
    optimizer-step check's three steps (the implementation's own gradients, the reference's, and
    the reference's step), and the verdicts of every pair of tensors the report compares, found
    once here by watching the report's comparison (`compare.verdicts`: the cheapest judgement of a
    pair the tolerance model allows, with no metrics)."""
    implementation, reference = sides["class"], sides["torch"]
    expected, actual = reference.capture(tokens, targets), implementation.capture(tokens, targets)
    seen: list[list[tuple]] = []
    original = localize.compare_many

    def watching(pairs: list[tuple]) -> Any:
        seen.append(pairs)
        return original(pairs)

    with mock.patch.object(localize, "compare_many", watching):
        implementation.judge(actual, expected, None)
    pairs = list({tuple(map(id, p[:3])) + (p[3],): p for p in seen[0]}.values())  # each pair once, as compared

    def steps() -> None:
        implementation.optimizer_step(actual.param_grads, options.optimizer, options.lr, current=actual.params)
        implementation.optimizer_step(expected.param_grads, options.optimizer, options.lr, current=actual.params)
        reference.optimizer_step(expected.param_grads, options.optimizer, options.lr)

    return steps, lambda: verdicts(pairs)


def _forcing(options: ReportOptions) -> Callable[[], None]:
    """The modules a report with all findings runs alone (teacher forcing), run alone again: found
    once here by watching one report's call of `findings.force_modules`, whose arguments (the side,
    the reference's capture, the paths) it keeps."""
    seen: list[tuple[tuple, dict]] = []
    original = fnd.force_modules

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        return original(*args, **kwargs)

    with mock.patch.object(fnd, "force_modules", watching):
        run_report(options)
    if not seen:  # nothing disagreed: nothing runs alone
        return lambda: None
    args, kwargs = seen[0]
    return lambda: original(*args, **kwargs)


class Collections:
    """Time spent in Python's garbage collector (a gc callback), charged to the job running then."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.full: dict[str, int] = {}  # collections of the oldest generation
        self.job: str | None = None
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.job is not None:
            self.seconds[self.job] = self.seconds.get(self.job, 0.0) + time.perf_counter() - self._start
            if info["generation"] == 2:
                self.full[self.job] = self.full.get(self.job, 0) + 1


def peak_memory(args: argparse.Namespace, layers: int) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """Peak traced memory in MB of one report (all findings) and of one plain scratch training
    step (class model, forward, backward, Adam step) on the report's batch, the model built before;
    and the report's memory by stage (`MemoryWatch`)."""
    from scratch_model.layers import ReversalTransformer
    from scratch_model.optim import Adam
    from scratch_model.train import cross_entropy

    options = _options(args, layers)
    config = options.model
    tokens, targets = next(make_reversal_data(config, options.batch_size, 1, seed=options.seed)
                           .batches(0, options.batch_size))
    model = ReversalTransformer(config, dtype="float64")
    model.load_arrays(initial_weights(config, options.seed))
    optimizer = Adam(model.parameters(), lr=options.lr)

    def step() -> None:
        optimizer.zero_grad()
        cross_entropy(model(tokens), targets).backward()
        optimizer.step()

    def traced_peak(fn) -> float:
        fn()  # warm: caches and lazy imports are not the job's memory
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return peak / 2**20

    stages: dict[str, tuple[float, float]] = {}
    after_last_stage = traced_peak(lambda: run_report(options, MemoryWatch(stages)))
    # each stage starts its own peak (tracemalloc.reset_peak): the report's is the highest of them
    report_mb = max([after_last_stage] + [peak for _, peak in stages.values()])
    return report_mb, traced_peak(step), stages


class MemoryWatch(Stopwatch):
    """A report's stopwatch that notes, at the end of each stage, the traced memory held then and the
    peak within the stage (MB, from the start of tracing), into ``stages``."""

    def __init__(self, stages: dict[str, tuple[float, float]]) -> None:
        super().__init__()
        self.stages = stages
        self.base = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0

    def lap(self, stage: str) -> None:
        super().lap(stage)
        if tracemalloc.is_tracing():
            held, peak = tracemalloc.get_traced_memory()
            self.stages[stage] = ((held - self.base) / 2**20, (peak - self.base) / 2**20)
            tracemalloc.reset_peak()


def end_to_end(repeats: int) -> None:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:  # the CLI writes a regular file only (not /dev/null)
        out = str(Path(scratch) / "report.json")
        commands = {"bare work (benchmarks/bare_work.py)": [sys.executable, str(root / "benchmarks" / "bare_work.py")],
                    "report (scratchdiff report)": [sys.executable, "-m", "differential.cli", "report",
                                                    "--format", "json", "-o", out]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats + 1):  # the first round warms the file cache and is not counted
            for name, command in commands.items():
                start = time.perf_counter()
                # exit 1 is a report that found a divergence: still a finished report
                done = subprocess.run(command, cwd=root, stdout=subprocess.DEVNULL)
                if done.returncode not in (0, 1):
                    raise SystemExit(f"{' '.join(command)} exited {done.returncode}")
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"whole processes, {repeats} runs each, alternating (python startup and imports included):")
    for name, m in medians.items():
        print(f"  {name:38s} median {m:.2f} s")
    bare, report = medians.values()
    print(f"ratio report / bare: {report / bare:.2f}")


if __name__ == "__main__":
    main()
