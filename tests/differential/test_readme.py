"""README.md's examples still hold: every quoted `scratchdiff report` run, and the Python example
followed by its output, produce the verdict lines the README quotes (the panel's title, the
findings' module, phase and kind, the header and the summary line). Source line numbers are left
out: they move whenever the code above them changes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from differential.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def verdict_lines(text: str) -> list[str]:
    """What a reader takes as the answer, in order: header and summary lines, the verdict panel's
    title, and each findings row's module, phase and kind."""
    found = []
    for line in text.splitlines():
        if line.startswith("scratchdiff: "):
            found.append(line.strip())
        elif "verdict:" in line:
            found.append(re.search(r"verdict: [^─╮]*", line).group().strip())
        elif re.match(r"│ \d+ │", line):
            found.append(" ".join(cell.strip() for cell in line.strip("│").split("│")[1:4]))
    return found


REPORT_RUNS = [body for kind, body in blocks() if kind == "text" and body.startswith("$ scratchdiff report")]
PYTHON_RUNS = [(code, out) for (kind, code), (next_kind, out) in zip(blocks(), blocks()[1:], strict=False)
               if kind == "python" and next_kind == "text" and "format_text" in code]


def test_the_readme_has_examples_to_check() -> None:
    assert len(REPORT_RUNS) >= 1 and len(PYTHON_RUNS) >= 1


@pytest.mark.parametrize("body", REPORT_RUNS, ids=lambda b: b.splitlines()[0])
def test_quoted_report_runs_still_give_their_verdict(body: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    command, _, quoted = body.partition("\n")
    monkeypatch.delenv("COLUMNS", raising=False)
    code = main(shlex.split(command)[2:])
    actual = capsys.readouterr().out
    expected = verdict_lines(quoted)
    assert expected, "the quoted output holds no verdict line"
    assert verdict_lines(actual) == expected
    assert code == (0 if "scratchdiff: match" in quoted else 1)


@pytest.mark.parametrize(("code", "quoted"), PYTHON_RUNS, ids=lambda x: x.splitlines()[-1][:40])
def test_the_python_example_still_prints_its_verdict(code: str, quoted: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 - the README's own example
    assert verdict_lines(capsys.readouterr().out) == verdict_lines(quoted)
