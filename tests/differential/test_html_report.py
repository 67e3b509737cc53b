"""The HTML report and its picture: errors drawn relative to their tolerance, missing tensors drawn as
missing (never as a small error), the first divergence and every finding marked, a self-contained
page; and, in a real headless Chromium, a page that renders with its plot and its marks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from differential import faults, plots
from differential.formats import format_html
from differential.html_report import tree_html
from differential.report import Report, ReportOptions, run_report, run_three_way


@cache
def report(fault: str | None = None, steps: int = 0, three_way: bool = False) -> Report:
    with faults.activate(fault):
        run = run_three_way if three_way else run_report
        return run(ReportOptions(steps=steps))


def drawn(fault: str | None) -> tuple[Any, Any, Any]:
    fig = plots.error_figure(report(fault))
    fig.canvas.draw()
    bars, notes = fig.axes[0], fig.axes[1]
    return fig, bars, notes


def row_of(ax: Any, module: str) -> int:
    return [t.get_text().strip() for t in ax.get_yticklabels()].index(module)


def patches_on_row(ax: Any, row: int) -> list[Any]:
    """The bars drawn on a module's row (the three phases sit within half a row of it)."""
    out = []
    for p in ax.patches:
        y = p.get_y() + p.get_height() / 2
        if abs(y - row) < 0.45 and p.get_height() < 0.5:
            out.append(p)
    return out


@pytest.mark.parametrize("phase, expected", [
    ({"status": "not_checked", "worst": None}, None),
    ({"status": "diverged", "worst": None}, ("missing", None)),  # the module never ran on the scratch side
    ({"status": "diverged", "worst": {"tensor": "grad_output", "missing": "actual", "match": False}},
     ("missing", None)),
    ({"status": "diverged", "worst": {"tensor": "output", "missing": None, "shape_actual": [2, 3],
                                      "shape_expected": [3, 2], "match": False}}, ("shape", None)),
    ({"status": "diverged", "worst": {"tensor": "output", "missing": None, "shape_actual": [2], "shape_expected": [2],
                                      "tolerance_ratio": float("inf"), "match": False, "nan_actual": 1}},
     ("non-finite", None)),
    ({"status": "diverged", "worst": {"tensor": "output", "missing": None, "shape_actual": [2], "shape_expected": [2],
                                      "tolerance_ratio": 40.0, "match": False}}, (None, 40.0)),
    ({"status": "match", "worst": {"tensor": "output", "missing": None, "shape_actual": [2], "shape_expected": [2],
                                   "tolerance_ratio": 1e-7, "match": True}}, (None, 1e-7)),
])
def test_how_each_phase_is_drawn(phase: dict, expected: tuple | None) -> None:
    bar = plots.phase_bar(phase)
    assert (None if bar is None else (bar.mark, bar.ratio)) == expected


def test_clean_report_bars_stay_left_of_the_tolerance_line() -> None:
    fig, ax, notes = drawn(None)
    lines = [line for line in ax.get_lines() if list(line.get_xdata()) == [1.0, 1.0]]
    assert len(lines) == 1  # the tolerance line at 1
    widths = [p.get_x() + p.get_width() for p in ax.patches if p.get_height() < 0.5]
    assert len(widths) > 30 and max(widths) < 1e-3  # float64 parity: far left of the line
    assert not [p for p in ax.patches if p.get_hatch()]
    assert "none" in [t.get_text() for t in notes.texts]


def test_missing_gradients_are_hatched_past_the_line_not_drawn_as_zero_error() -> None:
    fig, ax, notes = drawn("residual_from_data")
    module_entries = {m["module"]: m for m in report("residual_from_data").modules}
    for module in ("embedding", "blocks.0", "blocks.0.attn.q_proj"):
        assert module_entries[module]["backward"]["worst"]["missing"] == "actual"
        hatched = [p for p in patches_on_row(ax, row_of(ax, module)) if p.get_hatch()]
        assert hatched and all(p.get_x() + p.get_width() >= ax.get_xlim()[1] * 0.99 for p in hatched)
    clean_rows = patches_on_row(ax, row_of(ax, "blocks.0.ffn.fc1"))
    assert clean_rows and not any(p.get_hatch() for p in clean_rows)


def test_first_divergence_and_findings_are_marked() -> None:
    fig, ax, notes = drawn("residual_from_data")
    first = report("residual_from_data").first_divergence
    label = ax.get_yticklabels()[row_of(ax, first.module)]
    assert label.get_fontweight() == "bold" and to_rgb(label.get_color()) == to_rgb(plots.TOLERANCE_COLOUR)
    texts = [t for t in notes.texts if "first divergence" in t.get_text()]
    assert len(texts) == 1 and abs(texts[0].get_position()[1] - row_of(ax, first.module)) < 1e-9
    assert f"first divergence: {first.module} ({first.phase}" in fig._suptitle.get_text()
    shaded = [p for p in ax.patches
              if p.get_height() >= 0.99 and to_rgb(p.get_facecolor()) == to_rgb(plots.FIRST_SHADE)]
    assert len(shaded) == 1


def test_an_optimizer_fault_is_visible_although_every_bar_is_clean() -> None:
    fig, ax, notes = drawn("optimizer_misses_ffn")
    marked = {t.get_text() for t in notes.texts}
    assert any(t.startswith("\u25c0 1 optimizer: not_updated") for t in marked)
    assert any("(also here)" in t for t in marked)  # fc2, listed under "also in"
    for module in ("blocks.0.ffn.fc1", "blocks.0.ffn.fc2"):
        assert to_rgb(ax.get_yticklabels()[row_of(ax, module)].get_color()) == to_rgb(plots.TOLERANCE_COLOUR)
    shades = [p for p in ax.patches if p.get_height() >= 0.99]
    assert len(shades) == 2  # fc1 (first divergence) and fc2


