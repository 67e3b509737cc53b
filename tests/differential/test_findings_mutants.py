"""`findings`: modules run alone (`force_modules`), the origins `module_origins` and `refine_cut` name, the
loss judged alone, the optimizer findings, the soundness list and the order and merging of findings, on
hand-built captures and stand-in sides whose every number is worked out here. Written to kill the mutants
``benchmarks/mutation.py`` found surviving in findings.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from differential import diagnose as K
from differential import findings as F
from differential.capture import Call, Capture
from differential.compare import compare
from differential.diagnose import Divergence
from differential.localize import Check, ModuleResult, Origin

ONE = np.array([1.0, 2.0])


def _arr(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def call(path: str, enter: int, exit_at: int, inputs: list[Any] | None = None, output: Any = ONE,
         grad_output: Any = ONE, grad_inputs: list[Any] | None = None) -> Call:
    inputs = [ONE] if inputs is None else inputs
    return Call(path=path, enter=enter, exit=exit_at, inputs=[_arr(x) for x in inputs], output=_arr(output),
                input_requires_grad=[True] * len(inputs), output_requires_grad=True, grad_output=_arr(grad_output),
                grad_inputs=[_arr(g) for g in ([ONE] * len(inputs) if grad_inputs is None else grad_inputs)])


def capture(calls: list[Call], params: dict[str, Any] | None = None, grads: dict[str, Any] | None = None,
            requires: dict[str, bool] | None = None, loss: float = 2.0, logits: Any = ONE,
            logits_grad: Any = None, logits_grad_known: bool = True, loss_requires_grad: bool = True) -> Capture:
    params = {n: _arr(v) for n, v in (params or {}).items()}
    grads = {n: _arr(g) for n, g in (grads or {}).items()}
    return Capture(impl="x", dtype="float64", calls={c.path: c for c in calls}, loss=loss, logits=_arr(logits),
                   params=params, param_grads=grads,
                   param_requires_grad={n: True for n in params} if requires is None else requires,
                   loss_requires_grad=loss_requires_grad, logits_grad=_arr(logits_grad),
                   logits_grad_known=logits_grad_known)


def check(tensor: str, actual: Any, expected: Any) -> Check:
    a, e = _arr(actual), _arr(expected)
    return Check(tensor, compare(a, e), a, e)


GOOD = check("output", ONE, ONE)


# --- Forced and needs_forcing ---------------------------------------------------------------------------

def test_forced_bad_is_the_first_disagreeing_check() -> None:
    f = F.Forced("m", backward=[check("grad_input[0]", ONE, ONE), check("grad_input[1]", -ONE, ONE),
                                check("grad_input[2]", 2 * ONE, ONE)])
    assert f.bad("backward").tensor == "grad_input[1]"
    assert f.bad("forward") is None and f.bad("param_grad") is None


@pytest.mark.parametrize("phase", ["forward", "backward", "param_grad"])
def test_needs_forcing_any_disagreement(phase: str) -> None:
    res = ModuleResult("m", forward=[GOOD], backward=[GOOD], param_grad=[GOOD])
    assert F.needs_forcing(res) is False
    getattr(res, phase).append(check("x", -ONE, ONE))
    assert F.needs_forcing(res) is True
    assert F.needs_forcing(ModuleResult("m", missing=True)) is True


# --- force_modules -------------------------------------------------------------------------------------

class AloneSide:
    """``run_module`` answers from a table: {path: (output, input grads, parameter grads) or an exception}."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, list[np.ndarray], Any, Any]] = []

    def run_module(self, path: str, inputs: list[np.ndarray], tokens: Any, grad_output: Any) -> Any:
        self.asked.append((path, inputs, tokens, grad_output))
        answer = self.answers[path]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_force_modules_compares_what_the_module_returns_alone() -> None:
    g_out = np.array([-200.0, 100.0])
    expected = capture([call("", 0, 1), call("m", 1, 0, inputs=[ONE, ONE, ONE], grad_output=g_out,
                                             grad_inputs=[None, [1e-3, 0.0], ONE])],
                       {"m.w": ONE, "m.sub.b": ONE, "top": ONE},
                       {"m.w": [1e-3, 0.0], "m.sub.b": ONE, "top": ONE})
    # 1.5e-7 off a 1e-3 gradient: within 1e-9 * 200 (max |grad_output|), not within 1e-9 * 100
    near = np.array([1e-3, 1.5e-7])
    grads = {"m.w": near, "m.sub.b": -ONE}
    side = AloneSide({"m": (ONE, [None, near], grads)})
    tokens = np.array([[1, 2]])
    out = F.force_modules(side, expected, None, tokens, ["m"])
    assert list(out) == ["m"]
    f = out["m"]
    assert f.error is None and f.path == "m"
    assert side.asked[0][0] == "m" and side.asked[0][2] is tokens and side.asked[0][3] is g_out
    assert side.asked[0][1] is expected.calls["m"].inputs
    # only what disagrees is kept (with its metrics and both arrays): the output and the gradients
    # within the scale's round-off are not there
    assert f.forward == []
    # input 0: None on both sides, skipped; input 2: the module gave fewer gradients than inputs
    assert [(c.tensor, c.match) for c in f.backward] == [("grad_input[2]", False)]
    assert f.backward[0].actual is None and f.backward[0].expected is expected.calls["m"].grad_inputs[2]
    assert f.backward[0].metrics.missing == "actual"
    assert [(c.tensor, c.match) for c in f.param_grad] == [("param_grad[sub.b]", False)]
    assert f.param_grad[0].actual is grads["m.sub.b"] and f.param_grad[0].expected is expected.param_grads["m.sub.b"]
    assert f.param_grad[0].metrics.max_abs == 2 * np.max(np.abs(ONE))  # -ONE against ONE
    assert f.grads is grads
    far = np.array([1e-3, 3e-7])
    answers = (-ONE, [None, far], {"m.w": far})
    f = F.force_modules(AloneSide({"m": answers}), expected, None, tokens, ["m"])["m"]
    assert [c.tensor for c in f.forward + f.backward + f.param_grad] == \
        ["output", "grad_input[1]", "grad_input[2]", "param_grad[w]", "param_grad[sub.b]"]
    assert not any(c.match for c in f.forward + f.backward + f.param_grad)
    assert f.forward[0].actual is answers[0] and f.forward[0].expected is expected.calls["m"].output
    assert f.backward[0].actual is far and f.backward[0].expected is expected.calls["m"].grad_inputs[1]
    assert f.param_grad[0].actual is far and f.param_grad[1].actual is None


