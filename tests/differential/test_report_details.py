"""The parts of a report beyond the first divergence's module and phase: where the chain stops,
the op named inside a module, the three-way port-from pointer, the tables, the training phase."""

from __future__ import annotations

import numpy as np
import pytest

from differential import assert_no_divergence, faults
from differential.report import ReportOptions, run_report, run_three_way


def report_on(name: str, **options) -> object:
    with faults.activate(name):
        return run_report(ReportOptions(**options))


@pytest.mark.parametrize("name, maker", [
    ("residual_from_data", "block_residual_from_data at differential/faults/class_model.py"),
    ("positional_slice_from_data", "positional_slice_from_data at differential/faults/class_model.py"),
    ("transpose_drops_grad", "transpose_without_backward at differential/faults/ops.py"),
    ("reshape_no_backward", "reshape_without_backward at differential/faults/ops.py"),
    ("loss_from_data", "cross_entropy_from_data at differential/faults/training.py"),
])
def test_graph_break_names_the_code_that_cut_the_chain(name: str, maker: str) -> None:
    hint = report_on(name).first_divergence.hint
    assert f"the chain stops at a tensor made by {maker}" in hint


@pytest.mark.parametrize("name, op", [
    ("embedding_grad_overwrite", "embedding_assign"),
    ("sqrt_backward_no_half", "sqrt_backward_missing_half"),
    ("softmax_no_backward", "softmax_without_backward"),
    ("relu_backward_no_mask", "relu_backward_passes_all"),
])
def test_backward_fault_names_the_primitive(name: str, op: str) -> None:
    d = report_on(name).first_divergence
    assert d.op is not None and d.op["op"] == op
    assert d.op["source"].startswith("differential/faults/ops.py:")


def test_three_way_points_to_the_implementation_that_agrees_with_torch() -> None:
    with faults.activate("residual_from_data"):
        report = run_three_way(ReportOptions(impl="class"))
    tw = report.three_way
    assert tw["agrees_with_torch"] == ["functional"]
    assert tw["class_vs_functional"]["first_divergence"]["module"] == "blocks.0"
    # the port-from pointer is the functional block's residual-add line
    path, _, line = tw["port_from"].rpartition(":")
    assert path == "scratch_model/functional.py"
    source = open(path).read().splitlines()[int(line) - 1]
    assert "ln1" in source and "x + attended" in source
    assert report.first_divergence.port_from == tw["port_from"]


def test_tables_answer_the_original_questions() -> None:
    report = report_on("optimizer_misses_ffn")
    update = {r["parameter"]: r for r in report.weight_update}
    flow = {r["parameter"]: r for r in report.gradient_flow}
    assert flow["blocks.0.ffn.fc1.weight"]["has_grad"] and flow["blocks.0.ffn.fc1.weight"]["matches_reference"]
    assert not update["blocks.0.ffn.fc1.weight"]["changed_after_step"]
    assert update["head.weight"]["update_matches_reference"]
    assert report.data["ok"]


def test_training_steps_side_by_side_find_no_divergence_when_clean() -> None:
    report = run_report(ReportOptions(steps=4))
    assert report.training["status"] == "match"
    assert np.allclose(report.training["loss_actual"], report.training["loss_expected"], rtol=1e-9)
    assert len(report.training["loss_actual"]) == 4


def test_scale_factor_is_named() -> None:
    # a doubled gradient into the head's weight: kind scale_factor, and the factor written out
    from differential.diagnose import classify, name_factor

    kind, words = classify(np.full((3, 4), 2.0) * np.arange(12).reshape(3, 4),
                           np.arange(12.0).reshape(3, 4), is_grad=True)
    assert kind == "scale_factor" and "2 (= 2)" in words
    assert name_factor(1 / np.sqrt(8)) == "0.353553 (= 1/sqrt(8))"


def test_assert_no_divergence_raises_with_the_location() -> None:
    assert assert_no_divergence(impl="functional").verdict == "match"
    with faults.activate("attention_no_scale"), pytest.raises(AssertionError, match="blocks.0.attn"):
        assert_no_divergence()
