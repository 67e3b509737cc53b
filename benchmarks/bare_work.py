"""The bare work a report must do: build the scratch (class) model and the torch model with the
report's shared initial weights, then one forward and backward of each on the report's batch
(float64).

`prepare(options)` builds both and returns the forward-and-backward to time (`report_cost.py`
times it in process); run as a script, this is the whole job as a process of its own (imports
included), which `report_cost.py --end-to-end` times against `scratchdiff report`. Both run with
numpy's BLAS and torch pinned to the report's threads (`scratch_model.threads.cpu_threads`); in
process, `report_cost.py` pins them around the timing.

    .venv/bin/python benchmarks/bare_work.py
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from differential.report import ReportOptions, initial_weights
from differential.weights import load_into_torch
from scratch_model.data import make_reversal_data
from scratch_model.layers import ReversalTransformer
from scratch_model.train import cross_entropy
from torch_reference.model import ReversalTransformer as TorchTransformer


def prepare(options: ReportOptions) -> Callable[[], None]:
    config = options.model
    weights = initial_weights(config, options.seed)
    scratch = ReversalTransformer(config)
    scratch.load_arrays(weights)
    reference = TorchTransformer(config).double()
    load_into_torch(reference, weights)
    data = make_reversal_data(config, options.batch_size, 1, seed=options.seed)
    tokens, targets = next(data.batches(0, options.batch_size))
    t_tokens, t_targets = torch.as_tensor(tokens), torch.as_tensor(targets).reshape(-1)

    def forward_and_backward() -> None:
        scratch.zero_grad()
        cross_entropy(scratch(tokens), targets).backward()
        reference.zero_grad()
        logits = reference(t_tokens)
        torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size), t_targets).backward()

    return forward_and_backward


if __name__ == "__main__":
    from scratch_model.threads import cpu_threads

    with cpu_threads():
        prepare(ReportOptions())()
