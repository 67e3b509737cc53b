"""No false alarms: clean models must give "match" in every architecture variant
(`scratch_model.config.VARIANTS`) x {class, functional} x {float64, float32} x {1, 2, 3} layers x
10 seeds, with no finding and no "NO" in the gradient-flow and weight-update tables (every yes/no
column is judged against the reference, so a NO on a clean model is a false alarm too). Prints the
counts, per variant and in total; exits 1 on any false alarm, finding or NO row.

    .venv/bin/python benchmarks/no_false_alarm.py [--seeds 10] [--variants seed,gpt]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

from differential.report import ReportOptions, run_report
from scratch_model.config import VARIANTS, variant

FLOW_COLUMNS = ("has_grad", "nonzero", "matches_reference")
UPDATE_COLUMNS = ("changed_after_step", "updated_by_optimizer", "update_matches_reference")


def no_rows(table: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    """The rows with a NO in any of ``columns``: "parameter (column, ...)"."""
    out = []
    for row in table:
        bad = [c for c in columns if not row[c]]
        if bad:
            out.append(f"{row['parameter']} ({', '.join(bad)})")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default: 10)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated variant names (default: all: {', '.join(VARIANTS)})")
    args = parser.parse_args()
    names = args.variants.split(",")
    for name in names:
        variant(name)  # an unknown name fails before any run
    start = time.perf_counter()
    alarms, findings, rows, runs = [], 0, [], 0
    for name in names:
        grid = list(itertools.product(range(args.seeds), (1, 2, 3), ("float64", "float32"), ("class", "functional")))
        before = (len(alarms), findings, len(rows))
        for seed, layers, dtype, impl in grid:
            options = ReportOptions(impl=impl, dtype=dtype, seed=seed, model=variant(name, num_layers=layers))
            report = run_report(options)
            where = f"{name} seed={seed} layers={layers} {dtype} {impl}"
            if report.verdict != "match":
                alarms.append(where + ": " + "; ".join(f"{d.module} {d.phase} {d.kind}" for d in report.findings))
            findings += len(report.findings)
            rows += [f"{where}: gradient flow {r}" for r in no_rows(report.gradient_flow, FLOW_COLUMNS)]
            rows += [f"{where}: weight update {r}" for r in no_rows(report.weight_update, UPDATE_COLUMNS)]
        runs += len(grid)
        print(f"{name:24s} {len(grid)} clean reports: {len(alarms) - before[0]} false alarms, "
              f"{findings - before[1]} findings, {len(rows) - before[2]} NO rows", flush=True)
    seconds = time.perf_counter() - start
    print(f"clean reports: {runs - len(alarms)} of {runs} match, {len(alarms)} false alarms, "
          f"{findings} findings, {len(rows)} NO rows ({seconds:.1f} s)")
    for line in alarms:
        print("  false alarm:", line)
    for line in rows:
        print("  NO row:", line)
    return 1 if alarms or findings or rows else 0


if __name__ == "__main__":
    sys.exit(main())
