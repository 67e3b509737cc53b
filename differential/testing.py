"""A pytest helper for users' own tests: fail with the report's first divergence."""

from __future__ import annotations

from typing import Any

from differential.report import Report, ReportOptions, run_report


def assert_no_divergence(options: ReportOptions | None = None, **fields: Any) -> Report:
    """Run the differential report and raise AssertionError naming the first divergence (module,
    phase, kind, hint, source lines) unless everything matches. ``fields`` set ReportOptions
    fields directly: ``assert_no_divergence(impl="functional", dtype="float32")``."""
    if options is None:
        options = ReportOptions(**fields)
    elif fields:
        raise TypeError("pass either a ReportOptions or keyword fields, not both")
    report = run_report(options)
    d = report.first_divergence
    if d is not None:
        lines = [f"{options.impl} diverges from {options.against} at {d.module} ({d.phase}, {d.kind})",
                 f"  hint: {d.hint}", f"  scratch:   {d.scratch_source}", f"  reference: {d.reference_source}"]
        if d.op:
            lines.append(f"  op: {d.op['op']} at {d.op['source']}")
        raise AssertionError("\n".join(lines))
    return report
