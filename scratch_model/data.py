"""The sequence-reversal task: a seeded dataset of token sequences and their reversals."""

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


@dataclass(frozen=True)
class ReversalData:
    """Disjoint train and test sets of sequences over tokens 1..vocab_size-1 (0 is reserved)."""

    train_inputs: np.ndarray  # (N_train, T) int64
    test_inputs: np.ndarray  # (N_test, T) int64
    seed: int

    @property
    def train_targets(self) -> np.ndarray:
        return reverse_targets(self.train_inputs)

    @property
    def test_targets(self) -> np.ndarray:
        return reverse_targets(self.test_inputs)

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The training set in a shuffled order fixed by (seed, epoch); the last batch may be short."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_inputs))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            inputs = self.train_inputs[idx]
            yield inputs, reverse_targets(inputs)


def reverse_targets(inputs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(inputs[:, ::-1])


def make_reversal_data(config: TransformerConfig, num_train: int = 6000, num_test: int = 1000,
                       seed: int = 0) -> ReversalData:
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
    return ReversalData(chosen[:num_train], chosen[num_train:], seed)
