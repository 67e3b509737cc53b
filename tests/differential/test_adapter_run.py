"""The run reaches the user's model: the factory receives the run's options, an adapter's fixed
config never silently overrides a flag, the user's tensors must have the dtype asked for, and
what the user's code prints stays out of JSON (tinyflow, tests/foreign, as the user's framework)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from differential.adapter import AdapterOptions, load_adapter, run_config, takes_options
from differential.cli import main
from differential.formats import format_html, format_json, format_text
from differential.report import ReportOptions, run_report
from scratch_model.config import TransformerConfig
from tests.foreign import adapter as tinyflow
from tests.foreign.adapter import TinyflowAdapter
from tests.foreign.engine import Value
from tests.foreign.nets import Reverser

BATCH = 4


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", "--batch-size", str(BATCH), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[AdapterOptions]:
    """A factory `tests.foreign.adapter:FACTORY` taking the run's options, which it records."""
    calls: list[AdapterOptions] = []

    def factory(options: AdapterOptions) -> TinyflowAdapter:
        calls.append(options)
        return TinyflowAdapter(Reverser(depth=options.layers, seed=options.seed))

    monkeypatch.setattr(tinyflow, "FACTORY", factory, raising=False)
    return calls


# --- the factory receives the run --------------------------------------------------------------

def test_factory_receives_layers_dtype_and_seed_from_the_cli(seen: list[AdapterOptions],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:FACTORY", "--layers", "2", "--seed", "5",
                          "--format", "json")
    assert code == 0, err
    (options,) = seen
    assert (options.layers, options.dtype, options.seed) == (2, "float64", 5)
    report = json.loads(out)
    assert report["options"]["model"]["num_layers"] == 2 and report["verdict"] == "match"
    assert report["adapter"]["modules"]["blocks.1.attn"] == "layers[1].mha"


@pytest.mark.parametrize(("factory", "wants"), [
    (lambda: None, False),
    (lambda depth=1, seed=0: None, False),  # every parameter has a default: called bare (tinyflow's make_adapter)
    (lambda options: None, True),
    (lambda options, depth=1: None, True),
    (TinyflowAdapter, True),  # a class whose __init__ needs one argument
    (print, False),  # no usable signature: called bare
])
def test_options_are_passed_only_to_factories_that_need_an_argument(factory: Any, wants: bool) -> None:
    assert takes_options(factory) is wants


def test_zero_argument_factory_still_works() -> None:
    adapter = load_adapter("tests.foreign.adapter:make_adapter", AdapterOptions(TransformerConfig(num_layers=2)))
    assert len(adapter.model.layers) == 1  # it was not given the options


# --- an adapter's fixed config and the flags ----------------------------------------------------

class FixedTwoLayers(TinyflowAdapter):
    config = TransformerConfig(num_layers=2)


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tinyflow, "FIXED", lambda: FixedTwoLayers(Reverser(depth=2)), raising=False)


