"""Every report the harness can produce renders in every format through the command line: each
fault of the catalogue, a model that crashes, a batch of bad data. Each exits 1 with nothing on
standard error (no traceback, no "error:"), and each format says what the JSON says."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from differential import faults
from differential import report as report_module
from differential.cli import main
from differential.formats import format_text, summary_line
from tests.foreign.adapter import TinyflowAdapter, make_adapter

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CrashingAdapter(TinyflowAdapter):
    """The foreign model, whose forward raises partway (the code under test crashes)."""

    def forward(self, tokens):  # noqa: ANN001, ANN201 - the adapter protocol's signature
        self.model(tokens)
        raise RuntimeError("the model under test blew up")


def make_crashing() -> CrashingAdapter:
    return CrashingAdapter(make_adapter().model)


# In the default run: a crash in the autograd, bad data (both kinds), a graph cut and a crashing
# model; every other fault of the catalogue with -m slow (about a second each).
QUICK = {"matmul_backward_T", "tokens_out_of_range", "targets_not_reversed", "residual_from_data"}


def _case(name: str) -> pytest.param:
    impl = [] if faults.get_fault(name).applies_to("class") else ["--impl", "functional"]
    return pytest.param(["--fault", name, *impl], marks=() if name in QUICK else pytest.mark.slow, id=name)


CASES = [_case(name) for name in faults.names()] + [
    pytest.param(["--adapter", "tests.differential.test_cli_render:make_crashing"], id="crashing_adapter"),
]


@pytest.fixture(scope="module")
def reports() -> dict[str, report_module.Report]:
    """Each case's report, computed once and shared by the three formats."""
    return {}


@pytest.fixture
def cached_reports(reports: dict[str, report_module.Report], request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's run_report, computed once per case (the case is the test's parameter)."""
    real = report_module.run_report
    key = repr(request.node.callspec.params["case"])

    def run_report(options: report_module.ReportOptions, stopwatch: object = None) -> report_module.Report:
        if key not in reports:
            reports[key] = real(options, stopwatch)
        return reports[key]

    monkeypatch.setattr(report_module, "run_report", run_report)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES)
def test_every_report_renders_in_every_format(case: list[str], tmp_path: Path, cached_reports: None,
                                              reports: dict[str, report_module.Report],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, ["report", *case, "--format", "json"])
    assert (code, err) == (1, ""), err
    data = json.loads(out)
    assert data["verdict"] == "diverged" and data["findings"] and data["findings"][0] == data["first_divergence"]
    first = data["first_divergence"]

    code, out, err = _run(capsys, ["report", *case])
    assert (code, err) == (1, ""), err
    assert "Traceback" not in out and not ANSI.search(out)  # not a terminal: no colour codes
    last = out.rstrip("\n").splitlines()
    assert " ".join(last[-2:]).endswith(f"({first['phase']}, {first['kind']})")  # the summary line comes last
    assert f"module:    {first['module_display'] if 'module_display' in first else first['module']}" in out

    page = tmp_path / "report.html"
    code, out, err = _run(capsys, ["report", *case, "--format", "html", "-o", str(page)])
    assert (code, err) == (1, ""), err
    assert out.startswith("scratchdiff: diverged")  # with -o, the summary line goes to the terminal
    text = html.unescape(page.read_text())
    assert text.startswith("<!DOCTYPE html>") and "Traceback" not in text
    assert first["kind"] in text and not list(tmp_path.glob(".*partial"))

    for columns in (80, 120):  # as on a terminal of that width, in colour
        lines = ANSI.sub("", format_text(reports[repr(case)], columns, color=True)).splitlines()
        assert max(cell_len(line) for line in lines) <= columns and not any("…" in line for line in lines)


def test_a_bad_data_batch_renders_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # tokens_out_of_range and targets_not_reversed are in CASES; here the quiet summary of one of them
    code, out, err = _run(capsys, ["report", "--fault", "tokens_out_of_range", "-q"])
    assert (code, err) == (1, "")
    assert out.count("\n") == 1 and out.startswith("scratchdiff: diverged — 1 finding; the first: (data)")


def test_quiet_prints_the_same_summary_as_the_full_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, quiet, _ = _run(capsys, ["report", "--fault", "attention_no_scale", "-q"])
    assert code == 1 and quiet.count("\n") == 1
    with faults.activate("attention_no_scale"):
        expected = summary_line(report_module.run_report(report_module.ReportOptions()))
    assert quiet == expected + "\n"
    code, quiet, _ = _run(capsys, ["report", "-q"])
    assert code == 0 and quiet.startswith("scratchdiff: match — class agrees with torch")
