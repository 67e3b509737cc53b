"""Isolated mode through an adapter: every module of a user's framework runs alone on the
reference's inputs and output gradient (the adapter's teacher-forcing hooks), as it does for the
bundled models. A clean model is still a match; each injected fault is found alone at its module,
and isolated mode agrees with the joint report's findings."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from differential.adapter import AdapterOptions
from differential.cli import main
from differential.report import ReportOptions, run_report
from tests.foreign_course.adapter import make_adapter
from tests.foreign_course.faults import FAULTS, Fault

MODULE_FAULTS = [f for f in FAULTS if f.phase in ("forward", "backward", "param_grad") and f.module != "(model)"]


def _report(fault: Fault | None, monkeypatch: pytest.MonkeyPatch, isolated: bool) -> Any:
    if fault is not None:
        monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run_report(ReportOptions(adapter=make_adapter(AdapterOptions()), batch_size=8, isolated=isolated,
                                        optimizer=fault.optimizer if fault else "sgd"))


def test_clean_course_model_matches_in_isolated_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _report(None, monkeypatch, isolated=True)
    assert report.verdict == "match" and report.findings == [] and report.isolated == []
    assert "modules alone" not in report.not_checked


def test_isolated_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--adapter", "tests.foreign_course.adapter:make_adapter", "--optimizer", "sgd",
                 "--isolated", "-q"])
    assert code == 0, capsys.readouterr()


def test_there_are_module_faults_to_isolate() -> None:
    assert len(MODULE_FAULTS) >= 8


@pytest.mark.parametrize("fault", MODULE_FAULTS, ids=lambda f: f.name)
def test_each_fault_is_found_alone_at_its_module(fault: Fault, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _report(fault, monkeypatch, isolated=True)
    alone = {(d.module, d.phase) for d in report.isolated}
    assert (fault.module, fault.phase) in alone, [(d.module, d.phase, d.kind) for d in report.isolated]
    joint = _report(fault, monkeypatch, isolated=False)
    assert {(d.module, d.phase, d.kind) for d in report.findings} == \
        {(d.module, d.phase, d.kind) for d in joint.findings}


def test_isolated_against_a_users_own_torch_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.gpt_port import port
    from examples.gpt_port.adapter import PortAdapter
    from examples.gpt_port.adapter import make_adapter as make_port_adapter
    from examples.gpt_port.torch_model import make_model

    def report() -> Any:
        adapter = make_port_adapter(AdapterOptions(PortAdapter.config, "float64"))
        return run_report(ReportOptions(adapter=adapter, reference=make_model(), model=PortAdapter.config,
                                        isolated=True))

    clean = report()
    assert clean.verdict == "match" and clean.isolated == []
    exact = port.MLP.__call__

    def mlp_scaled(self: Any, x: Any) -> Any:
        return exact(self, x) * 2.0  # a fault in the port's MLP, in the user's names h[0].mlp

    monkeypatch.setattr(port.MLP, "__call__", mlp_scaled)
    broken = report()
    assert ("h.0.mlp", "forward") in {(d.module, d.phase) for d in broken.isolated}