def test_every_finding_gets_a_mark() -> None:
    with faults.activate("attention_no_scale"), faults.activate("optimizer_misses_ffn"):
        both = run_report(ReportOptions())
    marks = plots.finding_marks(both)
    assert len(both.findings) == 2
    for i, finding in enumerate(both.findings, 1):
        assert any(m.startswith(f"{i} {finding.phase}: {finding.kind}") for m in marks[finding.module])


@pytest.mark.parametrize("fault, module, where", [("loss_backward_no_mean", "(loss)", -1),
                                                   ("targets_not_reversed", "(data)", 0)])
def test_findings_outside_the_module_tree_get_a_row(fault: str, module: str, where: int) -> None:
    r = report(fault)
    assert r.first_divergence.module == module
    order = [name for name, _ in plots.rows(r)]
    assert order[where] == module
    fig = plots.error_figure(r)
    assert any("(first divergence)" in t.get_text() for t in fig.axes[1].texts)


def test_legend_sits_outside_the_bars() -> None:
    fig, ax, _ = drawn("residual_from_data")
    legend = fig.legends[0].get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())


def test_loss_curves_have_whole_step_ticks() -> None:
    fig = plots.error_figure(report(None, steps=3))
    fig.canvas.draw()
    loss_ax = fig.axes[2]
    ticks = [t for t in loss_ax.get_xticks() if loss_ax.get_xlim()[0] <= t <= loss_ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_page_is_self_contained_and_marks_the_first_divergence() -> None:
    page = format_html(report("residual_from_data"))
    assert "http://" not in page and "https://" not in page
    links = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", page)
    assert links and all(link.startswith(("data:", "#")) for link in links)
    first = re.search(r"<div id='first-divergence'[^>]*><span class='name'[^>]*>([^<]*)<", page)
    assert first and first.group(1) == "blocks.0"
    assert re.search(r"<tr class='first-divergence'><td>1</td><td>blocks.0", page)


def test_tree_nests_modules_and_colours_their_marks() -> None:
    r = report("residual_from_data")
    tree = tree_html(r)
    assert tree.count("<li>") == len(r.modules) and tree.count("<ul") == tree.count("</ul>")
    assert tree.count("<li>") == tree.count("</li>")
    embedding = re.search(r"<span class='name'[^>]*>embedding</span>(.*?)</div>", tree).group(1)
    assert "mark ok' title='fwd: match'" in embedding and "mark bad' title='bwd: diverged'" in embedding


def test_three_way_view_is_drawn() -> None:
    page = format_html(report("residual_from_data", three_way=True))
    svg = re.search(r"<svg id='three-way'.*?</svg>", page, re.S).group(0)
    assert svg.count("<line") == 3 and svg.count("class='edge bad'") == 2 and svg.count("class='edge ok'") == 1
    assert "agrees with torch: functional" in svg and "diverged: blocks.0 (backward)" in svg


# --- in a real browser ---------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip("no headless Chromium on this machine (install Debian's `chromium` package; .ci/run does "
                    "this with apt when it can)")
    return found


def chromium(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", *flags, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def screenshot(page: Path, tmp_path: Path) -> np.ndarray:
    shot = tmp_path / f"{page.stem}.png"
    chromium(page, tmp_path, "--window-size=1280,1600", f"--screenshot={shot}")
    from matplotlib.image import imread

    return imread(shot)[..., :3]  # (H, W, 3) in 0..1


def near(image: np.ndarray, colour: str, tol: float = 0.04) -> int:
    """How many pixels of ``image`` have ``colour`` (within ``tol`` per channel)."""
    return int(np.count_nonzero(np.all(np.abs(image - np.array(to_rgb(colour))) <= tol, axis=-1)))


def test_chromium_renders_the_page_with_its_plot_and_the_first_divergence(tmp_path: Path) -> None:
    pages = {}
    for name, fault in (("clean", None), ("broken", "residual_from_data")):
        pages[name] = tmp_path / f"{name}.html"
        pages[name].write_text(format_html(report(fault)))
    dom = chromium(pages["broken"], tmp_path, "--dump-dom").stdout
    assert "<h1>scratchdiff report: <span class=\"verdict\">diverged</span></h1>" in dom
    assert re.search(r'<img class="plot" id="error-plot" alt="[^"]*first divergence: blocks.0 \(backward\)" '
                     r'src="data:image/png;base64,', dom)
    first = re.search(r'<div id="first-divergence" class="row diverged"><span class="name"[^>]*>([^<]*)</span>', dom)
    assert first and first.group(1) == "blocks.0"

    clean, broken = screenshot(pages["clean"], tmp_path), screenshot(pages["broken"], tmp_path)
    for shot in (clean, broken):
        assert shot.std() > 0.05  # not blank
        assert near(shot, plots.COLOURS["forward"]) > 500  # the plot's bars were drawn, so the image loaded
    # The first-divergence shade: only its legend swatch in the clean page, a whole row in the broken one.
    assert near(clean, plots.FIRST_SHADE) < 1000 < 5000 < near(broken, plots.FIRST_SHADE)
    # The hatched "missing" bars: backward-phase colour far more often in the broken page's plot.
    assert near(broken, plots.COLOURS["backward"]) != near(clean, plots.COLOURS["backward"])
    assert np.mean(np.any(np.abs(clean - broken) > 0.1, axis=-1)) > 0.05  # visibly different pages
