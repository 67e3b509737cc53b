"""The training tasks: a seeded dataset of token sequences and their targets.

- ``reverse``: the target is the reversed sequence. Every output needs tokens that come later in
  the input, so a causal model cannot learn it.
- ``mirror``: the first half is copied, then reversed: the target at position t is token t for
  t < T/2 and token T-1-t after, always a token the model has already seen. A causal model can
  learn it (it reverses a prefix it has already read).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from scratch_model.config import TransformerConfig


def validate_tokens(tokens: object, config: TransformerConfig) -> np.ndarray:
    """Check a token batch against the config; return it as an integer array of shape (B, T)."""
    array = np.asarray(tokens)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"tokens must have rank 2 (batch, seq), got rank {array.ndim} "
                         f"with shape {array.shape}")
    if not 1 <= array.shape[1] <= config.seq_len:
        raise ValueError(f"sequence length must be between 1 and seq_len={config.seq_len}, "
                         f"got {array.shape[1]}")
    if array.size and (array.min() < 0 or array.max() >= config.vocab_size):
        bad = array[(array < 0) | (array >= config.vocab_size)][0]
        raise ValueError(f"token {int(bad)} is outside the vocabulary [0, {config.vocab_size - 1}]")
    return array


TASKS = ("reverse", "mirror")


@dataclass(frozen=True)
class ReversalData:
    """Disjoint train and test sets of sequences over tokens 1..vocab_size-1 (0 is reserved), and
    the task that makes their targets."""

    train_inputs: np.ndarray  # (N_train, T) int64
    test_inputs: np.ndarray  # (N_test, T) int64
    seed: int
    task: str = "reverse"  # reverse | mirror (see the module docstring)

    @property
    def train_targets(self) -> np.ndarray:
        return targets_for(self.train_inputs, self.task)

    @property
    def test_targets(self) -> np.ndarray:
        return targets_for(self.test_inputs, self.task)

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The training set in a shuffled order fixed by (seed, epoch); the last batch may be short."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_inputs))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            inputs = self.train_inputs[idx]
            yield inputs, targets_for(inputs, self.task)


def reverse_targets(inputs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(inputs[:, ::-1])


def mirror_targets(inputs: np.ndarray) -> np.ndarray:
    """Position t < T/2: token t (a copy); position t >= T/2: token T-1-t (the first half reversed)."""
    t = inputs.shape[1]
    positions = np.arange(t)
    source = np.where(positions < (t + 1) // 2, positions, t - 1 - positions)  # (T,), always <= t
    return np.ascontiguousarray(inputs[:, source])


def targets_for(inputs: np.ndarray, task: str) -> np.ndarray:
    if task == "mirror":
        return mirror_targets(inputs)
    if task == "reverse":
        return reverse_targets(inputs)
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def task_for(config: TransformerConfig, task: str = "auto") -> str:
    """``task``, or with "auto" the task the architecture can learn: mirror for a causal model
    (reversal needs tokens it may not see), reverse otherwise."""
    if task == "auto":
        return "mirror" if config.mask == "causal" else "reverse"
    if task not in TASKS:
        raise ValueError(f"task must be auto or one of {', '.join(TASKS)}, got {task!r}")
    return task


def make_reversal_data(config: TransformerConfig, num_train: int = 6000, num_test: int = 1000,
                       seed: int = 0, task: str = "reverse") -> ReversalData:
    """Draw ``num_train + num_test`` distinct sequences and split them, so no test sequence is
    ever trained on."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be positive, got {num_train} and {num_test}")
    low, high, length = 1, config.vocab_size, config.seq_len
    possible = float(high - low) ** length
    wanted = num_train + num_test
    if possible < wanted:
        raise ValueError(f"only {int(possible)} distinct sequences exist for vocab_size="
                         f"{config.vocab_size}, seq_len={length}; asked for {wanted}")
    rng = np.random.default_rng(seed)
    chosen = np.empty((0, length), dtype=np.int64)
    while len(chosen) < wanted:
        draw = rng.integers(low, high, size=(2 * wanted, length), dtype=np.int64)
        both = np.concatenate([chosen, draw])
        _, first = np.unique(both, axis=0, return_index=True)
        chosen = both[np.sort(first)]
    chosen = chosen[:wanted]
    return ReversalData(chosen[:num_train], chosen[num_train:], seed, task_for(config, task))
