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
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(loss=None)``; draws a bar on stderr when ``enabled`` and stderr is a terminal."""
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
