"""`describe`: the kind and the hint of every kind of origin (forward, backward, parameter gradient; joint or
run alone; a cut, a crash, a container and what was checked of its children), the child's line a
container's source points at, the loss's own divergences and the source lines of the loss, the backward
and the optimizer. Origins are hand-built, the sides stand-ins that only name sources (so no scratch-only
check runs); every expected word is worked out here. Written to kill the mutants ``benchmarks/mutation.py``
found surviving in describe.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from breakages import CASES

from differential import describe as D
from differential import diagnose as K
from differential import faults, phases
from differential.adapter_side import AdapterSide
from differential.capture import Call, Capture
from differential.compare import compare
from differential.findings import Forced
from differential.implementations import make_side
from differential.localize import Check, ModuleResult, Origin, judge
from differential.report import ReportOptions, initial_weights, run_report
from differential.side import Side, source_location
from scratch_model import autograd as ag
from scratch_model import layers
from scratch_model.autograd import Tensor
from scratch_model.autograd.tensor import op
from scratch_model.config import TransformerConfig

ROOT = Path(__file__).resolve().parents[2]
ONE = np.array([1.0, 2.0])
MHA = source_location(layers.MultiHeadAttention.forward)  # a container whose children are called by name
OPTIONS = ReportOptions()


def _def_at(location: str, name: str) -> bool:
    """Whether ``location`` points at the definition of ``name`` (or at a decorator of it)."""
    file, _, line = location.rpartition(":")
    lines = (ROOT / file).read_text().splitlines()[int(line) - 1:]
    first = next(text.strip() for text in lines if not text.strip().startswith("@"))
    return first.startswith(f"def {name}(")


def _line_number_of(text: str, after: str) -> str:
    """The location of the first line holding ``text`` after the line ``after`` points at."""
    file, _, line = after.rpartition(":")
    lines = (ROOT / file).read_text().splitlines()
    n = next(i for i in range(int(line), len(lines)) if text in lines[i])
    return f"{file}:{n + 1}"


class Sources(Side):
    """A side that only names sources: the attention's forward for "attn", "<name>:<path>" elsewhere."""

    def __init__(self, name: str) -> None:
        self.name = name

    def source(self, path: str) -> str:
        return MHA if path == "attn" else f"{self.name}:{path}"

    def loss_source(self) -> str:
        return f"{self.name}/loss.py:1"


MINE, REF = Sources("mine"), Sources("ref")


def check(tensor: str, actual: Any, expected: Any) -> Check:
    a = None if actual is None else np.asarray(actual, dtype=np.float64)
    e = None if expected is None else np.asarray(expected, dtype=np.float64)
    return Check(tensor, compare(a, e), a, e)


def call(path: str, enter: int) -> Call:
    return Call(path=path, enter=enter, exit=enter, inputs=[ONE], output=ONE, input_requires_grad=[True],
                output_requires_grad=True, grad_output=ONE, grad_inputs=[ONE])


KIDS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj")


def capture(requires: dict[str, bool] | None = None, loss: float = 2.0, loss_requires_grad: bool = True,
            root_output_requires_grad: bool | None = True) -> Capture:
    # the children are listed out of their entry order (k_proj entered before q_proj): the blame
    # goes by call order
    calls = [call("", 0), call("attn", 1), call("attn.q_proj", 3), call("attn.k_proj", 2), call("attn.v_proj", 4),
             call("attn.out_proj", 5)]
    if root_output_requires_grad is None:
        calls = calls[1:]
    else:
        calls[0].output_requires_grad = root_output_requires_grad
    return Capture(impl="x", dtype="float64", calls={c.path: c for c in calls}, loss=loss, logits=ONE, params={},
                   param_grads={}, param_requires_grad=requires or {}, loss_requires_grad=loss_requires_grad)


EXPECTED = capture()


def results(**bad: str) -> dict[str, ModuleResult]:
    """Every module matching, but ``name=how`` for the child attn.<name>: "input" (its input differs),
    "grad_output", "param", "detached", "missing"."""
    out = {}
    for path in EXPECTED.calls:
        res = ModuleResult(path, forward=[check("input[0]", ONE, ONE), check("output", ONE, ONE)],
                           backward=[check("grad_output", ONE, ONE), check("grad_input[0]", ONE, ONE)],
                           param_grad=[check("param_grad[weight]", ONE, ONE)])
        how = bad.get(path.rpartition(".")[2]) if path.startswith("attn.") else None
        if how == "input":
            res.forward[0] = check("input[0]", -ONE, ONE)
        elif how == "grad_output":
            res.backward[0] = check("grad_output", -ONE, ONE)
        elif how == "param":
            res.param_grad[0] = check("param_grad[weight]", -ONE, ONE)
        elif how == "detached":
            res.detached_inputs = [0]
        elif how == "missing":
            res.missing = True
        out[path] = res
    return out


