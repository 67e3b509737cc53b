"""Findings: every root cause in one run, a verdict that never contradicts the tables, and kinds
and hints that say only what was checked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from differential import diagnose as K
from differential import faults
from differential.adapter_side import AdapterSide
from differential.capture import Capture, nearest_recorded, parent_call
from differential.compare import compare
from differential.report import ReportOptions, initial_weights, run_report
from differential.sides import TorchSide
from differential.zoo import combos, options_for, report_with_fault, run_combos
from scratch_model.config import TransformerConfig

BATCH = 8


def _found(report: Any) -> list[tuple[str, str, str]]:
    return [(d.module, d.phase, d.kind) for d in report.findings]


# --- every catalogue fault, alone and in combination -------------------------------------------

@pytest.mark.parametrize("name", faults.names())
def test_every_expected_finding_of_a_fault_is_listed(name: str) -> None:
    fault = faults.get_fault(name)
    report = report_with_fault(name, options_for(fault, ReportOptions()))
    assert report.first_divergence is report.findings[0]
    assert (report.first_divergence.module, report.first_divergence.phase, report.first_divergence.kind) == \
        fault.expected()[0]
    for expected in fault.expected():
        assert expected in _found(report), (expected, _found(report))


@pytest.mark.parametrize("impl", ["class", "functional"])
def test_every_combo_of_faults_is_found(impl: str) -> None:
    rows = run_combos(ReportOptions(impl=impl))
    assert len(rows) >= (700 if impl == "class" else 50)  # pairs and triples, not an empty grid
    assert {len(r.faults) for r in rows} == {2, 3}
    missed = [(r.faults, [e for e, f in zip(r.expected, r.found, strict=True) if not f]) for r in rows
              if not r.all_found]
    assert not missed, missed[:5]


def test_combos_keep_faults_apart() -> None:
    for group in combos(ReportOptions()):
        phases = [f"{f.module}-{f.phase}" if f.module == "(loss)" else f.phase for f in group]
        assert len(set(phases)) == len(group)
        assert not any(f.module == "(data)" or f.kind == K.CRASH for f in group)


# --- the three bugs of the real model, in one run -----------------------------------------------

def test_three_independent_bugs_are_all_named() -> None:
    names = ["attention_mostly_outside_graph", "positional_frozen_and_unlisted", "broadcast_grad_not_summed"]
    with faults.activate_all(names):
        report = run_report(ReportOptions(batch_size=BATCH))
    found = _found(report)
    assert ("blocks.0.attn", "backward", K.MOSTLY_DETACHED) in found
    assert ("pos_embedding", "param_grad", K.GRAPH_BREAK) in found
    assert ("pos_embedding", "optimizer", K.NOT_UPDATED) in found
    assert ("blocks.0.ln2", "backward", K.VALUE) in found
    assert report.verdict == "diverged" and report.first_divergence is report.findings[0]


def test_first_only_gives_one_finding() -> None:
    names = ["attention_no_scale", "optimizer_misses_ffn"]
    with faults.activate_all(names):
        every = run_report(ReportOptions(batch_size=BATCH))
        first = run_report(ReportOptions(batch_size=BATCH, findings=False))
    assert _found(every)[:1] == _found(first) == [("blocks.0.attn", "forward", K.VALUE)]
    assert ("blocks.0.ffn.fc1", "optimizer", K.NOT_UPDATED) in _found(every)


# --- hints that state only what was checked -------------------------------------------------------

def test_not_updated_hint_says_whether_the_parameter_had_a_gradient() -> None:
    with faults.activate("positional_frozen_and_unlisted"):
        report = run_report(ReportOptions(batch_size=BATCH))
    d = next(d for d in report.findings if d.phase == "optimizer")
    assert "pos_embedding.weight has no gradient of its own either" in d.hint
    assert "although its gradient is right" not in d.hint
    with faults.activate("optimizer_misses_ffn"):
        report = run_report(ReportOptions(batch_size=BATCH))
    d = report.findings[0]
    assert "blocks.0.ffn.fc1.weight's own gradient matches the reference" in d.hint
    assert d.module == "blocks.0.ffn.fc1" and "fc1.weight, blocks.0.ffn.fc1.bias" in d.hint
    assert [(f.module, f.also_in) for f in report.findings] == [("blocks.0.ffn.fc1", ["blocks.0.ffn.fc2"])]


def test_loss_backward_is_its_own_phase() -> None:
    with faults.activate("loss_backward_no_mean"):
        report = run_report(ReportOptions(batch_size=BATCH))
    d = report.first_divergence
    assert (d.module, d.phase, d.kind, d.tensor) == ("(loss)", "backward", K.SCALE, "grad_logits")
    assert "the loss value matches" in d.hint and f"{BATCH * 8}" in d.hint  # N = batch x sequence length
    assert d.scratch_source.startswith("differential/faults/training.py:")
    assert report.loss["match"] and report.loss["grad_match"] is False


def test_a_sum_instead_of_mean_is_one_finding_not_two() -> None:
    with faults.activate("loss_sum_not_mean"):
        report = run_report(ReportOptions(batch_size=BATCH, dtype="float32"))
    assert _found(report) == [("(loss)", "training", K.LOSS)]


def test_container_hint_claims_children_only_when_checked() -> None:
    with faults.activate("residual_from_data"):
        report = run_report(ReportOptions(batch_size=BATCH))
    assert "every child" not in report.first_divergence.hint  # a graph break: no claim made
    with faults.activate("head_reshape_from_data"):
        report = run_report(ReportOptions(batch_size=BATCH))
    assert report.findings[0].module == "(model)" and report.findings[0].also_in == []


def test_same_code_in_several_modules_is_one_finding() -> None:
    with faults.activate("sqrt_backward_no_half"):
        report = run_report(ReportOptions(batch_size=BATCH))
    assert len(report.findings) == 1
    d = report.findings[0]
    assert (d.module, d.also_in) == ("blocks.0.ln2", ["blocks.0.ln1"])
    assert d.op is not None and d.op["op"] == "sqrt_backward_missing_half"


def test_same_code_is_one_finding_also_where_the_first_points_at_one_line_of_it() -> None:
    """The joint run's description of a container points at the line that builds a child's input;
    the same attention code failing in the next block, found by teacher forcing, is described by
    the function: one root cause, one finding, the other block under also_in."""
    from differential.findings import root_cause

    model = replace(ReportOptions().model, num_layers=3)
    with faults.activate("attention_no_scale"):
        report = run_report(ReportOptions(batch_size=BATCH, model=model))
    assert len(report.findings) == 1
    d = report.findings[0]
    assert (d.module, d.also_in) == ("blocks.0.attn", ["blocks.1.attn", "blocks.2.attn"])
    assert "(the input it builds for blocks.0.attn.out_proj)" in d.hint
    fault_file = "differential/faults/class_model.py"
    assert d.scratch_source.startswith(fault_file) and d.code.startswith(fault_file)
    assert d.scratch_source != d.code  # one line inside the function, and the function
    assert "code" not in d.to_dict()
    assert root_cause(replace(d, code=None)) != root_cause(d)


# --- tables agree with the verdict -------------------------------------------------------------

def _no_rows(report: Any) -> list[str]:
    out = [f"flow {r['parameter']} {k}" for r in report.gradient_flow
           for k in ("has_grad", "nonzero", "matches_reference") if not r[k]]
    return out + [f"update {r['parameter']} {k}" for r in report.weight_update
                  for k in ("changed_after_step", "updated_by_optimizer", "update_matches_reference") if not r[k]]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
def test_clean_report_shows_no_no(dtype: str, layers: int) -> None:
    report = run_report(ReportOptions(dtype=dtype, batch_size=BATCH, model=TransformerConfig(num_layers=layers)))
    assert report.verdict == "match" and report.findings == []
    assert _no_rows(report) == []


def test_a_no_row_comes_with_a_finding() -> None:
    with faults.activate("positional_frozen_and_unlisted"):
        report = run_report(ReportOptions(batch_size=BATCH))
    rows = {r["parameter"]: r for r in report.gradient_flow}
    assert rows["pos_embedding.weight"]["has_grad"] is False
    assert rows["blocks.0.ln1.weight"]["has_grad"] is True
    updates = {r["parameter"]: r for r in report.weight_update}
    assert updates["pos_embedding.weight"]["updated_by_optimizer"] is False
    assert {d.module for d in report.findings} == {"pos_embedding"}


# --- soundness: a corrupted capture is never a match --------------------------------------------

_CORRUPTIONS = ["scale", "sign", "noise", "zero", "missing", "one_element", "nan"]


def _slots(capture: Capture) -> list[tuple[str, Any, Any, float]]:
    """(description, container, key, round-off scale) for every compared tensor of a capture; the
    scale is the one the report judges that tensor with (a gradient: its module's output gradient)."""
    def scale(path: str) -> float:
        call = capture.calls.get(nearest_recorded(path, capture.calls))
        g = None if call is None else call.grad_output
        return 0.0 if g is None else float(np.max(np.abs(g)))

    out: list[tuple[str, Any, Any, float]] = []
    for path, call in capture.calls.items():
        out += [(f"{path} input[{i}]", call.inputs, i, 0.0) for i in range(len(call.inputs))]
        out.append((f"{path} output", call, "output", 0.0))
        if call.grad_output is not None:
            out.append((f"{path} grad_output", call, "grad_output", 0.0))
        out += [(f"{path} grad_input[{i}]", call.grad_inputs, i, scale(path)) for i, g in enumerate(call.grad_inputs)
                if g is not None]
    out += [(f"param_grad {n}", capture.param_grads, n, scale(n.rpartition(".")[0]))
            for n, g in capture.param_grads.items() if g is not None]
    out += [("logits_grad", capture, "logits_grad", 0.0)]
    return out


def _get(container: Any, key: Any) -> Any:
    return getattr(container, key) if isinstance(key, str) and not isinstance(container, dict) else container[key]


def _set(container: Any, key: Any, value: Any) -> None:
    if isinstance(key, str) and not isinstance(container, dict):
        setattr(container, key, value)
    else:
        container[key] = value


def _corrupt(array: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray | None:
    a = np.array(array, dtype=np.float64)
    size = float(np.max(np.abs(a), initial=0.0)) or 1.0
    if how == "missing":
        return None
    if how == "scale":
        return a * 1.5
    if how == "sign":
        return -a
    if how == "noise":
        return a + 1e-3 * size * rng.standard_normal(a.shape)
    if how == "zero":
        return np.zeros_like(a)
    flat = a.reshape(-1).copy()
    i = int(rng.integers(flat.size))
    flat[i] = np.nan if how == "nan" else flat[i] + size
    return flat.reshape(a.shape)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(side=st.sampled_from(["scratch", "torch"]), how=st.sampled_from(_CORRUPTIONS), data=st.data())
def test_a_corrupted_capture_is_never_a_match(side: str, how: str, data: st.DataObject) -> None:
    owner = AdapterSide if side == "scratch" else TorchSide  # the scratch model is read through its adapter
    original = owner.capture
    done: list[str] = []

    def corrupted(self: Any, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        capture = original(self, tokens, targets)
        if done or (owner is TorchSide and self.dtype != "float64"):
            return capture
        slots = _slots(capture)
        name, container, key, scale = slots[data.draw(st.integers(0, len(slots) - 1), label="slot")]
        before = _get(container, key)
        after = _corrupt(before, how, np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed")))
        assume(not compare(after, before, None, scale).match)  # invisible to the tolerance model: no corruption
        _set(container, key, after)
        done.append(name)
        return capture

    with mock.patch.object(owner, "capture", corrupted):
        report = run_report(ReportOptions(batch_size=4))
    assert done, "nothing was corrupted"
    assert report.verdict == "diverged", f"{how} of {side} {done[0]} was reported as a match"
    assert report.findings and report.first_divergence is report.findings[0]


# --- the module tree --------------------------------------------------------------------------------

def test_children_are_found_through_unrecorded_lists() -> None:
    recorded = {"", "embedding", "blocks.0", "blocks.0.attn", "blocks.0.attn.q_proj", "head"}
    assert parent_call("blocks.0", recorded) == ""
    assert parent_call("blocks.0.attn.q_proj", recorded) == "blocks.0.attn"
    assert parent_call("", recorded) is None
    assert nearest_recorded("blocks.0.attn.k_proj", recorded) == "blocks.0.attn"
    assert nearest_recorded("nowhere.at.all", recorded) == ""


# --- kinds that are true -----------------------------------------------------------------------------

def test_kinds_name_a_transform_only_when_it_explains_the_tensor() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal((4, 6, 8))
    proxy = rng.standard_normal(e.shape)
    blend = 0.9999 * e + 1e-4 * proxy  # almost but not quite a rescaling
    assert K.classify(blend, e, is_grad=False)[0] == K.VALUE
    noisy = e + 1e-6 * rng.standard_normal(e.shape)  # a small random error is no permutation
    assert K.classify(noisy, e, is_grad=False)[0] == K.VALUE
    assert K.classify(np.transpose(e, (0, 2, 1)).copy(), e, is_grad=False)[0] == K.SHAPE  # shapes differ
    square = rng.standard_normal((3, 5, 5))
    assert K.classify(np.transpose(square, (0, 2, 1)).copy(), square, is_grad=False)[0] == K.PERMUTED
    assert K.classify(0.5 * e, e, is_grad=False) == (K.SCALE, "is the reference times a constant factor 0.5 (= 1/2)")
    assert K.classify(-e, e, is_grad=True)[0] == K.SIGN
    rows = e * rng.uniform(1.0, 1.01, size=(4, 6, 1))  # a normalization with another eps, row by row
    kind, words = K.classify(rows, e, is_grad=False)
    assert kind == K.SCALE and "row by row" in words
    tiny = 1e-3 * proxy  # a gradient that only a small proxy carries
    kind, words = K.classify(tiny, e, is_grad=True)
    assert kind == K.MOSTLY_DETACHED and "outside the graph" in words
    assert K.classify(tiny, e, is_grad=False)[0] == K.VALUE  # a forward value is not "detached"
    with_nan = e.copy()
    with_nan[0, 0, 0] = np.nan
    kind, words = K.classify(e * 2, with_nan, is_grad=False)
    assert kind == K.VALUE and "which itself holds 1 NaN/Inf" in words


# --- adapters: parameters of unmapped modules, crashes outside every module -----------------------

def _unmapped_projections() -> Any:
    from tests.foreign import nets
    from tests.foreign.adapter import TinyflowAdapter

    class Unmapped(TinyflowAdapter):
        """The attention's four projections have no module counterpart; only their parameters do."""

        name_map = {**TinyflowAdapter.name_map,
                    **{f"layers[{{i}}].mha.{w}": None for w in ("wq", "wk", "wv", "wo")},
                    **{f"layers[{{i}}].mha.{w}.params[{k}]": f"blocks.{{i}}.attn.{ref}.{leaf}"
                       for w, ref in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "out_proj"))
                       for k, leaf in ((0, "weight"), (1, "bias"))}}

    return Unmapped(nets.Reverser())


def test_unmapped_owner_parameters_are_charged_to_the_nearest_mapped_module() -> None:
    from tests.foreign.faults import FAULTS as FOREIGN

    clean = run_report(ReportOptions(adapter=_unmapped_projections(), batch_size=BATCH))
    assert clean.verdict == "match", clean.findings
    fault = next(f for f in FOREIGN if f.name == "dense_weight_grad_one_sample")
    with mock.patch.object(fault.target, fault.attribute, fault.replacement):
        report = run_report(ReportOptions(adapter=_unmapped_projections(), batch_size=BATCH))
    attn = next(d for d in report.findings if d.module == "blocks.0.attn")
    assert (attn.phase, attn.kind) == ("param_grad", K.PARAM_GRAD)
    assert attn.tensor.startswith("param_grad[") and "_proj.weight]" in attn.tensor  # named inside the module
    rows = {r["parameter"]: r["matches_reference"] for r in report.gradient_flow}
    assert rows["blocks.0.attn.q_proj.weight"] is False and rows["blocks.0.ln1.weight"] is True


def test_a_model_that_raises_outside_every_module_is_a_forward_crash() -> None:
    from tests.foreign import nets
    from tests.foreign.adapter import TinyflowAdapter

    class Raises(TinyflowAdapter):
        name_map = {**TinyflowAdapter.name_map, "": None}  # the model object itself is not recorded

        def forward(self, tokens: np.ndarray) -> Any:
            raise RuntimeError("tokens must be a list")  # the user's own check, before any module runs

    report = run_report(ReportOptions(adapter=Raises(nets.Reverser()), batch_size=BATCH))
    d = report.first_divergence
    assert (d.phase, d.kind) == ("forward", K.CRASH)
    assert "RuntimeError: tokens must be a list" in d.hint and "backward" not in d.hint
    assert d.scratch_source.startswith("tests/differential/test_findings.py:")


# --- sources -------------------------------------------------------------------------------------------

def test_reference_sources_point_into_the_project() -> None:
    with faults.activate("embedding_grad_overwrite"):
        report = run_report(ReportOptions(batch_size=BATCH))
    for m in report.modules:
        assert m["reference_source"].startswith("torch_reference/"), m
    assert report.first_divergence.reference_source.startswith("torch_reference/model.py:")
    with faults.activate("layernorm_weight_frozen"):
        report = run_report(ReportOptions(batch_size=BATCH))
    ln2 = report.first_divergence.reference_source
    line = int(ln2.rpartition(":")[2])
    from differential.sides import PROJECT_ROOT

    assert "ln2" in (PROJECT_ROOT / "torch_reference/model.py").read_text().splitlines()[line - 1]


# --- training steps ------------------------------------------------------------------------------------

def test_training_names_the_first_divergent_step() -> None:
    original = AdapterSide.train_steps  # the class model's side

    def drifting(self: Any, batches: Any, optimizer: str, lr: float) -> Any:
        losses, params = original(self, batches, optimizer, lr)
        params[2]["head.bias"] = params[2]["head.bias"] + 1e-3  # the third step goes astray
        return losses, params

    with mock.patch.object(AdapterSide, "train_steps", drifting):
        report = run_report(ReportOptions(batch_size=BATCH, steps=4))
    assert report.training["first_divergent_step"] == 3
    assert report.training["first_divergent_what"] == "parameter head.bias"
    assert _found(report) == [("(model)", "training", K.VALUE)]
    assert "training diverges at step 3 (parameter head.bias)" in report.first_divergence.hint


@pytest.mark.parametrize("impl", ["class", "functional"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_zero_biases_train_side_by_side_without_a_false_alarm(impl: str, optimizer: str) -> None:
    """GPT-2's usual start, biases at zero: a key bias's gradient is zero up to round-off (softmax
    ignores it), Adam turns that round-off into steps of about 1e-13 on each side, and those are
    judged on the scale of the model's parameters, not on the bias's own tiny values."""
    from scratch_model.config import arch

    model = arch("gpt", num_layers=1)
    weights = {n: a * 0 if n.endswith(".bias") else a for n, a in initial_weights(model, 0).items()}
    report = run_report(ReportOptions(impl=impl, model=model, weights=weights, steps=5, optimizer=optimizer,
                                      batch_size=BATCH))
    assert report.verdict == "match", [(d.module, d.phase, d.hint) for d in report.findings]
    assert report.training["status"] == "match"
    original = AdapterSide.train_steps  # and a parameter off by 1e-9 of the model's scale still diverges

    def drifting(self: Any, batches: Any, optimizer: str, lr: float) -> Any:
        losses, params = original(self, batches, optimizer, lr)
        params[1]["blocks.0.attn.k_proj.bias"] = params[1]["blocks.0.attn.k_proj.bias"] + 1e-8
        return losses, params

    with mock.patch.object(AdapterSide, "train_steps", drifting):
        report = run_report(ReportOptions(impl=impl, model=model, weights=weights, steps=5, optimizer=optimizer,
                                          batch_size=BATCH))
    assert report.training["first_divergent_step"] == 2
    assert report.training["first_divergent_what"] == "parameter blocks.0.attn.k_proj.bias"


# --- localization on hand-made captures ----------------------------------------------------------

def _capture(calls: dict[str, dict[str, Any]], params: dict[str, np.ndarray]) -> Capture:
    from differential.capture import Call

    made = {}
    for n, (path, c) in enumerate(calls.items()):
        made[path] = Call(path=path, enter=n, exit=len(calls) - 1 - n, inputs=c["inputs"], output=c["output"],
                          input_requires_grad=[True] * len(c["inputs"]), output_requires_grad=True,
                          grad_output=c["grad_output"], grad_inputs=c["grad_inputs"],
                          produced_by=[None] * len(c["inputs"]))
    return Capture("test", "float64", made, 1.0, np.zeros(1), params, dict(params), dict.fromkeys(params, True))


def test_a_module_with_two_float_inputs_names_the_wrong_input_gradient() -> None:
    from differential.localize import backward_origin, judge

    rng = np.random.default_rng(1)
    x, y, out, g, gx, gy = (rng.standard_normal((2, 3)) for _ in range(6))
    ref = _capture({"": {"inputs": [], "output": out, "grad_output": g, "grad_inputs": []},
                    "mix": {"inputs": [x, y], "output": out, "grad_output": g, "grad_inputs": [gx, gy]}}, {})
    got = _capture({"": {"inputs": [], "output": out, "grad_output": g, "grad_inputs": []},
                    "mix": {"inputs": [x, y], "output": out, "grad_output": g, "grad_inputs": [gx, 2 * gy]}}, {})
    results = judge(got, ref)
    origin = backward_origin(results, ref, got)
    assert (origin.path, origin.phase, origin.check.tensor) == ("mix", "backward", "grad_input[1]")
    assert [c.tensor for c in results["mix"].backward if not c.match] == ["grad_input[1]"]


def test_input_and_parameter_gradients_both_wrong_is_one_backward_finding() -> None:
    from differential.localize import backward_origin, judge

    rng = np.random.default_rng(2)
    x, out, g, gx, w, gw = (rng.standard_normal((2, 3)) for _ in range(6))
    ref = _capture({"lin": {"inputs": [x], "output": out, "grad_output": g, "grad_inputs": [gx]}}, {"lin.weight": gw})
    got = _capture({"lin": {"inputs": [x], "output": out, "grad_output": g, "grad_inputs": [-gx]}},
                   {"lin.weight": gw + 1.0})
    results = judge(got, ref)
    assert [c.match for c in results["lin"].param_grad] == [False]
    origin = backward_origin(results, ref, got)
    assert (origin.path, origin.phase, origin.check.tensor) == ("lin", "backward", "grad_input[0]")
    assert K.classify(origin.check.actual, origin.check.expected, is_grad=True)[0] == K.SIGN


def test_first_divergence_hint_uses_the_children_run_alone() -> None:
    with faults.activate("attention_no_scale"):
        report = run_report(ReportOptions(batch_size=BATCH))
    hint = report.first_divergence.hint
    assert "every child of blocks.0.attn matches when run alone on the reference's inputs" in hint
    with faults.activate("attention_no_scale"):
        first_only = run_report(ReportOptions(batch_size=BATCH, findings=False))
    assert "not every child of blocks.0.attn could be checked" in first_only.first_divergence.hint
