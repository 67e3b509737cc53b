"""The differential harness: runs a scratch model and the torch reference side by side and reports
the first module whose forward output or gradient diverges.

Stages: `capture` (record every module call) -> `localize` (pair by path, judge each phase, find
the origin) -> `diagnose` (kind and hint) -> `report` (the Report object) -> `formats` (text, JSON,
HTML). `sides` puts the three implementations behind one interface; `cli` is the command line.

Python API: ``run_report(ReportOptions(...))`` returns a Report; ``assert_no_divergence(...)``
is a pytest helper.
"""

from differential.report import Report, ReportOptions, run_report, run_three_way
from differential.testing import assert_no_divergence

__all__ = ["Report", "ReportOptions", "assert_no_divergence", "run_report", "run_three_way"]
