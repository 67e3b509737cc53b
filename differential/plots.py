"""The report's pictures (matplotlib figures; the HTML page embeds them as PNG).

`error_figure` draws, per module and phase, the worst error *relative to its tolerance*: 1 is the
line where match ends, so every bar right of it is a disagreement whatever the tensor's scale. A
tensor that one side does not have (a gradient cut from the graph), a shape that differs and a
non-finite disagreement are drawn as such, hatched to the right edge, never as a small error.
Rows of modules with a disagreement or a finding are shaded, the first divergence more strongly,
and every finding is numbered in the right-hand column as in the text report. With training steps
a second panel draws the two loss curves over whole-number steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from differential.report import Report

PHASES = (("forward", "forward output"), ("backward", "input gradient"), ("param_grad", "parameter gradient"))
COLOURS = {"forward": "#4c72b0", "backward": "#dd8452", "param_grad": "#8172b3"}
HATCH = {"missing": "////", "shape": "xxxx", "non-finite": "...."}
TOLERANCE_COLOUR = "#c00000"
FIRST_SHADE, FINDING_SHADE = "#f7b6b6", "#fde3e3"
LOW, HIGH = 1e-12, 1e12  # the axis never reaches further: an exact zero sits at LOW


@dataclass(frozen=True)
class Bar:
    """One module's phase, as drawn: a ratio to the tolerance, or a mark (missing, shape, non-finite)."""

    ratio: float | None  # None: a mark, or nothing compared
    mark: str | None = None  # "missing" | "shape" | "non-finite"
    note: str = ""  # which side, for the mark's label


def phase_bar(phase: dict[str, Any]) -> Bar | None:
    """How a module's phase summary (``Report.modules[i][phase]``) is drawn; None: not checked."""
    worst = phase.get("worst")
    if phase["status"] == "not_checked" or worst is None:
        # A module the scratch side never ran is "diverged" with no tensor at all.
        return Bar(None, "missing", "module not run") if phase["status"] == "diverged" else None
    if worst.get("missing"):
        return Bar(None, "missing", f"{worst['tensor']} missing on the {_side(worst['missing'])} side")
    if worst.get("shape_actual") != worst.get("shape_expected"):
        return Bar(None, "shape", f"{worst['tensor']} shape {worst['shape_actual']} vs {worst['shape_expected']}")
    ratio = worst.get("tolerance_ratio")
    if ratio is None or math.isnan(ratio) or math.isinf(ratio) or worst.get("nan_actual") or worst.get("inf_actual"):
        if not worst.get("match", True):
            return Bar(None, "non-finite", f"{worst['tensor']}: NaN or Inf")
    return None if ratio is None else Bar(ratio)


def _side(which: str) -> str:
    return "scratch" if which == "actual" else "reference"


def finding_marks(report: Report) -> dict[str, list[str]]:
    """Module name -> the labels of the findings that point at it ("1 backward: graph_break"; also
    the modules a finding lists under "also in")."""
    marks: dict[str, list[str]] = {}
    for i, d in enumerate(report.findings or ([report.first_divergence] if report.first_divergence else []), 1):
        label = f"{i} {d.phase}: {d.kind}" + (" (first divergence)" if i == 1 else "")
        marks.setdefault(d.module, []).append(label)
        for other in d.also_in:
            marks.setdefault(other, []).append(f"{i} {d.phase}: {d.kind} (also here)")
    return marks


def rows(report: Report) -> list[tuple[str, int]]:
    """(module, depth) in the report's order; findings on modules outside the tree ((data), (loss))
    get rows of their own, (data) first, the rest last."""
    names = [(m["module"], m["depth"]) for m in report.modules]
    known = {name for name, _ in names}
    extra = [name for name in finding_marks(report) if name not in known]
    return [(n, 0) for n in extra if n == "(data)"] + names + [(n, 0) for n in extra if n != "(data)"]


