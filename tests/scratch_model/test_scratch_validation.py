"""Bad input is a ValueError naming the expected and the actual value: token batches for both
model forwards, and config values."""

from __future__ import annotations

import numpy as np
import pytest

from scratch_model.config import TrainConfig, TransformerConfig
from scratch_model.functional import build_simple_transformer
from scratch_model.layers import ReversalTransformer

CONFIG = TransformerConfig(vocab_size=10, seq_len=8, embed_dim=8, num_heads=2, ff_dim=8)
GOOD = np.ones((2, 8), dtype=np.int64)

# (tokens, fragment naming what was expected, fragment naming what was given)
BAD_TOKENS = {
    "token above vocabulary": (np.where(np.arange(8) == 3, 12, 1)[None], "[0, 9]", "12"),
    "token equal to vocab_size": (np.full((1, 8), 10), "[0, 9]", "10"),
    "negative token": (np.full((2, 8), -1), "[0, 9]", "-1"),
    "rank 1": (np.ones(8, dtype=np.int64), "rank 2", "rank 1"),
    "rank 3": (np.ones((2, 8, 1), dtype=np.int64), "rank 2", "rank 3"),
    "longer than seq_len": (np.ones((2, 9), dtype=np.int64), "seq_len=8", "got 9"),
    "empty sequence": (np.ones((2, 0), dtype=np.int64), "between 1 and", "got 0"),
    "float tokens": (np.ones((2, 8)), "integers", "float64"),
    "bool tokens": (np.ones((2, 8), dtype=bool), "integers", "bool"),
}


def class_forward(tokens: np.ndarray):
    return ReversalTransformer(CONFIG)(tokens)


def functional_forward(tokens: np.ndarray):
    params, forward = build_simple_transformer(CONFIG)
    return forward(params, tokens)


@pytest.mark.parametrize("forward", [class_forward, functional_forward], ids=["class", "functional"])
@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_tokens_raise_naming_expected_and_actual(forward, name: str) -> None:
    tokens, expected, actual = BAD_TOKENS[name]
    with pytest.raises(ValueError) as raised:
        forward(tokens)
    message = str(raised.value)
    assert expected in message and actual in message, message


@pytest.mark.parametrize("forward", [class_forward, functional_forward], ids=["class", "functional"])
@pytest.mark.parametrize("tokens", [GOOD, GOOD[:, :3], GOOD[:1], GOOD.astype(np.int32), GOOD * 0 + 9])
def test_good_tokens_are_accepted(forward, tokens: np.ndarray) -> None:
    assert forward(tokens).shape == (*tokens.shape, CONFIG.vocab_size)


@pytest.mark.parametrize("build", [ReversalTransformer, build_simple_transformer], ids=["class", "functional"])
def test_unsupported_dtype_raises(build) -> None:
    with pytest.raises(ValueError, match="float32 or float64, got float16"):
        build(CONFIG, dtype=np.float16)


BAD_MODEL_CONFIGS = [
    (dict(vocab_size=1), "vocab_size", "1"),
    (dict(vocab_size=0), "vocab_size", "0"),
    (dict(seq_len=0), "seq_len", "0"),
    (dict(seq_len=2.5), "seq_len", "2.5"),
    (dict(embed_dim=-4), "embed_dim", "-4"),
    (dict(num_heads=3), "num_heads (3)", "embed_dim (32)"),
    (dict(ff_dim=0), "ff_dim", "0"),
    (dict(num_layers=True), "num_layers", "True"),
    (dict(num_layers="2"), "num_layers", "'2'"),
    (dict(positional="rotary"), "learned, sinusoidal, none", "'rotary'"),
    (dict(ln_eps=0.0), "ln_eps", "0.0"),
    (dict(ln_eps=float("nan")), "ln_eps", "nan"),
]


@pytest.mark.parametrize(("values", "field", "actual"), BAD_MODEL_CONFIGS, ids=str)
def test_bad_transformer_config_raises(values: dict, field: str, actual: str) -> None:
    with pytest.raises(ValueError) as raised:
        TransformerConfig(**values)
    assert field in str(raised.value) and actual in str(raised.value), str(raised.value)


BAD_TRAIN_CONFIGS = [
    (dict(epochs=0), "epochs", "0"),
    (dict(batch_size=1.5), "batch_size", "1.5"),
    (dict(num_train=-1), "num_train", "-1"),
    (dict(lr=0.0), "lr", "0.0"),
    (dict(lr=float("inf")), "lr", "inf"),
    (dict(lr=float("nan")), "lr", "nan"),
    (dict(optimizer="rmsprop"), "'adam' or 'sgd'", "'rmsprop'"),
]


@pytest.mark.parametrize(("values", "field", "actual"), BAD_TRAIN_CONFIGS, ids=str)
def test_bad_train_config_raises(values: dict, field: str, actual: str) -> None:
    with pytest.raises(ValueError) as raised:
        TrainConfig(**values)
    assert field in str(raised.value) and actual in str(raised.value), str(raised.value)
