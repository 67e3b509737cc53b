"""Findings in every output format: the text report's findings table and panel title, the JSON's
``findings`` / ``also_in`` / ``not_checked``, the HTML page, `report --first-only`, a match panel
that claims only what was checked, and `zoo --combos` exit codes (with a stand-in run_combos)."""

from __future__ import annotations

import contextlib
import html
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from differential import faults, zoo
from differential.cli import main
from differential.formats import format_html, format_json, format_text
from differential.report import Report, ReportOptions, run_report

# Two faults in different code: attention forgets 1/sqrt(head_dim) (forward), and the parameter
# list handed to the optimizer leaves out the feed-forward (optimizer). The first hides the
# second from the joint run; teacher forcing finds both.
TWO_FAULTS = ("attention_no_scale", "optimizer_misses_ffn")
EXPECTED = [("blocks.0.attn", "forward", "value_mismatch"), ("blocks.0.ffn.fc1", "optimizer", "not_updated")]


def _with_faults(names: tuple[str, ...], options: ReportOptions) -> Report:
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(faults.activate(name))
        return run_report(options)


@pytest.fixture(scope="module")
def two() -> Report:
    return _with_faults(TWO_FAULTS, ReportOptions())


@pytest.fixture(scope="module")
def clean() -> Report:
    return run_report(ReportOptions())


def findings_rows(text: str) -> list[tuple[str, ...]]:
    """The findings table's rows as (number, module, phase, kind, scratch source); a module's
    "also in" continuation line is appended to its module cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("findings:"))
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            rows.append(cells)
        else:  # a wrapped continuation of the row above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return [tuple(r) for r in rows]


# --- text ------------------------------------------------------------------------------------

def test_text_lists_every_finding_in_a_table(two: Report) -> None:
    assert [(d.module, d.phase, d.kind) for d in two.findings] == EXPECTED  # what the table must show
    text = format_text(two)
    assert "verdict: diverged — 2 findings; the first:" in text
    rows = findings_rows(text)
    assert [r[:4] for r in rows] == [("1", *EXPECTED[0]), ("2", "blocks.0.ffn.fc1 also in: blocks.0.ffn.fc2",
                                                           *EXPECTED[1][1:])]
    assert rows[0][4].startswith("differential/faults/class_model.py:")
    assert rows[1][4].startswith("scratch_model/optim.py:")
    assert "findings: 2 independent root causes" in text


def test_text_tree_points_at_every_finding(two: Report) -> None:
    lines = format_text(two).splitlines()
    marked = {re.search(r"(\S+)\s+(?:ok|XX|--)\s+(?:ok|XX|--)\s+(?:ok|XX|--)\s+<- (.*)$", line).groups()
              for line in lines if "<- " in line}
    assert marked == {("blocks.0.attn", "first divergence"), ("blocks.0.ffn.fc1", "finding 2")}


def test_text_says_the_loss_alone_matches_when_the_logits_do_not(two: Report) -> None:
    text = format_text(two)
    assert two.loss["alone"]["on"] == "reference logits"
    assert "the loss alone on the reference's logits: value matches, gradient matches" in " ".join(text.split())


def test_text_prints_checks_that_could_not_run(two: Report) -> None:
    report = replace(two, not_checked={"modules alone": "MyAdapter defines no tensor() and backward()"})
    text = format_text(report)
    assert "not checked: modules alone: MyAdapter defines no tensor() and backward()" in text
    assert "findings: 2, possibly not all: modules alone could not be checked" in text
    assert "not checked:" not in format_text(two)


# --- the match panel claims only what was checked ---------------------------------------------

def _panel(text: str) -> str:
    """The verdict panel's text on one line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "verdict:" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("╰"))
    return " ".join(" ".join(line.strip("│ ").split()) for line in lines[start + 1:end])


def test_match_panel_states_what_was_compared(clean: Report) -> None:
    panel = _panel(format_text(clean))
    assert panel.startswith("everything compared matches torch")
    for claim in ("forward outputs and input gradients", "every parameter gradient matches",
                  "its gradient with respect to the logits", "one optimizer step with the reference's gradients"):
        assert claim in panel
    assert "Not checked" not in panel and "training steps" not in panel  # --steps 0: training was not run


def test_match_panel_does_not_claim_what_did_not_run(clean: Report) -> None:
    loss = {**clean.loss, "grad_match": None, "grad_metrics": None}
    report = replace(clean, weight_update=[], loss=loss, not_checked={"loss alone": "no hooks"})
    panel = _panel(format_text(report))
    assert panel.startswith("every phase that could be checked matches torch")
    assert "optimizer step" not in panel and "its gradient with respect to the logits" not in panel
    assert "Not checked: the loss's gradient, optimizer, loss alone" in panel


def test_a_run_that_stops_early_still_renders() -> None:
    with faults.activate("targets_not_reversed"):
        report = run_report(ReportOptions())
    text = format_text(report)
    assert findings_rows(text) == [("1", "(data)", "training", "data_mismatch", report.findings[0].scratch_source)]
    assert "loss not computed" in text and "(not checked)" in text


# --- JSON and HTML ---------------------------------------------------------------------------

