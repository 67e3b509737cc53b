"""The source line a finding points at is the line that ran, also when a container's code branches.

A block's forward calls ``ln1`` on two lines (a post-LN and a pre-LN path). The first line that
names the child is right for one architecture only; the recorded call stack picks the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from differential import faults
from differential.report import ReportOptions, run_report
from differential.sides import PROJECT_ROOT, child_line
from scratch_model.config import arch


def _line(location: str) -> str:
    file, _, line = location.rpartition(":")
    return (PROJECT_ROOT / file).read_text().splitlines()[int(line) - 1]


def test_child_line_takes_the_frame_inside_the_container(tmp_path: Path) -> None:
    code = tmp_path / "model.py"
    code.write_text("def forward(self, x):\n"
                    "    if self.post:\n"
                    "        return self.ln1(x)\n"
                    "    return self.ln1(x) + 1\n"
                    "\n"
                    "def other():\n"
                    "    return ln1\n")
    source = f"{code}:1"
    assert child_line(source, "ln1") == f"{code}:3"  # no stack: the first line naming the child
    ran = ((str(code), 4), ("elsewhere.py", 10))
    assert child_line(source, "ln1", ran) == f"{code}:4"
    # a function nested in the container runs inside it: the container's own frame is further out
    nested = ((str(code), 2), (str(code), 4), ("model.py", 1))
    assert child_line(source, "ln1", nested) == f"{code}:4"
    # a frame of the same file outside the function is not the call site
    assert child_line(source, "ln1", ((str(code), 7),)) == f"{code}:3"


def test_pre_ln_container_finding_points_at_the_pre_ln_lines() -> None:
    with faults.activate("residual_from_data"):
        report = run_report(ReportOptions(model=arch("gpt"), batch_size=4))
    first = report.first_divergence
    assert first is not None and (first.module, first.phase) == ("blocks.0", "backward")
    for location in (first.scratch_source, first.reference_source):
        text = _line(location)
        # the pre-LN path normalizes inside the call (ln(x) is an argument); post-LN assigns x = ln(...)
        assert "self.ffn(self.ln2(x))" in text or "self.attn(self.ln1(x)" in text, (location, text)


@pytest.mark.parametrize(("arch_name", "pre_ln"), [("seed", False), ("gpt", True)])
def test_reference_line_of_a_torch_layer_norm_is_the_one_that_ran(arch_name: str, pre_ln: bool) -> None:
    with faults.activate("layernorm_no_eps"):
        report = run_report(ReportOptions(model=arch(arch_name), batch_size=4))
    first = report.first_divergence
    assert first is not None and first.module == "blocks.0.ln1"
    text = _line(first.reference_source)  # nn.LayerNorm is torch's: the line of the block that calls it
    assert "self.ln1(" in text
    assert ("self.attn(self.ln1(x)" in text) == pre_ln, (first.reference_source, text)
