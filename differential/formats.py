"""Report formatters: each turns a `Report` into a string. Only the CLI prints."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from differential.capture import ROOT
from differential.diagnose import display_path
from differential.report import Report
from differential.tables import compact, first_fitting, narrow, to_string

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


# In JSON a module is named by its path, as the name map uses it: the model itself is "" (ROOT);
# a finding about the loss has the id "(loss)" and one about the batch "(data)", which no module
# path can be. The display name (the text report's "(model)") is the separate field "module_display".
LOSS_ID, DATA_ID = "(loss)", "(data)"


def _module_path(display: str) -> str:
    return ROOT if display == display_path(ROOT) else display


def _with_path(entry: dict[str, Any] | None, yours: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A finding or module row with ``module`` as a path and ``module_display`` beside it; with an
    adapter's map (reference path -> yours), ``your_module``: the same place in the user's names."""
    if entry is None:
        return None
    path = _module_path(entry["module"])
    out = {**entry, "module": path, "module_display": entry["module"]}
    if yours is not None:
        out["your_module"] = yours.get(path)
    return out


def json_dict(report: Report) -> dict[str, Any]:
    """The report as the JSON schema has it: module paths (see above), and without what the user's
    code printed (``adapter.printed_lines`` counts its lines per stage; the text shows it)."""
    out = report.to_dict()
    adapter = out.get("adapter")
    yours = None
    if adapter is not None:
        yours = adapter["modules"]
        printed = adapter.pop("printed", None) or {}
        adapter["printed_lines"] = {stage: len(text.splitlines()) for stage, text in printed.items()}
    out["first_divergence"] = _with_path(out["first_divergence"], yours)
    out["findings"] = [_with_path(d, yours) for d in out["findings"]]
    if out.get("isolated") is not None:
        out["isolated"] = [_with_path(d, yours) for d in out["isolated"]]
    out["modules"] = [_with_path(m) for m in out["modules"]]
    for entry in (out.get("three_way") or {}).values():
        if isinstance(entry, dict) and "first_divergence" in entry:
            entry["first_divergence"] = _with_path(entry["first_divergence"])
    return out


def format_json(report: Report) -> str:
    """Stable, strict JSON: sorted keys, no timings, so identical runs give identical bytes."""
    return json.dumps(_json_safe(json_dict(report)), sort_keys=True, indent=2, allow_nan=False) + "\n"


def _finding_marks(report: Report) -> dict[str, str]:
    """Module name -> the tree's pointer: "first divergence", "finding 2", "findings 2, 3"."""
    numbers: dict[str, list[int]] = {}
    for i, d in enumerate(report.findings or ([report.first_divergence] if report.first_divergence else []), 1):
        numbers.setdefault(d.module, []).append(i)
    marks = {}
    for module, nums in numbers.items():
        words = ["first divergence"] if nums[0] == 1 else []
        rest = [str(n) for n in nums if n != 1]
        if rest:
            words.append(f"finding{'s' if len(rest) > 1 else ''} {', '.join(rest)}")
        marks[module] = ", ".join(words)
    return marks


MARK_STYLE = {"match": "green", "diverged": "bold red", "not_checked": "dim"}


def _tree(report: Report) -> Tree:
    marks = _finding_marks(report)
    # Labels are padded so the marks line up in columns whatever the depth (the tree indents by 4).
    width = max((4 * m["depth"] + len(m["module"]) for m in report.modules), default=0)
    root = Tree(Text(f"{'modules':<{width + 5}}fwd bwd param", style="bold"))
    stack: list[tuple[int, Tree]] = [(-1, root)]
    for m in report.modules:
        label = Text(f"{m['module']:<{width - 4 * m['depth']}}")
        for phase in ("forward", "backward", "param_grad"):
            status = m[phase]["status"]
            label.append(f" {MARK[status]:>3}", style=MARK_STYLE[status])
        mark = marks.get(m["module"])
        if mark is not None:
            style = "bold red" if mark.startswith("first") else "red"
            label.stylize(style)
            label.append(f"  <- {mark}", style=style)
        while stack[-1][0] >= m["depth"]:
            stack.pop()
        node = stack[-1][1].add(label)
        stack.append((m["depth"], node))
    return root


