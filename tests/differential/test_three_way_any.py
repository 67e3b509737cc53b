"""The three-way view with any two implementations beside torch: class, functional, or a user's
framework through an adapter. Where the one under test disagrees with the other and only the other
agrees with torch, the view says to port the fix from the other's code."""

from __future__ import annotations

import warnings

import pytest

from differential.adapter import AdapterOptions
from differential.cli import main
from differential.report import ReportOptions, run_three_way
from tests.foreign_course.adapter import make_adapter
from tests.foreign_course.faults import FAULTS


def test_clean_adapter_three_way_agrees_everywhere() -> None:
    report = run_three_way(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=8, optimizer="sgd"))
    tw = report.three_way
    assert tw["implementations"] == ["adapter", "class"]
    assert [tw[k]["verdict"] for k in ("adapter_vs_torch", "class_vs_torch", "adapter_vs_class")] == ["match"] * 3
    assert tw["agrees_with_torch"] == ["adapter", "class"] and tw["port_from"] is None


@pytest.mark.parametrize("other", ["class", "functional"])
def test_a_broken_adapter_is_told_to_port_from_the_bundled_model(other: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = next(f for f in FAULTS if f.name == "attention_unscaled")
    monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)
    report = run_three_way(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=8, optimizer="sgd"),
                           other)
    tw = report.three_way
    assert tw["implementations"] == ["adapter", other]
    assert tw["agrees_with_torch"] == [other]
    between = tw[f"adapter_vs_{other}"]["first_divergence"]
    assert (between["module"], between["phase"]) == (fault.module, fault.phase)
    assert tw["port_from"] == between["reference_source"]
    assert tw["port_from"].startswith("scratch_model/")  # the bundled model's attention
    assert report.first_divergence.port_from == tw["port_from"]


def test_functional_can_be_checked_beside_class(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["report", "--impl", "functional", "--three-way", "--other", "class", "--batch-size", "4", "-q"])
    assert code == 0, capsys.readouterr()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--other", "class"], "add --three-way"),
    (["--three-way", "--other", "class"], "--other class is the implementation under test"),
])
def test_other_without_sense_is_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