def describe(origin: Origin, res: dict[str, ModuleResult] | None = None, actual: Capture = EXPECTED,
             forced: dict[str, Forced] | None = None) -> Any:
    return D.describe(origin, res or results(), MINE, REF, actual, EXPECTED, OPTIONS, forced)


def words(actual: Any, expected: Any, is_grad: bool) -> tuple[str, str]:
    return K.classify(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), is_grad)


# --- leaves ---------------------------------------------------------------------------------------

def test_a_forward_origin() -> None:
    out = check("output", 2 * ONE, ONE)
    kind, w = words(2 * ONE, ONE, False)
    d = describe(Origin("attn.q_proj", "forward", out))
    assert (d.module, d.phase, d.kind, d.tensor) == ("attn.q_proj", "forward", kind, "output")
    assert d.hint == f"attn.q_proj's inputs match but its output does not: output {w}"
    assert (d.scratch_source, d.reference_source) == ("mine:attn.q_proj", "ref:attn.q_proj")
    assert d.metrics == out.metrics.to_dict() and d.op is None
    d = describe(Origin("attn.q_proj", "forward", out, forced=True))
    assert d.hint == f"run alone on the reference's inputs, attn.q_proj's output does not match: output {w}"


def test_a_forward_origin_of_the_root_with_an_all_zero_output() -> None:
    out = check("output", [0.0, 0.0], ONE)
    d = describe(Origin("", "forward", out))
    assert (d.module, d.kind) == ("(model)", K.VALUE)  # a forward is judged as a value, not a gradient
    assert d.hint == "(model)'s inputs match but its output does not: output is all zeros where the reference is not"
    assert (d.scratch_source, d.reference_source) == ("mine:", "ref:")


def test_a_backward_origin() -> None:
    bad = check("grad_input[0]", -ONE, ONE)
    d = describe(Origin("attn.v_proj", "backward", bad))
    assert (d.phase, d.kind, d.tensor) == ("backward", K.SIGN, "grad_input[0]")
    assert d.hint == "attn.v_proj's output gradient matches but grad_input[0] has the right magnitude but the " \
                     "opposite sign"
    d = describe(Origin("attn.v_proj", "backward", bad, forced=True))
    assert d.hint == "run alone on the reference's inputs and output gradient, attn.v_proj's grad_input[0] has the " \
                     "right magnitude but the opposite sign"
    zero = check("grad_input[0]", [0.0, 0.0], ONE)
    assert describe(Origin("attn.v_proj", "backward", zero)).kind == K.ZERO_GRAD  # judged as a gradient


def test_a_parameter_gradient_origin() -> None:
    bad = check("param_grad[weight]", [3.0, 1.0], ONE)
    _, w = words([3.0, 1.0], ONE, True)
    d = describe(Origin("attn.q_proj", "param_grad", bad))
    assert (d.phase, d.kind, d.tensor) == ("param_grad", K.PARAM_GRAD, "param_grad[weight]")
    assert d.hint == ("attn.q_proj's inputs and output gradient match but param_grad[weight] does not: the "
                      f"weight-gradient formula is wrong (param_grad[weight] {w})")
    d = describe(Origin("attn.q_proj", "param_grad", bad, forced=True))
    assert d.hint == ("run alone on the reference's inputs and output gradient, attn.q_proj's output and input "
                      "gradients match but param_grad[weight] does not: the weight-gradient formula is wrong "
                      f"(param_grad[weight] {w})")
    # a kind that names the error keeps its name
    scaled = check("param_grad[weight]", 2 * ONE, ONE)
    _, w = words(2 * ONE, ONE, True)
    d = describe(Origin("attn.q_proj", "param_grad", scaled))
    assert (d.kind, d.hint) == (K.SCALE, f"attn.q_proj: param_grad[weight] {w}")


def test_a_parameter_with_no_gradient() -> None:
    none = check("param_grad[weight]", None, ONE)
    d = describe(Origin("attn.q_proj", "param_grad", none))
    assert d.kind == K.GRAPH_BREAK
    assert d.hint == ("attn.q_proj: attn.q_proj.weight gets no gradient: the path from it to the output is cut in "
                      "this module")
    frozen = capture(requires={"attn.q_proj.weight": False, "weight": True})
    d = describe(Origin("attn.q_proj", "param_grad", none), actual=frozen)
    assert d.hint == "attn.q_proj.weight was created without requires_grad, so it never gets a gradient"
    # a parameter of the root is named as it is
    d = describe(Origin("", "param_grad", none), actual=capture(requires={"weight": False}))
    assert d.hint == "weight was created without requires_grad, so it never gets a gradient"
    d = describe(Origin("", "param_grad", none))
    assert d.hint == "(model): weight gets no gradient: the path from it to the output is cut in this module"


