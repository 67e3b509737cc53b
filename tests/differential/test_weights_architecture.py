"""Weights of one architecture loaded into another: each name the target does not have is listed as
unexpected, with the architectural reason (a tied head, no Linear biases, no learned positional
table, no final LayerNorm), and only where that reason holds."""

from __future__ import annotations

import re

import pytest

from differential.weights import load_into_class, load_into_torch
from scratch_model.config import arch
from scratch_model.init import seeded_weights
from scratch_model.layers import ReversalTransformer
from torch_reference.model import ReversalTransformer as TorchModel

TIED = "; this model ties its head to the token embedding: the head's weight is embedding.weight"
NO_BIAS = "; this model's Linear layers have no biases (bias off)"
NO_POSITIONS = "; this model has no learned positional table (positions sinusoidal or none)"
NO_FINAL = "; this model has no final LayerNorm"


def _unexpected(error: str) -> dict[str, str]:
    """name -> the note after its "unexpected" line (empty when none)."""
    line = re.compile(r"unexpected: '([^']+)' \(got shape \([^)]*\), dtype \w+\)(.*)")
    return {m.group(1): m.group(2) for m in line.finditer(error)}


def _error(source: dict, target_overrides: dict, loader: str = "class") -> str:
    target = arch("seed", **target_overrides)
    model = ReversalTransformer(target) if loader == "class" else TorchModel(target)
    with pytest.raises(ValueError) as info:
        (load_into_class if loader == "class" else load_into_torch)(model, source)
    return str(info.value)


@pytest.mark.parametrize("loader", ["class", "torch"])
def test_each_missing_part_of_the_target_architecture_is_named(loader: str) -> None:
    source = seeded_weights(arch("seed", final_norm=True), 0)  # every part: biases, positions, head, ln_f
    notes = _unexpected(_error(source, dict(tie_head=True, bias=False, positional="sinusoidal"), loader))
    assert notes["head.weight"] == TIED
    assert notes["pos_embedding.weight"] == NO_POSITIONS
    assert notes["ln_f.weight"] == notes["ln_f.bias"] == NO_FINAL
    linear_biases = [n for n in source if n.endswith(".bias") and not n.split(".")[-2].startswith("ln")]
    assert len(linear_biases) == 7  # q, k, v, out, fc1, fc2, head
    assert all(notes[n] == NO_BIAS for n in linear_biases)
    assert set(notes) == {"head.weight", "pos_embedding.weight", "ln_f.weight", "ln_f.bias", *linear_biases}


def test_no_reason_is_given_where_the_target_has_that_part() -> None:
    # the target keeps biases, positions, a final norm and a separate head: an extra name is just unexpected
    source = seeded_weights(arch("seed", final_norm=True), 0)
    source["blocks.0.attn.extra.bias"] = source["blocks.0.attn.q_proj.bias"]
    source["pos_embedding.table"] = source["pos_embedding.weight"]
    source["ln_f.scale"] = source["ln_f.weight"]
    source["head.extra"] = source["head.bias"]
    notes = _unexpected(_error(source, dict(final_norm=True)))
    assert notes == {"blocks.0.attn.extra.bias": "", "pos_embedding.table": "", "ln_f.scale": "", "head.extra": ""}


def test_a_layer_norm_bias_is_not_a_linear_bias() -> None:
    source = seeded_weights(arch("seed", final_norm=True), 0)
    notes = _unexpected(_error(source, dict(bias=False, final_norm=False)))
    assert notes["ln_f.bias"] == NO_FINAL  # a LayerNorm's shift: the reason is the missing ln_f, not bias off
    assert notes["blocks.0.ffn.fc1.bias"] == NO_BIAS
    assert "blocks.0.ln1.bias" not in notes  # the target keeps its LayerNorm biases


def test_a_tied_target_is_named_only_for_the_head_weight() -> None:
    source = seeded_weights(arch("seed"), 0)
    notes = _unexpected(_error(source, dict(tie_head=True)))
    assert notes == {"head.weight": TIED}
