"""Terminal rendering helpers (rich): a progress bar on stderr, and text from a renderable. The CLI's tables are
in `differential.tables`."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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