def _divergence_panel(report: Report) -> Panel:
    d = report.first_divergence
    if d is None:
        return _match_panel(report)
    rows = [("module", d.module), ("phase", d.phase), ("kind", d.kind), ("hint", d.hint),
            ("scratch", d.scratch_source), ("reference", d.reference_source)]
    if d.op:
        rows.append(("op", f"{d.op['op']} at {d.op['source']} (backward vs finite differences: "
                           f"relative error {_num(d.op['relative_error'])})"))
    if d.port_from:
        rows.append(("port from", d.port_from))
    if d.metrics:
        rows.append(("metrics", f"{d.tensor}: {_metrics_text(d.metrics)}"))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(f"{label}:", value)
    n = len(report.findings)
    title = f"verdict: diverged — {n} findings; the first:" if n > 1 else "verdict: diverged — first divergence"
    return Panel(grid, title=title, border_style="red")


def _num(value: Any) -> str:
    """A metric for people: 4 significant digits (the JSON keeps full precision)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _metrics_text(m: dict[str, Any]) -> str:
    """A compared tensor's metrics in one phrase: what is missing, the shapes that differ, or the errors."""
    if m.get("missing"):
        return f"missing on the {m['missing']} side"
    if m.get("max_abs") is None:
        return f"shape {m.get('shape_actual')} vs {m.get('shape_expected')}"
    share = m.get("mismatched_share")
    text = (f"max abs {_num(m['max_abs'])}, max rel {_num(m.get('max_rel'))}, cosine {_num(m.get('cosine'))}, "
            f"norm ratio {_num(m.get('norm_ratio'))}, mismatched {_num(m.get('mismatched'))}"
            + (f" ({share:.1%})" if isinstance(share, (int, float)) else ""))
    where = m.get("worst_index")
    if where:  # [] for a scalar: nothing to point at
        text += f", worst at ({', '.join(str(i) for i in where)})"
    bad = [f"{m[f'{what}_{side}']} {shown} on the {side} side" for what, shown in (("nan", "NaN"), ("inf", "Inf"))
           for side in ("actual", "expected") if m.get(f"{what}_{side}")]
    return text + (f"; {', '.join(bad)}" if bad else "")


def _coverage(report: Report, phase: str) -> str:
    """How many modules were compared in ``phase``: "all", "some" or "none"."""
    statuses = [m[phase]["status"] for m in report.modules]
    checked = sum(s != "not_checked" for s in statuses)
    return "none" if checked == 0 else ("all" if checked == len(statuses) else "some")


def _match_panel(report: Report) -> Panel:
    """The verdict "match", claiming only what was compared; what was not is named."""
    against = report.options["against"]
    names = {"forward": "forward outputs", "backward": "input gradients"}
    coverage = {phase: _coverage(report, phase) for phase in names}
    claims, unchecked = [], []
    compared = [names[p] for p, c in coverage.items() if c != "none"]
    if compared:
        claims.append(f"every module's {_words(compared)} match" + (
            " (where they could be read)" if "some" in coverage.values() else ""))
    unchecked += [p for p, c in coverage.items() if c == "none"]
    if report.gradient_flow:
        claims.append("every parameter gradient matches")
    else:
        unchecked.append("parameter gradients")
    loss = report.loss
    if loss.get("match"):
        claims.append("the loss matches" + (", and so does its gradient with respect to the logits"
                                            if loss.get("grad_match") else ""))
    if loss.get("grad_match") is None:
        unchecked.append("the loss's gradient")
    if report.weight_update:
        claims.append("one optimizer step with the reference's gradients matches")
    else:
        unchecked.append("optimizer")
    if report.training["steps"] and report.training["status"] == "match":
        claims.append(f"{report.training['steps']} training steps side by side match")
    unchecked += report.adapter["unchecked_phases"] if report.adapter else []  # [adapter]
    unmatched = len(report.adapter["unmatched_reference_modules"]) if report.adapter else 0  # [adapter]
    if unmatched:
        unchecked.append(f"{unmatched} reference module{'s' if unmatched > 1 else ''} with no counterpart in "
                         "your model")
    unchecked += list(report.not_checked)
    scope = "every phase that could be checked" if unchecked else "everything compared"
    text = f"{scope} matches {against}: " + (
        "; ".join(claims) or "nothing that was compared disagrees")
    if unchecked:
        text += f". Not checked: {', '.join(dict.fromkeys(unchecked))} (see above)"
    return Panel(text, title="verdict: match", border_style="green")


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _findings_table(report: Report, width: int = 120) -> Table:
    """Every finding: one independent root cause per row, in pipeline order. Where the five
    columns do not fit, the source goes under the module."""
    n = len(report.findings)
    if report.not_checked:  # teacher forcing could not run: a second fault may hide behind the first
        title = (f"findings: {n}, possibly not all: {', '.join(report.not_checked)} could not be checked "
                 "(see above)")
    elif report.options.get("findings", True) or report.options.get("isolated"):
        title = f"findings: {n} independent root cause{'s' if n != 1 else ''}, in pipeline order"
    else:
        title = "findings: only the first divergence was searched for (--first-only)"

    def wide() -> Table:
        t = Table(title=title)
        t.add_column("#", justify="right")
        t.add_column("module")
        for col in ("phase", "kind", "scratch source"):
            t.add_column(col, no_wrap=col != "phase")
        for i, d in enumerate(report.findings, 1):
            module = d.module + (f"\nalso in: {', '.join(d.also_in)}" if d.also_in else "")
            t.add_row(str(i), module, d.phase, d.kind, d.scratch_source)
        return t

    def narrow() -> Table:
        t = compact(title)
        t.add_column("#", justify="right")
        t.add_column("module, scratch source", overflow="fold")
        t.add_column("phase")
        t.add_column("kind", overflow="fold")
        for i, d in enumerate(report.findings, 1):
            also = f"\nalso in: {', '.join(d.also_in)}" if d.also_in else ""
            t.add_row(str(i), Text.assemble((d.module, "bold"), also, "\n", (d.scratch_source, "dim")), d.phase, d.kind)
        return t

    return first_fitting((wide, narrow), width)