def test_force_modules_forward_only_where_the_reference_has_no_output_gradient() -> None:
    expected = capture([call("m", 0, 0, grad_output=None)], {"m.w": ONE}, {"m.w": ONE})
    f = F.force_modules(AloneSide({"m": (-ONE, [-ONE], {"m.w": -ONE})}), expected, None, None, ["m"])["m"]
    assert [c.tensor for c in f.forward] == ["output"] and f.backward == [] and f.param_grad == []


def test_force_modules_with_noise() -> None:
    off = ONE + 1e-6  # float32-size: a match against the reference's own float32 run only
    expected = capture([call("m", 0, 0, inputs=[ONE, ONE])], {"m.w": ONE}, {"m.w": ONE})
    noise = capture([call("m", 0, 0, inputs=[ONE, ONE], output=off, grad_inputs=[off, off])], {"m.w": ONE},
                    {"m.w": off})
    side = AloneSide({"m": (off, [off, off], {"m.w": off})})
    f = F.force_modules(side, expected, noise, None, ["m"])["m"]
    assert f.forward + f.backward + f.param_grad == []  # all four within the float32 noise
    f = F.force_modules(side, expected, None, None, ["m"])["m"]
    assert [c.tensor for c in f.forward + f.backward + f.param_grad] == \
        ["output", "grad_input[0]", "grad_input[1]", "param_grad[w]"]
    assert not any(c.match for c in f.forward + f.backward + f.param_grad)
    short = capture([call("m", 0, 0, inputs=[ONE], output=off, grad_inputs=[off])], {"m.w": ONE}, {"m.w": off})
    f = F.force_modules(side, expected, short, None, ["m"])["m"]
    assert [(c.tensor, c.match) for c in f.backward] == [("grad_input[1]", False)]
    elsewhere = capture([call("k", 0, 0)], {"m.w": ONE}, {"m.w": off})
    f = F.force_modules(side, expected, elsewhere, None, ["m"])["m"]
    assert [c.tensor for c in f.forward + f.backward + f.param_grad] == ["output", "grad_input[0]", "grad_input[1]"]


def test_force_modules_a_gradient_where_the_reference_has_none_disagrees() -> None:
    # the reference's input 0 gets no gradient (None); the module run alone gives one: a disagreement,
    # with the expected side missing; input 1 is None on both sides: nothing to compare
    expected = capture([call("m", 0, 0, inputs=[ONE, ONE], grad_inputs=[None, None])])
    f = F.force_modules(AloneSide({"m": (ONE, [ONE, None], {})}), expected, None, None, ["m"])["m"]
    assert [(c.tensor, c.match) for c in f.backward] == [("grad_input[0]", False)]
    assert f.backward[0].metrics.missing == "expected" and f.backward[0].actual is ONE


def test_force_modules_metrics_are_judged_as_the_verdict_was() -> None:
    """A kept check's metrics come from the same comparison its verdict did: with the reference's
    float32 run as the noise floor, and the output gradient's scale for the gradients."""
    g_out = np.array([-300.0, 100.0])
    expected = capture([call("m", 0, 0, grad_output=g_out)], {"m.w": ONE}, {"m.w": ONE})
    noise = capture([call("m", 0, 0, output=ONE + 1e-6, grad_inputs=[ONE + 1e-6])], {"m.w": ONE},
                    {"m.w": ONE + 1e-6})
    bad = ONE + 1e-3  # far past the float32 floor (8e-6) and the scale's round-off (3e-7)
    f = F.force_modules(AloneSide({"m": (bad, [bad], {"m.w": bad})}), expected, noise, None, ["m"])["m"]
    out, grad_in, grad_w = f.forward[0], f.backward[0], f.param_grad[0]
    assert out.metrics == compare(bad, ONE, noise.calls["m"].output)
    assert grad_in.metrics == compare(bad, ONE, noise.calls["m"].grad_inputs[0], 300.0)
    assert grad_w.metrics == compare(bad, ONE, noise.param_grads["m.w"], 300.0)
    # the floor and the scale show in the ratio: without them it would be another number
    assert out.metrics.tolerance_ratio != compare(bad, ONE).tolerance_ratio
    f = F.force_modules(AloneSide({"m": (bad, [bad], {"m.w": bad})}), expected, None, None, ["m"])["m"]
    assert f.backward[0].metrics == compare(bad, ONE, None, 300.0)
    assert f.backward[0].metrics.tolerance_ratio != compare(bad, ONE).tolerance_ratio


def test_force_modules_judges_an_output_on_its_own_scale() -> None:
    # an output of about 1e-3, 5e-10 off: beyond rtol |r| + atol max|r| (1e-10 + 1e-12), so it disagrees;
    # only the gradients get the output gradient's scale (here 1, which would have allowed it)
    small = np.array([1e-3, -1e-3])
    expected = capture([call("m", 0, 0, output=small, grad_output=np.array([1.0, 1.0]))])
    f = F.force_modules(AloneSide({"m": (small + 5e-10, [ONE], {})}), expected, None, None, ["m"])["m"]
    assert [(c.tensor, c.match) for c in f.forward] == [("output", False)]
    assert f.forward[0].metrics == compare(small + 5e-10, small)


def test_force_modules_keeps_the_error_and_goes_on() -> None:
    expected = capture([call("a", 0, 0), call("b", 1, 1)])
    boom = ZeroDivisionError("division by zero")
    out = F.force_modules(AloneSide({"a": boom, "b": (-ONE, [ONE], {})}), expected, None, None, ["a", "b"])
    assert out["a"].error is boom and out["a"].forward == [] and out["a"].grads == {}
    assert out["b"].error is None and [(c.tensor, c.match) for c in out["b"].forward] == [("output", False)]


def test_force_modules_lets_not_available_through() -> None:
    expected = capture([call("a", 0, 0)])
    with pytest.raises(F.NotAvailable, match="no hooks"):
        F.force_modules(AloneSide({"a": F.NotAvailable("no hooks")}), expected, None, None, ["a"])


