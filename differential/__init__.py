"""The differential harness: runs a scratch model and the torch reference side by side and reports
the first module whose forward output or gradient diverges.

Stages: `capture` (record every module call) -> `localize` (pair by path, judge each phase, find
the origin) -> `diagnose` (kind and hint) -> `report` (the Report object) -> `formats` (text, JSON,
HTML). Every implementation is a `side.Side`: `sides` holds the torch reference, `adapter_side` any
framework behind an `adapter.Adapter`, the bundled scratch models included (`bundled_adapters`);
`implementations` builds them. `cli` is the command line.

Python API: ``run_report(ReportOptions(...))`` returns a Report; ``assert_no_divergence(...)``
is a pytest helper.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report", "ReportOptions", "assert_no_divergence", "run_report", "run_three_way"]

_HOME = {"Report": "report", "ReportOptions": "report", "run_report": "report", "run_three_way": "report",
         "assert_no_divergence": "testing"}


def __getattr__(name: str) -> Any:
    # The API is imported on first use: the command line starts without torch and numpy, so that
    # Ctrl-C in its first moments is caught by its own handler, not shown as a traceback.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"differential.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'differential' has no attribute {name!r}")