def test_json_holds_findings_also_in_and_not_checked(two: Report) -> None:
    data = json.loads(format_json(two))
    assert [(d["module"], d["phase"], d["kind"]) for d in data["findings"]] == EXPECTED
    assert data["findings"][0] == data["first_divergence"]
    assert data["findings"][1]["also_in"] == ["blocks.0.ffn.fc2"] and data["findings"][0]["also_in"] == []
    assert data["not_checked"] == {}
    assert data["options"]["findings"] is True
    alone = data["loss"]["alone"]
    assert alone["on"] == "reference logits" and alone["value_match"] is True and alone["grad_match"] is True
    assert data["loss"]["grad_match"] is False  # the joint run's logits differ, and so does their gradient


def test_html_shows_the_findings_table_and_json(two: Report) -> None:
    page = format_html(two)
    text = html.unescape(page)
    assert findings_rows(text)[:2] == findings_rows(format_text(two))
    assert '"also_in": [\n        "blocks.0.ffn.fc2"\n      ]' in text


# --- --first-only ------------------------------------------------------------------------------

def test_first_only_gives_exactly_one_finding() -> None:
    report = _with_faults(TWO_FAULTS, ReportOptions(findings=False))
    assert [(d.module, d.phase, d.kind) for d in report.findings] == EXPECTED[:1]
    text = format_text(report)
    assert "verdict: diverged — first divergence" in text
    assert "--first-only" in text and [r[1] for r in findings_rows(text)] == ["blocks.0.attn"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("flags", "found"), [([], EXPECTED), (["--first-only"], EXPECTED[:1])])
def test_cli_first_only(flags: list[str], found: list[tuple[str, str, str]],
                        capsys: pytest.CaptureFixture[str]) -> None:
    with faults.activate("optimizer_misses_ffn"):  # a second fault under the one --fault switches on
        code, out, _ = _cli(capsys, "report", "--fault", "attention_no_scale", "--format", "json", *flags)
    assert code == 1
    data = json.loads(out)
    assert [(d["module"], d["phase"], d["kind"]) for d in data["findings"]] == found
    assert data["options"]["findings"] is (not flags)


def test_cli_first_only_refuses_isolated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "report", "--first-only", "--isolated")
    assert code == 2 and out == "" and "--first-only" in err and len(err.strip().splitlines()) == 1


# --- zoo --combos --------------------------------------------------------------------------------

@dataclass
class FakeCombo:
    """The interface of differential.zoo.ComboRow."""

    faults: list[str]
    expected: list[tuple[str, str, str]]
    found: list[bool]
    all_found: bool
    findings: list[tuple[str, str, str]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FOUND = FakeCombo(list(TWO_FAULTS), EXPECTED, [True, True], True, EXPECTED)
MISSED = FakeCombo(["attention_no_scale", "loss_sum_not_mean"],
                   [EXPECTED[0], ("(loss)", "training", "loss_mismatch")], [True, False], False, EXPECTED[:1])


class Calls(list):
    """The base options each run_combos call received; ``rows`` is what it returns."""

    rows: list[FakeCombo]


@pytest.fixture
def fake_combos(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Replace differential.zoo.run_combos by a stand-in (set ``rows`` in the test)."""
    calls = Calls()
    calls.rows = []

    def run_combos(base: ReportOptions | None = None, sizes: tuple[int, ...] = (2, 3),
                   on_combo: Any = None) -> list[FakeCombo]:
        calls.append(base)
        for row in calls.rows:
            if on_combo is not None:
                on_combo(row.faults)
        return list(calls.rows)

    monkeypatch.setattr(zoo, "run_combos", run_combos, raising=False)
    return calls


def test_zoo_combos_exits_0_when_every_fault_is_found(fake_combos: Calls, capsys: pytest.CaptureFixture[str]) -> None:
    fake_combos.rows = [FOUND, FOUND]
    code, out, _ = _cli(capsys, "zoo", "--combos", "--seed", "3")
    assert code == 0
    assert "2 of 2 combinations: every fault found" in out
    assert "attention_no_scale + optimizer_misses_ffn" in out
    assert len(fake_combos) == 1 and fake_combos[0].seed == 3


def test_zoo_combos_exits_1_and_names_what_was_missed(fake_combos: Calls, capsys: pytest.CaptureFixture[str]) -> None:
    fake_combos.rows = [FOUND, MISSED]
    code, out, _ = _cli(capsys, "zoo", "--combos")
    assert code == 1
    assert "1 of 2 combinations" in out
    row = next(line for line in out.splitlines() if "loss_sum_not_mean" in line)
    assert "NO" in row and "(loss) / training / loss_mismatch" in row


def test_zoo_combos_json(fake_combos: Calls, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_combos.rows = [FOUND, MISSED]
    target = tmp_path / "combos.json"
    code, out, _ = _cli(capsys, "zoo", "--combos", "--format", "json", "-o", str(target))
    assert code == 1 and out == ""
    data = json.loads(target.read_text())
    assert data["all_found"] is False
    assert [c["faults"] for c in data["combos"]] == [FOUND.faults, MISSED.faults]
    assert data["combos"][1]["found"] == [True, False]


@pytest.mark.parametrize("extra", [["--train"], ["--fault", "attention_no_scale"]])
def test_zoo_combos_refuses_train_and_fault(extra: list[str], fake_combos: Calls,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "zoo", "--combos", *extra)
    assert code == 2 and out == "" and "--combos" in err
    assert fake_combos == []