def test_fixed_config_is_used_when_no_flag_says_otherwise(fixed: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:FIXED", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["options"]["model"]["num_layers"] == 2


def test_fixed_config_and_a_disagreeing_flag_is_one_error(fixed: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:FIXED", "--layers", "1")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "--layers 1 disagrees with FixedTwoLayers.config (num_layers=2)" in err


def test_fixed_config_and_any_disagreeing_architecture_flag_is_one_error(
        fixed: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:FIXED", "--mask", "causal", "--layers", "3")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--layers 3 disagrees with FixedTwoLayers.config (num_layers=2)" in err
    assert "the flags ask for mask='causal', FixedTwoLayers.config has 'none'" in err


def test_run_config_agreeing_flag_is_fine() -> None:
    assert run_config(FixedTwoLayers(Reverser(depth=2)), TransformerConfig(), 2).num_layers == 2
    assert run_config(TinyflowAdapter(Reverser()), TransformerConfig(num_layers=3), 3).num_layers == 3


def test_python_api_refuses_a_fixed_config_the_run_disagrees_with() -> None:
    with pytest.raises(ValueError, match=r"FixedTwoLayers.config disagrees .* num_layers=2 \(the run: 1\)"):
        run_report(ReportOptions(adapter=FixedTwoLayers(Reverser(depth=2)), batch_size=BATCH))


# --- the dtype asked for ------------------------------------------------------------------------

def test_float64_parameters_under_dtype_float32_is_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:make_adapter", "--dtype", "float32")
    assert code == 2 and out == ""
    assert "parameters are float64" in err and "asks for float32" in err and len(err.strip().splitlines()) == 1


class Float32Logits(TinyflowAdapter):
    """Parameters in float64 but logits handed over in float32 (a cast somewhere in the model)."""

    def forward(self, tokens: np.ndarray) -> Value:
        self.logits = super().forward(tokens)
        return self.logits

    def to_numpy(self, tensor: Value) -> np.ndarray:
        return tensor.val.astype(np.float32) if tensor is getattr(self, "logits", None) else tensor.val


def test_logits_in_another_dtype_are_refused() -> None:
    with pytest.raises(ValueError, match="logits are float32 .* asks for float64"):
        run_report(ReportOptions(adapter=Float32Logits(Reverser()), batch_size=BATCH))


# --- what the user's code prints ----------------------------------------------------------------

class Chatty(TinyflowAdapter):
    def forward(self, tokens: np.ndarray) -> Value:
        print(f"forward on {tokens.shape}")
        return super().forward(tokens)


@pytest.fixture
def chatty(monkeypatch: pytest.MonkeyPatch) -> None:
    def factory(options: AdapterOptions) -> Chatty:
        print("building a tinyflow Reverser")
        import sys

        print("a warning on stderr", file=sys.stderr)
        return Chatty(Reverser(depth=options.layers))

    monkeypatch.setattr(tinyflow, "CHATTY", factory, raising=False)


def test_printed_output_stays_out_of_json(chatty: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:CHATTY", "--format", "json")
    assert code == 0 and err == ""
    report = json.loads(out)  # the whole of stdout is the JSON document
    assert "building" not in out and "forward on" not in out
    assert report["adapter"]["printed_lines"] == {"construction": 2, "runs": 1}
    assert "printed" not in report["adapter"]


def test_printed_output_has_its_own_section_in_text(chatty: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--adapter", "tests.foreign.adapter:CHATTY")
    assert code == 0 and err == ""
    section = out[out.index("what your code printed"):]
    assert "during construction:\n    building a tinyflow Reverser\n    a warning on stderr" in section
    assert f"during runs:\n    forward on ({BATCH}, 8)" in section
    assert out.count("building a tinyflow Reverser") == 1 and out.count("forward on") == 1


def test_runs_are_quiet_through_the_python_api(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_report(ReportOptions(adapter=Chatty(Reverser()), batch_size=BATCH, steps=2))
    assert capsys.readouterr().out == ""
    assert report.adapter["printed"]["runs"].count("forward on") == 3  # the capture, then two training steps
    assert "forward on" in format_text(report) and "forward on" not in format_json(report)
    page = format_html(report)
    heading = page.index("<h2 id='printed-runs'>What your code printed during runs</h2>")
    assert page.index("forward on", heading) < page.index("<h2>Text report</h2>")


def test_header_and_summary_name_the_adapters_class() -> None:
    report = run_report(ReportOptions(adapter=TinyflowAdapter(Reverser()), batch_size=BATCH))
    text = format_text(report, width=200)
    assert text.startswith("scratchdiff: TinyflowAdapter vs torch, float64, seed 0")
    assert text.rstrip().endswith("scratchdiff: match — TinyflowAdapter agrees with torch on everything compared")
    bundled = format_text(run_report(ReportOptions(batch_size=BATCH)), width=200)
    assert bundled.startswith("scratchdiff: class vs torch") and "match — class agrees with torch" in bundled


# --- JSON names modules by path ------------------------------------------------------------------

def test_json_names_modules_by_path_with_display_names_beside() -> None:
    report = run_report(ReportOptions(adapter=TinyflowAdapter(Reverser()), batch_size=BATCH))
    data = json.loads(format_json(report))
    root = data["modules"][0]
    assert (root["module"], root["module_display"]) == ("", "(model)")
    assert all(m["module"] == m["module_display"] for m in data["modules"][1:])
    paths = [m["module"] for m in data["modules"]]
    assert set(paths) <= set(data["adapter"]["modules"])  # the same paths the adapter's name map resolves to


def test_json_findings_carry_the_path_the_display_name_and_the_users_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.foreign.faults import FAULTS

    for name in ("relu_backward_without_mask", "loss_sum_not_mean"):
        fault = next(f for f in FAULTS if f.name == name)
        monkeypatch.setattr(fault.target, fault.attribute, fault.replacement)
    data = json.loads(format_json(run_report(ReportOptions(adapter=TinyflowAdapter(Reverser()), batch_size=BATCH))))
    found = {(d["module"], d["module_display"], d["your_module"]) for d in data["findings"]}
    assert found == {("blocks.0.ffn", "blocks.0.ffn", "layers[0].mlp"), ("(loss)", "(loss)", None)}
    assert data["first_divergence"] == data["findings"][0]


# --- shapes: which differences are a reshape of the leading axes, which calls are a table ------

@pytest.mark.parametrize(("shape", "target", "same"), [
    ((32, 10), (4, 8, 10), True),  # (B*T, V) vs (B, T, V)
    ((4, 8, 10), (32, 10), True),  # the other way
    ((4, 8, 10), (4, 8, 10), False),  # identical: nothing to reshape
    ((4, 80), (4, 8, 10), False),  # (B, T*V): the last axis differs
    ((8, 4, 10), (4, 8, 10), True),  # same rows: a (T, B) layout is compared as reshaped, and then differs
    ((31, 10), (4, 8, 10), False),  # a row short
    ((10,), (1, 10), True),
])
def test_leading_reshape(shape: tuple[int, ...], target: tuple[int, ...], same: bool) -> None:
    from differential.adapter_side import _leading_reshape

    assert _leading_reshape(shape, target) is same


def _call(inputs: list[np.ndarray], output: np.ndarray, grad: np.ndarray) -> Any:
    from differential.capture import Call

    return Call("pos_embedding", 0, 0, inputs, output, [True] * len(inputs), True, grad, [grad] * len(inputs))


def test_a_call_that_adds_one_table_is_seen_as_that_table() -> None:
    from differential.adapter_side import _as_table

    rng = np.random.default_rng(0)
    x, table, grad = rng.normal(size=(3, 5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(3, 5, 4))
    seen = _as_table(_call([x], x + table, grad))
    assert seen is not None and seen.inputs == [] and seen.grad_inputs == []
    np.testing.assert_allclose(seen.output, table, rtol=0, atol=1e-15)
    np.testing.assert_allclose(seen.grad_output, grad[0] + grad[1] + grad[2], rtol=0, atol=1e-15)


def test_a_call_that_is_not_one_table_added_is_left_alone() -> None:
    from differential.adapter_side import _as_table

    rng = np.random.default_rng(1)
    x, grad = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    assert _as_table(_call([x], 2.0 * x, grad)) is None  # not input plus a table shared by the batch
    assert _as_table(_call([x, x], x + x, grad)) is None  # two inputs