def error_figure(report: Report) -> Any:
    """The per-module error picture (and the loss curves with training steps) as a matplotlib Figure."""
    from matplotlib.figure import Figure

    order = rows(report)
    entries = {m["module"]: m for m in report.modules}
    marks = finding_marks(report)
    first = report.first_divergence.module if report.first_divergence else None
    steps = report.training["steps"]
    height = max(3.2, 0.34 * len(order) + 2.4)
    fig = Figure(figsize=(15 if steps else 12, height), layout="constrained")
    grid = fig.add_gridspec(1, 3 if steps else 2, width_ratios=[3.2, 1.4, 2.4] if steps else [3.2, 1.4])
    ax = fig.add_subplot(grid[0, 0])
    notes = fig.add_subplot(grid[0, 1], sharey=ax)
    _draw_bars(ax, order, entries, marks, first)
    _draw_marks(notes, order, marks, first)
    if steps:
        _draw_loss(fig.add_subplot(grid[0, 2]), report)
    verdict = report.verdict
    n = len(report.findings)
    title = f"verdict: {verdict}" + (f", {n} finding{'s' if n != 1 else ''}" if n else "")
    if first:
        title += f"; first divergence: {first} ({report.first_divergence.phase}, {report.first_divergence.kind})"
    fig.suptitle(title, color=TOLERANCE_COLOUR if verdict != "match" else "#1a7f37", fontsize=12)
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def _draw_bars(ax: Any, order: list[tuple[str, int]], entries: dict[str, dict], marks: dict[str, list[str]],
               first: str | None) -> None:
    ratios = [b.ratio for m in entries.values() for p, _ in PHASES
              if (b := phase_bar(m[p])) is not None and b.ratio is not None and b.ratio > 0]
    low = max(LOW, min([1e-8, *(r / 3 for r in ratios)]))
    high = min(HIGH, max([1e3, *(r * 3 for r in ratios)]))
    height = 0.26
    for row, (name, _) in enumerate(order):
        _shade(ax, row, name, entries, marks, first)
        entry = entries.get(name)
        for k, (phase, _) in enumerate(PHASES):
            bar = None if entry is None else phase_bar(entry[phase])
            y = row + (k - 1) * height
            if bar is None:
                continue
            if bar.mark is not None:
                ax.barh(y, high - low, left=low, height=height, facecolor="white", edgecolor=COLOURS[phase],
                        hatch=HATCH[bar.mark], linewidth=0.8)
                ax.text(math.sqrt(low * high), y, f"{bar.mark}: {bar.note}", fontsize=6.5, va="center",
                        ha="center", color="#333333", bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
                continue
            if bar.ratio == 0:  # no bar to draw: say so, rather than leave it looking unchecked
                ax.text(low, y, " exact", fontsize=6.5, va="center", ha="left", color=COLOURS[phase])
                continue
            value = min(max(bar.ratio, low), high)
            ax.barh(y, value - low, left=low, height=height, color=COLOURS[phase])
    ax.axvline(1.0, color=TOLERANCE_COLOUR, linestyle="--", linewidth=1.4)
    ax.text(1.0, -0.75, " tolerance: match ends at 1 ", color=TOLERANCE_COLOUR, fontsize=8, ha="center",
            va="bottom", bbox={"facecolor": "white", "edgecolor": TOLERANCE_COLOUR, "pad": 1.5})
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(len(order) - 0.5, -1.0)  # top to bottom in execution order; room above for the label
    ax.set_yticks(range(len(order)), ["  " * depth + name for name, depth in order], fontsize=8,
                  fontfamily="monospace")
    for label, (name, _) in zip(ax.get_yticklabels(), order, strict=True):
        if name == first:
            label.set_color(TOLERANCE_COLOUR)
            label.set_fontweight("bold")
        elif name in marks:
            label.set_color(TOLERANCE_COLOUR)
    ax.set_xlabel(f"worst error / tolerance (log scale; left edge: {low:.0e} or less; 'exact': no error)")
    ax.set_title("per module and phase: error relative to its tolerance", fontsize=10)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)


def _diverged(entry: dict | None) -> bool:
    return entry is not None and any(entry[p]["status"] == "diverged" for p, _ in PHASES)


def _shade(ax: Any, row: int, name: str, entries: dict[str, dict], marks: dict[str, list[str]],
           first: str | None) -> None:
    if name == first:
        ax.axhspan(row - 0.5, row + 0.5, color=FIRST_SHADE, zorder=0)
    elif name in marks or _diverged(entries.get(name)):
        ax.axhspan(row - 0.5, row + 0.5, color=FINDING_SHADE, zorder=0)


def _draw_marks(ax: Any, order: list[tuple[str, int]], marks: dict[str, list[str]], first: str | None) -> None:
    """The findings column: every finding's number, phase and kind on its module's row."""
    for row, (name, _) in enumerate(order):
        if name not in marks:
            continue
        text = "; ".join(marks[name])
        ax.text(0.02, row, ("\u25c0 " if name == first else "\u25c1 ") + text, va="center", ha="left",
                fontsize=8, color=TOLERANCE_COLOUR, fontweight="bold" if name == first else "normal")
    ax.set_xlim(0, 1)
    ax.set_title("findings", fontsize=10)
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if not marks:
        ax.text(0.02, 0, "none", va="center", fontsize=8, color="#1a7f37")


def _draw_loss(ax: Any, report: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    tr, opts = report.training, report.options
    steps = range(1, len(tr["loss_actual"]) + 1)
    ax.plot(steps, tr["loss_actual"], marker="o", label=opts["impl"])
    ax.plot(range(1, len(tr["loss_expected"]) + 1), tr["loss_expected"], marker="x", linestyle="--",
            label=opts["against"])
    if tr["first_divergent_step"]:
        ax.axvline(tr["first_divergent_step"], color=TOLERANCE_COLOUR, linestyle=":",
                   label=f"first divergence (step {tr['first_divergent_step']})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss, side by side", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)  # off the curves


def _legend_handles() -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=COLOURS[p], label=label) for p, label in PHASES]
    handles.append(Line2D([], [], color=TOLERANCE_COLOUR, linestyle="--", label="tolerance (1)"))
    handles += [Patch(facecolor="white", edgecolor="#555555", hatch=HATCH[m], label=label) for m, label in
                (("missing", "tensor missing (cut from the graph)"), ("shape", "shape differs"),
                 ("non-finite", "NaN / Inf differs"))]
    handles += [Patch(color=FIRST_SHADE, label="first divergence"),
                Patch(color=FINDING_SHADE, label="diverged or a finding"),
                Patch(facecolor="none", edgecolor="none", label="no bar: nothing to compare")]
    return handles


def png_base64(fig: Any) -> str:
    """The figure as base64 PNG bytes for a data: URL (no timestamp, so the bytes are stable)."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")
