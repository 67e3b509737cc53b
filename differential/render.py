"""Terminal rendering helpers (rich): progress bars and tables. Formatters return strings."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(loss=None)``; draws a bar on stderr when ``enabled`` and stderr is a terminal
    (``total`` None: the count is not known in advance)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda *_: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total, loss="-")

        def advance(loss: float | None = None) -> None:
            progress.update(task, advance=1, loss="-" if loss is None else f"{loss:.4f}")

        yield advance


def to_text(renderable: Any, width: int = 110) -> str:
    """Render a rich object to a plain string (no colour codes unless the caller adds them)."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(renderable)
    return buffer.getvalue().rstrip("\n")


def train_table(result: dict[str, Any]) -> str:
    table = Table(title=f"sequence reversal: {result['impl']} implementation, seed {result['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("exact-sequence accuracy (test)", f"{result['exact_match']:.2%}")
    table.add_row("per-token accuracy (test)", f"{result['token_accuracy']:.2%}")
    table.add_row("cross-entropy (test)", f"{result['loss']:.5f}")
    table.add_row("training steps", str(result["steps"]))
    table.add_row("training time", f"{result['seconds']:.2f} s")
    return to_text(table)


def faults_table(faults: list[Any]) -> str:
    table = Table(title=f"fault catalogue: {len(faults)} faults")
    for col in ("name", "class", "impl", "expected module", "phase", "kind", "description"):
        table.add_column(col, overflow="fold")
    for f in faults:
        table.add_row(f.name, str(f.bug_class), f.impl, f.module, f.phase, f.kind, f.description)
    return to_text(table, width=160)


def zoo_table(rows: list[Any], clean_verdict: str) -> str:
    table = Table(title="fault zoo: does the report find each fault, and do the naive checks?")
    columns = ["fault", "cls", "impl", "expected module / phase", "reported module / phase", "detected",
               "localized", "kind right", "naive: all have grad", "naive: all changed"]
    train = any(r.exact_match_after_training is not None for r in rows)
    if train:
        columns.append("exact match after training")
    for col in columns:
        table.add_column(col, overflow="fold")

    def yn(flag: bool | None) -> str:
        return "-" if flag is None else ("yes" if flag else "NO")

    for r in rows:
        cells = [r.fault, str(r.bug_class), r.impl, f"{r.expected_module} / {r.expected_phase}",
                 f"{r.reported_module} / {r.reported_phase}" if r.detected else "-", yn(r.detected),
                 yn(r.localized), yn(r.kind_right), yn(r.naive_all_have_grad), yn(r.naive_all_changed)]
        if train:
            acc = r.exact_match_after_training
            cells.append("crash" if acc is None else f"{acc:.1%}")
        table.add_row(*cells)
    found = sum(r.detected and r.localized for r in rows)
    naive_pass = sum(bool(r.naive_all_have_grad and r.naive_all_changed) for r in rows)
    table.caption = (f"{found} of {len(rows)} faults detected and localized; the naive checks pass on "
                     f"{naive_pass} of them; clean model: {clean_verdict}")
    return to_text(table, width=170)


def combos_table(rows: list[Any]) -> str:
    """`zoo --combos`: one line per combination of faults: whether the report's findings name every
    finding each fault must show (module, phase, kind), and which it missed."""
    table = Table(title="fault combinations: does the report find every fault, not only the first?")
    for col in ("faults", "all found", "missed (module / phase / kind)", "findings"):
        table.add_column(col, overflow="fold")
    for r in rows:
        missed = [" / ".join(e) for e, found in zip(r.expected, r.found, strict=True) if not found]
        table.add_row(" + ".join(r.faults), "yes" if r.all_found else "NO", "\n".join(missed) or "-",
                      str(len(r.findings)))
    found = sum(r.all_found for r in rows)
    table.caption = (f"{found} of {len(rows)} combinations: every fault found among the findings "
                     "(--format json lists every expected and reported finding)")
    return to_text(table, width=170)
