"""Where the command line's output goes: the terminal, or a file named with ``-o``.

On a terminal, the width and colour support come from rich's own detection (the terminal's size,
``COLUMNS``, ``NO_COLOR``, ``TERM=dumb``); a file gets the fixed `FILE_WIDTH`, a pipe read on a
terminal that terminal's width (or ``COLUMNS`` when set), and neither gets colour.
A file is checked before any work starts (a regular file or a new name in a writable folder; a
symlink is followed to its target) and written whole or not at all, through a uniquely named
temporary file beside it that is removed on any failure. Used by the CLI only.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from differential.errors import InputError

FILE_WIDTH = 120  # columns of a report written to a file: wide enough for every table unwrapped


@dataclass(frozen=True)
class Screen:
    """What text output is laid out for: a width in columns, and whether to colour it."""

    width: int
    color: bool


FILE_SCREEN = Screen(FILE_WIDTH, color=False)


def detect_screen() -> Screen:
    """Standard output as rich sees it. On a terminal: its width, and colour unless the terminal has
    none or ``NO_COLOR`` is set. Anywhere else, no colour and ``COLUMNS`` when set; otherwise a pipe
    (``| less``, ``| tail``) that still ends on a terminal gets that terminal's width, and a file
    or a pipe without a terminal gets `FILE_WIDTH` columns."""
    console = Console()
    if console.is_terminal:
        return Screen(max(console.width, 20), color=console.color_system is not None)
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return Screen(max(int(columns), 20), color=False)
    width = _terminal_behind_pipe()
    return Screen(max(width, 20) if width else FILE_WIDTH, color=False)


def _terminal_behind_pipe() -> int | None:
    """The width of the terminal a piped standard output is read on (stderr's or stdin's, which a
    pipe leaves on the terminal), or None when standard output is a file or no terminal is attached."""
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    for stream in (sys.stderr, sys.stdin):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            continue
    return None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def check_target(path: str, flag: str = "-o") -> Path:
    """The regular file that writing to ``path`` will replace or create, checked now, before any
    work: a symlink is followed to its final target; directories, devices, FIFOs and sockets are
    refused; the target's folder must exist and be writable. Raises `InputError` naming ``flag``."""
    shown = f"{flag} {path!r}"
    target = Path(os.path.realpath(path))  # follows every link; a dangling one names the file it points at
    via = "" if str(target) == os.path.abspath(path) else f" (a link to {str(target)!r})"
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise InputError(f"{shown}{via}: cannot look at it ({err.strerror})") from None
    if info is not None:
        for test, kind in _KINDS:
            if test(info.st_mode):
                raise InputError(f"{shown}{via} is {kind}, not a regular file: refusing to write over it")
        if not os.access(target, os.W_OK):
            raise InputError(f"{shown}{via}: permission denied (the file is not writable)")
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"{shown}{via}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{shown}{via}: permission denied (cannot create files in {str(folder)!r})")
    return target


def write_file(target: Path, text: str, flag: str = "-o") -> None:
    """Write ``text`` to ``target`` (from `check_target`) all at once: into a uniquely named
    temporary file in the same folder, then renamed over the target. On any failure, Ctrl-C
    included, the temporary file is removed and the target is left as it was."""
    target = check_target(str(target), flag)  # again: the path may have changed while the report ran
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as err:
        raise InputError(f"{flag} {str(target)!r}: cannot write beside it ({err.strerror})") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(err, OSError):
            raise InputError(f"{flag} {str(target)!r}: cannot write it ({err.strerror or err})") from None
        raise


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


PROGRESS_AFTER_S = 2.0  # a report estimated to take longer shows its progress on a terminal


@contextlib.contextmanager
def report_progress(estimate: Any, enabled: bool = True) -> Iterator[Any]:
    """A `differential.report.Stopwatch` that shows the report's stages on stderr as they finish,
    with the time so far and the estimate (a `differential.budget.Estimate`); only on a terminal
    and for a report estimated to take more than `PROGRESS_AFTER_S`. None otherwise."""
    if not enabled or estimate.seconds < PROGRESS_AFTER_S or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from differential.budget import human_seconds
    from differential.report import Stopwatch

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
               TextColumn(f"(estimated {human_seconds(estimate.seconds)})"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("report: loading torch, building the weights and the batch", total=None)

        class Watch(Stopwatch):
            def lap(self, stage: str) -> None:
                super().lap(stage)
                progress.update(task, description=f"report: {stage} done")

        yield Watch()
