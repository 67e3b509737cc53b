"""The bundled class and functional models through the adapter protocol (`differential.bundled_adapters`),
taken the way a user's framework is (the functional one has no module objects: it reports its own
module calls and runs one module alone by path). ``--impl class`` runs the same adapter
(`implementations.make_side`); handed over as a user's adapter (``ReportOptions(adapter=...)``) it
must give the same findings, every field of them, on every fault of the catalogue, so nothing in
the report treats a user's framework differently from the bundled models.

What differs does so by design, and `BY_DESIGN` lists it; a test below shows each difference.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest

from differential import faults
from differential.adapter import Adapter, AdapterOptions
from differential.bundled_adapters import (
    ClassModelAdapter,
    FunctionalModelAdapter,
    ScratchAutogradAdapter,
    class_model,
    functional_model,
)
from differential.cli import main
from differential.faults import FAULTS
from differential.formats import format_text
from differential.report import ReportOptions, initial_weights, run_report, run_three_way
from differential.side import source_location
from scratch_model.config import arch

ADAPTERS = {"class": class_model, "functional": functional_model}
CASES = [(impl, name) for impl in ADAPTERS for name, f in FAULTS.items() if f.applies_to(impl)]

BY_DESIGN = {
    # a crash names the implementation as its user knows it: the bundled model by name, a user's
    # model by its adapter
    "crash hint": "a crash's hint says 'your model (through <adapter class>) raised'",
}


def _comparable(d: Any, impl: str) -> dict[str, Any]:
    """A finding as JSON, less what differs by design (`BY_DESIGN`)."""
    out = d.to_dict()
    out["hint"] = re.sub(r"^your model \(through [\w.]+\) raised", f"the {impl} implementation raised", out["hint"])
    return out


def _run(impl: str, name: str | None = None, adapter: Adapter | None = None, **options: Any):
    """The report on the bundled ``impl`` (``--impl``) and on its adapter handed over as a user's
    (``adapter``, or the bundled one), with fault ``name`` switched on."""
    model = FAULTS[name].model_for(options.pop("model", ReportOptions().model)) if name else \
        options.pop("model", ReportOptions().model)
    extra = FAULTS[name].report if name else {}
    dtype = options.get("dtype", "float64")
    with warnings.catch_warnings(), faults.activate(name):
        warnings.simplefilter("ignore", RuntimeWarning)
        direct = run_report(ReportOptions(impl=impl, batch_size=8, model=model, **extra, **options))
        adapter = adapter or ADAPTERS[impl](AdapterOptions(model, dtype))
        adapted = run_report(ReportOptions(adapter=adapter, batch_size=8, model=model, **extra, **options))
    return direct, adapted


def test_every_bundled_fault_has_a_case() -> None:
    assert sum(impl == "class" for impl, _ in CASES) >= 30 and sum(impl == "functional" for impl, _ in CASES) >= 15


@pytest.mark.parametrize(("impl", "name"), CASES, ids=[f"{i}-{n}" for i, n in CASES])
def test_every_fault_gives_the_same_findings_on_both_paths(impl: str, name: str) -> None:
    direct, adapted = _run(impl, name)
    assert direct.verdict == "diverged"
    assert [_comparable(d, impl) for d in adapted.findings] == [_comparable(d, impl) for d in direct.findings]


@pytest.mark.parametrize("impl", sorted(ADAPTERS))
@pytest.mark.parametrize("preset", ["seed", "gpt"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_clean_bundled_model_matches_through_its_adapter(impl: str, preset: str, layers: int, dtype: str) -> None:
    model = arch(preset, num_layers=layers)
    report = run_report(ReportOptions(adapter=ADAPTERS[impl](AdapterOptions(model, dtype)), batch_size=8,
                                      model=model, dtype=dtype, steps=2))
    assert report.verdict == "match", [(d.module, d.phase, d.kind) for d in report.findings]
    assert report.not_checked == {} and report.adapter["unchecked_phases"] == []
    assert report.adapter["unmatched_reference_modules"] == []
    assert report.adapter["gradients"] == "modules and parameters"
    modules = {m["module"] for m in report.modules}
    assert f"blocks.{layers - 1}.ffn.fc2" in modules and f"blocks.{layers}" not in modules


# --- what differs by design --------------------------------------------------------------------

@pytest.mark.parametrize("impl", sorted(ADAPTERS))
def test_a_crash_names_the_implementation_as_its_user_knows_it(impl: str) -> None:
    direct, adapted = _run(impl, "matmul_backward_T")
    assert direct.findings[0].hint.startswith(f"the {impl} implementation raised")
    cls = type(ADAPTERS[impl](AdapterOptions(ReportOptions().model, "float64")))
    assert adapted.findings[0].hint.startswith(f"your model (through {cls.__module__}.{cls.__qualname__}) raised")


# --- what an adapter can say about itself --------------------------------------------------------

@pytest.mark.parametrize("impl", sorted(ADAPTERS))
def test_the_loss_source_is_the_loss_function_the_adapter_names(impl: str) -> None:
    direct, adapted = _run(impl, "loss_sum_not_mean")
    assert direct.findings[0].scratch_source.startswith("differential/faults/training.py:")  # the broken loss
    assert adapted.findings[0].scratch_source == direct.findings[0].scratch_source

    class NoLossFunction(type(ADAPTERS[impl](AdapterOptions()))):
        loss_function = Adapter.loss_function

    _, bare = _run(impl, "loss_sum_not_mean", adapter=NoLossFunction(AdapterOptions()))
    assert bare.findings[0].scratch_source == source_location(ScratchAutogradAdapter.loss_and_backward)


@pytest.mark.parametrize("impl", sorted(ADAPTERS))
def test_a_float32_run_checks_ops_on_a_float64_twin(impl: str) -> None:
    # the seeded float64 weights on both (a user's float32 model would share its own, rounded to float32)
    weights = initial_weights(ReportOptions().model, 0)
    wide, wide_adapted = _run(impl, "relu_backward_no_mask")
    narrow, narrow_adapted = _run(impl, "relu_backward_no_mask", dtype="float32", weights=weights)
    op = "relu_backward_passes_all"
    assert wide.findings[0].op["op"] == wide_adapted.findings[0].op["op"] == op
    assert narrow.findings[0].op["op"] == narrow_adapted.findings[0].op["op"] == op
    assert [_comparable(d, impl) for d in narrow_adapted.findings] == [_comparable(d, impl) for d in narrow.findings]
    # an adapter the report cannot build again (an instance made without its factory) checks no op in float32
    unknown = type(ADAPTERS[impl](AdapterOptions()))(AdapterOptions(ReportOptions().model, "float32"))
    _, alone = _run(impl, "relu_backward_no_mask", adapter=unknown, dtype="float32", weights=weights)
    assert alone.findings[0].op is None
    assert [(d.module, d.phase, d.kind) for d in alone.findings] == \
        [(d.module, d.phase, d.kind) for d in narrow.findings]


# --- the engine hooks are what the adapter path sees the engine's insides through ---------------

class _NoEngineHooks(ClassModelAdapter):
    backward_calls = Adapter.backward_calls
    check_ops = Adapter.check_ops
    watch_tensors = Adapter.watch_tensors


@pytest.mark.parametrize(("name", "lost"), [
    ("recursive_backward", "the repeated backward (gradients are right)"),
    ("sqrt_backward_no_half", "the op named inside the module"),
    ("value_from_data", "where the chain stops"),
])
def test_without_the_engine_hooks_their_detail_is_lost(name: str, lost: str) -> None:
    direct, adapted = _run("class", name)
    _, bare = _run("class", name, adapter=_NoEngineHooks(AdapterOptions()))
    assert [_comparable(d, "class") for d in adapted.findings] == [_comparable(d, "class") for d in direct.findings]
    first = direct.findings[0]
    if name == "recursive_backward":
        assert first.kind == "repeated_backward" and bare.verdict == "match", lost
    elif name == "sqrt_backward_no_half":
        assert first.op is not None and bare.findings[0].op is None, lost
        assert (bare.findings[0].module, bare.findings[0].phase) == (first.module, first.phase)
    else:
        assert "the chain stops at a tensor made by" in first.hint, lost
        assert "chain stops" not in bare.findings[0].hint
        assert (bare.findings[0].module, bare.findings[0].kind) == (first.module, first.kind)


# --- a framework without module objects: the functional model -----------------------------------

def test_the_functional_adapter_records_every_module_and_no_object() -> None:
    adapter = functional_model(AdapterOptions(arch("gpt", num_layers=2)))
    assert adapter.model is None  # nothing to walk: it reports its calls itself
    report = run_report(ReportOptions(adapter=adapter, batch_size=4, model=arch("gpt", num_layers=2)))
    reference = run_report(ReportOptions(impl="functional", batch_size=4, model=arch("gpt", num_layers=2)))
    assert [m["module"] for m in report.modules] == [m["module"] for m in reference.modules]
    assert report.adapter["called_through"] == {}  # no class was wrapped


def test_an_unmapped_path_is_passed_through_unrecorded() -> None:
    adapter = functional_model(AdapterOptions())
    adapter.name_map = {**adapter.name_map, "blocks.0.ffn": None}
    report = run_report(ReportOptions(adapter=adapter, batch_size=4))
    assert report.verdict == "match"
    assert report.adapter["unmatched_reference_modules"] == ["blocks.0.ffn"]
    assert "blocks.0.ffn" not in {m["module"] for m in report.modules}
    text = " ".join(format_text(report, width=200).split())  # the verdict claims only what was compared
    assert "everything compared" not in text
    assert "Not checked: 1 reference module with no counterpart in your model" in text


def test_reporting_calls_without_call_module_says_what_is_missing() -> None:
    class NoCallModule(FunctionalModelAdapter):
        call_module = Adapter.call_module

    with warnings.catch_warnings(), faults.activate("functional_attention_no_scale"):
        warnings.simplefilter("ignore", RuntimeWarning)
        report = run_report(ReportOptions(adapter=NoCallModule(AdapterOptions()), batch_size=4))
    assert report.findings[0].module == "blocks.0.attn"
    assert "call_module()" in report.adapter["why_unchecked"]["findings"]
    assert "call_module()" in report.not_checked["modules alone"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_functional_adapter_through_the_cli(dtype: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--adapter", "differential.bundled_adapters:functional_model", "--layers", "2",
                 "--dtype", dtype, "--batch-size", "4", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["verdict"] == "match"
    assert out["options"]["model"]["num_layers"] == 2 and out["options"]["dtype"] == dtype
    assert out["adapter"]["adapter"] == "differential.bundled_adapters.FunctionalModelAdapter"
    assert "blocks.1.attn.out_proj" in {m["module"] for m in out["modules"]}


def test_the_class_adapter_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--adapter", "differential.bundled_adapters:class_model", "--layers", "2", "-q"]) == 0
    assert capsys.readouterr().out.startswith("scratchdiff: match")


def test_three_way_through_the_functional_adapter() -> None:
    clean = run_three_way(ReportOptions(adapter=functional_model(AdapterOptions()), batch_size=4), "class")
    tw = clean.three_way
    assert [tw[k]["verdict"] for k in ("adapter_vs_torch", "class_vs_torch", "adapter_vs_class")] == ["match"] * 3
    with warnings.catch_warnings(), faults.activate("functional_attention_no_scale"):
        warnings.simplefilter("ignore", RuntimeWarning)
        broken = run_three_way(ReportOptions(adapter=functional_model(AdapterOptions()), batch_size=4), "class")
    tw = broken.three_way
    assert tw["agrees_with_torch"] == ["class"]
    between = tw["adapter_vs_class"]["first_divergence"]
    assert (between["module"], between["phase"]) == ("blocks.0.attn", "forward")
    assert between["scratch_source"].startswith("differential/faults/functional_model.py:")  # the broken attention
    assert tw["port_from"] == between["reference_source"] and tw["port_from"].startswith("scratch_model/layers.py:")


def test_three_way_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--adapter", "differential.bundled_adapters:functional_model", "--three-way",
                 "--batch-size", "4", "-q"])
    assert code == 0, capsys.readouterr()


MODULE_FAULTS = [name for name, f in FAULTS.items() if f.applies_to("functional")
                 and f.phase in ("forward", "backward", "param_grad") and not f.module.startswith("(")]


def test_there_are_functional_module_faults_to_isolate() -> None:
    assert len(MODULE_FAULTS) >= 8


@pytest.mark.parametrize("name", [None, *MODULE_FAULTS])
def test_isolated_mode_through_the_functional_adapter(name: str | None) -> None:
    direct, adapted = _run("functional", name, isolated=True)
    assert "modules alone" not in adapted.not_checked
    assert [_comparable(d, "functional") for d in adapted.isolated] == \
        [_comparable(d, "functional") for d in direct.isolated]
    if name is None:
        assert adapted.verdict == "match" and adapted.isolated == []
    else:
        assert (FAULTS[name].module, FAULTS[name].phase) in {(d.module, d.phase) for d in adapted.isolated}


def test_isolated_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--adapter", "differential.bundled_adapters:functional_model", "--isolated",
                 "--layers", "2", "--batch-size", "4", "-q"])
    assert code == 0, capsys.readouterr()
