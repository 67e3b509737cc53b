"""The report on a model this project did not write: tinyflow (tests/foreign), a second mini
framework with its own Tensor API, names and layouts, run through its adapter.

Its clean model matches the torch reference; each injected fault (tests/foreign/faults.py) is
localized to the right module, in the reference's names and in tinyflow's own, and phase; a bad
name map fails with one error listing every problem; the class patching that records calls is
always undone. Imports `tests.foreign` from the project root (`python -m pytest`, as CI runs it).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from differential import diagnose
from differential.adapter import Adapter, load_adapter
from differential.adapter_side import recording
from differential.capture import CallLog
from differential.cli import main
from differential.report import Report, ReportOptions, run_report
from tests.foreign import nets
from tests.foreign.adapter import TinyflowAdapter, make_adapter
from tests.foreign.engine import Value
from tests.foreign.faults import FAULTS, Fault

BATCH = 8


def _report(adapter: Adapter | None = None, **options: Any) -> Report:
    return run_report(ReportOptions(adapter=adapter or make_adapter(), batch_size=BATCH, **options))


def _first(report: Report) -> dict[str, Any]:
    first = report.to_dict()["first_divergence"]
    assert report.verdict == "diverged" and first is not None, "the broken model was reported as matching"
    return first


@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def apply(fault: Fault) -> None:
        monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield apply


# --- clean and faulty tinyflow, with every gradient -------------------------------------------

def test_clean_foreign_model_matches_torch() -> None:
    report = _report(steps=2)
    assert report.verdict == "match", report.first_divergence
    assert all(m[phase]["status"] != "diverged" for m in report.modules for phase in ("forward", "backward"))
    assert report.training["status"] == "match"
    adapter = report.adapter
    assert adapter["gradients"] == "modules and parameters" and adapter["unchecked_phases"] == []
    assert "out.params[0]" in adapter["transposed"] and "out.params[1]" not in adapter["transposed"]
    assert len(adapter["transposed"]) == 7  # wq wk wv wo up down out
    # both ways of calling a layer are recorded: Block calls its MLP's forward directly
    assert adapter["called_through"]["layers[0].mlp"] == "forward"
    assert adapter["called_through"]["layers[0].mha"] == "__call__"
    assert adapter["called_through"]["out"] == "__call__"  # Dense has __call__ only


def test_reference_gets_the_foreign_weights_transposed() -> None:
    adapter = make_adapter(seed=3)
    report = _report(adapter)
    assert report.verdict == "match"
    w = adapter.model.layers[0].mha.wq.params[0].val  # (in, out)
    from differential.adapter_side import AdapterSide

    side = AdapterSide(adapter, ReportOptions().model, "float64")
    np.testing.assert_array_equal(side.params()["blocks.0.attn.q_proj.weight"], w.T)


def test_two_layers_match() -> None:
    from scratch_model.config import TransformerConfig

    report = _report(make_adapter(depth=2), model=TransformerConfig(num_layers=2))
    assert report.verdict == "match", report.first_divergence
    assert report.adapter["modules"]["blocks.1.ffn.fc2"] == "layers[1].mlp.down"


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_foreign_fault_is_localized(fault: Fault, inject: Any) -> None:
    inject(fault)
    report = _report()
    first = _first(report)
    assert (first["module"], first["phase"]) == (fault.module, fault.phase), first["hint"]
    if fault.kind is not None:
        assert first["kind"] == fault.kind, first["hint"]
    if fault.theirs is not None:
        assert report.adapter["modules"][fault.module] == fault.theirs
    assert "tests/foreign/" in first["scratch_source"], first["scratch_source"]  # points into tinyflow


# --- a framework that keeps gradients on parameters only --------------------------------------

class ParamsOnly(TinyflowAdapter):
    """tinyflow seen as a framework with no identity op, no gradients on intermediate tensors and no
    optimizer hook (torch without retain_grad, say)."""

    make_optimizer = Adapter.make_optimizer

    def identity(self, tensor: Value) -> None:
        return None

    def grad_of(self, tensor: Value) -> np.ndarray | None:
        params = self.named_parameters().values()
        return tensor.g if any(tensor is p for p in params) else None


def test_params_only_clean_matches_and_says_what_it_could_not_check() -> None:
    report = _report(ParamsOnly(nets.Reverser()))
    assert report.verdict == "match"
    assert report.adapter["unchecked_phases"] == ["backward", "optimizer", "training", "findings"]
    assert report.adapter["why_unchecked"]["findings"].startswith("no gradients of module inputs")
    assert report.adapter["gradients"] == "parameters only"
    assert {m["backward"]["status"] for m in report.modules} == {"not_checked"}
    assert report.weight_update == []
    from differential.formats import format_text

    text = format_text(report)
    assert "not checked: backward" in text and "every phase that could be checked matches" in text


@pytest.mark.parametrize(("name", "module", "since"), [
    ("relu_backward_without_mask", "blocks.0.ffn.fc1", "blocks.0.ffn.fc2"),  # first bad parameter gradient
    ("dense_weight_grad_one_sample", "head", None),
    ("embedding_grad_overwrites", "embedding", "pos_embedding"),
])
def test_params_only_localizes_from_parameter_gradients(name: str, module: str, since: str | None,
                                                        inject: Any) -> None:
    inject(next(f for f in FAULTS if f.name == name))
    first = _first(_report(ParamsOnly(nets.Reverser())))
    assert (first["module"], first["phase"]) == (module, "param_grad"), first["hint"]
    assert "Only parameter gradients could be compared" in first["hint"]
    if since is not None:
        assert f"since {since}" in first["hint"]


# --- strict names --------------------------------------------------------------------------------

class BadNames(TinyflowAdapter):
    name_map = {k: v for k, v in TinyflowAdapter.name_map.items() if k != "layers[{i}].norm_b"}  # forgotten
    transposed = TinyflowAdapter.transposed - {"out.params[0]"}  # head weight left (in, out)

    def named_parameters(self) -> dict[str, Value]:
        named = super().named_parameters()
        del named["pos.params[0]"]  # a parameter the adapter does not list
        return named


def test_bad_name_map_lists_every_problem_in_one_error() -> None:
    with pytest.raises(ValueError) as info:
        _report(BadNames(nets.Reverser()))
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "cannot compare BadNames with the reference: 7 problems"
    expected = [
        "unmapped module: layers[0].norm_b (Norm) has no name_map entry",
        "unknown reference parameter: 'layers[0].norm_b.params[0]' maps to 'blocks.0.norm_b.params[0]'",
        "unknown reference parameter: 'layers[0].norm_b.params[1]' maps to 'blocks.0.norm_b.params[1]'",
        "shape mismatch: 'out.params[0]' -> 'head.weight': the reference has (10, 32), yours is (32, 10)",
        "missing: the reference parameter 'pos_embedding.weight' (shape (8, 32))",
        "missing: the reference parameter 'blocks.0.ln2.weight' (shape (32,))",
        "missing: the reference parameter 'blocks.0.ln2.bias' (shape (32,))",
    ]
    for words in expected:
        assert sum(words in line for line in lines) == 1, (words, message)


def test_bad_name_map_target_and_transpose_entries_are_problems_too() -> None:
    class Typos(TinyflowAdapter):
        name_map = {**TinyflowAdapter.name_map, "layers[{i}].mha": "blocks.{i}.atn", "out": "head.{j}"}
        transposed = TinyflowAdapter.transposed | {"layers[{i}].norm_a.params[0]", "nowhere.params[0]"}

    with pytest.raises(ValueError) as info:
        _report(Typos(nets.Reverser()))
    message = str(info.value)
    assert "unknown reference module: layers[0].mha maps to 'blocks.0.atn'" in message
    assert "bad name-map entry: 'out' -> 'head.{j}'" in message
    assert "cannot transpose: 'layers[0].norm_a.params[0]' is declared transposed but has shape (32,)" in message
    assert "transposed entry 'nowhere.params[0]' matches none of your parameters" in message


# --- recording patches classes and always restores them ----------------------------------------

def _class_attributes() -> dict[tuple[type, str], Any]:
    classes = [nets.Dense, nets.Layer, nets.TokenTable, nets.LearnedPositions, nets.Norm, nets.SelfAttention,
               nets.MLP, nets.Block, nets.Reverser]
    return {(c, a): vars(c).get(a) for c in classes for a in ("__call__", "forward")}


def test_class_patches_are_restored_when_the_forward_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: nets.MLP, x: Value) -> Value:
        raise RuntimeError("boom")

    monkeypatch.setattr(nets.MLP, "forward", broken)
    before = _class_attributes()
    first = _first(_report())
    assert (first["module"], first["kind"]) == ("blocks.0.ffn", diagnose.CRASH)
    assert _class_attributes() == before
    assert nets.MLP.forward is broken


def test_recording_patches_the_class_once_and_never_the_instance() -> None:
    class Twice:
        def __call__(self, x: Value) -> Value:
            return x.times(2.0)

    a, b, quiet = Twice(), Twice(), Twice()
    log = CallLog(is_tensor=lambda x: isinstance(x, Value), alias=lambda x: x, requires_grad=lambda x: True)
    called: dict[str, str] = {}
    with recording({"a": a, "b": b}, log, called):
        assert "__call__" not in vars(a)
        wrapped = vars(Twice)["__call__"]
        b(a(Value(1.0)))
        quiet(Value(1.0))  # not listed: not recorded
        with pytest.raises(TypeError):
            a()  # raises inside a recorded call
        assert vars(Twice)["__call__"] is wrapped
    assert vars(Twice)["__call__"] is not wrapped and Twice()(Value(1.0)).val == 2.0
    assert log.entries[:2] == ["a", "b"] and called == {"a": "__call__", "b": "__call__"}


# --- command line ------------------------------------------------------------------------------

def test_cli_runs_the_foreign_model(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--adapter", "tests.foreign.adapter:make_adapter", "--batch-size", str(BATCH),
                 "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["verdict"] == "match"
    assert report["options"]["impl"] == "adapter"
    assert report["options"]["adapter"] == "tests.foreign.adapter.TinyflowAdapter"
    assert report["adapter"]["unchecked_phases"] == []


@pytest.mark.parametrize(("spec", "words"), [
    ("no_colon", "expects module:object"),
    ("tests.foreign.adapter:missing", "has no 'missing'"),
    ("no_such_module_here:x", "cannot import 'no_such_module_here'"),
    ("tests.foreign.nets:Reverser", "not a differential.adapter.Adapter"),
])
def test_cli_bad_adapter_spec_is_one_line_exit_2(spec: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--adapter", spec]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_load_adapter_takes_an_instance_or_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.foreign import adapter as module

    assert isinstance(load_adapter("tests.foreign.adapter:make_adapter"), TinyflowAdapter)
    instance = make_adapter()
    monkeypatch.setattr(module, "INSTANCE", instance, raising=False)
    assert load_adapter("tests.foreign.adapter:INSTANCE") is instance
