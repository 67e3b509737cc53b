"""The reversal data: targets, token range, disjoint splits, seeding, and epoch batching."""

from __future__ import annotations

import numpy as np
import pytest

from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data, reverse_targets

CONFIGS = [TransformerConfig(), TransformerConfig(vocab_size=3, seq_len=8), TransformerConfig(vocab_size=50, seq_len=2)]


def rows(array: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in array}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"V{c.vocab_size}-T{c.seq_len}")
def test_dataset_shape_range_targets_and_split(config: TransformerConfig) -> None:
    data = make_reversal_data(config, num_train=120, num_test=30, seed=4)
    assert data.train_inputs.shape == (120, config.seq_len) and data.test_inputs.shape == (30, config.seq_len)
    for inputs, targets in ((data.train_inputs, data.train_targets), (data.test_inputs, data.test_targets)):
        assert np.issubdtype(inputs.dtype, np.integer)
        assert inputs.min() >= 1 and inputs.max() <= config.vocab_size - 1, "token 0 is reserved"
        for row, target in zip(inputs, targets, strict=True):
            assert list(target) == list(row)[::-1]
    train, test = rows(data.train_inputs), rows(data.test_inputs)
    assert len(train) == 120 and len(test) == 30, "duplicate sequences"
    assert not train & test, "a test sequence is also in the training set"


def test_every_token_is_used() -> None:
    config = TransformerConfig()
    data = make_reversal_data(config, num_train=500, num_test=50, seed=0)
    assert set(np.unique(data.train_inputs)) == set(range(1, config.vocab_size))


def test_same_seed_same_data_other_seed_other_data() -> None:
    config = TransformerConfig()
    a, b = make_reversal_data(config, 200, 50, seed=1), make_reversal_data(config, 200, 50, seed=1)
    c = make_reversal_data(config, 200, 50, seed=2)
    np.testing.assert_array_equal(a.train_inputs, b.train_inputs)
    np.testing.assert_array_equal(a.test_inputs, b.test_inputs)
    assert not np.array_equal(a.train_inputs, c.train_inputs)
    assert not np.array_equal(a.test_inputs, c.test_inputs)


@pytest.mark.parametrize("batch_size", [1, 16, 64, 100, 500])
def test_batches_cover_the_train_set_once_per_epoch(batch_size: int) -> None:
    config = TransformerConfig()
    data = make_reversal_data(config, num_train=100, num_test=10, seed=3)
    orders = []
    for epoch in range(2):
        batches = list(data.batches(epoch, batch_size))
        assert len(batches) == -(-100 // batch_size)
        assert all(len(x) == batch_size for x, _ in batches[:-1]) and 1 <= len(batches[-1][0]) <= batch_size
        for inputs, targets in batches:
            np.testing.assert_array_equal(targets, inputs[:, ::-1])
        seen = np.concatenate([x for x, _ in batches])
        assert sorted(rows(seen)) == sorted(rows(data.train_inputs)) and len(seen) == 100
        orders.append(seen)
    if batch_size < 100:
        assert not np.array_equal(orders[0], orders[1]), "every epoch has the same order"
    again = np.concatenate([x for x, _ in data.batches(0, batch_size)])
    np.testing.assert_array_equal(again, orders[0])


def test_reverse_targets_is_a_contiguous_reversal() -> None:
    inputs = np.arange(12).reshape(3, 4)
    out = reverse_targets(inputs)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]])


@pytest.mark.parametrize(("config", "num_train", "num_test", "message"), [
    (TransformerConfig(vocab_size=3, seq_len=2), 3, 2, "only 4 distinct sequences"),
    (TransformerConfig(), 0, 10, "num_train and num_test must be positive, got 0 and 10"),
    (TransformerConfig(), 10, -1, "got 10 and -1"),
])
def test_impossible_datasets_raise(config: TransformerConfig, num_train: int, num_test: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_reversal_data(config, num_train, num_test)
