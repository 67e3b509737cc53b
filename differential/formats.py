"""Report formatters: each turns a `Report` into a string. Only the CLI prints."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from differential.render import to_text
from differential.report import Report

MARK = {"match": "ok", "diverged": "XX", "not_checked": "--"}


def _json_safe(value: Any) -> Any:
    """Strict JSON has no NaN or Infinity: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def format_json(report: Report) -> str:
    """Stable, strict JSON: sorted keys, no timings, so identical runs give identical bytes."""
    return json.dumps(_json_safe(report.to_dict()), sort_keys=True, indent=2, allow_nan=False) + "\n"


def _tree(report: Report) -> Tree:
    first = report.first_divergence.module if report.first_divergence else None
    # Labels are padded so the marks line up in columns whatever the depth (the tree indents by 4).
    width = max((4 * m["depth"] + len(m["module"]) for m in report.modules), default=0)
    root = Tree(Text(f"{'modules':<{width + 5}}fwd bwd param", style="bold"))
    stack: list[tuple[int, Tree]] = [(-1, root)]
    for m in report.modules:
        marks = " ".join(f"{MARK[m[p]['status']]:>3}" for p in ("forward", "backward", "param_grad"))
        label = Text(f"{m['module']:<{width - 4 * m['depth']}} {marks}")
        if m["module"] == first:
            label.stylize("bold red")
            label.append("  <- first divergence", style="bold red")
        while stack[-1][0] >= m["depth"]:
            stack.pop()
        node = stack[-1][1].add(label)
        stack.append((m["depth"], node))
    return root


def _divergence_panel(report: Report) -> Panel:
    d = report.first_divergence
    if d is None:
        opts = report.options
        unchecked = report.adapter["unchecked_phases"] if report.adapter else []  # [adapter]
        if unchecked:
            return Panel(f"every phase that could be checked matches {opts['against']}; not checked: "
                         f"{', '.join(unchecked)} (see below)", title="verdict: match", border_style="green")
        return Panel(f"every module matches {opts['against']} in forward, backward and parameter gradients; "
                     "the optimizer step matches", title="verdict: match", border_style="green")
    lines = [f"module:    {d.module}", f"phase:     {d.phase}", f"kind:      {d.kind}",
             f"hint:      {d.hint}", f"scratch:   {d.scratch_source}", f"reference: {d.reference_source}"]
    if d.op:
        lines.append(f"op:        {d.op['op']} at {d.op['source']} (backward vs finite differences: "
                     f"relative error {d.op['relative_error']})")
    if d.port_from:
        lines.append(f"port from: {d.port_from}")
    if d.metrics:
        m = d.metrics
        if m.get("max_abs") is not None:
            lines.append(f"metrics:   {d.tensor}: max abs {m['max_abs']}, max rel {m['max_rel']}, cosine "
                         f"{m['cosine']}, norm ratio {m['norm_ratio']}, mismatched {m['mismatched']} "
                         f"({m['mismatched_share']:.1%}), worst at {m['worst_index']}")
        elif m.get("missing"):
            lines.append(f"metrics:   {d.tensor}: missing on the {m['missing']} side")
        else:
            lines.append(f"metrics:   {d.tensor}: shape {m['shape_actual']} vs {m['shape_expected']}")
    return Panel("\n".join(lines), title="verdict: diverged — first divergence", border_style="red")


def _adapter_text(report: Report) -> Text:
    """[adapter] Where the first divergence is in the user's own names, what was transposed, what
    could not be checked."""
    a = report.adapter
    lines = [f"your model, through {a['adapter']}: gradients compared for {a['gradients']}"]
    d = report.first_divergence
    theirs = a["modules"].get("" if d and d.module == "(model)" else (d.module if d else None))
    if theirs is not None:
        lines.append(f"  first divergence in your names: {theirs or '(model)'}")
    lines.append(f"  transposed from (in, out): {', '.join(a['transposed']) or 'none'}")
    lines += [f"  not checked: {phase}: {why}" for phase, why in a["why_unchecked"].items()]
    if a["unmatched_reference_modules"]:
        lines.append(f"  reference modules with no counterpart (not compared): "
                     f"{', '.join(a['unmatched_reference_modules'])}")
    return Text("\n".join(lines))


def _three_way_table(report: Report) -> Table:
    t = Table(title="three-way: class, functional, torch")
    for col in ("comparison", "verdict", "first divergence", "sources (this side / other side)"):
        t.add_column(col)
    for name, entry in report.three_way.items():
        if not isinstance(entry, dict):
            continue
        d = entry["first_divergence"]
        t.add_row(name.replace("_", " "), entry["verdict"],
                  "-" if d is None else f"{d['module']} ({d['phase']}, {d['kind']})",
                  "-" if d is None else f"{d['scratch_source']} / {d['reference_source']}")
    agree = report.three_way["agrees_with_torch"]
    port = report.three_way["port_from"]
    t.caption = (f"agrees with torch: {', '.join(agree) or 'neither'}"
                 + (f"; port the fix from {port}" if port else ""))
    return t


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _flow_table(report: Report) -> Table:
    t = Table(title="gradient flow: 'has a gradient' is not enough")
    for col in ("parameter", "has grad", "non-zero", "norm", "reference norm", "matches reference"):
        t.add_column(col)
    for r in report.gradient_flow:
        t.add_row(r["parameter"], _yes(r["has_grad"]), _yes(r["nonzero"]),
                  "-" if r["norm"] is None else f"{r['norm']:.4g}",
                  "-" if r["reference_norm"] is None else f"{r['reference_norm']:.4g}", _yes(r["matches_reference"]))
    return t