# --- refine_cut ----------------------------------------------------------------------------------------

TINY = np.array([0.01, 0.03])  # a fiftieth of ONE's norm, in another direction: mostly detached


def test_refine_cut_names_a_mostly_detached_backward() -> None:
    kind, words = K.classify(TINY, ONE, is_grad=True)
    assert kind == K.MOSTLY_DETACHED  # the premise (diagnose's own rule)
    origin = Origin("m", "backward", None, kind=K.GRAPH_BREAK, reason="it is cut", culprit=("m", "output"))
    bad = check("grad_input[0]", TINY, ONE)
    forced = {"m": F.Forced("m", backward=[check("grad_input[1]", ONE, ONE), bad])}
    refined = F.refine_cut(origin, forced)
    assert refined.kind == K.MOSTLY_DETACHED and refined.check is bad
    assert refined.reason == f"run alone, its grad_input[0] {words}; it is cut"
    assert refined.culprit == ("m", "output") and refined.path == "m"


@pytest.mark.parametrize("how", ["other kind", "error", "not forced", "all match", "None", "zero"])
def test_refine_cut_leaves_other_cuts(how: str) -> None:
    origin = Origin("m", "backward", None, kind=K.GRAPH_BREAK if how != "other kind" else K.VALUE, reason="cut")
    grad = {"None": None, "zero": np.zeros(2), "all match": ONE}.get(how, TINY)
    forced = F.Forced("m", backward=[check("grad_input[0]", grad, ONE)],
                      error=ValueError("x") if how == "error" else None)
    assert F.refine_cut(origin, {} if how == "not forced" else {"m": forced}) is origin


# --- module_origins ------------------------------------------------------------------------------------

def _tree(params: dict[str, Any] | None = None) -> Capture:
    """root "" > blk > (blk.a, blk.b), then head; exits children first."""
    return capture([call("", 0, 4), call("blk", 1, 2), call("blk.a", 2, 0), call("blk.b", 3, 1),
                    call("head", 4, 3)], params, {n: ONE for n in params or {}})


def _results(expected: Capture, missing: tuple[str, ...] = ()) -> dict[str, ModuleResult]:
    return {p: ModuleResult(p, missing=p in missing) for p in expected.calls}


def _where(origins: list[Origin]) -> list[tuple[str, str, str | None]]:
    return [(o.path, o.phase, o.kind) for o in origins]


BAD_FWD = [check("output", -ONE, ONE)]
BAD_BWD = [check("grad_input[0]", -ONE, ONE)]
BAD_PAR = [check("param_grad[w]", -ONE, ONE)]


def test_module_origins_blames_the_innermost_forward() -> None:
    expected = _tree()
    forced = {p: F.Forced(p, forward=BAD_FWD) for p in ("blk.b", "blk", "", "head")}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    # blk.b returns first; blk and the root contain it; head is a leaf of its own
    assert _where(origins) == [("blk.b", "forward", None), ("head", "forward", None)]
    assert all(o.forced for o in origins) and origins[0].check is BAD_FWD[0]
    assert origins[0].container_code is False


def test_module_origins_a_container_whose_children_run_alone_match() -> None:
    expected = _tree()
    forced = {"blk": F.Forced("blk", forward=BAD_FWD), "blk.a": F.Forced("blk.a", forward=[GOOD])}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("blk", "forward", None)] and origins[0].container_code is True
    forced = {"": F.Forced("", backward=BAD_BWD)}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("", "backward", None)] and origins[0].container_code is True
    assert origins[0].forced is True and origins[0].check is BAD_BWD[0]
    forced = {"blk.a": F.Forced("blk.a", backward=BAD_BWD)}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert origins[0].container_code is False


def test_module_origins_a_repeated_call_is_no_container() -> None:
    expected = capture([call("", 0, 2), call("blk", 1, 0), call("blk#2", 2, 1), call("blk.a", 3, 3)])
    # (blk.a entered last only to keep the table short: recorded modules decide who has children)
    forced = {"blk#2": F.Forced("blk#2", forward=BAD_FWD)}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("blk#2", "forward", None)] and origins[0].container_code is False


def test_module_origins_of_a_module_never_called() -> None:
    expected = _tree()
    forced = {"blk": F.Forced("blk", forward=BAD_FWD, backward=BAD_BWD), "": F.Forced("", backward=BAD_BWD),
              "head": F.Forced("head", backward=BAD_BWD)}
    origins = F.module_origins(forced, _results(expected, missing=("blk.a",)), expected, [], expected)
    assert _where(origins) == [("blk.a", "forward", K.VALUE), ("head", "backward", None)]
    assert origins[0].reason == "the implementation never called this module" and origins[0].check is None
    assert origins[0].forced is False


def test_module_origins_of_a_crash() -> None:
    expected = _tree()
    forced = {"blk.a": F.Forced("blk.a", error=KeyError("w")), "blk": F.Forced("blk", error=ValueError("bad")),
              "head": F.Forced("head", error=ValueError("shapes (2,) and (3,)"))}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("blk.a", "forward", K.CRASH), ("head", "forward", K.CRASH)]
    assert origins[0].reason == "it raised when run alone on the reference's inputs: KeyError: 'w'"
    assert origins[1].reason == "it raised when run alone on the reference's inputs: ValueError: shapes (2,) and (3,)"
    assert origins[0].forced is True and origins[0].check is None
    # a crash below a container hides the container's backward and its forward
    forced = {"blk.a": F.Forced("blk.a", error=KeyError("w")), "blk": F.Forced("blk", forward=BAD_FWD),
              "": F.Forced("", backward=BAD_BWD)}
    assert _where(F.module_origins(forced, _results(expected), expected, [], expected)) == \
        [("blk.a", "forward", K.CRASH)]


def test_module_origins_a_backward_below_hides_the_containers_backward_only() -> None:
    expected = _tree()
    forced = {"blk.a": F.Forced("blk.a", param_grad=BAD_PAR), "blk": F.Forced("blk", backward=BAD_BWD),
              "": F.Forced("", forward=BAD_FWD)}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("blk.a", "param_grad", None), ("", "forward", None)]
    assert origins[0].check is BAD_PAR[0] and origins[0].forced is True
    assert origins[1].container_code is True


