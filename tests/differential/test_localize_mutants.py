"""`localize`: which tensors `judge` compares and with which tolerance, the module tree `children` reads,
and the origins `forward_origin`, `backward_origin` and `graph_breaks` name, on hand-built captures of a
tiny model (a root with two children, or a block between them) whose every number is worked out here.
Written to kill the mutants ``benchmarks/mutation.py`` found surviving in localize.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from differential import diagnose as K
from differential.capture import Call, Capture
from differential.compare import compare
from differential.localize import (
    Check,
    ModuleResult,
    backward_origin,
    children,
    forward_origin,
    graph_breaks,
    judge,
    relative_name,
)

ONE = np.array([1.0, 2.0])


def _arr(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def call(path: str, enter: int, exit_at: int, inputs: list[Any] | None = None, output: Any = ONE,
         in_rg: list[bool] | None = None, out_rg: bool = True, grad_output: Any = ONE,
         grad_inputs: list[Any] | None = None, produced_by: list[str | None] | None = None) -> Call:
    inputs = [ONE] if inputs is None else inputs
    return Call(path=path, enter=enter, exit=exit_at, inputs=[_arr(x) for x in inputs], output=_arr(output),
                input_requires_grad=[True] * len(inputs) if in_rg is None else in_rg, output_requires_grad=out_rg,
                grad_output=_arr(grad_output),
                grad_inputs=[_arr(g) for g in ([ONE] * len(inputs) if grad_inputs is None else grad_inputs)],
                produced_by=[None] * len(inputs) if produced_by is None else produced_by)


def capture(calls: list[Call], params: dict[str, Any] | None = None, grads: dict[str, Any] | None = None,
            requires: dict[str, bool] | None = None) -> Capture:
    params = {n: _arr(v) for n, v in (params or {}).items()}
    grads = {n: _arr(g) for n, g in (grads or {}).items()}
    return Capture(impl="x", dtype="float64", calls={c.path: c for c in calls}, loss=1.0, logits=ONE, params=params,
                   param_grads=grads, param_requires_grad={n: True for n in params} if requires is None else requires)


def checks(res: ModuleResult, phase: str) -> dict[str, bool]:
    return {c.tensor: c.match for c in getattr(res, phase)}


# --- Check and ModuleResult -------------------------------------------------------------------------

def _c(tensor: str, ok: bool) -> Check:
    return Check(tensor, compare(ONE, ONE if ok else -ONE))


def test_module_result_status_and_input_output_verdicts() -> None:
    res = ModuleResult("m", forward=[_c("input[0]", True), _c("input[1]", False), _c("output", True)],
                       backward=[_c("grad_output", True)])
    assert res.status("forward") == "diverged" and res.status("backward") == "match"
    assert res.status("param_grad") == "not_checked"
    assert res.inputs_match() is False and res.output_match() is True
    res = ModuleResult("m", forward=[_c("input[0]", True), _c("output", False)])
    assert res.inputs_match() is True and res.output_match() is False
    res.missing = True
    assert res.status("forward") == "diverged" and res.status("param_grad") == "diverged"


# --- relative_name and children ------------------------------------------------------------------------

@pytest.mark.parametrize("param, path, name", [
    ("blocks.0.attn.q.weight", "blocks.0.attn", "q.weight"),
    ("blocks.0.w", "blocks.0#2", "w"),             # a repeated call names its module's parameters alike
    ("w", "", "w"),                                 # the root
    ("blocks.01.w", "blocks.0", "blocks.01.w"),     # a prefix of the name, but not of its module
    ("head.b", "head", "b"),
])
def test_relative_name(param: str, path: str, name: str) -> None:
    assert relative_name(param, path) == name


def test_children_through_unrecorded_lists_and_repeated_calls() -> None:
    calls = {c.path: c for c in [call("", 0, 5), call("blocks.0", 1, 2), call("blocks.0.attn", 2, 0),
                                   call("blocks.0.ln", 3, 1), call("blocks.0#2", 4, 3), call("head", 5, 4)]}
    assert [c.path for c in children("", calls)] == ["blocks.0", "blocks.0#2", "head"]
    assert [c.path for c in children("blocks.0", calls)] == ["blocks.0.attn", "blocks.0.ln"]
    assert children("blocks.0#2", calls) == []  # a repeated call's children are listed at the first call
    assert children("head", calls) == []


# --- judge ---------------------------------------------------------------------------------------------

def test_judge_a_missing_module() -> None:
    expected = capture([call("", 0, 1), call("a", 1, 0)])
    actual = capture([call("", 0, 1)])
    res = judge(actual, expected)
    assert list(res) == ["", "a"]
    assert res["a"].missing is True and res["a"].forward == [] and res["a"].backward == []
    assert res[""].missing is False


def test_judge_pairs_every_tensor() -> None:
    params = {"m.w": ONE, "m.sub.b": ONE, "other.w": ONE}
    expected = capture([call("", 0, 2, grad_output=[1.0]), call("m", 1, 0, inputs=[ONE, ONE],
                                                                  grad_inputs=[None, [3.0, 4.0]]),
                        call("m#2", 2, 1)],
                       params, {"m.w": [1.0, 1.0], "m.sub.b": [2.0, 2.0], "other.w": ONE})
    actual = capture([call("", 0, 2, grad_output=[1.0]), call("m", 1, 0, inputs=[ONE, -ONE], output=[5.0, 5.0],
                                                                grad_inputs=[None, [3.0, 4.0]]),
                      call("m#2", 2, 1)],
                     params, {"m.w": [1.0, 1.0], "m.sub.b": [2.0, 9.0]})
    res = judge(actual, expected)
    m = res["m"]
    assert checks(m, "forward") == {"input[0]": True, "input[1]": False, "output": False}
    assert [c.tensor for c in m.forward] == ["input[0]", "input[1]", "output"]
    # grad_input[0] is None on both sides: nothing to compare
    assert [c.tensor for c in m.backward] == ["grad_output", "grad_input[1]"]
    assert checks(m, "backward") == {"grad_output": True, "grad_input[1]": True}
    assert checks(m, "param_grad") == {"param_grad[w]": True, "param_grad[sub.b]": False}
    np.testing.assert_array_equal(m.param_grad[1].actual, [2.0, 9.0])
    np.testing.assert_array_equal(m.param_grad[1].expected, [2.0, 2.0])
    np.testing.assert_array_equal(m.forward[1].actual, -ONE)
    np.testing.assert_array_equal(m.forward[1].expected, ONE)
    assert res["m#2"].param_grad == []  # judged at the first call
    # the root keeps what no recorded module owns; actual has no gradient for it
    root = res[""]
    assert checks(root, "param_grad") == {"param_grad[other.w]": False}
    assert root.param_grad[0].actual is None
    assert m.detached_inputs == [] and m.output_detached is False


def test_judge_input_counts_that_differ() -> None:
    expected = capture([call("a", 0, 0, inputs=[ONE, ONE], grad_inputs=[ONE, ONE])])
    actual = capture([call("a", 0, 0, inputs=[ONE], grad_inputs=[ONE])])
    res = judge(actual, expected)["a"]
    assert checks(res, "forward") == {"input[0]": True, "input[1]": False, "output": True}
    assert res.forward[1].actual is None
    assert [c.tensor for c in res.backward] == ["grad_output", "grad_input[0]"]  # the inputs both have
    res = judge(expected, actual)["a"]
    assert checks(res, "forward") == {"input[0]": True, "input[1]": False, "output": True}
    assert res.forward[1].expected is None


def test_judge_gradient_tolerance_scales_with_the_output_gradient() -> None:
    # 1.5e-7 off a gradient of 1e-3: within 1e-9 * 200 (max |grad_output|), not within 1e-9 * 100
    # (max grad_output without the absolute value) nor the gradient's own 1e-9 * 1e-3
    g_out = [-200.0, 100.0]
    expected = capture([call("a", 0, 0, grad_output=g_out, grad_inputs=[[1e-3, 0.0]])], {"a.w": ONE},
                       {"a.w": [1e-3, 0.0]})
    actual = capture([call("a", 0, 0, grad_output=g_out, grad_inputs=[[1e-3, 1.5e-7]])], {"a.w": ONE},
                     {"a.w": [1e-3, 1.5e-7]})
    res = judge(actual, expected)["a"]
    assert checks(res, "backward") == {"grad_output": True, "grad_input[0]": True}
    assert checks(res, "param_grad") == {"param_grad[w]": True}
    far = capture([call("a", 0, 0, grad_output=g_out, grad_inputs=[[1e-3, 3e-7]])], {"a.w": ONE},
                  {"a.w": [1e-3, 3e-7]})
    res = judge(far, expected)["a"]
    assert checks(res, "backward") == {"grad_output": True, "grad_input[0]": False}
    assert checks(res, "param_grad") == {"param_grad[w]": False}


def test_judge_forward_tolerance_has_no_gradient_scale() -> None:
    # 5e-10 off an output of 1e-3: outside 1e-7 * 1e-3 + 1e-9 * 1e-3, inside an allowance of 1e-9 * 1
    expected = capture([call("a", 0, 0, inputs=[[1e-3]], output=[1e-3], grad_output=[500.0])])
    actual = capture([call("a", 0, 0, inputs=[[1e-3 + 5e-10]], output=[1e-3 + 5e-10], grad_output=[500.0])])
    assert checks(judge(actual, expected)["a"], "forward") == {"input[0]": False, "output": False}


def test_judge_with_noise_on_every_tensor() -> None:
    # float32-size errors (1e-6 of 1): a match against the reference's own float32 run, not in float64
    off = ONE + 1e-6
    params = {"a.w": ONE}
    expected = capture([call("a", 0, 0, inputs=[ONE, ONE], output=ONE, grad_output=ONE, grad_inputs=[ONE, ONE])],
                       params, {"a.w": ONE})
    actual = capture([call("a", 0, 0, inputs=[off, off], output=off, grad_output=off, grad_inputs=[off, off])],
                     params, {"a.w": off})
    noise = capture([call("a", 0, 0, inputs=[off, off], output=off, grad_output=off, grad_inputs=[off, off])],
                    params, {"a.w": off})
    res = judge(actual, expected, noise)["a"]
    assert all(c.match for c in res.forward + res.backward + res.param_grad)
    assert len(res.forward + res.backward + res.param_grad) == 7
    bare = judge(actual, expected)["a"]
    assert not any(c.match for c in bare.forward + bare.backward + bare.param_grad)
    # a noise capture with fewer inputs, or without the module, judges those in float64
    short = capture([call("a", 0, 0, inputs=[off], output=off, grad_output=off, grad_inputs=[off])], params,
                    {"a.w": off})
    res = judge(actual, expected, short)["a"]
    assert checks(res, "forward") == {"input[0]": True, "input[1]": False, "output": True}
    assert checks(res, "backward") == {"grad_output": True, "grad_input[0]": True, "grad_input[1]": False}
    elsewhere = capture([call("b", 0, 0)], params, {"a.w": off})
    res = judge(actual, expected, elsewhere)["a"]
    assert checks(res, "forward") == {"input[0]": False, "input[1]": False, "output": False}
    assert checks(res, "param_grad") == {"param_grad[w]": True}  # parameters are read by name


def test_judge_detached_inputs() -> None:
    expected = capture([call("a", 0, 0, inputs=[ONE, ONE, ONE])])
    actual = capture([call("a", 0, 0, inputs=[ONE, ONE, ONE], in_rg=[True, False, False],
                           grad_inputs=[ONE, None, ONE])])
    assert judge(actual, expected)["a"].detached_inputs == [1, 2]
    # where the reference does not need a gradient either, nothing is detached
    expected = capture([call("a", 0, 0, inputs=[ONE, ONE], in_rg=[True, False])])
    actual = capture([call("a", 0, 0, inputs=[ONE, ONE], in_rg=[False, False])])
    assert judge(actual, expected)["a"].detached_inputs == [0]


@pytest.mark.parametrize("ref_out, got_out, got_in, own, requires, detached", [
    (True, False, [True], {}, None, True),                        # its inputs need a gradient
    (True, False, [False], {"a.w": ONE}, None, True),             # its own parameter does
    (True, False, [False], {"a.w": ONE}, {"a.w": False}, False),  # neither
    (True, False, [False], {"a.w": ONE}, {}, False),              # a parameter not known to need one
    (True, False, [False], {}, None, False),
    (False, False, [True], {}, None, False),                      # the reference's output needs none
    (True, True, [True], {}, None, False),
])
def test_judge_output_detached(ref_out: bool, got_out: bool, got_in: list[bool], own: dict[str, Any],
                               requires: dict[str, bool] | None, detached: bool) -> None:
    expected = capture([call("a", 0, 0, out_rg=ref_out)], own, {n: ONE for n in own})
    actual = capture([call("a", 0, 0, out_rg=got_out, in_rg=got_in)], own, {n: ONE for n in own}, requires)
    assert judge(actual, expected)["a"].output_detached is detached


# --- forward_origin ------------------------------------------------------------------------------------

def _tree(a_in: Any = ONE, a_out: Any = ONE, b_in: Any = ONE, b_out: Any = ONE, root_out: Any = ONE,
          missing: str | None = None) -> tuple[Capture, Capture]:
    """A root calling a then b, where b returns before a (entered later, it exits first): the forward
    walk meets b first because it reads the order of exits."""
    expected = capture([call("", 0, 2), call("a", 1, 1), call("b", 2, 0)])
    got = [call("", 0, 2, output=root_out), call("a", 1, 1, inputs=[a_in], output=a_out),
           call("b", 2, 0, inputs=[b_in], output=b_out)]
    return capture([c for c in got if c.path != missing]), expected


def test_forward_origin_is_the_first_module_to_return_with_good_inputs_and_a_bad_output() -> None:
    actual, expected = _tree(a_out=-ONE, b_out=-ONE, root_out=-ONE)
    origin = forward_origin(judge(actual, expected), expected)
    assert (origin.path, origin.phase, origin.container_code, origin.kind) == ("b", "forward", False, None)
    assert origin.check.tensor == "output" and origin.check.match is False
    assert origin.forced is False and origin.reason == ""


def test_forward_origin_skips_modules_whose_inputs_differ() -> None:
    actual, expected = _tree(b_in=-ONE, b_out=-ONE, a_out=-ONE)
    assert forward_origin(judge(actual, expected), expected).path == "a"


def test_forward_origin_blames_a_container_when_its_children_match() -> None:
    actual, expected = _tree(root_out=-ONE)
    origin = forward_origin(judge(actual, expected), expected)
    assert (origin.path, origin.container_code) == ("", True)
    actual, expected = _tree()
    assert forward_origin(judge(actual, expected), expected) is None


def test_forward_origin_of_a_module_never_called() -> None:
    actual, expected = _tree(missing="a", root_out=-ONE)
    origin = forward_origin(judge(actual, expected), expected)
    assert (origin.path, origin.phase, origin.check, origin.kind) == ("a", "forward", None, K.VALUE)
    assert origin.reason == "the scratch model never called this module"


# --- backward_origin -----------------------------------------------------------------------------------

def _back(a: dict[str, Any] | None = None, b: dict[str, Any] | None = None, root: dict[str, Any] | None = None,
          grads: dict[str, Any] | None = None, ref: dict[str, dict[str, Any]] | None = None
          ) -> tuple[dict[str, ModuleResult], Capture, Capture]:
    """Root "" calls a, then b (a's output is b's input); params a.w, b.w and c.w (c is not
    recorded: the root owns it)."""
    params = {"a.w": ONE, "b.w": ONE, "c.w": ONE}
    ref = ref or {}
    expected = capture([call("", 0, 2, **ref.get("", {})), call("a", 1, 0, **ref.get("a", {})),
                        call("b", 2, 1, produced_by=["a"], **ref.get("b", {}))], params,
                       {"a.w": ONE, "b.w": ONE, "c.w": ONE})
    actual = capture([call("", 0, 2, **(root or {})), call("a", 1, 0, **(a or {})),
                      call("b", 2, 1, **{"produced_by": ["a"], **(b or {})})], params,
                     {"a.w": ONE, "b.w": ONE, "c.w": ONE, **(grads or {})})
    return judge(actual, expected), expected, actual


def test_backward_origin_is_the_first_module_the_gradient_reaches() -> None:
    results, expected, actual = _back(a={"grad_inputs": [-ONE]}, b={"grad_inputs": [-ONE]})
    origin = backward_origin(results, expected, actual)
    assert (origin.path, origin.phase, origin.container_code, origin.kind) == ("b", "backward", False, None)
    assert origin.check.tensor == "grad_input[0]"
    # b's output gradient differs: the walk goes on to a, whose output gradient matches
    results, expected, actual = _back(a={"grad_inputs": [-ONE]}, b={"grad_output": -ONE, "grad_inputs": [-ONE]})
    assert backward_origin(results, expected, actual).path == "a"


def test_backward_origin_of_a_parameter_gradient() -> None:
    results, expected, actual = _back(grads={"b.w": -ONE})
    origin = backward_origin(results, expected, actual)
    assert (origin.path, origin.phase, origin.check.tensor) == ("b", "param_grad", "param_grad[w]")
    assert origin.container_code is False and origin.kind is None
    # the input gradient comes first
    results, expected, actual = _back(b={"grad_inputs": [-ONE]}, grads={"b.w": -ONE})
    assert backward_origin(results, expected, actual).phase == "backward"


def test_backward_origin_of_a_container() -> None:
    results, expected, actual = _back(root={"grad_inputs": [-ONE]})
    origin = backward_origin(results, expected, actual)
    assert (origin.path, origin.phase, origin.container_code) == ("", "backward", True)
    results, expected, actual = _back()
    assert backward_origin(results, expected, actual) is None
    assert graph_breaks(results, expected, actual) == []


def test_backward_origin_skips_a_detached_input_gradient() -> None:
    # b's input is detached on the scratch side (a returned it, so the cut is not the root's code):
    # its missing input gradient is not b's fault; b's parameter gradient is
    b = {"in_rg": [False], "grad_inputs": [[0.0, 0.0]]}
    results, expected, actual = _back(b=b, grads={"b.w": -ONE})
    assert results["b"].detached_inputs == [0]
    origin = backward_origin(results, expected, actual)
    assert (origin.path, origin.phase) == ("b", "param_grad")
    results, expected, actual = _back(b=b)
    assert backward_origin(results, expected, actual) is None


def test_backward_origin_skips_a_module_the_scratch_side_never_called() -> None:
    params = {"b.w": ONE}
    expected = capture([call("", 0, 2), call("a", 1, 0), call("b", 2, 1)], params, {"b.w": ONE})
    actual = capture([call("", 0, 2, grad_inputs=[-ONE]), call("a", 1, 0)], params, {"b.w": ONE})
    results = judge(actual, expected)
    origin = backward_origin(results, expected, actual)
    assert origin.path == ""
    assert graph_breaks(results, expected, actual) == []


CUT_WORDS = ("its output does not require grad although its inputs or parameters do: the graph is cut inside "
             "this module's forward (a result rebuilt from raw data, or an op without a backward)")


def test_a_module_whose_output_is_cut() -> None:
    results, expected, actual = _back(b={"out_rg": False, "grad_inputs": [None], "grad_output": None})
    assert results["b"].output_detached
    for origin in (backward_origin(results, expected, actual), graph_breaks(results, expected, actual)[0]):
        assert (origin.path, origin.phase, origin.kind, origin.culprit) == ("b", "backward", K.GRAPH_BREAK,
                                                                              ("b", "output"))
        assert origin.reason == CUT_WORDS and origin.container_code is False
        assert origin.check.tensor == "grad_output"  # the first gradient that disagrees
    assert len(graph_breaks(results, expected, actual)) == 1


def test_graph_breaks_lists_every_cut_in_backward_order() -> None:
    results, expected, actual = _back(a={"out_rg": False, "grad_output": None, "grad_inputs": [None]},
                                      b={"out_rg": False, "grad_output": None, "grad_inputs": [None]})
    assert [o.path for o in graph_breaks(results, expected, actual)] == ["b", "a"]
    assert backward_origin(results, expected, actual).path == "b"


def test_graph_breaks_skip_modules_without_gradients_to_compare() -> None:
    # the raw-data cut of the next tests, where the framework keeps no gradients on module outputs
    b = {"in_rg": [False], "produced_by": [None], "grad_inputs": [[0.0, 0.0]]}
    results, expected, actual = _back(b=b)
    assert [o.path for o in graph_breaks(results, expected, actual)] == [""]
    results[""].backward = []
    assert graph_breaks(results, expected, actual) == []


# --- cuts between a container's children ---------------------------------------------------------------

def test_an_input_built_from_raw_data_by_the_container() -> None:
    # b's input does not require grad and no module returned it: the root built it from raw data
    b = {"in_rg": [False], "produced_by": [None], "grad_inputs": [[0.0, 0.0]]}
    results, expected, actual = _back(b=b, a={"grad_output": [0.0, 0.0], "grad_inputs": [[0.0, 0.0]]},
                                      root={"grad_inputs": [[0.0, 0.0]]})
    words = ("the input of b is detached from the graph: the model's own code builds it from raw data (or with an op "
             "that has no backward), so no gradient flows back through it")
    for origin in (backward_origin(results, expected, actual), graph_breaks(results, expected, actual)[0]):
        assert (origin.path, origin.phase, origin.kind, origin.culprit) == ("", "backward", K.GRAPH_BREAK, ("b", 0))
        assert origin.reason == words and origin.container_code is True
        assert origin.check.tensor == "grad_input[0]"
    # a returned it: the cut is a's (or b's), not the root's code
    results, expected, actual = _back(b={**b, "produced_by": ["a"]})
    assert graph_breaks(results, expected, actual) == []
    # no record of who produced it: no claim either
    results, expected, actual = _back(b={**b, "produced_by": []})
    assert graph_breaks(results, expected, actual) == []


def test_a_cut_inside_a_named_container() -> None:
    params = {"blk.a.w": ONE}
    z = [0.0, 0.0]
    expected = capture([call("", 0, 3), call("blk", 1, 2), call("blk.a", 2, 0), call("blk.b", 3, 1)], params,
                       {"blk.a.w": ONE})
    actual = capture([call("", 0, 3), call("blk", 1, 2, grad_inputs=[z]),
                      call("blk.a", 2, 0, grad_output=z, grad_inputs=[z]),
                      call("blk.b", 3, 1, in_rg=[False], grad_inputs=[z])],
                     params, {"blk.a.w": z})
    results = judge(actual, expected)
    origin = graph_breaks(results, expected, actual)[0]
    assert origin.path == "blk" and origin.culprit == ("blk.b", 0)
    assert origin.reason.startswith("the input of blk.b is detached from the graph: blk's own code builds it")
    assert backward_origin(results, expected, actual).path == "blk"


def test_a_cut_that_still_passes_a_tiny_share_of_the_gradient() -> None:
    b = {"in_rg": [False], "produced_by": [None], "grad_inputs": [[0.0, 0.0]]}
    tiny = [0.01, 0.03]  # a twentieth of the reference's gradient norm, in another direction
    results, expected, actual = _back(b=b, a={"grad_output": [0.0, 0.0], "grad_inputs": [[0.0, 0.0]]},
                                      root={"grad_inputs": [tiny]})
    origin = graph_breaks(results, expected, actual)[0]
    kind, words = K.classify(np.array(tiny), ONE, is_grad=True)
    assert kind == K.MOSTLY_DETACHED  # the premise (diagnose's own rule, tested in test_diagnose_mutants)
    assert (origin.path, origin.phase, origin.kind, origin.culprit) == ("", "backward", K.MOSTLY_DETACHED, ("b", 0))
    assert origin.reason.startswith(f"grad_input[0] {words}; the input of b is detached from the graph")
    assert origin.check.tensor == "grad_input[0]" and origin.container_code is True
    assert backward_origin(results, expected, actual).kind == K.MOSTLY_DETACHED
    # the root's input gradient is missing altogether: a plain cut
    results, expected, actual = _back(b=b, a={"grad_output": [0.0, 0.0], "grad_inputs": [[0.0, 0.0]]},
                                      root={"grad_inputs": [None]})
    assert graph_breaks(results, expected, actual)[0].kind == K.GRAPH_BREAK
    # the root's input gradient matches: a plain cut, checked on the root's own parameter gradient
    results, expected, actual = _back(b=b, grads={"c.w": -ONE})
    origin = graph_breaks(results, expected, actual)[0]
    assert origin.kind == K.GRAPH_BREAK and origin.check.tensor == "param_grad[c.w]"
    results, expected, actual = _back(b=b, grads={"b.w": -ONE})  # b's own: not the root's to show
    origin = graph_breaks(results, expected, actual)[0]
    assert origin.kind == K.GRAPH_BREAK and origin.check is None


def test_a_child_output_that_never_reaches_the_loss() -> None:
    # a's output keeps its graph but gets no gradient; b after it passes its gradient on
    a = {"grad_output": None, "grad_inputs": [None]}
    results, expected, actual = _back(a=a, b={"produced_by": [None]}, root={"grad_inputs": [None]})
    words = ("the output of a never reaches the loss (its gradient is None): the model's own code uses it through "
             "raw data or an op without a backward")
    for origin in (backward_origin(results, expected, actual), graph_breaks(results, expected, actual)[0]):
        assert (origin.path, origin.kind, origin.culprit, origin.reason) == ("", K.GRAPH_BREAK, None, words)
        assert origin.check.tensor == "grad_input[0]" and origin.check.actual is None


@pytest.mark.parametrize("change", [
    {"root": {"grad_output": None, "grad_inputs": [None]}},                   # no gradient reaches the root
    {"a": {"grad_output": None, "grad_inputs": [None], "out_rg": False}},     # a cut its own output
    {"b": {"grad_output": None, "grad_inputs": [None]}},                      # b got none either: b's output is cut
    {"b": {"grad_inputs": [None]}},                                           # b passed none to its input
    {"ref": {"a": {"grad_output": None}}},                                    # the reference's a gets none too
])
def test_no_cut_between_children(change: dict[str, Any]) -> None:
    a = {"grad_output": None, "grad_inputs": [None], **change.get("a", {})}
    results, expected, actual = _back(a=a, b={"produced_by": [None], **change.get("b", {})},
                                      root={"grad_inputs": [None], **change.get("root", {})}, ref=change.get("ref"))
    assert not [o for o in graph_breaks(results, expected, actual) if "the output of a " in o.reason]


def test_a_later_child_with_no_gradient_checks_passes_nothing() -> None:
    a = {"grad_output": None, "grad_inputs": [None]}
    results, expected, actual = _back(a=a, b={"produced_by": [None]}, root={"grad_inputs": [None]})
    results["b"].backward = []
    assert [o.path for o in graph_breaks(results, expected, actual)] == []
    results, expected, actual = _back(a=a, b={"produced_by": [None]}, root={"grad_inputs": [None]})
    results["b"].backward = [Check("grad_output", compare(ONE, ONE), None, ONE)]
    assert [o.path for o in graph_breaks(results, expected, actual)] == []
    # a later child whose input needs no gradient in the reference passes what it must
    results, expected, actual = _back(a=a, b={"produced_by": [None]}, root={"grad_inputs": [None]})
    results["b"].backward[1:] = [Check("grad_input[0]", compare(None, None), None, None)]
    assert [o.path for o in graph_breaks(results, expected, actual)] == [""]


def test_judge_gradient_scale_of_a_small_or_missing_output_gradient() -> None:
    # the scale is max |grad_output| (0.01 here, 0 without one), never less and never more:
    # 5e-12 off is within 1e-9 * 0.01, 5e-10 is not
    for g_out, near_ok in (([0.01, -0.005], True), (None, False)):
        expected = capture([call("a", 0, 0, grad_output=g_out, grad_inputs=[[1e-3, 0.0]])], {"a.w": ONE},
                           {"a.w": [1e-3, 0.0]})
        for off, ok in ((5e-12, near_ok), (5e-10, False)):
            actual = capture([call("a", 0, 0, grad_output=g_out, grad_inputs=[[1e-3, off]])], {"a.w": ONE},
                             {"a.w": [1e-3, off]})
            res = judge(actual, expected)["a"]
            assert checks(res, "backward")["grad_input[0]"] is ok, (g_out, off)
            assert checks(res, "param_grad")["param_grad[w]"] is ok, (g_out, off)


def test_graph_breaks_walk_on_past_missing_modules_and_modules_without_gradients() -> None:
    a_cut = {"out_rg": False, "grad_output": None, "grad_inputs": [None]}
    results, expected, actual = _back(a=a_cut)
    assert [o.path for o in graph_breaks(results, expected, actual)] == ["a"]
    results["b"].backward = []  # b is walked first and has nothing to compare
    assert [o.path for o in graph_breaks(results, expected, actual)] == ["a"]
    del actual.calls["b"]  # b was never called
    results = judge(actual, expected)
    assert results["b"].missing and [o.path for o in graph_breaks(results, expected, actual)] == ["a"]


def test_backward_origin_walks_past_a_module_without_gradient_checks() -> None:
    results, expected, actual = _back(a={"grad_inputs": [-ONE]})
    results["b"].backward = []  # a framework that keeps no gradients there
    assert backward_origin(results, expected, actual).path == "a"


def test_the_output_of_the_last_child_never_reaches_the_loss() -> None:
    results, expected, actual = _back(b={"grad_output": None, "grad_inputs": [None]}, root={"grad_inputs": [None]})
    origin = graph_breaks(results, expected, actual)[0]
    assert origin.path == "" and origin.reason.startswith("the output of b never reaches the loss")


def test_judge_an_empty_output() -> None:
    empty = np.zeros((0,))
    expected = capture([call("a", 0, 0, inputs=[], output=empty, grad_output=empty, grad_inputs=[])], {"a.w": ONE},
                       {"a.w": ONE})
    res = judge(expected, expected)["a"]
    assert checks(res, "backward") == {"grad_output": True} and checks(res, "param_grad") == {"param_grad[w]": True}