def _update_table(report: Report) -> Table:
    t = Table(title="weight update after one step: 'it changed' is not enough")
    for col in ("parameter", "changed (own grads)", "updated by optimizer", "update matches reference"):
        t.add_column(col)
    for r in report.weight_update:
        t.add_row(r["parameter"], _yes(r["changed_after_step"]), _yes(r["updated_by_optimizer"]),
                  _yes(r["update_matches_reference"]))
    return t


def _data_table(report: Report) -> Table:
    t = Table(title="data sanity")
    t.add_column("check")
    t.add_column("result")
    for name, ok in report.data.get("checks", {}).items():
        t.add_row(name.replace("_", " "), _yes(ok))
    t.add_row("batch shape / logits shape", f"{report.data.get('batch_shape')} / {report.data.get('logits_shape')}")
    return t


def format_text(report: Report) -> str:
    opts = report.options
    header = Text(f"scratchdiff: {opts['impl']} vs {opts['against']}, {opts['dtype']}, seed {opts['seed']}, "
                  f"batch {opts['batch_size']}, {opts['model']['num_layers']} layer(s)", style="bold")
    parts: list[Any] = [header, _tree(report), _divergence_panel(report)]
    if report.adapter is not None:  # [adapter]
        parts.append(_adapter_text(report))
    forward_ok = all(m["forward"]["status"] != "diverged" for m in report.modules)
    parts.append(Text(f"architecture (forward parity): {'match' if forward_ok else 'DIVERGES'};  "
                      f"loss {report.loss['actual']:.6g} vs reference {report.loss['expected']:.6g}"))
    tr = report.training
    if tr["steps"]:
        parts.append(Text(f"training {tr['steps']} steps side by side: " + (
            "match" if tr["status"] == "match"
            else f"first divergence at step {tr['first_divergent_step']} ({tr['first_divergent_what']})")))
    if report.isolated is not None:
        iso = Table(title="isolated mode: every module run alone on the reference's inputs")
        for col in ("module", "phase", "kind", "scratch source"):
            iso.add_column(col)
        for d in report.isolated:
            iso.add_row(d.module, d.phase, d.kind, d.scratch_source)
        if not report.isolated:
            iso.add_row("(none)", "", "", "")
        parts.append(iso)
    if report.three_way is not None:
        parts.append(_three_way_table(report))
    parts += [_flow_table(report), _update_table(report), _data_table(report)]
    return to_text(Group(*parts), width=120)


def _plot_png(report: Report) -> str | None:
    """Per-module worst error per phase (log scale) and, with --steps, the loss curves, as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["module"] for m in report.modules]
    tr = report.training
    fig, axes = plt.subplots(1, 2 if tr["steps"] else 1, figsize=(12 if tr["steps"] else 8, 0.3 * len(names) + 2))
    ax = axes[0] if tr["steps"] else axes
    for offset, phase in ((-0.25, "forward"), (0.0, "backward"), (0.25, "param_grad")):
        values = []
        for m in report.modules:
            worst = m[phase]["worst"]
            values.append(max(worst["max_abs"] or 0.0, 1e-18) if worst and worst.get("max_abs") is not None
                          else 1e-18)
        ax.barh([i + offset for i in range(len(names))], values, height=0.25, label=phase)
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("max absolute error vs reference (log scale)")
    ax.set_title("per-module error")
    ax.legend(fontsize=8)
    if tr["steps"]:
        steps = range(1, len(tr["loss_actual"]) + 1)
        axes[1].plot(steps, tr["loss_actual"], marker="o", label=report.options["impl"])
        axes[1].plot(steps, tr["loss_expected"], marker="x", linestyle="--", label=report.options["against"])
        if tr["first_divergent_step"]:
            axes[1].axvline(tr["first_divergent_step"], color="red", linestyle=":", label="first divergence")
        axes[1].set_xlabel("training step")
        axes[1].set_ylabel("cross-entropy loss")
        axes[1].set_title("loss, side by side")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def format_html(report: Report) -> str:
    """A self-contained HTML page: the text report, the plots inline, and the JSON."""
    image = _plot_png(report)
    verdict = report.verdict
    colour = "#1a7f37" if verdict == "match" else "#cf222e"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>scratchdiff report</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f8fa;padding:1em;overflow:auto}"
        f"h1 span{{color:{colour}}}</style></head><body>\n"
        f"<h1>scratchdiff report: <span>{html.escape(verdict)}</span></h1>\n"
        f"<img alt='per-module error and loss curves' src='data:image/png;base64,{image}'>\n"
        f"<pre>{html.escape(format_text(report))}</pre>\n"
        "<details><summary>JSON</summary>\n"
        f"<pre>{html.escape(format_json(report))}</pre></details>\n</body></html>\n"
    )


FORMATTERS = {"text": format_text, "json": format_json, "html": format_html}
