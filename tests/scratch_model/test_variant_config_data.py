"""Architecture fields of TransformerConfig (validation, presets, mappings) and the mirror task a
causal model trains on."""

from __future__ import annotations

import numpy as np
import pytest

from scratch_model.config import ARCHS, VARIANTS, TrainConfig, TransformerConfig, arch, config_from_mapping, variant
from scratch_model.data import make_reversal_data, mirror_targets, targets_for, task_for

BAD = [
    (dict(norm="sandwich"), "norm", "'sandwich'"),
    (dict(activation="swish"), "activation", "'swish'"),
    (dict(mask="bidirectional"), "mask", "'bidirectional'"),
    (dict(positional="rotary"), "positional", "'rotary'"),
    (dict(bias="yes"), "bias", "'yes'"),
    (dict(tie_head=1), "tie_head", "1"),
    (dict(final_norm=None), "final_norm", "None"),
    (dict(ln_eps=0.0), "ln_eps", "0.0"),
    (dict(ln_eps=float("nan")), "ln_eps", "nan"),
]


@pytest.mark.parametrize(("values", "field", "shown"), BAD, ids=str)
def test_bad_architecture_fields_are_named(values: dict, field: str, shown: str) -> None:
    with pytest.raises(ValueError) as raised:
        TransformerConfig(**values)
    assert field in str(raised.value) and shown in str(raised.value)


def test_every_variant_builds_and_names_its_differences() -> None:
    seed = TransformerConfig()
    for name, fields in VARIANTS.items():
        assert variant(name).changed_fields() == {k: v for k, v in fields.items() if getattr(seed, k) != v}
    assert arch("gpt").changed_fields() == {k: v for k, v in ARCHS["gpt"].items() if k != "positional"}
    with pytest.raises(ValueError, match="'bert'"):
        arch("bert")


def test_config_from_mapping_starts_from_a_preset_and_refuses_unknown_keys() -> None:
    got = config_from_mapping({"arch": "gpt", "bias": False, "num_layers": 2}, source="f.toml")
    assert got == arch("gpt", bias=False, num_layers=2)
    with pytest.raises(ValueError, match=r"f.toml: unknown model setting 'heads'"):
        config_from_mapping({"heads": 2}, source="f.toml")
    with pytest.raises(ValueError, match=r"f.json: .*norm"):
        config_from_mapping({"norm": "middle"}, source="f.json")


@pytest.mark.parametrize("length", [1, 2, 7, 8])
def test_mirror_targets_only_look_back(length: int) -> None:
    """Each target token is an input token at the same or an earlier position, the first half
    copied and the second half the first reversed (checked against a loop written here)."""
    inputs = np.arange(1, length + 1)[None, :] * np.array([[1], [10]])
    targets = mirror_targets(inputs)
    half = (length + 1) // 2
    for t in range(length):
        source = t if t < half else length - 1 - t
        assert source <= t
        assert np.array_equal(targets[:, t], inputs[:, source])


def test_the_task_follows_the_mask() -> None:
    assert task_for(TransformerConfig()) == "reverse"
    assert task_for(arch("gpt")) == "mirror"
    assert task_for(arch("gpt"), "reverse") == "reverse"
    data = make_reversal_data(arch("gpt"), num_train=20, num_test=5, task="auto")
    assert data.task == "mirror"
    assert np.array_equal(data.train_targets, mirror_targets(data.train_inputs))
    inputs, targets = next(data.batches(0, 4))
    assert np.array_equal(targets, targets_for(inputs, "mirror"))
    with pytest.raises(ValueError, match="'copy'"):
        TrainConfig(task="copy")
