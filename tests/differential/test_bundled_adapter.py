"""The bundled class model through the adapter protocol (`differential.bundled_adapters`): the same
model the report reads directly, taken the way a user's framework is. Every fault of the catalogue
must give the same findings on both paths, so whatever the adapter path loses shows here.

Two faults need what only the bundled side can see inside the autograd, and are listed with why.
"""

from __future__ import annotations

import warnings

import pytest

from differential import faults
from differential.adapter import AdapterOptions
from differential.bundled_adapters import class_model
from differential.cli import main
from differential.faults import FAULTS
from differential.report import ReportOptions, run_report
from scratch_model.config import arch

# fault -> what the adapter path cannot see, and so reports differently
ONLY_DIRECT = {
    # how often each node's backward runs is counted inside the scratch autograd; an adapter's
    # backward is one opaque call, and the gradients it leaves are right
    "recursive_backward": "backward calls per node are counted inside the autograd",
    # the op whose backward is missing is found by a finite-difference check of the scratch ops, which
    # merges the head's cut and the attention's into one finding; through the adapter they stay two
    "transpose_drops_grad": "the op check that merges cuts of one op runs on the scratch autograd only",
}
CLASS_FAULTS = [name for name, f in FAULTS.items() if f.applies_to("class")]


def _findings(report):
    return [(d.module, d.phase, d.kind) for d in report.findings]


def _both(name: str | None, **options):
    model = FAULTS[name].model_for(ReportOptions().model) if name else options.pop("model", ReportOptions().model)
    extra = FAULTS[name].report if name else {}
    with warnings.catch_warnings(), faults.activate(name):
        warnings.simplefilter("ignore", RuntimeWarning)
        direct = run_report(ReportOptions(impl="class", batch_size=8, model=model, **extra, **options))
        adapted = run_report(ReportOptions(adapter=class_model(AdapterOptions(model, options.get("dtype", "float64"))),
                                           batch_size=8, model=model, **extra, **options))
    return direct, adapted


@pytest.mark.parametrize("preset", ["seed", "gpt"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_clean_class_model_matches_through_the_adapter(preset: str, dtype: str) -> None:
    _, adapted = _both(None, model=arch(preset, num_layers=2), dtype=dtype, steps=2)
    assert adapted.verdict == "match", _findings(adapted)
    assert adapted.not_checked == {} and adapted.adapter["unchecked_phases"] == []
    assert adapted.adapter["unmatched_reference_modules"] == []


def test_the_adapter_loads_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--adapter", "differential.bundled_adapters:class_model", "--layers", "2", "-q"]) == 0
    assert capsys.readouterr().out.startswith("scratchdiff: match")


@pytest.mark.parametrize("name", [n for n in CLASS_FAULTS if n not in ONLY_DIRECT])
def test_every_fault_gives_the_same_findings_on_both_paths(name: str) -> None:
    direct, adapted = _both(name)
    assert direct.verdict == "diverged"
    assert _findings(adapted) == _findings(direct), [d.hint for d in adapted.findings]


@pytest.mark.parametrize("name", sorted(ONLY_DIRECT))
def test_what_only_the_direct_path_sees(name: str) -> None:
    direct, adapted = _both(name)
    fault = FAULTS[name]
    assert (fault.module, fault.phase, fault.kind) in _findings(direct)
    if name == "transpose_drops_grad":  # both cuts found, as two findings
        assert _findings(adapted)[0] == _findings(direct)[0] and len(adapted.findings) == 2
    else:  # gradients are right, the repetition is invisible
        assert adapted.verdict == "match"