def test_an_origin_without_a_check() -> None:
    d = describe(Origin("attn.k_proj", "param_grad", None, reason="a parameter gradient is lost"))
    assert (d.kind, d.tensor, d.metrics) == (K.VALUE, None, None)
    assert d.hint == "attn.k_proj: a parameter gradient is lost"
    d = describe(Origin("attn.k_proj", "param_grad", None, kind=K.GRAPH_BREAK))
    assert d.hint == "attn.k_proj: attn.k_proj.? gets no gradient: the path from it to the output is cut in this module"
    d = describe(Origin("attn.k_proj", "param_grad", check("grad_input[0]", ONE, ONE), kind=K.GRAPH_BREAK))
    assert "attn.k_proj.? gets no gradient" in d.hint  # not a parameter's check: no name to give
    d = describe(Origin("attn.k_proj", "forward", None, reason="the scratch model never called this module",
                        kind=K.VALUE))
    assert (d.kind, d.tensor) == (K.VALUE, None)
    assert d.hint == "attn.k_proj's inputs match but its output does not: the scratch model never called this module"


def test_a_cut_and_a_crash_say_their_reason() -> None:
    d = describe(Origin("attn.k_proj", "backward", check("grad_output", None, ONE), kind=K.GRAPH_BREAK,
                        reason="its output is cut"))
    assert (d.kind, d.hint, d.tensor) == (K.GRAPH_BREAK, "attn.k_proj: its output is cut", "grad_output")
    d = describe(Origin("attn.k_proj", "forward", None, kind=K.CRASH, reason="it raised: KeyError: 'w'", forced=True))
    assert (d.kind, d.hint, d.phase) == (K.CRASH, "attn.k_proj: it raised: KeyError: 'w'", "forward")
    # a cut with no words of its own (no rule makes one) is worded by its phase
    d = describe(Origin("attn.k_proj", "backward", check("grad_input[0]", None, ONE), kind=K.GRAPH_BREAK))
    assert d.hint == "attn.k_proj's output gradient matches but "


# --- containers -----------------------------------------------------------------------------------

def test_a_container_whose_children_all_match() -> None:
    out = check("output", 2 * ONE, ONE)
    _, w = words(2 * ONE, ONE, False)
    d = describe(Origin("attn", "forward", out, container_code=True))
    assert d.hint == (f"attn's inputs match but its output does not: output {w} — every child of attn matches, so "
                      "the fault is in attn's own code")
    assert (d.scratch_source, d.reference_source) == (MHA, MHA)  # no child to point at


def test_a_container_that_builds_a_wrong_input_for_a_child() -> None:
    out = check("output", 2 * ONE, ONE)
    _, w = words(2 * ONE, ONE, False)
    # k_proj (entered first) and v_proj get wrong inputs; both match when run alone on the right ones
    forced = {p: Forced(p, forward=[check("output", ONE, ONE)], backward=[check("grad_input[0]", -ONE, ONE)])
              for p in ("attn.k_proj", "attn.v_proj")}
    d = describe(Origin("attn", "forward", out, container_code=True), results(k_proj="input", v_proj="input"),
                 forced=forced)
    assert d.hint == (f"attn's inputs match but its output does not: output {w} — every child of attn matches when "
                      "run alone on the reference's inputs, so the fault is in attn's own code (the input it builds "
                      "for attn.k_proj)")
    line = _line_number_of("self.k_proj(", MHA)
    assert (d.scratch_source, d.reference_source) == (line, line)
    # only q_proj: the first child in call order
    d = describe(Origin("attn", "forward", out, container_code=True), results(q_proj="input"),
                 forced={"attn.q_proj": Forced("attn.q_proj")})
    assert d.hint.endswith("(the input it builds for attn.q_proj)")
    assert d.scratch_source == _line_number_of("self.q_proj(", MHA)


@pytest.mark.parametrize("alone", ["not run", "raised", "forward differs"])
def test_a_container_whose_children_could_not_all_be_checked(alone: str) -> None:
    out = check("output", 2 * ONE, ONE)
    forced = {"not run": {}, "raised": {"attn.v_proj": Forced("attn.v_proj", error=ValueError("x"))},
              "forward differs": {"attn.v_proj": Forced("attn.v_proj", forward=[check("output", -ONE, ONE)])}}[alone]
    d = describe(Origin("attn", "forward", out, container_code=True), results(v_proj="input"), forced=forced)
    assert d.hint.endswith(" — not every child of attn could be checked, so the fault is in attn's own code or in a "
                           "child that diverges only inside it (the input it builds for attn.v_proj)")