def test_module_origins_the_input_gradient_before_the_parameter_gradient() -> None:
    expected = _tree()
    forced = {"blk.a": F.Forced("blk.a", backward=BAD_BWD, param_grad=BAD_PAR)}
    origins = F.module_origins(forced, _results(expected), expected, [], expected)
    assert _where(origins) == [("blk.a", "backward", None)] and origins[0].check is BAD_BWD[0]
    assert origins[0].forced is True


def test_module_origins_leave_cuts_to_graph_breaks() -> None:
    expected = _tree()
    breaks = [Origin("blk.a", "backward", None, kind=K.GRAPH_BREAK)]
    forced = {"blk.a": F.Forced("blk.a", backward=BAD_BWD), "blk": F.Forced("blk", backward=BAD_BWD),
              "head": F.Forced("head", backward=BAD_BWD)}
    origins = F.module_origins(forced, _results(expected), expected, breaks, expected)
    assert _where(origins) == [("head", "backward", None)]  # blk.a is cut, and blk contains the cut


CUT_WORDS = ("no gradient reaches {}: the graph is cut inside this module (a result rebuilt from raw data, or an op "
             "without a backward)")


def test_module_origins_a_cut_inside_a_module_run_alone() -> None:
    params = {"blk.a.w": ONE, "blk.a.v": ONE, "blk.a.u": ONE, "head.w": ONE}  # head.w: not blk.a's
    expected = _tree(params)
    # w and v get no gradient alone; u gets none either, but it does not require grad
    actual = capture(list(expected.calls.values()), params, requires={"blk.a.w": True, "blk.a.v": True,
                                                                      "blk.a.u": False, "head.w": True})
    grads = {"blk.a.w": None, "blk.a.v": None, "blk.a.u": None}
    forced = {"blk.a": F.Forced("blk.a", backward=[check("grad_input[0]", [0.0, 0.0], ONE)], grads=grads)}
    origins = F.module_origins(forced, _results(expected), expected, [], actual)
    assert _where(origins) == [("blk.a", "backward", K.GRAPH_BREAK)]
    assert origins[0].reason == ("run alone on the reference's inputs and output gradient, "
                                 + CUT_WORDS.format("blk.a.w, blk.a.v"))
    assert origins[0].forced is True and origins[0].check.tensor == "grad_input[0]"
    kind, words = K.classify(TINY, ONE, is_grad=True)
    forced = {"blk.a": F.Forced("blk.a", backward=[check("grad_input[0]", TINY, ONE)], grads=grads)}
    origins = F.module_origins(forced, _results(expected), expected, [], actual)
    assert _where(origins) == [("blk.a", "backward", K.MOSTLY_DETACHED)]
    assert origins[0].reason == (f"run alone on the reference's inputs and output gradient, its grad_input[0] {words}; "
                                 + CUT_WORDS.format("blk.a.w, blk.a.v"))


def test_module_origins_no_cut_claimed_without_a_missing_gradient() -> None:
    params = {"blk.a.w": ONE, "blk.a.z": ONE, "blk.a.n": ONE}
    expected = capture(list(_tree().calls.values()), params, {"blk.a.w": ONE, "blk.a.z": None, "blk.a.n": ONE})
    actual = capture(list(expected.calls.values()), params, requires={"blk.a.w": True, "blk.a.z": True})
    # w got a gradient; z has none in the reference either; n is not known to require grad
    forced = {"blk.a": F.Forced("blk.a", backward=BAD_BWD,
                                grads={"blk.a.w": ONE, "blk.a.z": None, "blk.a.n": None})}
    assert _where(F.module_origins(forced, _results(expected), expected, [], actual)) == \
        [("blk.a", "backward", None)]
    # only the parameter gradient disagrees: no cut is looked for
    forced = {"blk.a": F.Forced("blk.a", param_grad=BAD_PAR, grads={"blk.a.w": None})}
    actual = capture(list(expected.calls.values()), params)
    assert _where(F.module_origins(forced, _results(expected), expected, [], actual)) == \
        [("blk.a", "param_grad", None)]


# --- the loss alone -------------------------------------------------------------------------------------

class LossSide:
    def __init__(self, answer: Any) -> None:
        self.answer, self.asked = answer, []

    def loss_on(self, logits: np.ndarray, targets: np.ndarray) -> Any:
        self.asked.append((logits, targets))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_loss_phase_on_matching_logits_uses_the_joint_run() -> None:
    expected = capture([], loss=2.0, logits_grad=ONE)
    actual = capture([], loss=2.5, logits_grad=-ONE, loss_requires_grad=False)
    side = LossSide(None)
    out = F.loss_phase(side, actual, expected, None, np.array([1]))
    assert side.asked == []
    assert out["on"] == "joint" and out["value"] == 2.5 and out["value_match"] is False
    assert out["requires_grad"] is False and out["grad_match"] is False and out["not_checked"] is None
    assert out["value_metrics"]["max_abs"] == 0.5 and out["grad_metrics"]["max_abs"] == 4.0
    assert out["_grad"] is actual.logits_grad


@pytest.mark.parametrize("why", ["logits differ", "no logits gradient"])
def test_loss_phase_on_the_references_logits(why: str) -> None:
    expected = capture([], loss=2.0, logits_grad=ONE)
    actual = capture([], loss=9.0, logits=-ONE if why == "logits differ" else ONE, logits_grad=ONE,
                     logits_grad_known=why == "logits differ")
    targets = np.array([1])
    side = LossSide((2.0, ONE * 1.0, True))
    out = F.loss_phase(side, actual, expected, None, targets)
    assert side.asked[0][0] is expected.logits and side.asked[0][1] is targets
    assert out["on"] == "reference logits" and out["value"] == 2.0 and out["value_match"] is True
    assert out["grad_match"] is True and out["requires_grad"] is True
    out = F.loss_phase(LossSide((2.0, ONE, False)), actual, expected, None, targets)
    assert out["requires_grad"] is False


def test_loss_phase_not_available() -> None:
    actual = capture([], logits=-ONE)
    out = F.loss_phase(LossSide(F.NotAvailable("the adapter has no loss_on")), actual, capture([]), None, None)
    assert out == {"on": None, "value": None, "value_match": None, "grad_match": None, "grad_metrics": None,
                   "not_checked": "the adapter has no loss_on"}


