"""The bare work a report must do, as a process of its own: import the frameworks, build the
scratch (class) model and the torch model with the report's shared initial weights, and run one
forward and backward of each on the report's default batch (float64). `report_cost.py
--end-to-end` times this script against `scratchdiff report`.

    .venv/bin/python benchmarks/bare_work.py
"""

from __future__ import annotations

import torch

from differential.report import ReportOptions, initial_weights
from differential.weights import load_into_torch
from scratch_model.data import make_reversal_data
from scratch_model.layers import ReversalTransformer
from scratch_model.train import cross_entropy
from torch_reference.model import ReversalTransformer as TorchTransformer


def main() -> None:
    options = ReportOptions()
    config = options.model
    weights = initial_weights(config, options.seed)
    scratch = ReversalTransformer(config)
    scratch.load_arrays(weights)
    reference = TorchTransformer(config).double()
    load_into_torch(reference, weights)
    data = make_reversal_data(config, options.batch_size, 1, seed=options.seed)
    tokens, targets = next(data.batches(0, options.batch_size))
    cross_entropy(scratch(tokens), targets).backward()
    logits = reference(torch.as_tensor(tokens))
    torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size),
                                      torch.as_tensor(targets).reshape(-1)).backward()


if __name__ == "__main__":
    main()