def test_a_missing_child_is_not_checked() -> None:
    out = check("output", 2 * ONE, ONE)
    d = describe(Origin("attn", "forward", out, container_code=True), results(out_proj="missing"),
                 forced={"attn.out_proj": Forced("attn.out_proj")})
    assert "— every child of attn matches when run alone" in d.hint  # run alone, it matched


def test_a_container_run_alone_points_at_no_child() -> None:
    out = check("output", 2 * ONE, ONE)
    d = describe(Origin("attn", "forward", out, container_code=True, forced=True), results(k_proj="input"),
                 forced={"attn.k_proj": Forced("attn.k_proj")})
    assert d.hint.endswith("so the fault is in attn's own code")
    assert d.scratch_source == MHA


def test_a_container_backward_checks_every_phase_of_its_children() -> None:
    bad = check("grad_input[0]", -ONE, ONE)
    # a child whose parameter gradient differs is not "matching" for a backward origin...
    d = describe(Origin("attn", "backward", bad, container_code=True), results(q_proj="param"))
    assert "not every child of attn could be checked" in d.hint
    # ...but it is for a forward one
    d = describe(Origin("attn", "forward", check("output", 2 * ONE, ONE), container_code=True),
                 results(q_proj="param"))
    assert "— every child of attn matches, so" in d.hint
    # run alone, a child with a wrong backward does not clear a backward origin; a wrong forward alone
    # does not matter to a forward origin if the joint forward matched
    forced = {"attn.q_proj": Forced("attn.q_proj", backward=[check("grad_input[0]", -ONE, ONE)])}
    d = describe(Origin("attn", "backward", bad, container_code=True), results(q_proj="param"), forced=forced)
    assert "not every child of attn could be checked" in d.hint
    forced = {"attn.q_proj": Forced("attn.q_proj", param_grad=[check("param_grad[weight]", -ONE, ONE)])}
    d = describe(Origin("attn", "backward", bad, container_code=True), results(q_proj="param"), forced=forced)
    assert "not every child of attn could be checked" in d.hint
    forced = {"attn.q_proj": Forced("attn.q_proj", forward=[check("output", ONE, ONE)])}
    d = describe(Origin("attn", "backward", bad, container_code=True), results(q_proj="param"), forced=forced)
    assert "every child of attn matches when run alone on the reference's inputs, so" in d.hint


def test_a_container_backward_points_at_the_child_the_gradient_reaches_first() -> None:
    bad = check("grad_input[0]", -ONE, ONE)
    _, w = words(-ONE, ONE, True)
    # a detached input first (v_proj), even with a later child's output gradient wrong
    d = describe(Origin("attn", "backward", bad, container_code=True),
                 results(v_proj="detached", out_proj="grad_output"))
    assert d.hint == (f"attn's output gradient matches but grad_input[0] {w} — not every child of attn could be "
                      "checked, so the fault is in attn's own code or in a child that diverges only inside it (around "
                      "its call of attn.v_proj)")
    assert d.scratch_source == _line_number_of("self.v_proj(", MHA)
    # otherwise the last child called whose output gradient is wrong: q_proj, entered after k_proj
    d = describe(Origin("attn", "backward", bad, container_code=True),
                 results(k_proj="grad_output", q_proj="grad_output"))
    assert d.hint.endswith("(around its call of attn.q_proj)")
    d = describe(Origin("attn", "backward", bad, container_code=True),
                 results(k_proj="detached", q_proj="detached"))
    assert d.hint.endswith("(around its call of attn.q_proj)")
    # a wrong input gradient of a child is not a wrong output gradient
    res = results()
    res["attn.out_proj"].backward[1] = check("grad_input[0]", -ONE, ONE)
    d = describe(Origin("attn", "backward", bad, container_code=True), res)
    assert "around its call" not in d.hint and d.scratch_source == MHA


def test_a_container_cut_keeps_its_reason() -> None:
    d = describe(Origin("attn", "backward", check("grad_input[0]", None, ONE), container_code=True,
                        kind=K.GRAPH_BREAK, reason="the input of attn.v_proj is detached"),
                 results(v_proj="detached"))
    assert d.kind == K.GRAPH_BREAK
    assert d.hint == ("attn's output gradient matches but the input of attn.v_proj is detached (around its call of "
                      "attn.v_proj)")


# --- the loss -------------------------------------------------------------------------------------

LOSS_OK = {"match": True, "metrics": {"m": 1}}
LOSS_BAD = {"match": False, "metrics": {"m": 2}}


