"""Teacher forcing skips a container once a descendant is blamed for its forward
(`findings.force_modules`, ``every=False``): the findings must be exactly those of running every
disagreeing module alone, hints included, for every catalogue fault in both architectures and
for combinations of faults."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from unittest import mock

import numpy as np
import pytest

from differential import faults
from differential import findings as fnd
from differential.report import ReportOptions, run_report
from differential.zoo import combos, options_for
from scratch_model.config import arch

_original = fnd.force_modules


def _every(*args: Any, **kwargs: Any) -> Any:
    kwargs["every"] = True
    return _original(*args, **kwargs)


def _both(options: ReportOptions, names: list[str]) -> tuple[list[dict], list[dict], dict, dict]:
    """The findings with containers skipped (the report's way) and with every module forced."""
    ran: dict[str, int] = {}

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = _original(*args, **kwargs)
        ran["every" if kwargs.get("every") else "skipping"] = len(out)
        return out

    with faults.activate_all(names):
        with mock.patch.object(fnd, "force_modules", counting):
            skipping = run_report(options)
        with mock.patch.object(fnd, "force_modules", lambda *a, **k: counting(*a, **{**k, "every": True})):
            every = run_report(options)
    return _shown(skipping), _shown(every), skipping.not_checked, ran


def _shown(report: Any) -> list[dict]:
    """The findings as the report shows them, but for how often a re-walking backward ran one node:
    the most seen among the runs made, which the model run alone again raises without changing
    the finding."""
    out = [d.to_dict() for d in report.findings]
    for d in out:
        if d["kind"] == "repeated_backward":
            d["hint"] = re.sub(r"ran \d+ times", "ran N times", d["hint"])
    return out


def _cases() -> list[tuple[str, str]]:
    out = []
    for name in faults.names():
        fault = faults.get_fault(name)
        out.append((name, "seed"))
        if fault.lives_in(arch("gpt")) or fault.needs:
            out.append((name, "gpt"))
    return out


@pytest.mark.parametrize(("name", "architecture"), _cases())
def test_skipping_covered_containers_changes_no_finding(name: str, architecture: str) -> None:
    fault = faults.get_fault(name)
    # the re-walking engine is exponential in depth: run alone, the whole model takes seconds at 2 layers
    layers = 1 if name == "recursive_backward" else 2
    base = ReportOptions(batch_size=8, model=replace(arch(architecture), num_layers=layers))
    options = options_for(fault, base)
    skipped, every, not_checked, ran = _both(options, [name])
    assert skipped == every
    assert not not_checked
    assert ran.get("skipping", 0) <= ran.get("every", 0)


@pytest.mark.parametrize("impl", ["class", "functional"])
def test_skipping_covered_containers_changes_no_finding_of_a_combination(impl: str) -> None:
    base = ReportOptions(impl=impl, batch_size=8)
    groups = combos(base)
    for group in groups[:: max(1, len(groups) // 25)]:
        options = base
        for fault in group:
            options = replace(options, model=fault.model_for(options.model), **fault.report)
        skipped, every, _, _ = _both(options, [f.name for f in group])
        assert skipped == every, [f.name for f in group]


def test_a_fault_deep_in_the_model_skips_its_containers() -> None:
    """The saving is real: with every block's attention wrong alone, neither the blocks nor the
    model (the whole forward and backward again) run alone."""
    options = ReportOptions(batch_size=8, model=replace(ReportOptions().model, num_layers=3))
    _, _, _, ran = _both(options, ["attention_no_scale"])
    assert ran["skipping"] <= ran["every"] - 4  # three blocks and the model


# --- the rule, on stand-in captures ------------------------------------------------------------------
# model "" holds "a" (a container) which holds "a.x" and "a.y"; "b" is a leaf of the model.

def _tree() -> Any:
    from tests.differential.test_findings_mutants import call, capture

    return capture([call("", 0, 4), call("a", 1, 2), call("a.x", 2, 0), call("a.y", 3, 1), call("b", 4, 3)])


def _side(answers: dict[str, Any]) -> Any:
    from tests.differential.test_findings_mutants import AloneSide

    return AloneSide(answers)


ONE = np.array([1.0, 2.0])
GOOD = (ONE, [ONE], {})
PATHS = ["a.x", "a.y", "a", "b", ""]  # exit order: children before parents


@pytest.mark.parametrize("how", ["forward", "raises"])
def test_a_descendant_blamed_for_its_forward_covers_every_ancestor(how: str) -> None:
    bad = (-ONE, [ONE], {}) if how == "forward" else RuntimeError("boom")
    side = _side({"a.x": bad, "a.y": GOOD, "a": GOOD, "b": GOOD, "": GOOD})
    out = fnd.force_modules(side, _tree(), None, None, PATHS, every=False)
    assert [p for p, *_ in side.asked] == ["a.x", "a.y", "b"]  # not "a", not the model
    assert list(out) == ["a.x", "a.y", "b"]
    side = _side({"a.x": bad, "a.y": GOOD, "a": GOOD, "b": GOOD, "": GOOD})
    assert list(fnd.force_modules(side, _tree(), None, None, PATHS)) == PATHS  # every=True: all of them


@pytest.mark.parametrize("phase", ["backward", "param_grad"])
def test_a_descendant_wrong_only_in_its_gradients_covers_nothing(phase: str) -> None:
    """A container's own forward can still be wrong: it must run alone."""
    expected = _tree()
    answer = (ONE, [-ONE], {}) if phase == "backward" else (ONE, [ONE], {"a.x.w": -ONE})
    if phase == "param_grad":
        expected.params["a.x.w"] = ONE
        expected.param_grads["a.x.w"] = ONE
        expected.param_requires_grad["a.x.w"] = True
    side = _side({"a.x": answer, "a.y": GOOD, "a": (-ONE, [ONE], {}), "b": GOOD, "": GOOD})
    out = fnd.force_modules(side, expected, None, None, PATHS, every=False)
    assert list(out) == ["a.x", "a.y", "a", "b"]  # "a" runs; its wrong forward then covers the model
    assert out["a.x"].bad(phase) is not None and out["a"].bad("forward") is not None


def test_missing_modules_and_kept_paths() -> None:
    side = _side({"a.x": GOOD, "a.y": GOOD, "a": GOOD, "b": GOOD, "": GOOD})
    out = fnd.force_modules(side, _tree(), None, None, PATHS, every=False, missing={"a.y"})
    assert list(out) == ["a.x", "a.y", "b"]
    side = _side({"a.x": (-ONE, [ONE], {}), "a.y": GOOD, "a": GOOD, "b": GOOD, "": GOOD})
    out = fnd.force_modules(side, _tree(), None, None, PATHS, every=False, keep={"a"})
    assert list(out) == ["a.x", "a.y", "a", "b"]  # a graph cut at "a" is refined from its run alone