def _not_checked_text(report: Report) -> Text:
    return Text("\n".join(f"not checked: {what}: {why}" for what, why in report.not_checked.items()))


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
    lines += [f"  note: {note}" for note in a.get("notes", [])]
    return Text("\n".join(lines))


def _printed_text(report: Report) -> Text:
    """What the user's code printed while the report imported, built and ran it (kept out of JSON)."""
    lines = ["what your code printed (captured; not part of the JSON)"]
    for stage, text in report.adapter["printed"].items():
        lines.append(f"  during {stage}:")
        lines += [f"    {line}" for line in text.rstrip("\n").splitlines()]
    return Text("\n".join(lines))


def _three_way_table(report: Report) -> Table:
    t = Table(title="three-way: " + ", ".join([*report.three_way.get("implementations", ["class", "functional"]),
                                                "torch"]))
    for col in ("comparison", "verdict", "first divergence"):
        t.add_column(col)
    t.add_column("sources (this side, other side)", no_wrap=True)
    for name, entry in report.three_way.items():
        if not isinstance(entry, dict):
            continue
        d = entry["first_divergence"]
        t.add_row(name.replace("_", " "), entry["verdict"],
                  "-" if d is None else f"{d['module']} ({d['phase']}, {d['kind']})",
                  "-" if d is None else f"{d['scratch_source']}\n{d['reference_source']}")
    agree = report.three_way["agrees_with_torch"]
    port = report.three_way["port_from"]
    t.caption = (f"agrees with torch: {', '.join(agree) or 'neither'}"
                 + (f"; port the fix from {port}" if port else ""))
    return t


def _yes(flag: bool) -> Text:
    return Text("yes") if flag else Text("NO", style="bold red")


def _flow_table(report: Report) -> Table:
    t = Table(title="gradient flow: 'has a gradient' is not enough")
    for col in ("parameter", "has grad", "non-zero", "norm", "ref. norm", "matches ref."):
        t.add_column(col, no_wrap=col in ("parameter", "norm", "ref. norm"))
    for r in report.gradient_flow:
        t.add_row(r["parameter"], _yes(r["has_grad"]), _yes(r["nonzero"]),
                  "-" if r["norm"] is None else f"{r['norm']:.4g}",
                  "-" if r["reference_norm"] is None else f"{r['reference_norm']:.4g}", _yes(r["matches_reference"]))
    if not report.gradient_flow:
        t.add_row("(not checked)", "", "", "", "", "")
    return t


def _update_table(report: Report) -> Table:
    t = Table(title="weight update after one step: 'it changed' is not enough")
    for col in ("parameter", "changed (own grads)", "updated by optimizer", "update matches reference"):
        t.add_column(col, no_wrap=col == "parameter")
    for r in report.weight_update:
        t.add_row(r["parameter"], _yes(r["changed_after_step"]), _yes(r["updated_by_optimizer"]),
                  _yes(r["update_matches_reference"]))
    if not report.weight_update:
        t.add_row("(not checked)", "", "", "")
    return t