def test_a_loss_that_does_not_require_grad() -> None:
    actual = capture(loss_requires_grad=False)
    d = D.loss_divergence(LOSS_OK, actual, EXPECTED, OPTIONS, MINE, REF)
    assert (d.module, d.phase, d.kind, d.tensor) == ("(loss)", "training", K.GRAPH_BREAK, "loss")
    assert d.hint == ("the loss does not require grad: it is built from raw arrays (e.g. np.sum(out.data)) or "
                      "through an op without a backward, so no gradient reaches any parameter")
    assert (d.scratch_source, d.reference_source) == ("mine/loss.py:1", "ref/loss.py:1")
    # no root call recorded: the logits are taken to be in the graph
    assert D.loss_divergence(LOSS_OK, capture(loss_requires_grad=False, root_output_requires_grad=None), EXPECTED,
                             OPTIONS, MINE, REF).kind == K.GRAPH_BREAK
    # the logits are not in the graph already: the cut is in the model, not the loss
    assert D.loss_divergence(LOSS_OK, capture(loss_requires_grad=False, root_output_requires_grad=False), EXPECTED,
                             OPTIONS, MINE, REF) is None
    # the reference's loss needs no gradient either
    assert D.loss_divergence(LOSS_OK, actual, capture(loss_requires_grad=False), OPTIONS, MINE, REF) is None


def test_a_loss_that_differs() -> None:
    d = D.loss_divergence(LOSS_BAD, capture(loss=6.0), EXPECTED, OPTIONS, MINE, REF)
    assert (d.module, d.phase, d.kind, d.tensor, d.metrics) == ("(loss)", "training", K.LOSS, "loss", {"m": 2})
    assert d.hint == ("every module's output matches but the loss differs (6 vs 2, ratio 3 (= 3)): the loss function "
                      "is wrong (a sum where a mean is needed gives a ratio of batch x sequence length)")
    assert (d.scratch_source, d.reference_source) == ("mine/loss.py:1", "ref/loss.py:1")
    d = D.loss_divergence(LOSS_BAD, capture(loss=6.0), capture(loss=0.0), OPTIONS, MINE, REF)
    assert "(6 vs 0, ratio inf)" in d.hint
    assert D.loss_divergence(LOSS_OK, capture(loss=6.0), EXPECTED, OPTIONS, MINE, REF) is None


class _Adapter:
    def loss_and_backward(self) -> None:  # a user's loss: the report points here
        pass

    def loss_function(self) -> None:
        return None

    def backward_function(self) -> None:
        return None


class _Adapted(AdapterSide):
    def __init__(self, adapter: Any) -> None:  # no model: only the sources are asked for
        self.adapter = adapter

    def first_raw_tensor(self, *args: Any) -> None:
        return None


def _side(impl: str) -> Side:
    model = ReportOptions().model
    return make_side(impl, model, initial_weights(model, 0), "float64")


def test_loss_sources_point_at_each_sides_loss() -> None:
    class_loss = _side("class").loss_source()
    assert class_loss.startswith("scratch_model/train.py:") and _def_at(class_loss, "cross_entropy")
    assert _side("functional").loss_source() == class_loss
    torch_loss = _side("torch").loss_source()
    assert torch_loss.startswith("differential/sides.py:") and _def_at(torch_loss, "_loss")
    adapter = _Adapted(_Adapter()).loss_source()  # names no loss function: its loss_and_backward
    assert adapter.startswith("tests/differential/test_describe_mutants.py:")
    assert _def_at(adapter, "loss_and_backward")


def test_backward_and_optimizer_sources() -> None:
    scratch = _side("class").backward_source()
    assert scratch.startswith("scratch_model/autograd/") and _def_at(scratch, "backward")
    assert _side("functional").backward_source() == scratch
    assert _side("torch").backward_source() == ""  # torch's engine: nothing of the project to point at
    user = _Adapted(_Adapter()).backward_source()  # names no backward function: its loss_and_backward
    assert _def_at(user, "loss_and_backward")
    with faults.activate("recursive_backward"):  # looked up when asked: the engine that runs
        assert _side("class").backward_source().startswith("differential/faults/")
    scratch, torch_side = _side("class").optimizer_source(), _side("torch").optimizer_source()
    assert scratch.startswith("scratch_model/optim.py:") and _def_at(scratch, "step")
    assert torch_side.startswith("torch_reference/optim.py:") and _def_at(torch_side, "step")
    assert _side("functional").optimizer_source() == scratch


# --- scratch-side detail: where the chain stops, the op inside ------------------------------------

