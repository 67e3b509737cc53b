"""The HTML report: one self-contained page (no external URL; the picture is an inline PNG, the
three-way view inline SVG) that shows the verdict, every finding, the error picture, the module
tree with a coloured mark per phase, and the text and JSON reports."""

from __future__ import annotations

import math
import re
from html import escape

from differential import plots
from differential.report import Report

PHASE_NAMES = {"forward": "fwd", "backward": "bwd", "param_grad": "param"}
MARKS = {"match": ("ok", "ok"), "diverged": ("XX", "bad"), "not_checked": ("--", "none")}
GREEN, RED = "#1a7f37", "#cf222e"
STYLE = f"""
body{{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#1f2328}}
h1 .verdict{{color:{{colour}}}} h2{{margin-top:1.6em;border-bottom:1px solid #d0d7de}}
pre{{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:left}}
tr.first-divergence td{{background:#ffd8d8;font-weight:bold}}
.summary{{font-size:15px;padding:.6em 1em;border-left:6px solid {{colour}};background:#f6f8fa}}
ul.tree,ul.tree ul{{list-style:none;margin:0;padding-left:0;font-family:monospace;font-size:13px}}
ul.tree ul{{padding-left:calc(2ch - 1px);border-left:1px dotted #999}}
div.row{{white-space:nowrap;padding:1px 0}} span.name{{display:inline-block}}
div.row.diverged span.name{{color:{RED}}} div.row#first-divergence{{background:#ffd8d8;font-weight:bold}}
.mark{{display:inline-block;width:9ch;text-align:center;margin-left:1ch;border-radius:3px;font-size:12px}}
.mark.ok{{background:#dafbe1;color:{GREEN}}} .mark.bad{{background:{RED};color:white;font-weight:bold}}
.mark.none{{background:#eaeef2;color:#57606a}}
.pointer{{color:{RED};margin-left:.6em;font-weight:bold}}
img.plot{{max-width:100%;border:1px solid #d0d7de}}
"""


def page(report: Report, text: str, json_text: str) -> str:
    """The whole page; ``text`` and ``json_text`` are the report in the other two formats."""
    verdict = report.verdict
    colour = GREEN if verdict == "match" else RED
    figure = plots.error_figure(report)
    image = plots.png_base64(figure)
    alt = "per-module error relative to tolerance" + (
        f"; first divergence: {report.first_divergence.module} ({report.first_divergence.phase})"
        if report.first_divergence else "; every module within tolerance")
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>scratchdiff report: "
        f"{escape(verdict)}</title><style>{STYLE.replace('{colour}', colour)}</style></head><body>",
        f"<h1>scratchdiff report: <span class='verdict'>{escape(verdict)}</span></h1>",
        f"<p class='summary' id='summary'>{escape(summary_line(report))}</p>",
        _findings_html(report),
        "<h2>Error relative to tolerance, per module and phase</h2>",
        f"<img class='plot' id='error-plot' alt='{escape(alt, quote=True)}' src='data:image/png;base64,{image}'>",
    ]
    if report.three_way is not None:
        names = ", ".join([*report.three_way.get("implementations", ["class", "functional"]), "torch"])
        parts += [f"<h2>Three-way: {names}</h2>", three_way_svg(report)]
    if report.modules:
        parts += ["<h2>Module tree</h2>", tree_html(report)]
    printed = (report.adapter or {}).get("printed") or {}  # what an adapter's code printed (not in the JSON)
    for stage, said in printed.items():
        parts += [f"<h2 id='printed-{escape(stage)}'>What your code printed during {escape(stage)}</h2>",
                  f"<pre>{escape(said)}</pre>"]
    parts += ["<h2>Text report</h2>", f"<pre>{escape(_plain(text))}</pre>",
              "<details><summary>JSON</summary>", f"<pre>{escape(json_text)}</pre></details>", "</body></html>\n"]
    return "\n".join(parts)


def summary_line(report: Report) -> str:
    d = report.first_divergence
    if d is None:
        return "match: every compared tensor is within its tolerance"
    n = len(report.findings)
    return (f"diverged: first divergence in {d.module}, phase {d.phase}, kind {d.kind} "
            f"(at {d.scratch_source}); {n} finding{'s' if n != 1 else ''}")


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # a text formatter may colour for a terminal