def test_loss_phase_with_noise() -> None:
    off = ONE + 1e-6
    expected = capture([], loss=2.0, logits_grad=ONE)
    noise = capture([], loss=2.0 + 1e-6, logits=off, logits_grad=off)
    actual = capture([], loss=2.0 + 1e-6, logits=off, logits_grad=off)
    out = F.loss_phase(LossSide(None), actual, expected, noise, None)
    assert (out["on"], out["value_match"], out["grad_match"]) == ("joint", True, True)
    side = LossSide((2.0 + 1e-6, off, True))
    out = F.loss_phase(side, actual, expected, None, None)
    assert (out["on"], out["value_match"], out["grad_match"]) == ("reference logits", False, False)
    # an error far beyond the reference's own float32 error is no match, noise or not
    far = capture([], loss=3.0, logits=off, logits_grad=3 * ONE)
    out = F.loss_phase(LossSide(None), far, expected, noise, None)
    assert (out["on"], out["value_match"], out["grad_match"]) == ("joint", False, False)


def _phase(value: float, grad: Any, on: str = "reference logits", value_match: bool | None = None,
           grad_match: bool | None = False) -> dict[str, Any]:
    return {"on": on, "value": value, "value_match": value_match if value_match is not None else value == 2.0,
            "_grad": _arr(grad), "grad_match": grad_match, "grad_metrics": {"m": 1},
            "value_metrics": {"v": 2}}


def test_loss_backward_finding() -> None:
    expected = capture([], loss=2.0, logits_grad=ONE)
    d = F.loss_backward_finding(_phase(2.0, [3.0, 1.0]), expected, "mine.py:1", "ref.py:2")
    kind, words = K.classify(np.array([3.0, 1.0]), ONE, is_grad=True)
    assert (d.module, d.phase, d.kind, d.tensor) == ("(loss)", "backward", kind, "grad_logits")
    assert d.hint == (f"on the reference's logits, the loss value matches, but its gradient with respect to the "
                      f"logits {words}: the loss's own backward is wrong, and every gradient in the model inherits "
                      "the error")
    assert (d.scratch_source, d.reference_source, d.metrics) == ("mine.py:1", "ref.py:2", {"m": 1})
    d = F.loss_backward_finding(_phase(3.0, [3.0, 1.0], on="joint"), expected, "a", "b")
    assert d.hint.startswith("the loss value differs too, but its gradient")
    assert F.loss_backward_finding(_phase(2.0, ONE, grad_match=True), expected, "a", "b") is None
    assert F.loss_backward_finding(_phase(2.0, ONE, grad_match=None), expected, "a", "b") is None


def test_loss_backward_finding_one_factor_on_value_and_gradient_is_one_fault() -> None:
    expected = capture([], loss=2.0, logits_grad=ONE)
    assert F.loss_backward_finding(_phase(6.0, 3 * ONE), expected, "a", "b") is None  # a sum: x3 on both
    assert F.loss_backward_finding(_phase(6.0 * (1 + 0.5e-4), 3 * ONE), expected, "a", "b") is None
    assert F.loss_backward_finding(_phase(6.0 * (1 + 2e-4), 3 * ONE), expected, "a", "b").kind == K.SCALE
    assert F.loss_backward_finding(_phase(-6.0, -3 * ONE), expected, "a", "b") is None  # |ratio|: sign kept
    assert F.loss_backward_finding(_phase(4.0, 3 * ONE), expected, "a", "b").kind == K.SCALE
    # the value matches: a factor on the gradient alone is the backward's own
    assert F.loss_backward_finding(_phase(6.0, 3 * ONE, value_match=True), expected, "a", "b").kind == K.SCALE
    # no fit (the gradient is no rescaling), no gradient, a zero reference loss
    assert F.loss_backward_finding(_phase(6.0, [3.0, 1.0]), expected, "a", "b") is not None
    assert F.loss_backward_finding(_phase(6.0, None), expected, "a", "b").kind == K.GRAPH_BREAK
    zero = capture([], loss=0.0, logits_grad=ONE)
    assert F.loss_backward_finding(_phase(6.0, 3 * ONE, value_match=False), zero, "a", "b").kind == K.SCALE
    no_ref = capture([], loss=2.0, logits_grad=None)
    assert F.loss_backward_finding(_phase(6.0, 3 * ONE), no_ref, "a", "b").kind == K.VALUE


def test_loss_value_finding() -> None:
    expected = capture([], loss=2.0)
    d = F.loss_value_finding(_phase(6.0, None), expected, "mine.py:1", "ref.py:2")
    assert (d.module, d.phase, d.kind, d.tensor) == ("(loss)", "training", K.LOSS, "loss")
    assert d.hint == ("on the reference's logits, the loss differs (6 vs 2, ratio 3 (= 3)): the loss function is "
                      "wrong (a sum where a mean is needed gives a ratio of batch x sequence length)")
    assert (d.scratch_source, d.reference_source, d.metrics) == ("mine.py:1", "ref.py:2", {"v": 2})
    d = F.loss_value_finding(_phase(1.0, None, on="joint"), expected, "a", "b")
    assert d.hint.startswith("on logits that match, the loss differs (1 vs 2, ratio 0.5 (= 1/2))")
    d = F.loss_value_finding(_phase(1.0, None), capture([], loss=0.0), "a", "b")
    assert "(1 vs 0, ratio inf)" in d.hint
    assert F.loss_value_finding(_phase(2.0, None), expected, "a", "b") is None
    phase = _phase(6.0, None)
    phase["value_match"] = None
    assert F.loss_value_finding(phase, expected, "a", "b") is None


# --- the optimizer --------------------------------------------------------------------------------------

def _step(name: str, update: Any, ref_update: Any) -> Check:
    return check(f"param[{name}]", update, ref_update)


