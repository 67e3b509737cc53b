"""Faults in architecture variants: each applicable catalogue fault is localized in every variant
(`zoo.run_matrix`, the whole matrix in the slow set), the variant faults (causal masks, pre-LN
residuals, a tied head whose gradient share is lost) in the default set, and the shared-parameter
logic of `differential.tied`."""

from __future__ import annotations

import numpy as np
import pytest

from differential import faults, zoo
from differential.report import ReportOptions, run_report
from differential.tied import users_of
from scratch_model.config import VARIANTS, arch, variant

VARIANT_FAULTS = ["mask_inverted", "causal_mask_transposed", "causal_mask_one_ahead", "pre_ln_residual_of_normed",
                  "pre_ln_norm_after_residual", "pre_ln_second_residual_from_input", "tied_head_grad_not_summed"]


@pytest.mark.parametrize("name", VARIANT_FAULTS)
def test_variant_faults_are_localized_in_the_gpt_preset(name: str) -> None:
    fault = faults.get_fault(name)
    assert fault.lives_in(arch("gpt"))
    options = zoo.options_for(fault, ReportOptions(model=arch("gpt")))
    report = zoo.report_with_fault(name, options)
    listed = [(d.module, d.phase, d.kind) for d in report.findings]
    assert listed[0] == fault.expected(options.model)[0], listed
    assert all(e in listed for e in fault.expected(options.model)), listed


@pytest.mark.parametrize("name", VARIANT_FAULTS)
def test_variant_faults_do_not_run_in_the_seed_model(name: str) -> None:
    """Their code needs the variant: the seed model does not run it, so the zoo switches it on."""
    fault = faults.get_fault(name)
    assert not fault.lives_in(variant("seed"))
    assert fault.lives_in(fault.model_for(variant("seed")))


def test_a_tied_head_fault_is_charged_to_the_head_not_the_embedding() -> None:
    """The embedding's own share is right: a fault in the head must not be blamed on it, and the
    embedding is not listed as a second finding."""
    report = zoo.report_with_fault("tied_head_grad_not_summed", ReportOptions(model=arch("gpt")))
    assert [(d.module, d.phase, d.kind) for d in report.findings] == [("head", "param_grad", "graph_break")]
    assert "shared with embedding" in report.findings[0].hint


def test_an_embedding_fault_under_a_tied_head_stays_on_the_embedding() -> None:
    report = zoo.report_with_fault("embedding_grad_overwrite", ReportOptions(model=arch("gpt")))
    assert [(d.module, d.phase) for d in report.findings] == [("embedding", "param_grad")]


def test_a_layer_norm_fault_under_a_tied_head_adds_no_embedding_finding() -> None:
    """Run alone, the embedding gives only its own share of the tied gradient: comparing that with
    the joint sum would be a false finding."""
    report = zoo.report_with_fault("sqrt_backward_no_half", ReportOptions(model=arch("gpt"), dtype="float32"))
    assert [(d.module, d.phase) for d in report.findings] == [("ln_f", "backward")]


def test_users_of_groups_a_shared_parameter_under_its_first_name() -> None:
    table, other = np.zeros(2), np.zeros(2)
    pairs = [("embedding.weight", table), ("blocks.0.fc.weight", other), ("head.weight", table)]
    assert users_of(pairs) == {"embedding.weight": ("embedding", "head")}
    assert users_of(pairs[:2]) == {}


@pytest.mark.parametrize("impl", ["class", "functional"])
def test_the_tied_variant_is_clean_in_both_precisions(impl: str) -> None:
    for dtype in ("float64", "float32"):
        report = run_report(ReportOptions(impl=impl, dtype=dtype, model=arch("gpt", num_layers=2), seed=3))
        assert report.verdict == "match", [(d.module, d.phase, d.kind) for d in report.findings]


@pytest.mark.slow
def test_every_applicable_fault_is_localized_in_every_variant() -> None:
    matrix = zoo.run_matrix(ReportOptions())
    bad = [(c.fault, c.variant, c.expected[0], c.reported[:2]) for c in matrix.cells
           if not (c.localized and c.kind_right and c.all_found)]
    assert not bad, bad
    assert set(matrix.clean) == set(VARIANTS) and set(matrix.clean.values()) == {"match"}
