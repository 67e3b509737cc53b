"""How good is the CLI's estimate of a report's memory and time (differential/budget.py)?

For a few sizes, each in a fresh process: the estimate beside the measured peak resident memory
of the process and the wall time of ``run_report`` (imports excluded, as in the estimate).

    .venv/bin/python benchmarks/report_budget.py
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = [(16, 1), (256, 1), (1024, 1), (2048, 1), (16, 8), (16, 32), (256, 4)]

CHILD = """
import json, resource, sys, time
from dataclasses import replace
from differential.report import ReportOptions, run_report
from scratch_model.config import TransformerConfig
batch, layers = int(sys.argv[1]), int(sys.argv[2])
options = ReportOptions(batch_size=batch, model=replace(TransformerConfig(), num_layers=layers))
run_report(ReportOptions(batch_size=1))  # imports torch and warms up: the estimate leaves imports out
start = time.perf_counter()
run_report(options)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> None:
    from dataclasses import replace

    from differential.budget import human_bytes, report_estimate
    from scratch_model.config import TransformerConfig

    print(f"{'batch':>6} {'layers':>6} | {'memory est.':>11} {'measured':>9} {'ratio':>5} | "
          f"{'time est.':>9} {'measured':>9} {'ratio':>5}")
    for batch, layers in SIZES:
        estimate = report_estimate(replace(TransformerConfig(), num_layers=layers), batch)
        out = subprocess.run([sys.executable, "-c", CHILD, str(batch), str(layers)], capture_output=True,
                             text=True, check=True).stdout
        measured = json.loads(out.strip().splitlines()[-1])
        print(f"{batch:>6} {layers:>6} | {human_bytes(estimate.bytes):>11} {human_bytes(measured['bytes']):>9} "
              f"{estimate.bytes / measured['bytes']:>5.2f} | {estimate.seconds:>8.2f}s {measured['seconds']:>8.2f}s "
              f"{estimate.seconds / measured['seconds']:>5.2f}")


if __name__ == "__main__":
    main()
