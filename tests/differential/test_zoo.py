"""The regression net for the harness: every fault of the catalogue is detected, localized to its
expected module and phase, and given its expected kind; the clean model matches; and switching a
fault on never leaks past its block."""

from __future__ import annotations

import pytest

from differential import diagnose, faults
from differential.report import ReportOptions, run_report
from differential.zoo import options_for, report_with_fault, run_zoo
from scratch_model import autograd, layers, train

BUG_CLASSES_WITH_CODE = {1, 2, 3, 4, 5, 6, 7, 8, 10}  # class 9 is about tests, not model code


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", faults.names())
def test_fault_is_localized(name: str, dtype: str) -> None:
    fault = faults.get_fault(name)
    report = report_with_fault(name, options_for(fault, ReportOptions(dtype=dtype)))
    d = report.first_divergence
    assert d is not None, f"{name}: not detected"
    assert (d.module, d.phase, d.kind) == (fault.module, fault.phase, fault.kind), d.hint


def test_catalogue_covers_every_bug_class_with_code() -> None:
    classes = {f.bug_class for f in faults.FAULTS.values()}
    assert BUG_CLASSES_WITH_CODE <= classes
    graph_break_places = {f.module for f in faults.FAULTS.values() if f.bug_class == 1}
    assert len(graph_break_places) >= 4
    assert len(faults.FAULTS) >= 18
    assert {f.kind for f in faults.FAULTS.values()} <= set(diagnose.KINDS)


def test_faults_restore_clean_code() -> None:
    clean = (layers.MultiHeadAttention.forward, layers.ReversalTransformer.__dict__.get("parameters"),
             autograd.reshape, train.cross_entropy)
    for name in faults.names():
        with faults.activate(name):
            pass
    with pytest.raises(RuntimeError), faults.activate("attention_no_scale"):
        raise RuntimeError("the block fails")
    after = (layers.MultiHeadAttention.forward, layers.ReversalTransformer.__dict__.get("parameters"),
             autograd.reshape, train.cross_entropy)
    assert after == clean
    assert run_report(ReportOptions()).verdict == "match"


def test_fault_for_the_other_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="--impl functional"):
        report_with_fault("layernorm_unbiased", ReportOptions(impl="class"))


def test_zoo_matrix_shows_what_naive_checks_miss() -> None:
    names = ["attention_no_scale", "residual_from_data", "optimizer_misses_ffn"]
    rows, clean = run_zoo(ReportOptions(), names)
    assert clean.verdict == "match"
    by_name = {r.fault: r for r in rows}
    assert all(r.detected and r.localized and r.kind_right for r in rows)
    # the missing scale passes both naive checks: every parameter has a gradient and changes
    assert by_name["attention_no_scale"].naive_all_have_grad is True
    assert by_name["attention_no_scale"].naive_all_changed is True
    # a parameter left out of the optimizer still has a gradient: only "changed" notices it
    assert by_name["optimizer_misses_ffn"].naive_all_have_grad is True
    assert by_name["optimizer_misses_ffn"].naive_all_changed is False