def test_optimizer_findings_group_by_module_and_name_every_parameter() -> None:
    steps = [_step("blk.a.w", 2 * ONE, ONE), _step("blk.a.b", ONE, ONE), _step("blk.a.v", [5.0, 1.0], ONE),
             _step("head.w", -ONE, ONE), _step("top", 3 * ONE, ONE), _step("blk.a.u", [0.0, 1.0], ONE)]
    empty = capture([])
    out = F.optimizer_findings(steps, empty, empty, None, "opt.py:1", "ref.py:2")
    assert [(d.module, d.phase, d.kind, d.tensor) for d in out] == [
        ("blk.a", "optimizer", K.SCALE, "param[blk.a.w]"), ("head", "optimizer", K.SIGN, "param[head.w]"),
        ("(model)", "optimizer", K.SCALE, "param[top]")]
    _, words = K.classify(2 * ONE, ONE, is_grad=True)
    assert out[0].hint == (f"one optimizer step with the reference's gradients: the update of blk.a.w {words} "
                           "(also wrong: blk.a.v, blk.a.u)")
    assert out[1].hint.endswith("opposite sign")  # a single parameter: no "also wrong"
    assert (out[0].scratch_source, out[0].reference_source) == ("opt.py:1", "ref.py:2")
    assert out[0].metrics == steps[0].metrics.to_dict()
    assert F.optimizer_findings([_step("w", ONE, ONE)], empty, empty, None, "a", "b") == []


def test_optimizer_findings_parameters_left_unchanged() -> None:
    params = {"m.w": ONE, "m.b": ONE, "m.c": ONE}
    expected = capture([], params, {"m.w": ONE, "m.b": ONE, "m.c": ONE})
    actual = capture([], params, {"m.w": ONE, "m.b": None, "m.c": -ONE})
    steps = [_step("m.w", [0.0, 0.0], ONE), _step("m.b", [0.0, 0.0], ONE), _step("m.c", [0.0, 0.0], ONE)]
    d = F.optimizer_findings(steps, actual, expected, None, "a", "b")[0]
    assert (d.module, d.kind, d.tensor) == ("m", K.NOT_UPDATED, "param[m.w]")
    assert d.hint == ("given the reference's gradients, one optimizer step leaves m.w, m.b, m.c unchanged: they are "
                      "missing from the parameter list the optimizer was given (m.w's own gradient matches the "
                      "reference; m.b has no gradient of its own either; m.c's own gradient differs from the "
                      "reference)")
    one = F.optimizer_findings(steps[1:2], actual, expected, None, "a", "b")[0]
    assert one.hint == ("given the reference's gradients, one optimizer step leaves m.b unchanged: it is missing "
                        "from the parameter list the optimizer was given (m.b has no gradient of its own either)")


def test_optimizer_findings_frozen_only_when_every_wrong_parameter_is() -> None:
    empty = capture([], {"m.w": ONE}, {"m.w": ONE})
    steps = [_step("m.w", [0.0, 0.0], ONE), _step("m.v", 2 * ONE, ONE)]
    d = F.optimizer_findings(steps, empty, empty, None, "a", "b")[0]
    assert d.kind == K.ZERO_GRAD and d.hint.endswith("(also wrong: m.v)")  # classified on the first
    # an update missing altogether, or one that moves a little, is no frozen parameter
    missing = Check("param[m.w]", compare(None, ONE), None, ONE)
    assert F.optimizer_findings([missing], empty, empty, None, "a", "b")[0].kind == K.GRAPH_BREAK
    little = _step("m.w", [0.0, 0.0], [0.0, 1e-3])  # the reference moves it, if only a little
    assert F.optimizer_findings([little], empty, empty, None, "a", "b")[0].kind == K.NOT_UPDATED
    moved = _step("m.w", [0.0, 1e-3], ONE)
    assert F.optimizer_findings([moved], empty, empty, None, "a", "b")[0].kind != K.NOT_UPDATED


def test_optimizer_findings_own_gradient_with_noise() -> None:
    params = {"m.w": ONE}
    expected = capture([], params, {"m.w": ONE})
    actual = capture([], params, {"m.w": ONE + 1e-6})
    noise = capture([], params, {"m.w": ONE + 1e-6})
    steps = [_step("m.w", [0.0, 0.0], ONE)]
    assert "m.w's own gradient matches" in F.optimizer_findings(steps, actual, expected, noise, "a", "b")[0].hint
    assert "m.w's own gradient differs" in F.optimizer_findings(steps, actual, expected, None, "a", "b")[0].hint


# --- soundness ------------------------------------------------------------------------------------------

def _row(name: str, **no: bool) -> dict[str, Any]:
    return {"parameter": name, "has_grad": True, "nonzero": True, "matches_reference": True,
            "changed_after_step": True, "updated_by_optimizer": True, "update_matches_reference": True, **no}


def test_disagreements_lists_every_item_that_disagrees() -> None:
    bad_out, bad_grad, bad_par = check("output", -ONE, ONE), check("grad_input[0]", -ONE, ONE), \
        check("param_grad[w]", -ONE, ONE)
    results = {"": ModuleResult("", forward=[GOOD]), "a": ModuleResult("a", missing=True, forward=[bad_out]),
               "b": ModuleResult("b", forward=[GOOD, bad_out], backward=[bad_grad, GOOD], param_grad=[bad_par])}
    loss = {"match": False, "grad_match": False}
    flow = [_row("b.w"), _row("b.v", has_grad=False), _row("c.w", nonzero=False), _row("top", matches_reference=False)]
    update = [_row("b.w"), _row("b.u", changed_after_step=False), _row("b.t", updated_by_optimizer=False),
              _row("d.x.w", update_matches_reference=False)]
    opt = [check("param[b.w]", ONE, ONE), check("param[e.f.w]", -ONE, ONE)]
    out = F.disagreements(results, loss, flow, update, opt, {"status": "diverged", "first_divergent_step": 3})
    assert [item[:3] for item in out] == [
        ("a", "forward", "the module was never called"),
        ("b", "forward", "output"), ("b", "backward", "grad_input[0]"), ("b", "param_grad", "param_grad[w]"),
        ("(loss)", "training", "loss"), ("(loss)", "backward", "grad_logits"),
        ("b", "param_grad", "gradient flow row b.v"), ("c", "param_grad", "gradient flow row c.w"),
        ("", "param_grad", "gradient flow row top"),
        ("b", "optimizer", "weight update row b.u"), ("b", "optimizer", "weight update row b.t"),
        ("d.x", "optimizer", "weight update row d.x.w"),
        ("e.f", "optimizer", "param[e.f.w]"),
        ("", "training", "training step 3")]
    assert out[0][3] is None and out[1][3] is bad_out and out[12][3] is opt[1] and out[4][3] is None


