"""Text tables for the terminal: `scratchdiff faults`, `zoo`, `zoo --combos` and `train`, laid
out for a given width. Each table has a wide layout and a compact one; the first whose narrowest
rendering still fits is used, so names are never broken mid-word. Functions return strings."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

BUG_CLASSES_DOC = "docs/bug_classes.md"


def to_string(renderable: Any, width: int, color: bool = False) -> str:
    """``renderable`` as rich prints it at ``width`` columns; ANSI colour codes only when ``color``."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=color, color_system="standard" if color else None,
            highlight=False, emoji=False, legacy_windows=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def fits(renderable: Any, width: int) -> bool:
    """Whether rich lays ``renderable`` out in ``width`` columns without cutting a cell short (its
    measurement alone does not say: a column may still be squeezed below its longest word)."""
    return "…" not in to_string(renderable, width)


def first_fitting(layouts: Sequence[Callable[[], Any]], width: int) -> Any:
    """The first layout (built lazily) that fits ``width``; the last one when none does."""
    for build in layouts[:-1]:
        candidate = build()
        if fits(candidate, width):
            return candidate
    return layouts[-1]()


def compact(title: str) -> Table:
    """A table for narrow terminals: no vertical rules, columns two spaces apart."""
    table = Table(title=title, title_justify="left")
    narrow(table)
    return table


def narrow(table: Table) -> None:
    """Drop ``table``'s vertical rules and outer edge, so that its columns fit a narrow terminal."""
    table.box, table.show_edge, table.pad_edge, table.collapse_padding = box.SIMPLE_HEAD, False, False, True


def yes_no(flag: bool | None, color: bool = True) -> Text:
    """"yes", "NO" (red) or "-" (unknown)."""
    if flag is None:
        return Text("-")
    return Text("yes") if flag else Text("NO", style="bold red" if color else "")


# --- scratchdiff faults ------------------------------------------------------------------------

def faults_table(faults: list[Any], width: int, color: bool = False) -> str:
    title = f"fault catalogue: {len(faults)} faults (class: the bug class, see {BUG_CLASSES_DOC})"

    def wide() -> Table:
        table = Table(title=title)
        for col in ("name", "class", "impl", "expected module", "phase", "kind"):
            table.add_column(col, no_wrap=col in ("name", "expected module", "kind"))
        table.add_column("description", min_width=24)
        for f in faults:
            table.add_row(f.name, str(f.bug_class), f.impl, f.module, f.phase, f.kind, f.description)
        return table

    def narrow() -> Table:
        table = compact(title)
        table.add_column("fault, and what it breaks", min_width=max(len(f.name) for f in faults))
        table.add_column("class", justify="right")
        table.add_column("impl / module / phase")
        table.add_column("kind", no_wrap=True)
        for f in faults:
            table.add_row(Text.assemble((f.name, "bold"), "\n", (f.description, "dim")), str(f.bug_class),
                          f"{f.impl}\n{f.module}\n{f.phase}", f.kind, end_section=True)
        return table

    return to_string(first_fitting((wide, narrow), width), width, color)


# --- scratchdiff zoo ---------------------------------------------------------------------------

