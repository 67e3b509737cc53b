"""The command line in a real terminal: each command runs under a pseudo-terminal of 80 and 120
columns (the width set on the terminal itself, as a terminal emulator does, with no COLUMNS) and
no line it prints may be wider; colour appears on a terminal and NO_COLOR turns it off."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("scratchdiff")
COLOURS = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-7]|9[0-7]|38;5;[0-9]+)(?:;[0-9]+)*m")  # a foreground colour
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def in_terminal(argv: list[str], columns: int, no_color: bool = False, stderr: bool = False) -> tuple[int, str]:
    """Run ``scratchdiff argv`` with its standard output (and with ``stderr``, its standard error)
    on a pseudo-terminal ``columns`` wide; its exit code and everything it printed there (colour
    codes included)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    if no_color:
        env["NO_COLOR"] = "1"
    process = subprocess.Popen([str(EXE), *argv], stdin=follower, stdout=follower,
                               stderr=follower if stderr else subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the program has exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=300), b"".join(chunks).decode("utf-8", errors="replace")


def visible_lines(output: str) -> list[str]:
    return ESCAPES.sub("", output).replace("\r\n", "\n").split("\n")


COMMANDS = {
    "report": ["report"],
    "report with findings": ["report", "--fault", "attention_no_scale"],
    "report, bad data": ["report", "--fault", "tokens_out_of_range"],
    "faults": ["faults"],
    "zoo": ["zoo", "--fault", "residual_from_data", "--fault", "optimizer_misses_ffn"],
    "train": ["train", "--epochs", "1"],
}
QUICK = {"report with findings", "faults", "zoo", "train"}  # at 80 columns in the default run; the rest -m slow
CASES = [pytest.param(name, columns, id=f"{name}-{columns}",
                      marks=() if columns == 80 and name in QUICK else pytest.mark.slow)
         for columns in (80, 120) for name in COMMANDS]


@pytest.mark.parametrize(("name", "columns"), CASES)
def test_no_line_is_wider_than_the_terminal(name: str, columns: int) -> None:
    code, output = in_terminal(COMMANDS[name], columns)
    lines = visible_lines(output)
    assert code in (0, 1), output
    assert len(lines) > 5 and "Traceback" not in output
    wide = [line for line in lines if cell_len(line) > columns]
    assert not wide, f"{len(wide)} lines wider than {columns} columns, e.g. {wide[0]!r}"
    assert not any("…" in line for line in lines)  # nothing cut short to fit
    if name.startswith("report"):  # the verdict comes last: the summary line is the last thing printed
        summary = " ".join(line.strip() for line in lines[-3:])
        assert ("scratchdiff: match" if code == 0 else "scratchdiff: diverged") in summary


def test_fault_names_are_never_broken_at_80_columns() -> None:
    from differential import faults

    _, output = in_terminal(["faults"], 80)
    words = set(" ".join(visible_lines(output)).split())
    assert set(faults.names()) <= words


@pytest.mark.parametrize(("no_color", "coloured"), [(False, True), (True, False)])
def test_colour_on_a_terminal_unless_no_color(no_color: bool, coloured: bool) -> None:
    code, output = in_terminal(["report", "--fault", "attention_no_scale"], 100, no_color=no_color)
    assert code == 1
    assert bool(COLOURS.search(output)) is coloured
    assert "\x1b[1m" in output  # NO_COLOR leaves bold


# --- the same tables in-process, with every fault of the catalogue and long combinations --------

