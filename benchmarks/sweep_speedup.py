"""Wall time of the default sweep with 1 and 2 workers, and what the sweep says clean and broken.

Runs the default grid (the original plan's: learning rate 0.001/0.003/0.005/0.01, 50 and 100
epochs, embed_dim 16/32/64, heads 2/4/8 = 72 runs; an epoch is one pass over the sweep's 128
training sequences) on the clean class model with 1 loky worker, then with 2, and prints both wall
times, the speed-up and the share of runs at or above 95% exact-sequence accuracy (the two sweeps
must agree run for run). Then the same grid with the graph-breaking fault `residual_from_data`
(2 workers), whose verdict must be "fails in every setting".

Each sweep also prints its CPU seconds (this process and its workers) over its wall time, the
number of cores it actually had on average, and the training-loop seconds summed over its runs:
when other work holds a core, the 2-worker sweep gets little more than one core and its speed-up
shrinks accordingly, which these figures show.

The full benchmark takes about four minutes on two free cores; `--subset` runs learning
rates 0.003/0.01 at 50 epochs only (18 runs) instead. The load average is printed alongside:
other work on the machine slows both sweeps and shrinks the speed-up.

    .venv/bin/python benchmarks/sweep_speedup.py [--subset]
"""

from __future__ import annotations

import argparse
import os
import resource
from dataclasses import replace

from joblib.externals.loky import get_reusable_executor

from differential import sweep


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loky workers, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(plan: sweep.SweepPlan, workers: int) -> sweep.SweepResult:
    print(f"  {len(plan.runs())} runs, {workers} worker(s), load average {os.getloadavg()[0]:.1f} ...", flush=True)
    cpu = cpu_seconds()
    result = sweep.run_sweep(plan, workers=workers, backend="loky")
    get_reusable_executor().shutdown(wait=True)  # so that the workers' CPU time is counted
    cpu = cpu_seconds() - cpu
    loops = sum(r["seconds"] or 0.0 for r in result.rows)
    print(f"  done in {result.wall_seconds:.1f} s wall; {cpu:.1f} CPU s, i.e. {cpu / result.wall_seconds:.2f} cores "
          f"busy on average; training loops {loops:.1f} s summed over runs; load average now "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", action="store_true",
                        help="learning rates 0.003/0.01 at 50 epochs only (18 runs) instead of the full 72")
    args = parser.parse_args()
    grid = sweep.Grid(lr=(0.003, 0.01), epochs=(50,)) if args.subset else sweep.Grid()
    clean = sweep.SweepPlan(grid)
    print(f"grid: {grid.axes()}; {clean.num_train} training sequences, {os.cpu_count()} CPU cores")

    print("clean class model:")
    one, two = timed(clean, 1), timed(clean, 2)
    same = [(r["run"], r["exact_match"]) for r in one.rows] == [(r["run"], r["exact_match"]) for r in two.rows]
    print(f"wall time, 1 worker:  {one.wall_seconds:7.1f} s")
    print(f"wall time, 2 workers: {two.wall_seconds:7.1f} s")
    print(f"speed-up:             {one.wall_seconds / two.wall_seconds:7.2f}x")
    print(f"runs >= {sweep.LEARNED_AT:.0%} exact-sequence accuracy: {sweep.share_learned(two.rows):.1%} "
          f"({round(sweep.share_learned(two.rows) * len(two.rows))} of {len(two.rows)}); "
          f"1 and 2 workers agree run for run: {'yes' if same else 'NO'}")
    print(f"verdict: {sweep.verdict(two)}")

    print("with --fault residual_from_data:")
    broken = timed(replace(clean, fault="residual_from_data"), 2)
    best = max((r["exact_match"] for r in broken.rows if r["status"] == "ok"), default=None)
    print(f"runs >= {sweep.LEARNED_AT:.0%}: {sweep.share_learned(broken.rows):.1%}; best exact-sequence accuracy "
          f"{'-' if best is None else f'{best:.1%}'}")
    print(f"verdict: {sweep.verdict(broken)}")


if __name__ == "__main__":
    main()