def zoo_table(rows: list[Any], clean_verdict: str, width: int, color: bool = False) -> str:
    train = any(r.exact_match_after_training is not None for r in rows)
    found = sum(r.detected and r.localized for r in rows)
    naive_pass = sum(bool(r.naive_all_have_grad and r.naive_all_changed) for r in rows)
    caption = (f"{found} of {len(rows)} faults detected and localized; the naive checks pass on "
               f"{naive_pass} of them; clean model: {clean_verdict}")
    title = "fault zoo: does the report find each fault, and do the naive checks?"

    def trained(r: Any) -> str:
        acc = r.exact_match_after_training
        return "crash" if acc is None else f"{acc:.1%}"

    def wide() -> Table:
        table = Table(title=title, caption=caption)
        columns = ["fault", "cls", "impl", "expected module / phase", "reported module / phase", "detected",
                   "localized", "kind right", "naive: all have grad", "naive: all changed"]
        for col in columns + (["exact match after training"] if train else []):
            table.add_column(col, no_wrap=col == "fault")
        for r in rows:
            cells = [r.fault, str(r.bug_class), r.impl, f"{r.expected_module} / {r.expected_phase}",
                     f"{r.reported_module} / {r.reported_phase}" if r.detected else "-", yes_no(r.detected, color),
                     yes_no(r.localized, color), yes_no(r.kind_right, color), yes_no(r.naive_all_have_grad, False),
                     yes_no(r.naive_all_changed, False)]
            table.add_row(*cells, *([trained(r)] if train else []))
        return table

    def narrow() -> Table:
        legend = ("det: detected, loc: module and phase right, kind: kind right; naive checks: every parameter "
                  "has a gradient (grad), every parameter changed after a step (chg)")
        table = compact(title)
        table.caption = f"{caption}\n{legend}"
        table.add_column("fault", min_width=max((len(r.fault) for r in rows), default=5))
        for col in ("cls", "det", "loc", "kind", "grad", "chg") + (("trained",) if train else ()):
            table.add_column(col, justify="right" if col == "cls" else "left")
        for r in rows:
            name = Text(r.fault)
            if not r.localized:  # where it should have been found, and where it was
                reported = f"{r.reported_module} / {r.reported_phase}" if r.detected else "nothing"
                name.append(f"\n  expected {r.expected_module} / {r.expected_phase}\n  reported {reported}",
                            style="dim")
            cells = [name, str(r.bug_class), yes_no(r.detected, color), yes_no(r.localized, color),
                     yes_no(r.kind_right, color), yes_no(r.naive_all_have_grad, False),
                     yes_no(r.naive_all_changed, False)]
            table.add_row(*cells, *([trained(r)] if train else []))
        return table

    return to_string(first_fitting((wide, narrow), width), width, color)


def combos_table(rows: list[Any], width: int, color: bool = False) -> str:
    """`zoo --combos`: one row per combination of faults: whether the report's findings name every
    finding each fault must show (module, phase, kind), and which it missed."""
    found = sum(r.all_found for r in rows)
    caption = (f"{found} of {len(rows)} combinations: every fault found among the findings "
               "(--format json lists every expected and reported finding)")

    def layout(one_line: bool) -> Table:
        table = Table(title="fault combinations: does the report find every fault, not only the first?",
                      caption=caption)
        if width < 120:
            narrow(table)
        table.add_column("faults", no_wrap=one_line, min_width=max((len(f) for r in rows for f in r.faults), default=6))
        table.add_column("all found")
        table.add_column("missed (module / phase / kind)")
        table.add_column("findings", justify="right")
        for r in rows:
            missed = [" / ".join(e) for e, hit in zip(r.expected, r.found, strict=True) if not hit]
            table.add_row((" + " if one_line else " +\n").join(r.faults), yes_no(r.all_found, color),
                          "\n".join(missed) or "-",
                          str(len(r.findings)))
        return table

    return to_string(first_fitting((lambda: layout(True), lambda: layout(False)), width), width, color)


# --- scratchdiff train -------------------------------------------------------------------------

def train_table(result: dict[str, Any], width: int, color: bool = False) -> str:
    table = Table(title=f"sequence reversal: {result['impl']} implementation, seed {result['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("exact-sequence accuracy (test)", f"{result['exact_match']:.2%}")
    table.add_row("per-token accuracy (test)", f"{result['token_accuracy']:.2%}")
    table.add_row("cross-entropy (test)", f"{result['loss']:.4g}")
    table.add_row("training steps", str(result["steps"]))
    table.add_row("training time", f"{result['seconds']:.3g} s")
    return to_string(table, width, color)