def ffn_cut_after_a_constant(self: Any, x: Any) -> Any:
    one = Tensor(np.ones(()))  # a harmless constant made from raw data: the first raw tensor of the forward
    h = self.fc2(ag.relu(self.fc1(x))) * one
    return Tensor(h.data)  # MARK-CUT-A: the output rebuilt from raw data


def ffn_cut_then_scaled(self: Any, x: Any) -> Any:
    h = self.fc2(ag.relu(self.fc1(x)))
    return Tensor(h.data) * 1.0  # MARK-CUT-B: rebuilt from raw data, then an ordinary op


def _marked(mark: str) -> str:
    lines = Path(__file__).read_text().splitlines()
    return f"tests/differential/test_describe_mutants.py:{next(i for i, t in enumerate(lines) if mark in t) + 1}"


# one layer, narrower than the default model (so a probe built with another configuration cannot load it)
SMALL = dict(batch_size=2, findings=False, model=TransformerConfig(num_layers=1, embed_dim=16, num_heads=2,
                                                                   ff_dim=24))


@pytest.mark.parametrize("forward, mark", [(ffn_cut_after_a_constant, "MARK-CUT-A: the"),
                                           (ffn_cut_then_scaled, "MARK-CUT-B: rebuilt")])
def test_the_chain_stops_where_the_cut_tensor_was_made(forward: Any, mark: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A: the cut output's own creation site, not the first raw tensor of the forward (the constant);
    # B: the output is an ordinary op's result, so the site is the raw tensor that op was given
    monkeypatch.setattr(layers.FeedForward, "forward", forward)
    d = run_report(ReportOptions(**SMALL)).first_divergence
    assert (d.module, d.phase, d.kind) == ("blocks.0.ffn", "backward", K.GRAPH_BREAK)
    assert d.hint == ("blocks.0.ffn: its output does not require grad although its inputs or parameters do: the graph "
                      "is cut inside this module's forward (a result rebuilt from raw data, or an op without a "
                      f"backward); the chain stops at a tensor made by {forward.__name__} at {_marked(mark)}"), d.hint


def test_the_op_whose_backward_fails_finite_differences() -> None:
    with faults.activate("relu_backward_no_mask"):
        d = run_report(ReportOptions(**SMALL)).first_divergence
        again = run_report(ReportOptions(**SMALL)).first_divergence
        narrow = run_report(ReportOptions(**{**SMALL, "dtype": "float32"})).first_divergence
    assert set(d.op) == {"op", "source", "input", "relative_error"}
    assert d.op["op"] == "relu_backward_passes_all" and d.op["source"].startswith("differential/faults/ops.py:")
    assert d.op["input"] == "0"  # relu has one input
    assert float(d.op["relative_error"]) > 1e-2
    assert again.op == d.op  # the random probe is seeded: the same report twice
    # a float32 run is probed in float64 (finite differences need it): the same op, the same numbers
    assert narrow.op == d.op
    assert d.hint.startswith("blocks.0.ffn's output gradient matches but grad_input[0] ")
    assert d.hint.endswith(f"; inside it, the backward of `relu_backward_passes_all` ({d.op['source']}) disagrees "
                           "with finite differences")


def embedding_cut_then_scaled(self: Any, tokens: Any) -> Any:
    return Tensor(ag.embedding(self.weight, tokens).data) * 1.0  # MARK-CUT-C: the lookup rebuilt from raw data


def test_the_chain_stops_in_a_module_that_takes_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    # the module has no float input: it is run again on the batch's tokens to find the raw tensor
    monkeypatch.setattr(layers.Embedding, "forward", embedding_cut_then_scaled)
    d = run_report(ReportOptions(**SMALL)).first_divergence
    assert (d.module, d.phase, d.kind) == ("embedding", "backward", K.GRAPH_BREAK)
    assert d.hint.endswith(f"; the chain stops at a tensor made by embedding_cut_then_scaled at "
                           f"{_marked('MARK-CUT-C: the')}"), d.hint


def test_a_cut_with_no_raw_tensor_to_name(monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in CASES if c.name == "ln_weight_without_requires_grad")
    monkeypatch.setattr(case.target, case.attribute, case.replacement)
    d = run_report(ReportOptions(**SMALL)).first_divergence
    assert (d.phase, d.kind) == ("param_grad", K.GRAPH_BREAK)
    assert d.hint == f"{d.module}.weight was created without requires_grad, so it never gets a gradient"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the fault's NaN, by design
def test_the_op_inside_an_attention_of_a_causal_model() -> None:
    with faults.activate("softmax_no_backward"):
        d = run_report(ReportOptions(**{**SMALL, "model": replace(SMALL["model"], mask="causal")})).first_divergence
    assert d.module == "blocks.0.attn" and d.op is not None and d.op["op"] == "softmax_without_backward"


@op
def relu_that_passes_everything(a: Any) -> Any:
    return np.maximum(a.data, 0), lambda g: (g,)  # MARK-OP: the backward forgets the mask


def ffn_with_its_own_relu(self: Any, x: Any) -> Any:
    return self.fc2(relu_that_passes_everything(self.fc1(x)))


def test_the_op_is_looked_for_in_the_implementation_under_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the class model's feed-forward uses the broken op: the probe must run the class model
    monkeypatch.setattr(layers.FeedForward, "forward", ffn_with_its_own_relu)
    d = run_report(ReportOptions(**SMALL)).first_divergence
    assert (d.module, d.phase) == ("blocks.0.ffn", "backward")
    assert d.op is not None and d.op["op"] == "relu_that_passes_everything"
    assert _def_at(d.op["source"], "relu_that_passes_everything")


def test_the_op_of_a_repeated_call_is_looked_for_in_its_module() -> None:
    # a module's second call ("#2") runs the same module: its ops are probed all the same
    options = ReportOptions(**SMALL)
    side = make_side("class", options.model, initial_weights(options.model, 0), "float64")
    tokens, targets = phases.batches(options)[0]
    with faults.activate("relu_backward_no_mask"):
        actual = side.capture(tokens, targets)
        actual.calls["blocks.0.ffn#2"] = actual.calls["blocks.0.ffn"]
        d = D.describe(Origin("blocks.0.ffn#2", "backward", check("grad_input[0]", 2 * ONE, ONE)), {}, side, side,
                       actual, actual, options)
    assert d.op is not None and d.op["op"] == "relu_backward_passes_all"
    assert d.scratch_source == source_location(layers.FeedForward.forward)


def ffn_half_from_data(self: Any, x: Any) -> Any:
    h = self.fc2(ag.relu(self.fc1(x)))
    return Tensor(h.data * 0.5) + h * 0.5  # MARK-HALF: half of the output rebuilt from raw data


def test_a_module_run_alone_that_passes_only_part_of_its_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    # its output still needs a gradient, so no cut shows in the joint run; run alone, the backward
    # differs and the module makes a tensor from raw data: a partial cut, named with its site
    monkeypatch.setattr(layers.FeedForward, "forward", ffn_half_from_data)
    options = ReportOptions(**SMALL)
    side = make_side("class", options.model, initial_weights(options.model, 0), "float64")
    capture = side.capture(*phases.batches(options)[0])
    half = check("grad_input[0]", 0.5 * ONE, ONE)
    _, w = words(0.5 * ONE, ONE, True)
    d = D.describe(Origin("blocks.0.ffn", "backward", half, forced=True), {}, side, side, capture, capture, options)
    assert d.kind == K.GRAPH_BREAK
    assert d.hint == (f"run alone on the reference's inputs and output gradient, blocks.0.ffn's grad_input[0] {w}; "
                      "the module builds a tensor from raw data, so part of the gradient stops there: the chain stops "
                      f"at a tensor made by ffn_half_from_data at {_marked('MARK-HALF: half')}")
    assert d.op is None  # the cut is named: no op is probed
    # not run alone, or a forward, or already a cut: no such claim
    d = D.describe(Origin("blocks.0.ffn", "backward", half), {}, side, side, capture, capture, options)
    assert d.kind == K.SCALE and "raw data" not in d.hint
    out = check("output", 0.5 * ONE, ONE)
    d = D.describe(Origin("blocks.0.ffn", "forward", out, forced=True), {}, side, side, capture, capture, options)
    assert d.kind == K.SCALE and "raw data" not in d.hint
    d = D.describe(Origin("blocks.0.ffn", "backward", half, forced=True, kind=K.MOSTLY_DETACHED, reason="tiny"),
                   {}, side, side, capture, capture, options)
    assert d.kind == K.MOSTLY_DETACHED and "part of the gradient stops there" not in d.hint


def test_a_parameter_gradient_origin_without_a_check() -> None:
    d = describe(Origin("attn.q_proj", "param_grad", None, kind=K.PARAM_GRAD, reason="its update is off"))
    assert d.hint == ("attn.q_proj's inputs and output gradient match but a parameter gradient does not: the "
                      "weight-gradient formula is wrong (its update is off)")


def test_the_child_line_of_a_nested_container_and_of_a_repeated_child() -> None:
    # blk.attn's children are blk.attn.q_proj ...; k_proj is called twice and its second call is fed wrongly
    calls = [call("", 0), call("blk", 1), call("blk.attn", 2), call("blk.attn.q_proj", 3), call("blk.attn.k_proj", 4),
             call("blk.attn.k_proj#2", 5)]
    expected = Capture(impl="x", dtype="float64", calls={c.path: c for c in calls}, loss=2.0, logits=ONE, params={},
                       param_grads={}, param_requires_grad={})
    res = {c.path: ModuleResult(c.path, forward=[check("input[0]", ONE, ONE), check("output", ONE, ONE)],
                                backward=[check("grad_output", ONE, ONE)]) for c in calls}
    res["blk.attn.k_proj#2"].forward[0] = check("input[0]", -ONE, ONE)

    class Nested:
        def source(self, path: str) -> str:
            return MHA if path == "blk.attn" else f"x:{path}"

    out = check("output", 2 * ONE, ONE)
    d = D.describe(Origin("blk.attn", "forward", out, container_code=True), res, Nested(), Nested(), expected,
                   expected, OPTIONS, {})
    assert d.hint.endswith("(the input it builds for blk.attn.k_proj#2)")
    assert d.scratch_source == d.reference_source == _line_number_of("self.k_proj(", MHA)


def ffn_half_from_data_with_its_own_relu(self: Any, x: Any) -> Any:
    h = self.fc2(relu_that_passes_everything(self.fc1(x)))
    return Tensor(h.data * 0.5) + h * 0.5


def test_a_named_cut_is_not_probed_for_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers.FeedForward, "forward", ffn_half_from_data_with_its_own_relu)
    options = ReportOptions(**SMALL)
    side = make_side("class", options.model, initial_weights(options.model, 0), "float64")
    capture = side.capture(*phases.batches(options)[0])
    d = D.describe(Origin("blocks.0.ffn", "backward", check("grad_input[0]", 0.5 * ONE, ONE), forced=True), {},
                   side, side, capture, capture, options)
    assert "the chain stops at a tensor made by ffn_half_from_data_with_its_own_relu" in d.hint and d.op is None


