"""The torch capture's module input gradients: the gradient through one module's use of a tensor, as
torch's full backward hooks define it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from differential.implementations import make_side
from differential.report import initial_weights
from differential.user_reference import recorded_modules
from differential.weights import load_into_torch
from scratch_model.config import TransformerConfig, arch
from scratch_model.data import make_reversal_data
from torch_reference.model import ReversalTransformer


# the embeddings take token ids, which need no gradient: torch says its hook fires on their output then
@pytest.mark.filterwarnings("ignore:Full backward hook is firing when gradients are computed with respect to module")
@pytest.mark.parametrize("config", [TransformerConfig(num_layers=2), arch("gpt", num_layers=2)], ids=["seed", "gpt"])
def test_input_gradients_are_torchs_full_backward_hook_gradients(config: TransformerConfig) -> None:
    weights = initial_weights(config, 0)
    tokens, targets = next(make_reversal_data(config, 4, 1, seed=0).batches(0, 4))
    capture = make_side("torch", config, weights, "float64").capture(tokens, targets)

    model = ReversalTransformer(config, dtype=torch.float64)
    load_into_torch(model, weights)
    seen: dict[str, tuple] = {}
    for path, module in recorded_modules(model):
        module.register_full_backward_hook(lambda m, grad_in, grad_out, path=path: seen.setdefault(path, grad_in))
    logits = model(torch.as_tensor(tokens))
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.as_tensor(targets).reshape(-1)
                                      ).backward()

    compared = 0
    for path, call in capture.calls.items():
        for got, want in zip(call.grad_inputs, seen[path], strict=False):
            if want is None:
                assert got is None, path
                continue
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-15, err_msg=path)
            compared += 1
    assert compared >= 10 * config.num_layers  # every block's modules take a float input
