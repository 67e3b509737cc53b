"""Loss, accuracy and the training loop shared by the class-based and the functional model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.config import TrainConfig, TrainResult
from scratch_model.data import ReversalData
from scratch_model.optim import SGD, Adam, Optimizer
from scratch_model.threads import cpu_threads


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean over every token of -log p(target); logits (B, T, V), targets (B, T)."""
    b, t, v = logits.shape
    flat = ag.reshape(logits, (b * t, v))  # (B*T, V)
    return ag.cross_entropy_mean(flat, np.asarray(targets).reshape(-1))  # log-softmax, pick, mean: one node


def accuracy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(exact-sequence accuracy, per-token accuracy)."""
    right = np.argmax(logits, axis=-1) == targets
    return float(right.all(axis=1).mean()), float(right.mean())


def make_optimizer(params: Sequence[Tensor], config: TrainConfig) -> Optimizer:
    if config.optimizer == "adam":
        return Adam(params, lr=config.lr)
    return SGD(params, lr=config.lr, momentum=config.momentum)


def evaluate(forward: Callable[[np.ndarray], Tensor], inputs: np.ndarray, targets: np.ndarray,
             batch_size: int = 1000) -> tuple[float, float, float]:
    """(exact match, token accuracy, mean loss) over a whole set, without building a graph."""
    logits, losses = [], []
    with ag.no_grad():
        for start in range(0, len(inputs), batch_size):
            out = forward(inputs[start:start + batch_size])
            logits.append(out.data)
            losses.append(cross_entropy(out, targets[start:start + batch_size]).item()
                          * len(out.data))
    exact, token = accuracy(np.concatenate(logits), targets)
    return exact, token, float(np.sum(losses) / len(inputs))


def train(forward: Callable[[np.ndarray], Tensor], params: Sequence[Tensor], data: ReversalData,
          config: TrainConfig, on_step: Callable[[int, float], None] | None = None,
          threads: int | None = None) -> TrainResult:
    """Train ``params`` so that ``forward(tokens)`` reverses sequences; ``on_step(step, loss)`` is
    called after every optimizer step (for progress bars). numpy's BLAS runs on ``threads``
    threads (None: `scratch_model.threads.default_threads`, one unless SCRATCHDIFF_THREADS says)."""
    with cpu_threads(threads):
        return _train(forward, params, data, config, on_step)


def _train(forward: Callable[[np.ndarray], Tensor], params: Sequence[Tensor], data: ReversalData,
           config: TrainConfig, on_step: Callable[[int, float], None] | None) -> TrainResult:
    optimizer = make_optimizer(params, config)
    epoch_losses: list[float] = []
    step = 0
    start = time.perf_counter()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for inputs, targets in data.batches(epoch, config.batch_size):
            optimizer.zero_grad()
            loss = cross_entropy(forward(inputs), targets)
            loss.backward()
            optimizer.step()
            value = loss.item()
            del loss  # its graph (every activation) goes now, not once the next forward is done
            step += 1
            total += value * len(inputs)
            count += len(inputs)
            if on_step is not None:
                on_step(step, value)
        epoch_losses.append(total / count)
    seconds = time.perf_counter() - start
    exact, token, test_loss = evaluate(forward, data.test_inputs, data.test_targets)
    return TrainResult(exact, token, test_loss, seconds, step, epoch_losses)


def steps_per_epoch(config: TrainConfig) -> int:
    return -(-config.num_train // config.batch_size)
