"""The differential report localizes injected breakages: for each known bug (breakages.py), the
first divergence names the module, the phase and the kind where the bug lives; clean models match.

Breakages are injected with pytest's monkeypatch (never by editing source), so every test leaves
the code as it found it. Batches are small (8 sequences) to keep the whole file fast.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from breakages import (
    CASES,
    FORWARD_CASES,
    Breakage,
    f_attention_no_scale,
    f_layer_norm_no_eps,
    ln_no_eps,
    mha_no_scale,
    swap_forward,
)

from differential import diagnose as K
from differential.bundled_adapters import ClassModelAdapter
from differential.report import Report, ReportOptions, run_report
from scratch_model import functional, layers
from scratch_model.config import TransformerConfig

BATCH = 8
SOURCE_HERE = "tests/differential/breakages.py:"


@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``inject(case, ...)`` patches each case's attribute for the rest of the test."""
    def apply(*cases: Breakage) -> None:
        for case in cases:
            monkeypatch.setattr(case.target, case.attribute, case.replacement)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN-producing breakages warn from numpy
        yield apply


def _first(report: Report) -> dict[str, Any]:
    first = report.to_dict()["first_divergence"]
    assert report.verdict == "diverged" and first is not None, "the broken model was reported as matching"
    return first


def _where(first: dict[str, Any]) -> tuple[str, str, str]:
    return first["module"], first["phase"], first["kind"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_breakage_is_localized(case: Breakage, inject: Any) -> None:
    inject(case)
    first = _first(run_report(ReportOptions(impl=case.impl, batch_size=BATCH)))
    assert _where(first) == (case.module, case.phase, case.kind), first["hint"]
    if case.op is not None:
        assert first["op"] is not None and first["op"]["op"] == case.op, first["hint"]
    if case.hint is not None:
        assert case.hint in first["hint"]
    if case.source_here:
        assert first["scratch_source"].startswith(SOURCE_HERE), first["scratch_source"]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: c.name)
def test_forward_breakage_is_localized_in_float32(case: Breakage, inject: Any) -> None:
    """Against the float64 oracle with the reference's own float32 noise floor, a forward bug
    lands on the same module, phase and kind as in float64."""
    inject(case)
    model = case.float32_model or TransformerConfig()
    first = _first(run_report(ReportOptions(impl=case.impl, dtype="float32", batch_size=BATCH, model=model)))
    assert _where(first) == (case.module, case.phase, case.kind), first["hint"]


@pytest.mark.parametrize("impl", ["class", "functional"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_clean_model_matches(seed: int, num_layers: int, dtype: str, impl: str) -> None:
    report = run_report(ReportOptions(impl=impl, dtype=dtype, seed=seed, batch_size=BATCH,
                                      model=TransformerConfig(num_layers=num_layers)))
    first = report.to_dict()["first_divergence"]
    assert report.verdict == "match", first


# --- isolated mode: every broken module, not only the first -------------------------------------

TWO_BREAKAGES = {
    # class: only ln1's instance loses eps, so ln2 (sound) must stay off the list
    "class": (Breakage("ln1_only_without_eps", ClassModelAdapter, "__init__", swap_forward("blocks.0.ln1", ln_no_eps),
                       "blocks.0.ln1", "forward", K.SCALE),
              Breakage("attn_missing_scale", layers.MultiHeadAttention, "forward", mha_no_scale,
                       "blocks.0.attn", "forward", K.VALUE),
              {"blocks.0.ln1", "blocks.0.attn"}),
    # functional: one layer_norm function serves ln1 and ln2, so both are broken
    "functional": (Breakage("f_ln_without_eps", functional, "layer_norm", f_layer_norm_no_eps,
                            "blocks.0.ln1", "forward", K.SCALE, impl="functional"),
                   Breakage("f_attn_missing_scale", functional, "attention", f_attention_no_scale,
                            "blocks.0.attn", "forward", K.VALUE, impl="functional"),
                   {"blocks.0.ln1", "blocks.0.ln2", "blocks.0.attn"}),
}


@pytest.mark.parametrize("impl", ["class", "functional"])
def test_isolated_lists_every_broken_module(impl: str, inject: Any) -> None:
    ln_case, attn_case, broken = TWO_BREAKAGES[impl]
    inject(ln_case, attn_case)
    report = run_report(ReportOptions(impl=impl, batch_size=BATCH, isolated=True))
    assert _where(_first(report)) == (attn_case.module, attn_case.phase, attn_case.kind)
    found = {d.module: (d.phase, d.kind) for d in report.isolated or []}
    assert set(found) == broken, found
    assert found[ln_case.module] == (ln_case.phase, ln_case.kind)
    assert found[attn_case.module] == (attn_case.phase, attn_case.kind)
