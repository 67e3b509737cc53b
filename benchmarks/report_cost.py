"""The cost of a report on the default model, against the bare work it must do.

Bare work: one scratch (class) forward + backward and one torch forward + backward on the same
batch, float64, with both models built and loaded beforehand. Report: `run_report` with default
options (building both sides, both captures, every comparison, localization, the optimizer-step
check, the report tables). Both are timed side by side in one process, interleaved, after a
warm-up; medians are printed with their ratio, then where the report's time goes (median per
stage, as a share of the bare work), and the floor: the two hooked captures alone.

With --end-to-end it times whole processes instead, alternating: `python benchmarks/bare_work.py`
(imports, models, weights, one forward and backward of each) against `python -m differential.cli
report` (the README's main job), and prints their medians and ratio.

    .venv/bin/python benchmarks/report_cost.py [--repeats 40] [--batch-size 16] [--layers 1]
    .venv/bin/python benchmarks/report_cost.py --end-to-end [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bare_work import prepare  # this folder's bare_work.py

from differential import faults
from differential.implementations import make_side
from differential.report import ReportOptions, Stopwatch, initial_weights, run_report
from scratch_model.data import make_reversal_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of each (default 40; 7 with --end-to-end)")
    parser.add_argument("--batch-size", type=int, default=ReportOptions.batch_size,
                        help=f"batch size of both (default: the report's, {ReportOptions.batch_size})")
    parser.add_argument("--layers", type=int, default=1, help="transformer blocks (default 1)")
    parser.add_argument("--fault", metavar="NAME", default=None,
                        help="switch a catalogue fault on for every run (findings then do real work)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time whole processes: bare_work.py against `scratchdiff report`")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args.repeats or 7)
        return
    args.repeats = args.repeats or 40
    with faults.activate(args.fault):
        in_process(args)


def in_process(args: argparse.Namespace) -> None:
    base = ReportOptions()
    options = replace(base, batch_size=args.batch_size, model=replace(base.model, num_layers=args.layers))
    config = options.model
    bare = prepare(options)
    weights = initial_weights(config, options.seed)
    tokens, targets = next(make_reversal_data(config, options.batch_size, 1, seed=options.seed)
                           .batches(0, options.batch_size))
    sides = {impl: make_side(impl, config, weights, "float64") for impl in ("class", "torch")}

    def captures() -> None:  # the floor: what any per-module capture of both sides costs
        for side in sides.values():
            side.capture(tokens, targets)

    stages: list[dict[str, float]] = []

    def report() -> None:
        watch = Stopwatch()
        run_report(options, watch)
        stages.append(watch.seconds)

    first_only = replace(options, findings=False)

    def report_first() -> None:  # the first divergence only: no teacher forcing
        run_report(first_only)

    torch.set_num_threads(1)  # the report runs torch on one thread; the bare work gets the same
    for _ in range(5):
        bare()
        report()
        report_first()
        captures()
    stages.clear()
    bare_times, report_times, first_times, capture_times = [], [], [], []
    for _ in range(args.repeats):
        for fn, times in ((bare, bare_times), (report, report_times), (report_first, first_times),
                          (captures, capture_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    b, r = statistics.median(bare_times), statistics.median(report_times)
    f = statistics.median(first_times)
    print(f"model: {args.layers} layer(s), batch {options.batch_size}, float64, fault {args.fault or 'none'}; "
          f"{args.repeats} runs each, interleaved")
    print(f"bare work (scratch + torch forward and backward): median {b * 1e3:.2f} ms")
    print(f"report, all findings:                             median {r * 1e3:.2f} ms")
    print(f"report, first divergence only (--first-only):     median {f * 1e3:.2f} ms")
    print(f"ratio report / bare: {r / b:.2f} (all findings), {f / b:.2f} (first only)  "
          f"(torch threads: {torch.get_num_threads()}, numpy {np.__version__})")
    c = statistics.median(capture_times)
    print(f"floor: the two hooked captures alone, median {c * 1e3:.2f} ms = {c / b:.2f} x bare")
    print("\nwhere the report's time goes (median per stage):")
    for stage in stages[0]:
        ms = statistics.median(s[stage] for s in stages) * 1e3
        print(f"  {stage:24s} {ms:7.2f} ms  {ms / (b * 1e3):5.2f} x bare")


def end_to_end(repeats: int) -> None:
    root = Path(__file__).resolve().parent.parent
    commands = {"bare work (benchmarks/bare_work.py)": [sys.executable, str(root / "benchmarks" / "bare_work.py")],
                "report (scratchdiff report)": [sys.executable, "-m", "differential.cli", "report",
                                                "--format", "json", "-o", str(Path("/dev/null"))]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats + 1):  # the first round warms the file cache and is not counted
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"whole processes, {repeats} runs each, alternating (python startup and imports included):")
    for name, m in medians.items():
        print(f"  {name:38s} median {m:.2f} s")
    bare, report = medians.values()
    print(f"ratio report / bare: {report / bare:.2f}")


if __name__ == "__main__":
    main()