def _zoo_rows() -> list:
    from differential import faults
    from differential.zoo import ZooRow

    rows = []
    for i, f in enumerate(faults.FAULTS.values()):
        missed = i % 5 == 0  # some rows not localized: they carry the expected and reported places
        rows.append(ZooRow(f.name, f.bug_class, f.impl, f.module, f.phase, f.kind, "blocks.0.attn.out_proj",
                           "param_grad", "param_grad_formula", True, not missed, not missed, i % 2 == 0, None,
                           exact_match_after_training=0.5 if i % 3 else None))
    return rows


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_zoo_faults_and_combos_tables_fit_and_keep_names_whole(columns: int) -> None:
    from types import SimpleNamespace

    from differential import faults
    from differential.tables import combos_table, faults_table, zoo_table

    names = faults.names()
    combos = [SimpleNamespace(faults=names[i:i + 3], expected=[("blocks.0.attn.out_proj", "param_grad", "x")] * 3,
                              found=[True, False, True], all_found=False, findings=[1, 2])
              for i in range(0, len(names), 3)]
    for text in (zoo_table(_zoo_rows(), "match", columns), faults_table(list(faults.FAULTS.values()), columns),
                 combos_table(combos, columns)):
        lines = text.splitlines()
        assert max(cell_len(line) for line in lines) <= columns
        assert not any("…" in line for line in lines)
        assert set(names) <= set(" ".join(lines).replace("+", " ").split())


# --- the same in a terminal emulator: tmux lays the output out and joins what it had to wrap ------

def in_tmux(argv: list[str], columns: int, tmp_path: Path, pipe: str = "") -> tuple[int, list[str]]:
    """Run ``scratchdiff argv`` in a detached tmux window ``columns`` wide; its exit code and the
    window's lines, with lines tmux wrapped joined again (so a line too wide shows as one).
    ``pipe``: shell text after the command (`` 2>&1 | cat``); the exit code is then the pipe's."""
    server = f"scratchdiff-test-{os.getpid()}-{time.monotonic_ns()}"  # our own tmux server, killed at the end
    done = tmp_path / "exit-code"
    command = f"{shlex.join([str(EXE), *argv])}{pipe}; echo $? > {shlex.quote(str(done))}; sleep 600"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TMUX")}
    tmux = ["tmux", "-L", server, "-f", os.devnull]
    try:
        subprocess.run([*tmux, "new-session", "-d", "-x", str(columns), "-y", "50", "-c", str(ROOT), command],
                       env=env, check=True, timeout=30)
        deadline = time.monotonic() + 300
        while not (done.exists() and done.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-"], capture_output=True, text=True,
                                check=True, timeout=30).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    return int(done.read_text()), [line.rstrip() for line in screen.splitlines()]


TMUX_CASES = [pytest.param(name, columns, id=f"{name}-{columns}",
                           marks=() if (name, columns) == ("report with findings", 80) else pytest.mark.slow)
              for columns in (80, 120) for name in ("report with findings", "faults", "zoo")]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize(("name", "columns"), TMUX_CASES)
def test_no_line_is_wider_than_a_tmux_window(name: str, columns: int, tmp_path: Path) -> None:
    code, lines = in_tmux(COMMANDS[name], columns, tmp_path)
    assert code in (0, 1), lines
    assert len(lines) > 5 and not any("Traceback" in line for line in lines)
    wide = [line for line in lines if cell_len(line) > columns]
    assert not wide, f"{len(wide)} lines wider than {columns} columns, e.g. {wide[0]!r}"


@pytest.mark.slow
def test_a_long_report_shows_its_progress_on_a_terminal() -> None:
    code, output = in_terminal(["report", "--batch-size", "2048", "-q"], 100, stderr=True)
    lines = [line for line in visible_lines(output.replace("\r", "\n")) if line.strip()]
    assert code == 0 and lines[-1].startswith("scratchdiff: match")
    assert any(re.search(r"report: .* done .*estimated", line) for line in lines)
    code, output = in_terminal(["report", "-q"], 100, stderr=True)  # a short one: no progress line
    assert code == 0 and "estimated" not in output


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("pipe", [" 2>&1 | cat", " | tail -n 40"])
def test_output_piped_on_a_terminal_fits_the_terminal(pipe: str, tmp_path: Path) -> None:
    """``| less``, ``| tail``: standard output is a pipe, but a person reads it on the terminal."""
    code, lines = in_tmux(COMMANDS["report with findings"], 80, tmp_path, pipe)
    assert code == 0, lines  # cat's or tail's
    assert any(line.startswith("scratchdiff: diverged") for line in lines), lines
    wide = [line for line in lines if cell_len(line) > 80]
    assert not wide, f"{len(wide)} lines wider than 80 columns, e.g. {wide[0]!r}"