def test_the_op_is_probed_on_the_inputs_the_module_was_judged_on() -> None:
    # run alone: the reference's inputs (the expected capture); in the joint run: its own
    options = ReportOptions(**SMALL)
    side = make_side("class", options.model, initial_weights(options.model, 0), "float64")
    bad = check("grad_input[0]", 2 * ONE, ONE)
    with faults.activate("relu_backward_no_mask"):
        capture = side.capture(*phases.batches(options)[0])
        without = replace(capture, calls={})  # no record of the module: nothing to probe
        alone = D.describe(Origin("blocks.0.ffn", "backward", bad, forced=True), {}, side, side, without, capture,
                           options)
        joint = D.describe(Origin("blocks.0.ffn", "backward", bad), {}, side, side, capture, without, options)
        none = D.describe(Origin("blocks.0.ffn", "backward", bad), {}, side, side, without, capture, options)
    assert alone.op is not None and alone.op["op"] == "relu_backward_passes_all"
    assert joint.op == alone.op and none.op is None


def test_the_loss_sources_are_the_sides_own() -> None:
    torch_side, class_side = _side("torch"), _side("class")
    d = D.loss_divergence(LOSS_OK, capture(loss_requires_grad=False), EXPECTED, OPTIONS, torch_side, class_side)
    assert (d.scratch_source, d.reference_source) == (torch_side.loss_source(), class_side.loss_source())
    assert torch_side.loss_source() != class_side.loss_source()
    adapted = _Adapted(_Adapter())
    for d in (D.loss_divergence(LOSS_OK, capture(loss_requires_grad=False), EXPECTED, OPTIONS, adapted, torch_side),
              D.loss_divergence(LOSS_BAD, capture(loss=6.0), EXPECTED, OPTIONS, adapted, torch_side)):
        assert _def_at(d.scratch_source, "loss_and_backward") and d.reference_source == torch_side.loss_source()


def test_the_child_line_is_the_line_that_ran() -> None:
    # a pre-LN block: its forward names ln1 first on the post-LN line, but the pre-LN line is the one
    # that ran; the child's recorded call stack tells them apart
    options = ReportOptions(**{**SMALL, "model": replace(SMALL["model"], norm="pre")})
    side = make_side("class", options.model, initial_weights(options.model, 0), "float64")
    capture = side.capture(*phases.batches(options)[0])
    results = judge(capture, capture)
    results["blocks.0.ln1"].forward[0] = check("input[0]", -ONE, ONE)
    d = D.describe(Origin("blocks.0", "forward", check("output", 2 * ONE, ONE), container_code=True), results,
                   side, side, capture, capture, options, {})
    block = side.source("blocks.0")
    ran = _line_number_of("x = x + self.attn(self.ln1(x), mask)", block)
    assert ran != _line_number_of("self.ln1(", block)  # the premise: not the first line naming ln1
    assert d.scratch_source == ran and d.reference_source == ran
