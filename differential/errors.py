"""The project's own error type for bad input.

`InputError` marks a mistake in what the user handed over (a damaged weight file, a setting the
machine cannot hold); the command line turns it into one line and exit code 2. Anything else that
reaches the command line is a bug of scratchdiff itself and is reported as such (exit 3). It
subclasses ValueError, so callers that catch ValueError keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user, with the file, flag or value that is wrong in its message."""
