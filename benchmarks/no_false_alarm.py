"""No false alarms: clean models must give "match" for 20 seeds x {1, 2, 3} layers x
{float64, float32} x {class, functional}. Prints the count; exits 1 on any false alarm.

    .venv/bin/python benchmarks/no_false_alarm.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace

from differential.report import ReportOptions, run_report
from scratch_model.config import TransformerConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default: 20)")
    args = parser.parse_args()
    grid = list(itertools.product(range(args.seeds), (1, 2, 3), ("float64", "float32"), ("class", "functional")))
    start = time.perf_counter()
    alarms = []
    for seed, layers, dtype, impl in grid:
        model = replace(TransformerConfig(), num_layers=layers)
        options = ReportOptions(impl=impl, dtype=dtype, seed=seed, model=model)
        report = run_report(options)
        if report.verdict != "match":
            d = report.first_divergence
            alarms.append(f"seed={seed} layers={layers} {dtype} {impl}: {d.module} {d.phase} {d.kind}")
    seconds = time.perf_counter() - start
    print(f"clean reports: {len(grid) - len(alarms)} of {len(grid)} match, {len(alarms)} false alarms "
          f"({seconds:.1f} s)")
    for line in alarms:
        print("  false alarm:", line)
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
