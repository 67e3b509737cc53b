"""The cost of a report on the default model, against the bare work it must do.

Bare work: one scratch (class) forward + backward and one torch forward + backward on the same
batch, float64. Report: `run_report` with default options (both captures, every comparison,
localization, the optimizer-step check, the report tables). Both are timed side by side in one
process, interleaved, after a warm-up; medians are printed with their ratio.

    .venv/bin/python benchmarks/report_cost.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from differential.report import ReportOptions, initial_weights, run_report
from differential.weights import load_into_torch
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.layers import ReversalTransformer
from scratch_model.train import cross_entropy
from torch_reference.model import ReversalTransformer as TorchTransformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    config = TransformerConfig()
    options = ReportOptions()
    weights = initial_weights(config, options.seed)
    scratch = ReversalTransformer(config)
    scratch.load_arrays(weights)
    reference = TorchTransformer(config).double()
    load_into_torch(reference, weights)
    tokens, targets = next(make_reversal_data(config, options.batch_size, 1, seed=0).batches(0, options.batch_size))
    t_tokens, t_targets = torch.as_tensor(tokens), torch.as_tensor(targets).reshape(-1)

    def bare() -> None:
        scratch.zero_grad()
        cross_entropy(scratch(tokens), targets).backward()
        reference.zero_grad()
        logits = reference(t_tokens)
        torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size), t_targets).backward()

    def report() -> None:
        run_report(options)

    torch.set_num_threads(1)  # the report runs torch on one thread; the bare work gets the same
    for _ in range(3):
        bare()
        report()
    bare_times, report_times = [], []
    for _ in range(args.repeats):
        for fn, times in ((bare, bare_times), (report, report_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    b, r = statistics.median(bare_times), statistics.median(report_times)
    print(f"bare work (scratch + torch forward and backward): median {b * 1e3:.2f} ms")
    print(f"report on the default model:                      median {r * 1e3:.2f} ms")
    print(f"ratio report / bare: {r / b:.2f}  (torch threads: {torch.get_num_threads()}, "
          f"numpy {np.__version__})")


if __name__ == "__main__":
    main()
