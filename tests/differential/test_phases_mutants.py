"""`phases`: the batch and its sanity checks, the loss check, the per-module summaries, the gradient-flow
and weight-update tables and the training phase, on hand-built captures and stand-in sides whose
every number is worked out here. Written to kill the mutants ``benchmarks/mutation.py`` found surviving
in phases.py; no test reads an expectation off the code it checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from differential import phases
from differential.capture import Call, Capture
from differential.compare import compare
from differential.localize import Check, ModuleResult
from differential.report import ReportOptions
from scratch_model import data as data_module
from scratch_model.config import TransformerConfig


def _call(path: str, enter: int, grad_output: np.ndarray | None = None) -> Call:
    return Call(path=path, enter=enter, exit=enter, inputs=[], output=np.zeros(1), input_requires_grad=[],
                output_requires_grad=True, grad_output=grad_output)


def _capture(calls: list[Call] | None = None, params: dict[str, np.ndarray] | None = None,
             param_grads: dict[str, np.ndarray | None] | None = None, loss: float = 1.0,
             logits_grad: np.ndarray | None = None, logits_grad_known: bool = True) -> Capture:
    params = params or {}
    return Capture(impl="x", dtype="float64", calls={c.path: c for c in calls or []}, loss=loss,
                   logits=np.zeros((1, 1, 2)), params=params,
                   param_grads=param_grads if param_grads is not None else {n: None for n in params},
                   param_requires_grad={n: True for n in params}, logits_grad=logits_grad,
                   logits_grad_known=logits_grad_known)


def _check(tensor: str, actual: Any, expected: Any) -> Check:
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return Check(tensor, compare(a, e), a, e)


# --- the batch --------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, count", [(0, 1), (1, 1), (3, 3)])
def test_batches_are_the_first_epochs_batches_one_per_step(steps: int, count: int) -> None:
    options = ReportOptions(batch_size=4, steps=steps, seed=5)
    got = phases.batches(options)
    assert len(got) == count
    train = data_module.make_reversal_data(options.model, num_train=4 * count, num_test=1, seed=5)
    want = list(train.batches(0, 4))
    assert len(want) == count
    for (tokens, targets), (t, r) in zip(got, want, strict=True):
        assert tokens.shape == (4, options.model.seq_len)
        np.testing.assert_array_equal(tokens, t)
        np.testing.assert_array_equal(targets, r)
        np.testing.assert_array_equal(targets, tokens[:, ::-1])
    other = phases.batches(ReportOptions(batch_size=4, steps=steps, seed=6))
    assert not np.array_equal(other[0][0], got[0][0])  # the seed is used


def test_batches_of_several_steps_follow_epoch_zero() -> None:
    options = ReportOptions(batch_size=2, steps=4, seed=1)
    got = np.concatenate([t for t, _ in phases.batches(options)])
    train = data_module.make_reversal_data(options.model, num_train=8, num_test=1, seed=1)
    epoch0 = np.concatenate([t for t, _ in train.batches(0, 2)])
    epoch1 = np.concatenate([t for t, _ in train.batches(1, 2)])
    np.testing.assert_array_equal(got, epoch0)
    assert not np.array_equal(got, epoch1)


def test_mask_none_and_causal() -> None:
    assert phases.mask(ReportOptions(), 3) is None
    m = phases.mask(ReportOptions(mask="causal"), 3)
    np.testing.assert_array_equal(m, np.array([[True, False, False], [True, True, False], [True, True, True]]))
    assert m.dtype == np.bool_


# --- data sanity -------------------------------------------------------------------------------------

CONFIG = TransformerConfig(vocab_size=6, seq_len=4)


def _sanity(tokens: Any, targets: Any = None) -> dict[str, Any]:
    tokens = np.asarray(tokens)
    targets = tokens[:, ::-1] if targets is None else np.asarray(targets)
    return phases.data_sanity(ReportOptions(model=CONFIG), [(tokens, targets)])


def test_data_sanity_of_a_good_batch() -> None:
    out = _sanity([[1, 2, 3, 5], [5, 4, 3, 1]])  # 1 and vocab_size - 1 = 5 are both in range
    assert out == {"checks": {"targets_are_reversed_inputs": True, "tokens_in_range": True,
                              "integer_tokens": True, "shapes_consistent": True},
                   "ok": True, "batch_shape": [2, 4], "token_range": [1, 5], "vocab_size": 6,
                   "logits_shape": None}
    assert _sanity([[2, 3]])["checks"]["shapes_consistent"]  # shorter than seq_len is fine


@pytest.mark.parametrize("tokens, targets, failing", [
    ([[1, 2, 3, 4]], [[1, 2, 3, 4]], "targets_are_reversed_inputs"),
    ([[0, 2, 3, 4]], None, "tokens_in_range"),           # token 0 is reserved
    ([[1, 2, 3, 6]], None, "tokens_in_range"),           # vocab_size itself is out of range
    ([[1.0, 2.0, 3.0, 4.0]], None, "integer_tokens"),
    ([[1, 2, 3, 4, 5]], None, "shapes_consistent"),      # longer than seq_len
])
def test_data_sanity_names_the_failing_check(tokens: Any, targets: Any, failing: str) -> None:
    out = _sanity(tokens, targets)
    assert [name for name, ok in out["checks"].items() if not ok] == [failing]
    assert out["ok"] is False


def test_data_sanity_shapes_of_tokens_and_targets_must_agree() -> None:
    tokens = np.array([[1, 2, 3, 4], [2, 3, 4, 5]])
    out = phases.data_sanity(ReportOptions(model=CONFIG), [(tokens, tokens[:1, ::-1])])
    assert out["checks"]["shapes_consistent"] is False
    assert out["token_range"] == [1, 5]


def test_data_sanity_reads_the_first_batch() -> None:
    good = np.array([[1, 2, 3, 4]])
    bad = np.array([[0, 2, 3, 4]])
    assert phases.data_sanity(ReportOptions(model=CONFIG), [(good, good[:, ::-1]), (bad, bad[:, ::-1])])["ok"]
    assert not phases.data_sanity(ReportOptions(model=CONFIG), [(bad, bad[:, ::-1]), (good, good[:, ::-1])])["ok"]


# --- the loss -------------------------------------------------------------------------------------------

def test_loss_check_values_and_gradient() -> None:
    grad = np.array([[[0.5, -0.5]]])
    actual = _capture(loss=2.0, logits_grad=grad * 2)
    expected = _capture(loss=2.5, logits_grad=grad)
    out = phases.loss_check(actual, expected, None)
    assert out["actual"] == 2.0 and out["expected"] == 2.5
    assert out["match"] is False and out["metrics"]["max_abs"] == 0.5
    assert out["grad_match"] is False and out["grad_metrics"]["max_abs"] == 0.5
    assert out["grad_metrics"]["shape_actual"] == [1, 1, 2]
    same = phases.loss_check(_capture(loss=2.5, logits_grad=grad.copy()), expected, None)
    assert same["match"] is True and same["grad_match"] is True and same["metrics"]["max_abs"] == 0.0


def test_loss_check_without_a_logits_gradient() -> None:
    actual = _capture(loss=3.0, logits_grad_known=False)
    out = phases.loss_check(actual, _capture(loss=3.0, logits_grad=np.ones((1, 1, 2))), None)
    assert out == {"actual": 3.0, "expected": 3.0, "match": True, "metrics": out["metrics"],
                   "grad_match": None, "grad_metrics": None}
    assert out["metrics"]["max_abs"] == 0.0


def test_loss_check_uses_the_noise_floor() -> None:
    # float32 run: 1e-6 off the oracle, as far as the reference's own float32 run is -> a match
    # (allowed 8 * 1e-6 + 1e-6 * 1); the float64 tolerance (1e-7 + 1e-9) would call it a mismatch
    grad = np.array([[[1.0, -1.0]]])
    actual = _capture(loss=1.0 + 1e-6, logits_grad=grad + 1e-6)
    expected = _capture(loss=1.0, logits_grad=grad)
    noise = _capture(loss=1.0 + 1e-6, logits_grad=grad + 1e-6)
    out = phases.loss_check(actual, expected, noise)
    assert out["match"] is True and out["grad_match"] is True
    bare = phases.loss_check(actual, expected, None)
    assert bare["match"] is False and bare["grad_match"] is False
    # an error far beyond the reference's own float32 error is no match, noise or not
    far = phases.loss_check(_capture(loss=3.0, logits_grad=3 * grad), expected, noise)
    assert far["match"] is False and far["grad_match"] is False


# --- module summaries ------------------------------------------------------------------------------------

class _Sources:
    def __init__(self, name: str) -> None:
        self.name = name

    def source(self, path: str) -> str:
        return f"{self.name}:{path}"


def test_module_entry_summaries() -> None:
    res = ModuleResult("blocks.0.attn#2")
    res.forward = [_check("input[0]", [1.0], [1.0]), _check("output", [3.0, 0.0], [1.0, 0.0])]
    res.backward = [_check("grad_output", [1.0], [1.0]), _check("grad_input[0]", [100.0 + 1e-6], [100.0])]
    entry = phases.module_entry(res, _Sources("mine"), _Sources("ref"), 2)
    assert entry["module"] == "blocks.0.attn#2" and entry["depth"] == 2
    assert entry["scratch_source"] == "mine:blocks.0.attn#2" and entry["reference_source"] == "ref:blocks.0.attn#2"
    fwd = entry["forward"]
    assert fwd["status"] == "diverged" and fwd["tensors"] == {"input[0]": True, "output": False}
    assert fwd["worst"]["tensor"] == "output" and fwd["worst"]["max_abs"] == 2.0 and fwd["worst"]["match"] is False
    bwd = entry["backward"]
    assert bwd["status"] == "match" and bwd["tensors"] == {"grad_output": True, "grad_input[0]": True}
    assert bwd["worst"]["tensor"] == "grad_input[0]"  # all match: the largest error (1e-6, within tolerance)
    assert entry["param_grad"] == {"status": "not_checked", "worst": None, "tensors": {}}


def test_module_entry_worst_is_the_worst_mismatch_not_the_largest_error() -> None:
    res = ModuleResult("")
    # a match with a large absolute error (within tolerance of a huge reference) and a small mismatch
    res.forward = [_check("input[0]", [1e9 + 1.0], [1e9]), _check("output", [0.25], [0.0]),
                   _check("input[1]", [0.5], [0.0])]
    res.backward = [_check("grad_output", [1.0, 3.0], [1.0, 1.0]), _check("grad_input[0]", [7.0], [1.0])]
    res.param_grad = [_check("param_grad[w]", [1.0], [1.0])]
    entry = phases.module_entry(res, _Sources("a"), _Sources("b"), 0)
    assert entry["param_grad"]["status"] == "match" and entry["param_grad"]["tensors"] == {"param_grad[w]": True}
    assert entry["module"] == "(model)"
    assert entry["forward"]["worst"]["tensor"] == "input[1]"  # max_abs 0.5 beats 0.25; the matching 1.0 loses
    assert entry["backward"]["worst"]["tensor"] == "grad_input[0]"  # 6 beats 2


def test_module_entry_worst_with_a_missing_tensor() -> None:
    res = ModuleResult("m")
    missing = Check("grad_input[0]", compare(None, np.ones(2)), None, np.ones(2))  # max_abs None: counts as 0
    res.backward = [_check("grad_output", [1.5], [1.0]), missing]
    entry = phases.module_entry(res, _Sources("a"), _Sources("b"), 1)
    assert entry["backward"]["worst"]["tensor"] == "grad_output"
    res.backward = [missing, _check("grad_output", [1.0], [1.0])]
    assert phases.module_entry(res, _Sources("a"), _Sources("b"), 1)["backward"]["worst"]["tensor"] == "grad_input[0]"


def test_module_entry_of_a_missing_module() -> None:
    res = ModuleResult("blocks.1", forward=[_check("output", [1.0], [1.0])], missing=True)
    entry = phases.module_entry(res, _Sources("a"), _Sources("b"), 1)
    assert entry["scratch_source"] is None and entry["reference_source"] == "b:blocks.1"
    for phase in ("forward", "backward", "param_grad"):
        assert entry[phase] == {"status": "diverged", "worst": None, "tensors": {}}


def test_depth_counts_recorded_containers() -> None:
    calls = [_call(p, i) for i, p in enumerate(["", "blocks.0", "blocks.0.attn", "blocks.0.attn#2", "blocks.1",
                                                 "blocks.10", "blocks.10.ln"])]
    expected = _capture(calls)
    assert phases.depth("", expected) == 0
    assert phases.depth("blocks.0", expected) == 1
    assert phases.depth("blocks.0.attn", expected) == 2
    assert phases.depth("blocks.0.attn#2", expected) == 2
    assert phases.depth("blocks.0.attn.q", expected) == 3
    assert phases.depth("blocks.10.ln", expected) == 2  # blocks.1 is no prefix of blocks.10
    without_root = _capture([_call("a", 0), _call("a.b", 1)])
    assert phases.depth("a.b", without_root) == 1


# --- gradient flow ------------------------------------------------------------------------------------

def test_gradient_flow_rows() -> None:
    big = np.array([3.0, 4.0])
    expected = _capture(
        [_call("", 0, np.array([1.0])), _call("lin", 1, np.array([100.0, -200.0]))],
        params={"lin.w": big, "lin.b": big, "lin.c": big, "lin.z": big, "top": big, "gone": big, "neither": big},
        param_grads={"lin.w": np.array([3.0, 4.0]), "lin.b": np.array([1e-3, 0.0]),
                     "lin.c": np.array([1.0, 1.0]), "lin.z": np.array([1e-8, 0.0]),
                     "top": np.array([0.0, 2.0]), "gone": None, "neither": None})
    actual = _capture(
        params=dict(expected.params),
        param_grads={"lin.w": np.array([3.0, 4.0]),
                     # 1.5e-7 off: within 1e-9 * 200 (the scale of lin's output gradient: max |g|, not max g),
                     # not within 1e-9 * 1e-3
                     "lin.b": np.array([1e-3, 1.5e-7]),
                     "lin.c": None,
                     "lin.z": np.zeros(2),  # the reference's 1e-8 is round-off at scale 200: zero is right
                     "top": np.zeros(2), "gone": np.array([1.0, 0.0]), "neither": None})
    # the module comparison already judged lin.w, at two calls of lin (once wrong), and nothing else
    res = ModuleResult("lin", param_grad=[_check("param_grad[w]", [3.0, 5.0], [3.0, 4.0])])
    repeat = ModuleResult("lin#2", param_grad=[_check("param_grad[w]", [3.0, 4.0], [3.0, 4.0])])
    rows = {r["parameter"]: r for r in phases.gradient_flow({"lin": res, "lin#2": repeat}, actual, expected, None)}
    # and the other way round: right at the first call, wrong at the second
    res_ok = ModuleResult("lin", param_grad=[_check("param_grad[w]", [3.0, 4.0], [3.0, 4.0])])
    repeat_bad = ModuleResult("lin#2", param_grad=[_check("param_grad[w]", [3.0, 5.0], [3.0, 4.0])])
    other = phases.gradient_flow({"lin": res_ok, "lin#2": repeat_bad}, actual, expected, None)
    assert other[0]["parameter"] == "lin.w" and other[0]["matches_reference"] is False
    assert list(rows) == ["lin.w", "lin.b", "lin.c", "lin.z", "top", "gone", "neither"]
    assert rows["lin.w"] == {"parameter": "lin.w", "has_grad": True, "nonzero": True, "norm": 5.0,
                             "reference_norm": 5.0, "matches_reference": False}
    assert rows["lin.b"]["matches_reference"] is True
    assert rows["lin.c"] == {"parameter": "lin.c", "has_grad": False, "nonzero": False, "norm": None,
                             "reference_norm": pytest.approx(np.sqrt(2.0), rel=1e-15), "matches_reference": False}
    assert rows["lin.z"]["nonzero"] is True and rows["lin.z"]["matches_reference"] is True
    assert rows["lin.z"]["norm"] == 0.0
    # top is charged to the root, whose output gradient is 1: zero is no match for [0, 2]
    assert rows["top"] == {"parameter": "top", "has_grad": True, "nonzero": False, "norm": 0.0,
                           "reference_norm": 2.0, "matches_reference": False}
    assert rows["gone"] == {"parameter": "gone", "has_grad": True, "nonzero": True, "norm": 1.0,
                            "reference_norm": None, "matches_reference": False}
    # no gradient on either side is no disagreement
    assert rows["neither"] == {"parameter": "neither", "has_grad": True, "nonzero": True, "norm": None,
                               "reference_norm": None, "matches_reference": True}


def test_gradient_flow_root_parameters_and_verdicts_of_the_module_walk() -> None:
    expected = _capture([_call("", 0, np.array([1.0]))], params={"w": np.ones(1), "v": np.ones(1)},
                        param_grads={"w": np.array([2.0]), "v": np.array([1.0])})
    actual = _capture(params=dict(expected.params), param_grads={"w": np.array([2.0]), "v": np.array([1.0])})
    # the walk judged the root's w wrong (say, on another tensor): that verdict stands, v is compared here
    res = ModuleResult("", param_grad=[_check("param_grad[w]", [1.0], [2.0])])
    rows = {r["parameter"]: r for r in phases.gradient_flow({"": res}, actual, expected, None)}
    assert rows["w"]["matches_reference"] is False and rows["v"]["matches_reference"] is True
    ok = ModuleResult("", param_grad=[_check("param_grad[w]", [2.0], [2.0])])
    rows = {r["parameter"]: r for r in phases.gradient_flow({"": ok}, actual, expected, None)}
    assert rows["w"]["matches_reference"] is True


def test_gradient_flow_without_a_recorded_owner_or_output_gradient() -> None:
    # no call records the parameter's module and none has an output gradient: the scale is 0 (not
    # even 1), so a 5e-10 error on a 1e-3 gradient is a mismatch and a 1e-8 reference is not round-off
    # (and an unrecorded module's parameter, with no root call either, likewise)
    expected = _capture([_call("m", 0, None), _call("k", 1, np.array([0.01]))],
                        params={"m.b": np.ones(2), "m.z": np.ones(2), "q.b": np.ones(2), "k.a": np.ones(2),
                                "k.b": np.ones(2)},
                        param_grads={"m.b": np.array([1e-3, 0.0]), "m.z": np.array([1e-8, 0.0]),
                                     "q.b": np.array([1e-3, 0.0]), "k.a": np.array([1e-3, 0.0]),
                                     "k.b": np.array([1e-3, 0.0])})
    actual = _capture(params=dict(expected.params),
                      param_grads={"m.b": np.array([1e-3, 5e-10]), "m.z": np.zeros(2),
                                   "q.b": np.array([1e-3, 5e-10]),
                                   # k's output gradient is 0.01: 5e-12 is within 1e-9 * 0.01, 5e-10 is not
                                   "k.a": np.array([1e-3, 5e-12]), "k.b": np.array([1e-3, 5e-10])})
    rows = {r["parameter"]: r for r in phases.gradient_flow({}, actual, expected, None)}
    assert rows["m.b"]["matches_reference"] is False and rows["q.b"]["matches_reference"] is False
    assert rows["m.z"]["nonzero"] is False and rows["m.z"]["matches_reference"] is False
    assert rows["k.a"]["matches_reference"] is True and rows["k.b"]["matches_reference"] is False


def test_gradient_flow_with_noise() -> None:
    expected = _capture([_call("", 0, np.array([1.0]))], params={"w": np.ones(2)},
                        param_grads={"w": np.array([1.0, 0.0])})
    actual = _capture(params=dict(expected.params), param_grads={"w": np.array([1.0 + 1e-6, 0.0])})
    noise = _capture(params=dict(expected.params), param_grads={"w": np.array([1.0 + 1e-6, 0.0])})
    assert phases.gradient_flow({}, actual, expected, noise)[0]["matches_reference"] is True
    assert phases.gradient_flow({}, actual, expected, None)[0]["matches_reference"] is False
    # a zero gradient where the reference's is as small as the float32 noise: not "missing"
    tiny = _capture([_call("", 0, np.array([1.0]))], params={"w": np.ones(2)}, param_grads={"w": np.array([1e-7, 0.0])})
    zero = _capture(params=dict(expected.params), param_grads={"w": np.zeros(2)})
    noisy = _capture(params=dict(expected.params), param_grads={"w": np.array([1.5e-7, 0.0])})
    assert phases.gradient_flow({}, zero, tiny, noisy)[0]["nonzero"] is True
    assert phases.gradient_flow({}, zero, tiny, None)[0]["nonzero"] is False


# --- the optimizer step ---------------------------------------------------------------------------------

class _StepSide:
    """Plain SGD (w - lr * g * rate), but leaving the parameters in ``frozen`` and dropping those in
    ``dropped`` from its result; records what it was asked."""

    def __init__(self, params: dict[str, np.ndarray], rate: float = 1.0, frozen: tuple[str, ...] = (),
                 dropped: tuple[str, ...] = ()) -> None:
        self.p, self.rate, self.frozen, self.dropped = params, rate, frozen, dropped
        self.asked: list[tuple[str, float]] = []

    def optimizer_step(self, grads: dict[str, np.ndarray | None], optimizer: str, lr: float,
                       current: Any = None) -> dict[str, np.ndarray]:
        self.asked.append((optimizer, lr))
        out = {}
        for name, w in self.p.items():
            if name in self.dropped:
                continue
            g = grads.get(name)
            out[name] = w.copy() if g is None or name in self.frozen else w - lr * self.rate * g
        return out


def test_optimizer_phase_rows() -> None:
    names = ("ok", "frozen", "dropped", "still", "own_none", "scaled")
    params = {n: np.array([1.0, 2.0]) for n in names}
    grads = {n: np.array([0.5, -0.5]) for n in names}
    grads["still"] = np.zeros(2)  # the reference's step leaves it where it is
    expected = _capture(params=dict(params), param_grads=grads)
    own = dict(grads, own_none=None)
    actual = _capture(params=dict(params), param_grads=own)
    mine = _StepSide(params, frozen=("frozen", "still"), dropped=("dropped",))
    ref = _StepSide(params)
    options = ReportOptions(optimizer="sgd", lr=0.5)

    class Mixed:  # the side under test: the "scaled" parameter moves twice as far
        def optimizer_step(self, g: Any, optimizer: str, lr: float, current: Any = None) -> dict[str, np.ndarray]:
            out = mine.optimizer_step(g, optimizer, lr)
            if g.get("scaled") is not None:
                out["scaled"] = params["scaled"] - 2 * lr * g["scaled"]
            return out

    checks, rows = phases.optimizer_phase(Mixed(), ref, None, actual, expected, None, options)
    assert mine.asked == [("sgd", 0.5), ("sgd", 0.5)] and ref.asked == [("sgd", 0.5)]
    # a check (metrics and both updates) for each disagreeing update only
    assert [c.tensor for c in checks] == ["param[frozen]", "param[dropped]", "param[scaled]"]
    by = {r["parameter"]: r for r in rows}
    assert [r["parameter"] for r in rows] == list(names)
    assert by["ok"] == {"parameter": "ok", "changed_after_step": True, "update_matches_reference": True,
                        "updated_by_optimizer": True, "reference_updated": True}
    assert by["frozen"] == {"parameter": "frozen", "changed_after_step": False, "update_matches_reference": False,
                            "updated_by_optimizer": False, "reference_updated": True}
    assert by["dropped"] == {"parameter": "dropped", "changed_after_step": False, "update_matches_reference": False,
                             "updated_by_optimizer": False, "reference_updated": True}
    # unchanged where the reference's step leaves it unchanged too: no "no" in the row
    assert by["still"] == {"parameter": "still", "changed_after_step": True, "update_matches_reference": True,
                           "updated_by_optimizer": True, "reference_updated": False}
    # its own gradient is None, so its own step leaves it; the step with the reference's gradient moves it
    assert by["own_none"] == {"parameter": "own_none", "changed_after_step": False,
                              "update_matches_reference": True, "updated_by_optimizer": True,
                              "reference_updated": True}
    assert by["scaled"]["update_matches_reference"] is False and by["scaled"]["changed_after_step"] is True
    check = {c.tensor: c for c in checks}
    np.testing.assert_array_equal(check["param[scaled]"].actual, [-0.5, 0.5])
    np.testing.assert_array_equal(check["param[scaled]"].expected, [-0.25, 0.25])
    np.testing.assert_array_equal(check["param[frozen]"].actual, [0.0, 0.0])
    assert check["param[dropped]"].actual is None and check["param[dropped]"].metrics.missing == "actual"
    assert not any(c.match for c in checks) and check["param[scaled]"].metrics.max_abs == 0.25


def test_optimizer_phase_measures_updates_from_each_sides_own_weights() -> None:
    # the reference's weights sit elsewhere (as after a different load): its update is measured
    # from its own weights, the scratch side's from its own
    mine_p = {"w": np.array([1.0, 2.0])}
    ref_p = {"w": np.array([5.0, 7.0])}
    grads = {"w": np.array([1.0, 1.0])}
    expected = _capture(params=ref_p, param_grads=grads)
    actual = _capture(params=mine_p, param_grads=grads)
    checks, rows = phases.optimizer_phase(_StepSide(mine_p), _StepSide(ref_p), None, actual, expected, None,
                                          ReportOptions(optimizer="sgd", lr=0.25))
    assert checks == [] and rows[0]["update_matches_reference"] is True


def test_optimizer_phase_with_noise() -> None:
    params = {"w": np.array([1.0, 2.0]), "z": np.array([1.0, 1.0])}
    grads = {"w": np.array([1.0, -1.0]), "z": np.array([1e-7, 0.0])}
    expected = _capture(params=dict(params), param_grads=grads)
    actual = _capture(params=dict(params), param_grads=grads)
    options = ReportOptions(optimizer="sgd", lr=1.0)
    # off by 1e-6 relative on w, as far as the reference's own float32 step; z left unchanged, where
    # the reference's float32 step moves it by about as much as the float64 one does
    mine = _StepSide(params, rate=1 + 1e-6, frozen=("z",))
    noise = _StepSide(params, rate=1 + 1e-6)
    noise_z = _StepSide({"z": params["z"]}, rate=0.0)  # float32 noise: z's step rounds away entirely

    class Noise:
        def optimizer_step(self, g: Any, optimizer: str, lr: float, current: Any = None) -> dict[str, np.ndarray]:
            return {**noise.optimizer_step(g, optimizer, lr), **noise_z.optimizer_step(g, optimizer, lr)}

    checks, rows = phases.optimizer_phase(mine, _StepSide(params), Noise(), actual, expected, None, options)
    assert checks == [] and [r["update_matches_reference"] for r in rows] == [True, True]
    assert rows[1]["changed_after_step"] is True and rows[1]["updated_by_optimizer"] is True
    checks, rows = phases.optimizer_phase(mine, _StepSide(params), None, actual, expected, None, options)
    assert [c.tensor for c in checks] == ["param[w]", "param[z]"] and not any(c.match for c in checks)
    assert rows[1]["changed_after_step"] is False and rows[1]["updated_by_optimizer"] is False


# --- training side by side ------------------------------------------------------------------------------

class _TrainSide:
    def __init__(self, losses: list[float], params: list[dict[str, np.ndarray]]) -> None:
        self.losses, self.snapshots = losses, params
        self.start = {"w": np.array([float(len(losses))])}
        self.loaded: list[dict[str, np.ndarray]] = []
        self.asked: list[tuple[Any, str, float]] = []

    def params(self) -> dict[str, np.ndarray]:
        return self.start

    def train_steps(self, batches: Any, optimizer: str, lr: float) -> tuple[list[float], list[dict[str, np.ndarray]]]:
        self.asked.append((batches, optimizer, lr))
        return self.losses, self.snapshots

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.loaded.append(arrays)


def _steps(*rows: tuple[float, float]) -> list[dict[str, np.ndarray]]:
    return [{"a": np.array([a]), "b": np.array([b])} for a, b in rows]


TRAIN_OPTIONS = ReportOptions(steps=3, optimizer="sgd", lr=0.125)
BATCHES = [(np.ones((1, 2), dtype=int), np.ones((1, 2), dtype=int))] * 3


def test_training_phase_not_run() -> None:
    out = phases.training_phase(None, None, None, [], ReportOptions(steps=0))  # type: ignore[arg-type]
    assert out == {"steps": 0, "status": "not_checked", "first_divergent_step": None, "first_divergent_what": None,
                   "loss_actual": [], "loss_expected": []}


def test_training_phase_that_matches() -> None:
    losses = [2.1234567891234, 1.5, 1.0000000000001]
    mine, ref = _TrainSide(losses, _steps((1, 2), (3, 4), (5, 6))), _TrainSide(losses, _steps((1, 2), (3, 4), (5, 6)))
    out = phases.training_phase(mine, ref, None, BATCHES, TRAIN_OPTIONS)
    assert out == {"steps": 3, "status": "match", "first_divergent_step": None, "first_divergent_what": None,
                   "loss_actual": [2.123456789, 1.5, 1.0], "loss_expected": [2.123456789, 1.5, 1.0]}
    assert mine.asked == [(BATCHES, "sgd", 0.125)] and ref.asked == [(BATCHES, "sgd", 0.125)]
    # every side is put back at the scratch side's starting weights
    assert len(mine.loaded) == 1 and mine.loaded[0] is mine.start
    assert len(ref.loaded) == 1 and ref.loaded[0] is mine.start


@pytest.mark.parametrize("mine_losses, mine_params, step, what", [
    ([1.0, 1.1, 1.2], _steps((1, 2), (3, 4), (5, 6.5)), 3, "parameter b"),   # the last step
    ([1.0, 1.1, 1.3], _steps((1, 2), (3, 4), (5, 6)), 3, "loss"),
    ([1.0, 1.1, 1.2], _steps((1, 2.5), (3, 4), (5, 6)), 1, "parameter b"),
    ([1.0, 1.1, 1.2], _steps((1.5, 2.5), (3, 4), (5, 6)), 1, "parameter a"),  # the first bad one, in order
    ([1.5, 1.1, 1.2], _steps((1.5, 2), (3, 4), (5, 6)), 1, "loss"),           # the loss before the parameters
    ([1.0, 1.5, 1.2], _steps((1, 2), (3, 4.5), (5, 6)), 2, "loss"),
])
def test_training_phase_first_divergent_step(mine_losses: list[float], mine_params: list[dict[str, np.ndarray]],
                                             step: int, what: str) -> None:
    mine = _TrainSide(mine_losses, mine_params)
    ref = _TrainSide([1.0, 1.1, 1.2], _steps((1, 2), (3, 4), (5, 6)))
    out = phases.training_phase(mine, ref, None, BATCHES, TRAIN_OPTIONS)
    assert (out["status"], out["first_divergent_step"], out["first_divergent_what"]) == ("diverged", step, what)
    assert out["loss_actual"] == mine_losses and out["loss_expected"] == [1.0, 1.1, 1.2]


def test_training_phase_with_noise() -> None:
    ref = _TrainSide([1.0, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0])}])
    mine = _TrainSide([1.0 + 1e-6, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0 + 2e-6])}])
    noise = _TrainSide([1.0 + 1e-6, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0 + 2e-6])}])
    options = ReportOptions(steps=2, optimizer="adam", lr=0.5)
    out = phases.training_phase(mine, ref, noise, BATCHES[:2], options)
    assert out["status"] == "match" and out["first_divergent_step"] is None
    assert noise.asked == [(BATCHES[:2], "adam", 0.5)] and noise.loaded[0] is mine.start
    bare = phases.training_phase(mine, ref, None, BATCHES[:2], options)
    assert (bare["first_divergent_step"], bare["first_divergent_what"]) == (1, "loss")
    later = _TrainSide([1.0, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0 + 2e-6])}])
    bare = phases.training_phase(later, ref, None, BATCHES[:2], options)
    assert (bare["first_divergent_step"], bare["first_divergent_what"]) == (2, "parameter a")


def test_batches_need_only_one_held_out_sequence() -> None:
    # 3**3 = 27 distinct sequences: enough for the batch and one test sequence, not for a large test set
    got = phases.batches(ReportOptions(batch_size=4, model=TransformerConfig(vocab_size=4, seq_len=3)))
    assert len(got) == 1 and got[0][0].shape == (4, 3)


def test_gradient_scale_of_the_nearest_recorded_module() -> None:
    # blk.lin.b is charged to blk.lin (output gradient 0.01), not to blk (100): 5e-10 off is a mismatch;
    # a module with an empty output gradient has scale 0
    expected = _capture([_call("blk", 0, np.array([100.0])), _call("blk.lin", 1, np.array([0.01])),
                         _call("e", 2, np.zeros(0))],
                        params={"blk.lin.b": np.ones(2), "e.b": np.ones(2)},
                        param_grads={"blk.lin.b": np.array([1e-3, 0.0]), "e.b": np.array([1e-3, 0.0])})
    actual = _capture(params=dict(expected.params),
                      param_grads={"blk.lin.b": np.array([1e-3, 5e-10]), "e.b": np.array([1e-3, 5e-10])})
    rows = {r["parameter"]: r for r in phases.gradient_flow({}, actual, expected, None)}
    assert rows["blk.lin.b"]["matches_reference"] is False and rows["e.b"]["matches_reference"] is False


def test_optimizer_phase_tiny_updates_have_no_unit_floor() -> None:
    # updates of 1e-3 and 5e-10: judged against their own size, not against an allowance of 1e-9
    params = {"w": np.array([1.0, 1.0]), "z": np.array([1.0, 1.0])}
    grads = {"w": np.array([1e-3, 0.0]), "z": np.array([5e-10, 0.0])}
    expected = _capture(params=dict(params), param_grads=grads)
    actual = _capture(params=dict(params), param_grads=grads)

    class Off:  # w's second entry moves by 5e-10 where the reference's does not; z never moves
        def optimizer_step(self, g: Any, optimizer: str, lr: float, current: Any = None) -> dict[str, np.ndarray]:
            return {"w": params["w"] - lr * g["w"] - np.array([0.0, 5e-10]), "z": params["z"].copy()}

    checks, rows = phases.optimizer_phase(Off(), _StepSide(params), None, actual, expected, None,
                                          ReportOptions(optimizer="sgd", lr=1.0))
    assert [c.tensor for c in checks] == ["param[w]", "param[z]"] and not any(c.match for c in checks)
    assert rows[1]["changed_after_step"] is False and rows[1]["updated_by_optimizer"] is False


def test_optimizer_phase_noise_is_measured_from_the_weights_before_the_step() -> None:
    params = {"w": np.array([1.0, 2.0])}
    grads = {"w": np.array([1.0, -1.0])}
    expected = _capture(params=dict(params), param_grads=grads)
    actual = _capture(params=dict(params), param_grads=grads)
    # the scratch side leaves w unchanged; the reference's float32 step moves it as the float64 one does
    checks, rows = phases.optimizer_phase(_StepSide(params, frozen=("w",)), _StepSide(params), _StepSide(params),
                                          actual, expected, None, ReportOptions(optimizer="sgd", lr=1.0))
    assert checks[0].tensor == "param[w]" and not checks[0].match and rows[0]["update_matches_reference"] is False


def test_training_phase_far_loss_errors_with_noise() -> None:
    # the reference's own float32 losses sit next to its float64 ones: a loss off by 0.5 diverges
    ref = _TrainSide([1.0, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0])}])
    mine = _TrainSide([1.5, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0])}])
    noise = _TrainSide([1.0 + 1e-7, 2.0], [{"a": np.array([1.0])}, {"a": np.array([2.0])}])
    out = phases.training_phase(mine, ref, noise, BATCHES[:2], ReportOptions(steps=2))
    assert (out["first_divergent_step"], out["first_divergent_what"]) == (1, "loss")


def test_training_with_an_empty_parameter_or_none_at_all() -> None:
    """A parameter with no values (a zero-width layer of a user's model) has no largest value: the scale
    of the rest stands; a model with no parameters has only its losses to compare."""
    steps = [{"a": np.array([1.0]), "empty": np.zeros((0, 3))}] * 2
    out = phases.training_phase(_TrainSide([1.0, 2.0], steps), _TrainSide([1.0, 2.0], steps), None, BATCHES[:2],
                                ReportOptions(steps=2))
    assert out["status"] == "match" and out["first_divergent_step"] is None
    bare = [{}, {}]
    out = phases.training_phase(_TrainSide([1.0, 2.0], bare), _TrainSide([1.0, 2.0], bare), None, BATCHES[:2],
                                ReportOptions(steps=2))
    assert out["status"] == "match"


def test_differ_each_equals_the_per_array_formulas() -> None:
    """The flags the optimizer step's rows are built from, judged all at once, are what each array
    gives on its own: NaN, infinities, signed zeros, dtypes mixed, shapes that differ, None, empty."""
    rng = np.random.default_rng(5)
    base = [rng.standard_normal(s) for s in [(3, 2), (4,), (), (2, 2)]]
    arrays = [b.copy() for b in base] + [np.zeros(3), np.array([np.nan]), np.array([np.inf, 1.0]),
                                         np.array([-0.0, 0.0]), np.zeros(0), None, np.ones(3, np.float32)]
    others = [b.copy() for b in base] + [np.zeros(3), np.array([np.nan]), np.array([np.inf, 1.0]),
                                         np.array([0.0, 0.0]), np.zeros(0), np.ones(2), np.ones(3)]
    arrays[0][1, 1] = np.nextafter(arrays[0][1, 1], np.inf)  # one value apart
    others[3] = np.ones(2)  # a shape that differs: it differs, whatever the values
    others[4] = others[6] = others[10] = None  # judged against zeros (all zero, and ones: not zero, not 1)
    want = [False if x is None else True if y is not None and np.shape(x) != np.shape(y) else
            bool(np.not_equal(x, 0 if y is None else y).any()) for x, y in zip(arrays, others, strict=True)]
    assert phases._differ_each(arrays, others) == want
    assert want[:4] == [True, False, False, True] and want[4:8] == [False, True, True, False] and want[10] is True
    # equal values in another shape (broadcasting would call them equal), and shapes that do not broadcast
    assert phases._differ_each([np.ones(1), np.ones(3), np.ones((2, 1))], [np.ones(2), np.ones(2), np.ones((2, 1))]) \
        == [True, True, False]
    assert phases._differ_each([np.zeros(1)], [np.zeros(2)]) == [True]  # zeros, but in another shape
    nonzero = [False if x is None else bool(np.any(x)) for x in arrays]
    assert phases._differ_each(arrays) == nonzero
    assert nonzero[4:] == [False, True, True, False, False, False, True]


def test_optimizer_phase_a_parameter_the_reference_leaves_is_no_no_in_its_row() -> None:
    # its own gradient is None (its own step leaves it) and the step with the reference's (zero)
    # gradient moves it where the reference's does not: a mismatch, but the row's two naive columns
    # are "yes", since the reference's step leaves it unchanged too
    params = {"w": np.array([1.0, 2.0])}
    expected = _capture(params=dict(params), param_grads={"w": np.zeros(2)})
    actual = _capture(params=dict(params), param_grads={"w": None})

    class Drifts:
        def optimizer_step(self, g: Any, optimizer: str, lr: float, current: Any = None) -> dict[str, np.ndarray]:
            return {"w": params["w"] + (0.0 if g["w"] is None else 0.5)}

    checks, rows = phases.optimizer_phase(Drifts(), _StepSide(params), None, actual, expected, None,
                                          ReportOptions(optimizer="sgd", lr=1.0))
    assert [c.tensor for c in checks] == ["param[w]"]
    assert rows == [{"parameter": "w", "changed_after_step": True, "update_matches_reference": False,
                     "updated_by_optimizer": True, "reference_updated": False}]


def test_training_phase_judges_on_the_largest_parameter_not_on_a_unit_scale() -> None:
    # every parameter below 1: a zero bias that drifts by 5e-10 is past 1e-9 of the largest (0.1),
    # though within 1e-9 of 1
    ref = _TrainSide([1.0], [{"w": np.array([0.1, -0.05]), "b": np.array([0.0])}])
    mine = _TrainSide([1.0], [{"w": np.array([0.1, -0.05]), "b": np.array([5e-10])}])
    out = phases.training_phase(mine, ref, None, BATCHES[:1], ReportOptions(steps=1))
    assert (out["first_divergent_step"], out["first_divergent_what"]) == (1, "parameter b")
    near = _TrainSide([1.0], [{"w": np.array([0.1, -0.05]), "b": np.array([5e-11])}])
    assert phases.training_phase(near, ref, None, BATCHES[:1], ReportOptions(steps=1))["status"] == "match"
