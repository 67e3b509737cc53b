"""Training the torch reference exactly as `scratch_model.train.train` trains the scratch models:
the same batches in the same order, mean token cross-entropy, torch.optim's Adam or SGD with
momentum, the same test-set figures."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scratch_model.config import TrainConfig, TrainResult, TransformerConfig
from scratch_model.data import ReversalData
from scratch_model.threads import cpu_threads as pinned_threads
from torch_reference.model import ReversalTransformer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over every token of -log p(target); logits (B, T, V), targets (B, T)."""
    b, t, v = logits.shape
    return F.cross_entropy(logits.reshape(b * t, v), targets.reshape(b * t))  # (B*T, V), (B*T,)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


def _tokens(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.int64), device=device)


@torch.no_grad()
def evaluate(model: nn.Module, inputs: np.ndarray, targets: np.ndarray,
             batch_size: int = 1000) -> tuple[float, float, float]:
    """(exact match, token accuracy, mean loss) over a whole set, in batches, without a graph."""
    device = next(model.parameters()).device
    exact = token = loss = 0.0
    for start in range(0, len(inputs), batch_size):
        batch_targets = _tokens(targets[start:start + batch_size], device)
        logits = model(_tokens(inputs[start:start + batch_size], device))
        right = logits.argmax(dim=-1) == batch_targets  # (B, T)
        exact += right.all(dim=1).sum().item()
        token += right.sum().item()
        loss += cross_entropy(logits, batch_targets).item() * len(batch_targets)
    return exact / len(inputs), token / targets.size, loss / len(inputs)


@contextlib.contextmanager
def cpu_threads(count: int | None = None) -> Iterator[None]:
    """Run torch's CPU ops, and numpy's BLAS, on ``count`` threads (None: one, unless the
    SCRATCHDIFF_THREADS environment variable says otherwise), then restore both.

    The reference's matrices are tiny (64 x 8 x 32); on several threads the synchronisation costs
    more than the arithmetic, and when other processes keep the cores busy, OpenMP's spinning
    workers slow a run ten-fold or worse. One thread is the fast and steady choice here. The
    pinning itself is `scratch_model.threads.cpu_threads`, shared with the scratch side.
    """
    with pinned_threads(count):
        yield


def train_module(model: nn.Module, data: ReversalData, config: TrainConfig,
                 on_step: Callable[[int, float], None] | None = None,
                 threads: int | None = None) -> TrainResult:
    """Train ``model`` in place; ``on_step(step, loss)`` runs after every optimizer step.
    ``threads``: torch CPU threads for the run (see :func:`cpu_threads`)."""
    with cpu_threads(threads):
        return _train(model, data, config, on_step)


def _train(model: nn.Module, data: ReversalData, config: TrainConfig,
           on_step: Callable[[int, float], None] | None) -> TrainResult:
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config)
    model.train()
    epoch_losses: list[float] = []
    step = 0
    start = time.perf_counter()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        for inputs, targets in data.batches(epoch, config.batch_size):
            optimizer.zero_grad()
            loss = cross_entropy(model(_tokens(inputs, device)), _tokens(targets, device))
            loss.backward()
            optimizer.step()
            step += 1
            value = loss.item()
            total += value * len(inputs)
            count += len(inputs)
            if on_step is not None:
                on_step(step, value)
        epoch_losses.append(total / count)
    seconds = time.perf_counter() - start
    model.eval()
    exact, token, test_loss = evaluate(model, data.test_inputs, data.test_targets)
    return TrainResult(exact, token, test_loss, seconds, step, epoch_losses)


def train_torch(model_config: TransformerConfig, arrays: dict[str, np.ndarray], data: ReversalData,
                config: TrainConfig, dtype: str = "float64",
                on_step: Callable[[int, float], None] | None = None,
                device: torch.device | str = "cpu", threads: int | None = None) -> TrainResult:
    """Build the reference model, load ``arrays`` (the scratch initial weights, by name), train it
    as the scratch loop does and return the test-set figures. ``threads``: torch CPU threads
    for the run (see :func:`cpu_threads`)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model = ReversalTransformer(model_config, dtype=DTYPES[dtype], device=device)
    _check_initial_weights(model, arrays, np.dtype(dtype))
    with torch.no_grad():  # by parameter name: a tied head's weight is loaded once, as embedding.weight
        for name, param in model.named_parameters():
            param.copy_(torch.as_tensor(np.asarray(arrays[name])))
    return train_module(model, data, config, on_step, threads)


def _check_initial_weights(model: nn.Module, arrays: dict[str, np.ndarray], dtype: np.dtype) -> None:
    """Names, shapes and dtypes must match exactly (load_state_dict would cast dtypes silently)."""
    own = {name: tuple(p.shape) for name, p in model.named_parameters()}
    problems = [f"missing {name}" for name in own if name not in arrays]
    problems += [f"unexpected {name}" for name in arrays if name not in own]
    for name in own.keys() & arrays.keys():
        array = np.asarray(arrays[name])
        if array.shape != own[name] or array.dtype != dtype:
            problems.append(f"{name} is {array.dtype} {array.shape}, expected {dtype} {own[name]}")
    if problems:
        raise ValueError(f"initial weights do not fit the model: {'; '.join(sorted(problems))}")