def _findings_html(report: Report) -> str:
    findings = report.findings or ([report.first_divergence] if report.first_divergence else [])
    if not findings:
        return "<p id='findings'>No findings.</p>"
    rows = []
    for i, d in enumerate(findings, 1):
        also = f"<br><small>also in: {escape(', '.join(d.also_in))}</small>" if d.also_in else ""
        cls = " class='first-divergence'" if i == 1 else ""
        rows.append(f"<tr{cls}><td>{i}</td><td>{escape(d.module)}{also}</td><td>{escape(d.phase)}</td>"
                    f"<td>{escape(d.kind)}</td><td>{escape(d.scratch_source or '')}</td><td>{escape(d.hint)}</td></tr>")
    return ("<h2>Findings</h2><table id='findings'><tr><th>#</th><th>module</th><th>phase</th><th>kind</th>"
            "<th>scratch source</th><th>hint</th></tr>" + "".join(rows) + "</table>")


def tree_html(report: Report) -> str:
    """The module tree as nested lists: a coloured mark per phase, a pointer at every finding."""
    marks = plots.finding_marks(report)
    first = report.first_divergence.module if report.first_divergence else None
    out: list[str] = ["<ul class='tree' id='module-tree'>"]
    depth = 0
    width = max(len(m["module"]) + 2 * m["depth"] for m in report.modules)  # names padded so marks line up
    for i, m in enumerate(report.modules):
        if i:
            if m["depth"] > depth:
                out.append("<ul>" * (m["depth"] - depth))
            else:
                out.append("</li>" + "</ul></li>" * (depth - m["depth"]))
        depth = m["depth"]
        diverged = any(m[p]["status"] == "diverged" for p in PHASE_NAMES) or m["module"] in marks
        attrs = (" id='first-divergence'" if m["module"] == first else "") + (
            " class='row diverged'" if diverged else " class='row'")
        cells = "".join(f"<span class='mark {MARKS[m[p]['status']][1]}' title='{PHASE_NAMES[p]}: {m[p]['status']}'>"
                        f"{PHASE_NAMES[p]} {MARKS[m[p]['status']][0]}</span>" for p in PHASE_NAMES)
        pointer = (f"<span class='pointer'>\u2190 {escape('; '.join(marks[m['module']]))}</span>"
                   if m["module"] in marks else "")
        name = f"<span class='name' style='width:{width - 2 * depth}ch'>{escape(m['module'])}</span>"
        out.append(f"<li><div{attrs}>{name}{cells}{pointer}</div>")
    out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return "".join(out)


def three_way_svg(report: Report) -> str:
    """class, functional and torch as three corners; each side is one comparison, green where it
    matches and red where it diverges, labelled with its first divergence."""
    tw = report.three_way
    impl, other = tw.get("implementations") or (report.options["impl"],
                                                 "functional" if report.options["impl"] == "class" else "class")
    corners = {"torch": (330, 55), impl: (90, 265), other: (570, 265)}
    edges = [(impl, "torch", tw.get(f"{impl}_vs_torch")), (other, "torch", tw.get(f"{other}_vs_torch")),
             (impl, other, tw.get(f"{impl}_vs_{other}"))]
    shapes: list[str] = []
    for a, b, entry in edges:
        if not isinstance(entry, dict):
            continue
        (x1, y1), (x2, y2) = corners[a], corners[b]
        ok = entry["verdict"] == "match"
        colour = GREEN if ok else RED
        d = entry["first_divergence"]
        label = "match" if ok else f"diverged: {d['module']} ({d['phase']})" if d else "diverged"
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2 + (22 if a == impl and b == other else 0)
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
        angle = angle - 180 if abs(angle) > 90 else angle
        dash = "" if ok else " stroke-dasharray='10 6'"
        shapes.append(f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='{colour}' stroke-width='5'{dash} "
                      f"class='edge {'ok' if ok else 'bad'}'/>")
        shapes.append(f"<text x='{mx}' y='{my - 8}' fill='{colour}' font-size='13' text-anchor='middle' "
                      f"transform='rotate({angle:.1f} {mx} {my - 8})'>{escape(label)}</text>")
    agree = tw.get("agrees_with_torch") or []
    for name, (x, y) in corners.items():
        good = name == "torch" or name in agree
        fill = "#dafbe1" if good else "#ffd8d8"
        shapes.append(f"<circle cx='{x}' cy='{y}' r='44' fill='{fill}' stroke='#1f2328' stroke-width='1.5'/>")
        shapes.append(f"<text x='{x}' y='{y + 5}' font-size='14' font-weight='bold' text-anchor='middle'>"
                      f"{escape(name)}</text>")
    port = tw.get("port_from")
    caption = f"agrees with torch: {', '.join(agree) or 'neither'}" + (f"; port the fix from {port}" if port else "")
    shapes.append(f"<text x='330' y='345' font-size='13' text-anchor='middle'>{escape(caption)}</text>")
    return ("<svg id='three-way' width='660' height='360' viewBox='0 0 660 360' role='img' "
            f"aria-label='{escape(caption, quote=True)}'>" + "".join(shapes) + "</svg>")
