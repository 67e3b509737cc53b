"""The report on coursegrad (tests/foreign_course), a framework built the way a course builds one,
through an adapter written from docs/adapter.md alone: the head on ``x.reshape(B*T, D)``, a
positional layer that returns its table, float token ids, prints on import and construction, one
optimizer, parameters and layers in plain lists, a recursive backward.

The clean model matches through the CLI at 1 and 2 layers, float64 and float32; every injected
fault is among the findings at its module, phase and kind, and nothing else is.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from differential.adapter import AdapterOptions
from differential.cli import main
from differential.formats import format_text
from differential.report import Report, ReportOptions, run_report
from tests.foreign_course import nn
from tests.foreign_course.adapter import make_adapter
from tests.foreign_course.engine import Tensor
from tests.foreign_course.faults import FAULTS, Fault

BATCH = 8
SPEC = "tests.foreign_course.adapter:make_adapter"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", "--adapter", SPEC, "--batch-size", str(BATCH), *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the clean model, through the CLI ------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
def test_clean_course_model_matches_through_the_cli(layers: int, dtype: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--layers", str(layers), "--dtype", dtype, "--optimizer", "sgd", "--format", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)  # what coursegrad prints never reaches stdout
    assert report["verdict"] == "match" and report["findings"] == []
    assert report["options"]["model"]["num_layers"] == layers and report["options"]["dtype"] == dtype
    assert report["adapter"]["unchecked_phases"] == []
    assert report["adapter"]["modules"][f"blocks.{layers - 1}.ffn.fc2"] == f"blocks[{layers - 1}].ffwd.layers[2]"
    assert f"blocks.{layers}" not in report["adapter"]["modules"]
    statuses = {m[p]["status"] for m in report["modules"] for p in ("forward", "backward")}
    assert statuses == {"match"}  # every module compared, the reshaped head and the table included
    assert report["loss"]["grad_match"] is True


def test_clean_course_model_explains_its_shapes() -> None:
    report = run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=BATCH, optimizer="sgd"))
    assert report.verdict == "match"
    notes = report.adapter["notes"]
    assert f"your logits [{BATCH * 8}, 10] are compared as [{BATCH}, 8, 10] (batch and time axes reshaped)" in notes
    assert (f"head: compared after reshaping the batch and time axes: input[0] [{BATCH * 8}, 32] as [{BATCH}, 8, 32], "
            f"output [{BATCH * 8}, 10] as [{BATCH}, 8, 10]") in notes
    assert any(n.startswith("pos_embedding returns the table [8, 32]") for n in notes)
    assert len(notes) == 3
    head = next(m for m in report.modules if m["module"] == "head")
    assert set(head["forward"]["tensors"]) == {"input[0]", "output"}  # compared, not skipped
    pos = next(m for m in report.modules if m["module"] == "pos_embedding")
    assert set(pos["forward"]["tensors"]) == {"output"} and set(pos["backward"]["tensors"]) == {"grad_output"}
    assert "  note: head: compared after reshaping" in format_text(report)


def _table_with_a_batch_axis(self: nn.PositionalEmbedding, t: int) -> Tensor:
    return self.weight.rows(t).reshape(1, t, -1)  # (1, T, D): broadcast over the batch by the caller's add


@pytest.mark.parametrize(("batch", "table_1td"), [(1, False), (1, True), (BATCH, True)])
def test_tables_with_a_batch_axis_and_single_sequence_batches_match(batch: int, table_1td: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if table_1td:
        monkeypatch.setattr(nn.PositionalEmbedding, "__call__", _table_with_a_batch_axis)
    report = run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=batch, optimizer="sgd"))
    assert report.verdict == "match", [d.hint for d in report.findings]
    assert any(n.startswith("pos_embedding returns the table") for n in report.adapter["notes"])


def _one_hot_model(shift: int) -> Any:
    """The model's ``__call__`` handing its embedding one-hot rows (B, T, V) instead of the ids;
    ``shift`` != 0 looks every id's neighbour up (a bug)."""
    def call(self: nn.Transformer, idx: Tensor) -> Tensor:
        b, t = idx.shape
        vocab = self.token_embedding.weight.shape[0]
        one_hot = Tensor(np.eye(vocab)[(idx.data.astype(np.int64) + shift) % vocab])  # (B, T, V) of 0/1
        x = self.token_embedding(one_hot) + self.position_embedding(t)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(x.reshape(b * t, -1))

    return call