def _data_table(report: Report) -> Table:
    t = Table(title="data sanity")
    t.add_column("check")
    t.add_column("result")
    for name, ok in report.data.get("checks", {}).items():
        t.add_row(name.replace("_", " "), _yes(ok))
    t.add_row("batch shape / logits shape", f"{report.data.get('batch_shape')} / {report.data.get('logits_shape')}")
    return t


def _forward_and_loss_line(report: Report) -> str:
    """Forward parity (the architecture) and the loss: the joint run's value and gradient, and the
    loss run alone on the reference's logits when the joint logits differ."""
    if report.modules:
        forward_ok = all(m["forward"]["status"] != "diverged" for m in report.modules)
        line = f"architecture (forward parity): {'match' if forward_ok else 'DIVERGES'}"
    else:
        line = "architecture (forward parity): not checked"
    loss = report.loss
    if loss.get("actual") is None:
        return line + ";  loss not computed"
    line += f";  loss {_num(loss['actual'])} vs reference {_num(loss.get('expected'))}"
    if loss.get("grad_match") is False:
        line += ", its gradient (d loss / d logits) DIFFERS"
    alone = loss.get("alone")
    if alone and alone.get("on") == "reference logits":
        line += (f";  the loss alone on the reference's logits: value {_same(alone['value_match'])}, "
                 f"gradient {_same(alone['grad_match'])}")
    return line


def _same(flag: bool | None) -> str:
    return "not checked" if flag is None else ("matches" if flag else "DIFFERS")


def implementation_name(report: Report) -> str:
    """The implementation under test as its user knows it: ``class`` or ``functional`` for a bundled
    model, the adapter's class for a user's model (its ``impl`` option is just "adapter")."""
    if report.adapter:
        return report.adapter["adapter"].rpartition(".")[2]
    return report.options["impl"]


def summary_line(report: Report) -> str:
    """The report in one line: the verdict, and the first finding with its place in the code."""
    if report.verdict == "match":
        whole = str(_match_panel(report).renderable).startswith("everything")
        return (f"scratchdiff: match — {implementation_name(report)} agrees with {report.options['against']} on "
                + ("everything compared" if whole else "every phase that could be checked (some could not: see above)"))
    n = len(report.findings)
    d = report.first_divergence
    first = "" if d is None else f"; the first: {d.module} ({d.phase}, {d.kind})"
    return f"scratchdiff: diverged — {n} finding{'s' if n != 1 else ''}{first}"


def format_text(report: Report, width: int = 120, color: bool = False) -> str:
    """The report for a terminal ``width`` columns wide (ANSI colour when ``color``): the module
    tree and the detail tables first, then the verdict and the findings, then `summary_line`, so
    the answer is where the eye lands after the command."""
    opts = report.options
    header = Text(f"scratchdiff: {implementation_name(report)} vs {opts['against']}, {opts['dtype']}, "
                  f"seed {opts['seed']}, batch {opts['batch_size']}, {opts['model']['num_layers']} layer(s)",
                  style="bold")
    parts: list[Any] = [header, _tree(report)] if report.modules else [header]  # none: the run stopped early
    parts.append(Text(_forward_and_loss_line(report)))
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
    if report.adapter is not None and report.adapter.get("printed"):
        parts.append(_printed_text(report))
    if report.adapter is not None:  # [adapter]
        parts.append(_adapter_text(report))
    if report.not_checked:
        parts.append(_not_checked_text(report))
    for part in parts:
        if isinstance(part, Table) and width < 100:
            narrow(part)
    parts.append(_divergence_panel(report))
    if report.findings:
        parts.append(_findings_table(report, width))
    summary = summary_line(report)
    parts.append(Text(summary, style="bold " + ("green" if report.verdict == "match" else "red")))
    return to_string(Group(*parts), width, color)


def format_html(report: Report) -> str:
    """A self-contained HTML page (`differential.html_report`): the verdict, every finding, the error
    picture, the module tree with coloured marks, the three-way view, the text report and the JSON."""
    from differential.html_report import page

    return page(report, format_text(report), format_json(report))


FORMATTERS = {"text": format_text, "json": format_json, "html": format_html}