def test_disagreements_of_a_clean_run_and_of_missing_keys() -> None:
    results = {"": ModuleResult("", forward=[GOOD], backward=[GOOD], param_grad=[GOOD])}
    assert F.disagreements(results, {"match": True, "grad_match": True}, [_row("w")], [_row("w")], [GOOD],
                           {"status": "match"}) == []
    assert F.disagreements(results, {}, [], [], [], {}) == []
    assert F.disagreements(results, {"grad_match": None}, [], [], [], {"status": "not_checked"}) == []


def test_unexplained() -> None:
    bad = check("grad_input[0]", 2 * ONE, ONE)
    d = F.unexplained(("blk.a", "backward", "grad_input[0]", bad), "mine.py:1", "ref.py:2")
    _, words = K.classify(2 * ONE, ONE, is_grad=True)
    assert (d.module, d.phase, d.kind, d.tensor) == ("blk.a", "backward", K.SCALE, "grad_input[0]")
    assert d.hint == (f"grad_input[0] {words}; no rule could attribute it to one module's own code (the value may "
                      "change between modules, outside any recorded module)")
    assert (d.scratch_source, d.reference_source, d.metrics) == ("mine.py:1", "ref.py:2", bad.metrics.to_dict())
    # the forward is judged as a value, not a gradient: an all-zero output is a value mismatch
    zero = check("output", [0.0, 0.0], ONE)
    assert F.unexplained(("", "forward", "output", zero), "a", "b").kind == K.VALUE
    assert F.unexplained(("", "backward", "grad_output", zero), "a", "b").kind == K.ZERO_GRAD
    d = F.unexplained(("", "training", "training step 2", None), "a", "b")
    assert (d.module, d.kind, d.tensor, d.metrics) == ("(model)", K.VALUE, "training step 2", None)
    assert d.hint.startswith("training step 2 disagrees with the reference; no rule")
    assert F.unexplained(("(loss)", "training", "loss", None), "a", "b").module == "(loss)"


# --- order and merging ------------------------------------------------------------------------------------

def _d(module: str, phase: str, kind: str = K.VALUE, source: str = "s.py:1", hint: str = "h",
       op: dict[str, str] | None = None) -> Divergence:
    return Divergence(module=module, phase=phase, kind=kind, hint=hint, scratch_source=source,
                      reference_source="r", op=op)


ORDER = {"": (9, 0), "a": (2, 1), "b": (5, 4)}


@pytest.mark.parametrize("d, key", [
    (_d("(data)", "training"), (0, 0)),
    (_d("a", "forward"), (1, 2)),
    (_d("(model)", "forward"), (1, 9)),
    (_d("zz", "forward"), (1, 0)),                        # not in the order: 0
    (_d("zz", "backward"), (4, 0)),
    (_d("zz", "optimizer"), (6, 0)),
    (_d("(loss)", "training"), (2, 0)),
    (_d("(loss)", "forward"), (2, 0)),
    (_d("(loss)", "backward"), (3, 0)),
    (_d("b", "backward"), (4, -4)),
    (_d("b", "param_grad"), (4, -4)),
    (_d("(model)", "backward", K.REPEATED_BACKWARD), (5, 0)),
    (_d("b", "optimizer"), (6, 4)),
    (_d("(model)", "training"), (7, 0)),
])
def test_pipeline_key(d: Divergence, key: tuple[int, int]) -> None:
    assert F.pipeline_key(d, ORDER) == key


def test_root_cause() -> None:
    assert F.root_cause(_d("a", "backward", op={"source": "ops.py:3", "op": "mul"})) == ("op", "ops.py:3")
    hint = "x; the chain stops at a tensor made by Tensor.__init__ at scratch_model/layers.py:12, so"
    assert F.root_cause(_d("a", "backward", hint=hint)) == ("cut", "Tensor.__init__ at scratch_model/layers.py:12,")
    assert F.root_cause(_d("(loss)", "backward", K.SCALE)) == ("module", "(loss)", "backward", K.SCALE)
    assert F.root_cause(_d("a", "forward", K.SCALE, source="l.py:4")) == ("code", "forward", K.SCALE, "l.py:4")


def test_merge_orders_by_pipeline_and_folds_one_root_cause() -> None:
    expected = capture([call("", 0, 2), call("a", 1, 0), call("b", 2, 1)])
    fwd_b = _d("b", "forward", source="same.py:1")
    fwd_a = _d("a", "forward", source="same.py:1")  # the same code, later in the forward
    bwd_a = _d("a", "backward")
    loss = _d("(loss)", "training", K.LOSS)
    dup = _d("b", "forward", source="other.py:9")  # a second finding for (b, forward): the first one stays
    merged = F.merge(None, [bwd_a, loss, fwd_a, fwd_b, dup], expected)
    assert merged == [fwd_a, loss, bwd_a]
    assert fwd_a.also_in == ["b"]


def test_merge_puts_the_joint_runs_first_divergence_first() -> None:
    expected = capture([call("", 0, 2), call("a", 1, 0), call("b", 2, 1)])
    fwd_a = _d("a", "forward", source="x.py:1")
    opt = _d("b", "optimizer", source="opt.py:1")
    first = _d("b", "optimizer", source="opt.py:1", hint="the joint run's words")
    merged = F.merge(first, [fwd_a, opt], expected)
    assert merged[0] is first and merged[1] is fwd_a and len(merged) == 2
    assert F.merge(None, [], expected) == []
    only = _d("a", "forward")
    assert F.merge(only, [], expected) == [only]
    # the first divergence already first in the pipeline stays where it is
    merged = F.merge(fwd_a, [opt, _d("a", "forward", source="x.py:1")], expected)
    assert merged == [fwd_a, opt] and merged[0] is fwd_a


def test_merge_lists_each_other_module_once() -> None:
    expected = capture([call("", 0, 3), call("a", 1, 0), call("b", 2, 1), call("c", 3, 2)])
    same = [_d(m, "backward", op={"source": "ops.py:1", "op": "mul"}) for m in ("a", "b", "c")]
    again = _d("a", "param_grad", op={"source": "ops.py:1", "op": "mul"})
    merged = F.merge(None, [*same, again], expected)
    assert merged == [same[2]] and same[2].also_in == ["b", "a"]


