"""The project's own error type for bad input, and telling the user's errors from scratchdiff's.

`InputError` marks a mistake in what the user handed over (a damaged weight file, a setting the
machine cannot hold); the command line turns it into one line and exit code 2. An exception raised
in the user's own code (an adapter, a reference model) is theirs too. Anything else that reaches
the command line is a bug of scratchdiff itself and is reported as such (exit 3), with the
traceback saved by `save_traceback`. `InputError` subclasses ValueError, so callers that catch
ValueError keep working.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

PACKAGES = ("differential", "scratch_model", "torch_reference")


class InputError(ValueError):
    """Bad input from the user, with the file, flag or value that is wrong in its message."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its lines joined with "; ")."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def users_file(filename: str) -> bool:
    """Whether ``filename`` is the user's code: neither this project's packages nor Python's own library."""
    import sysconfig

    if filename.startswith("<"):  # frozen modules, exec'd strings
        return False
    path = Path(filename).resolve()
    ours = [Path(__file__).resolve().parent.parent / package for package in PACKAGES]
    python = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]
    return not any(path.is_relative_to(root) for root in ours + python)


def users_frame(err: BaseException) -> str | None:
    """Where ``err`` was raised in the user's own code (an adapter, a reference model: a file under
    the current folder, outside this project's packages, Python and the virtual environment), as
    "path:line"; None when it was not."""
    here = Path.cwd().resolve()
    installed = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename).resolve()
        if (users_file(frame.filename) and path.is_relative_to(here)
                and not any(path.is_relative_to(p) for p in installed)):
            return f"{path.relative_to(here)}:{frame.lineno}"
    return None


def save_traceback(argv: Sequence[str] | None) -> str | None:
    """Write the exception being handled, with the command line and the Python version, to a new
    file in the temporary folder; its path (None when it could not be written)."""
    import platform
    import tempfile

    try:
        handle, path = tempfile.mkstemp(prefix="scratchdiff-bug-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(f"scratchdiff {' '.join(sys.argv[1:] if argv is None else argv)}\n"
                      f"python {platform.python_version()} on {platform.platform()}\n\n")
            out.write(traceback.format_exc())
        return path
    except OSError:
        return None
