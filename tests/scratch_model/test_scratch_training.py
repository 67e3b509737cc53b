"""Loss and accuracy against torch and by hand, a fast training smoke test for both models, and
(marked slow) the full default run reaching >= 99% exact match."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratch_model.autograd import Tensor
from scratch_model.config import TrainConfig, TransformerConfig
from scratch_model.data import make_reversal_data
from scratch_model.functional import build_simple_transformer
from scratch_model.layers import ReversalTransformer
from scratch_model.train import accuracy, cross_entropy, steps_per_epoch, train


def class_model(config: TransformerConfig, seed: int) -> tuple[Callable, list[Tensor]]:
    model = ReversalTransformer(config, seed=seed)
    return model, model.parameters()


def functional_model(config: TransformerConfig, seed: int) -> tuple[Callable, list[Tensor]]:
    params, forward = build_simple_transformer(config, seed=seed)
    return (lambda tokens: forward(params, tokens)), list(params.values())


MODELS = {"class": class_model, "functional": functional_model}


def test_cross_entropy_matches_torch() -> None:
    rng = np.random.default_rng(5)
    logits_np = 3.0 * rng.standard_normal((2, 4, 6))
    targets = rng.integers(0, 6, size=(2, 4))
    logits, logits_t = Tensor(logits_np, requires_grad=True), torch.tensor(logits_np, requires_grad=True)
    loss = cross_entropy(logits, targets)
    loss_t = F.cross_entropy(logits_t.reshape(-1, 6), torch.from_numpy(targets).reshape(-1))  # mean
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-12)
    loss.backward()
    loss_t.backward()
    np.testing.assert_allclose(logits.grad, logits_t.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_accuracy_counts_sequences_and_tokens() -> None:
    targets = np.array([[1, 2, 3], [3, 2, 1]])
    logits = np.zeros((2, 3, 4))
    logits[0, [0, 1, 2], [1, 2, 3]] = 1.0  # first sequence all right
    logits[1, [0, 1, 2], [3, 2, 2]] = 1.0  # second: 2 of 3 tokens right
    assert accuracy(logits, targets) == (0.5, 5 / 6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("impl", list(MODELS))
def test_tiny_model_loss_decreases(impl: str, optimizer: str) -> None:
    config = TransformerConfig(vocab_size=5, seq_len=4, embed_dim=16, num_heads=2, ff_dim=16)
    data = make_reversal_data(config, num_train=96, num_test=32, seed=0)
    settings = TrainConfig(epochs=4, batch_size=16, lr=1e-2 if optimizer == "adam" else 0.1,
                           optimizer=optimizer, num_train=96, num_test=32)
    forward, params = MODELS[impl](config, 0)
    names = [name for name, _ in ReversalTransformer(config).named_parameters()]
    before = [p.data.copy() for p in params]
    result = train(forward, params, data, settings)

    assert result.steps == settings.epochs * steps_per_epoch(settings) == 24
    assert len(result.train_loss) == settings.epochs
    assert result.train_loss[-1] < 0.8 * result.train_loss[0], result.train_loss
    assert np.isfinite(result.loss) and 0 <= result.token_accuracy <= 1 and 0 <= result.exact_match <= 1
    # The key bias adds q.b_k to every score of a query alike, which softmax cancels: its true
    # gradient is zero, so it alone may stay put (a plain SGD step leaves it exactly unchanged).
    unmoved = [n for n, p, b in zip(names, params, before, strict=True) if np.array_equal(p.data, b)]
    assert set(unmoved) <= {"blocks.0.attn.k_proj.bias"}, f"never updated: {unmoved}"


@pytest.mark.slow
@pytest.mark.parametrize("impl", list(MODELS))
def test_default_model_learns_to_reverse(impl: str) -> None:
    config, settings = TransformerConfig(), TrainConfig()
    data = make_reversal_data(config, settings.num_train, settings.num_test, seed=0)
    forward, params = MODELS[impl](config, 0)
    result = train(forward, params, data, settings)
    assert result.exact_match >= 0.99, result