def test_force_modules_gradient_scale_of_a_small_output_gradient() -> None:
    # max |grad_output| = 0.01: 5e-12 off a 1e-3 gradient is within 1e-9 * 0.01, 5e-10 is not
    expected = capture([call("m", 0, 0, grad_output=[0.01, -0.005], grad_inputs=[[1e-3, 0.0]])], {"m.w": ONE},
                       {"m.w": [1e-3, 0.0]})
    for off, ok in ((5e-12, True), (5e-10, False)):
        g = np.array([1e-3, off])
        f = F.force_modules(AloneSide({"m": (ONE, [g], {"m.w": g})}), expected, None, None, ["m"])["m"]
        assert [c.tensor for c in f.backward + f.param_grad] == ([] if ok else ["grad_input[0]", "param_grad[w]"])


def test_unexplained_names_the_compared_tensor() -> None:
    bad = check("param[m.w]", 2 * ONE, ONE)
    d = F.unexplained(("m", "optimizer", "the update of m.w", bad), "a", "b")
    assert d.tensor == "param[m.w]" and d.hint.startswith("param[m.w] is the reference times")


def test_module_origins_a_fault_hides_every_recorded_ancestor() -> None:
    # blk is not run alone (its joint checks all matched, say): the root is still blk.a's ancestor
    expected = _tree()
    forced = {"blk.a": F.Forced("blk.a", forward=BAD_FWD), "": F.Forced("", forward=BAD_FWD, backward=BAD_BWD)}
    assert _where(F.module_origins(forced, _results(expected), expected, [], expected)) == \
        [("blk.a", "forward", None)]
    forced = {"blk.a": F.Forced("blk.a", backward=BAD_BWD), "": F.Forced("", backward=BAD_BWD)}
    assert _where(F.module_origins(forced, _results(expected), expected, [], expected)) == \
        [("blk.a", "backward", None)]
    breaks = [Origin("blk.a", "backward", None, kind=K.GRAPH_BREAK)]
    forced = {"": F.Forced("", backward=BAD_BWD)}
    assert F.module_origins(forced, _results(expected), expected, breaks, expected) == []


def test_force_modules_goes_on_after_a_forward_only_module() -> None:
    expected = capture([call("m", 0, 0, grad_output=None), call("k", 1, 1)], {"k.w": ONE}, {"k.w": ONE})
    side = AloneSide({"m": (ONE, [], {}), "k": (ONE, [-ONE], {"k.w": -ONE})})
    out = F.force_modules(side, expected, None, None, ["m", "k"])
    assert out["m"].backward == [] and [c.tensor for c in out["k"].backward + out["k"].param_grad] == \
        ["grad_input[0]", "param_grad[w]"]


def test_force_modules_an_empty_output() -> None:
    # a module whose output (and so its output gradient) has no elements: nothing to scale by
    empty = np.zeros((0,))
    expected = capture([call("m", 0, 0, inputs=[], output=empty, grad_output=empty, grad_inputs=[])])
    f = F.force_modules(AloneSide({"m": (empty, [], {})}), expected, None, None, ["m"])["m"]
    assert f.error is None and f.forward == [] and f.backward == []


def test_force_modules_skips_only_shared_parameters() -> None:
    # a tied parameter (held by m and k) is judged on the joint sum, not on m's share alone
    expected = capture([call("m", 0, 0), call("k", 1, 1)], {"m.w": ONE, "m.b": ONE}, {"m.w": ONE, "m.b": ONE})
    expected.tied = {"m.w": ("m", "k")}
    f = F.force_modules(AloneSide({"m": (ONE, [ONE], {"m.w": -ONE, "m.b": -ONE})}), expected, None, None, ["m"])["m"]
    assert [(c.tensor, c.match) for c in f.param_grad] == [("param_grad[b]", False)]


def test_loss_backward_finding_at_the_edge_of_one_factor() -> None:
    # ratio 625/64 and a gradient factor exactly 1e-4 of it away (both exact in binary): still one fault
    ratio = 9.765625
    factor = 9.7666015625
    assert abs(factor - ratio) == 1e-4 * ratio  # the premise, in floating point
    expected = capture([], loss=1.0, logits_grad=[1.0])
    assert F.loss_backward_finding(_phase(ratio, [factor]), expected, "a", "b") is None
    assert F.loss_backward_finding(_phase(ratio, [factor + 1e-9]), expected, "a", "b") is not None


def test_merge_never_lists_a_findings_own_module_in_also_in() -> None:
    expected = capture([call("", 0, 2), call("a", 1, 0), call("b", 2, 1)])
    op = {"source": "ops.py:3", "op": "mul"}
    bwd_a, grad_a, bwd_b = _d("a", "backward", op=op), _d("a", "param_grad", op=op), _d("b", "backward", op=op)
    merged = F.merge(None, [grad_a, bwd_a], expected)  # one module, two phases, one op: one place
    assert len(merged) == 1 and merged[0].also_in == []
    merged = F.merge(None, [bwd_b, _d("a", "param_grad", op=op), _d("a", "backward", op=op)], expected)
    assert len(merged) == 1
    assert merged[0].module not in merged[0].also_in
    assert sorted(merged[0].also_in) == sorted({"a", "b"} - {merged[0].module})


def test_charged_index_lists_what_a_module_run_alone_answers_for() -> None:
    from differential.side import charged_index

    params = [("emb.weight", "E"), ("blocks.0.attn.q.weight", "Q"), ("blocks.0.ln.bias", "B"),
              ("blocks.1.ln.bias", "C")]
    index = charged_index(params, {"emb.weight": ("emb", "head")})  # a head tied to the embedding
    assert index[""] == ["E", "Q", "B", "C"]
    assert index["blocks"] == ["Q", "B", "C"] and index["blocks.0"] == ["Q", "B"] and index["blocks.1"] == ["C"]
    assert index["blocks.0.attn"] == index["blocks.0.attn.q"] == ["Q"] and index["emb"] == index["head"] == ["E"]
    assert "blocks.0.attn.q.weight" not in index and "blocks.0.a" not in index  # a prefix of names, not of text