def _one_hot_report(monkeypatch: pytest.MonkeyPatch, shift: int) -> Report:
    monkeypatch.setattr(nn.Transformer, "__call__", _one_hot_model(shift))
    monkeypatch.setattr(nn.Embedding, "__call__", lambda self, one_hot: one_hot @ self.weight)
    return run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=BATCH, optimizer="sgd"))


def test_one_hot_rows_are_not_an_extra_float_input(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _one_hot_report(monkeypatch, 0)
    assert report.verdict == "match", [d.hint for d in report.findings]
    assert ("embedding: float input 0 holds whole numbers (token ids, one-hot rows) where the reference takes no "
            "float input: not compared") in report.adapter["notes"]


def test_a_wrong_one_hot_embedding_is_still_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _found(_one_hot_report(monkeypatch, 1))[0] == ("embedding", "forward", "value_mismatch")


def test_a_wrong_table_is_still_caught_with_one_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    fault = next(f for f in FAULTS if f.name == "positions_scaled")
    monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)
    report = run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=1))
    assert _found(report) == [("pos_embedding", "forward", fault.kind)]


def test_the_missing_optimizer_is_listed_not_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--format", "json")  # the default --optimizer adam
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "match"
    assert report["adapter"]["unchecked_phases"] == ["optimizer", "training"]
    assert "no adam optimizer" in report["adapter"]["why_unchecked"]["optimizer"]
    assert "--optimizer sgd" in report["adapter"]["why_unchecked"]["optimizer"]
    assert report["weight_update"] == [] and report["adapter"]["optimizers"] == ["sgd"]


def test_training_with_the_missing_optimizer_is_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--steps", "2")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no adam optimizer" in err


def test_training_side_by_side_with_sgd_matches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--optimizer", "sgd", "--steps", "3", "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["training"]["status"] == "match" and len(report["training"]["loss_actual"]) == 3


def test_prints_on_import_and_construction_are_captured(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m.startswith("tests.foreign_course")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh, so its banner prints again
    code, out, err = _cli(capsys, "--optimizer", "sgd")
    assert (code, err) == (0, "")
    section = out[out.index("what your code printed"):]
    assert "during import:\n    coursegrad 0.3: numpy autograd loaded" in section
    assert "during construction:\n    number of parameters: 9450" in section
    assert out.count("coursegrad 0.3") == 1


# --- injected faults -----------------------------------------------------------------------------

@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def apply(fault: Fault) -> None:
        monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield apply


def _found(report: Report) -> list[tuple[str, str, str]]:
    return [(d.module, d.phase, d.kind) for d in report.findings]


def test_enough_faults() -> None:
    assert len(FAULTS) >= 10 and len({f.name for f in FAULTS}) == len(FAULTS)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_course_fault_is_localized(fault: Fault, inject: Any) -> None:
    inject(fault)
    report = run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=BATCH,
                                      optimizer=fault.optimizer))
    assert report.verdict == "diverged"
    found = _found(report)
    assert set(found) == {(fault.module, fault.phase, fault.kind), *fault.also}, [d.hint for d in report.findings]
    assert len(found) == len(set(found))
    if fault.yours is not None:
        assert report.adapter["modules"][fault.module if fault.module != "(model)" else ""] == fault.yours
    mine = next(d for d in report.findings if d.module == fault.module)
    if fault.phase != "training":
        assert "tests/foreign_course/" in mine.scratch_source, mine.scratch_source
