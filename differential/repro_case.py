"""What a generated repro test runs (`scratchdiff repro`, see differential.repro): load the saved
case, build the implementation's module from the saved weights, run the failing phase alone on the
saved inputs (and output gradient), and compare with the reference's saved results under the
report's tolerance model (differential.compare).

Imports numpy, differential.compare and the code under test only: never torch, never pickle. A
case is one ``.npz`` file: the arrays by key (``weight/<name>``, ``input/<i>``, ``grad_output``,
``expected/<tensor>``, ``noise/<tensor>`` for float32 runs) and ``meta``, a JSON string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from differential.compare import Metrics, compare
from scratch_model.config import TransformerConfig

META = "meta"


@dataclass
class Case:
    """One saved repro: ``meta`` says what runs (impl, module path, phase, what is compared)."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def config(self) -> TransformerConfig:
        return TransformerConfig(**self.meta["config"])

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays saved under ``prefix/``, by the rest of their key."""
        head = prefix + "/"
        return {k[len(head):]: a for k, a in self.arrays.items() if k.startswith(head)}

    def inputs(self) -> list[np.ndarray]:
        return [self.arrays[f"input/{i}"] for i in range(self.meta["inputs"])]


def save(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a case: plain arrays and the meta as a JSON string (loadable with allow_pickle=False)."""
    np.savez(path, **{META: np.array(json.dumps(meta, sort_keys=True))}, **arrays)


def load(path: str | Path) -> Case:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return Case(json.loads(str(arrays.pop(META))), arrays)


# --- running the implementation under test -----------------------------------------------------

def run(case: Case) -> dict[str, Any]:
    """Run the case's failing phase on the implementation under test: the tensors to compare, by
    the keys of ``expected/`` (a tensor the implementation does not produce is None)."""
    target = case.meta["target"]
    if target == "data":
        return _run_scratch_data(case)  # the report draws every batch with the bundled data code
    if case.meta.get("adapter"):
        return _run_adapter(case)
    if target == "module":
        return _run_scratch_module(case)
    if target == "loss":
        return _run_scratch_loss(case)
    return _run_scratch_optimizer(case)


def _scratch_params(case: Case) -> tuple[Any, dict[str, Any]]:
    """The implementation's model (class) or its function table (functional), and its parameters by
    name, with the saved weights loaded (parameters not saved keep their initial values: the
    module under test does not read them)."""
    config, dtype = case.config, case.dtype
    if case.meta["impl"] == "class":
        from scratch_model.layers import ReversalTransformer

        model = ReversalTransformer(config, dtype=dtype)
        named = dict(model.named_parameters())
    else:
        from scratch_model.functional import build_simple_transformer

        named, model = build_simple_transformer(config, dtype=dtype)
    for name, array in case.group("weight").items():
        named[name].data = np.array(array, dtype=dtype)
        named[name].grad = None
    return model, named


def _grad(t: Any) -> np.ndarray | None:
    grad = getattr(t, "grad", None)
    return None if grad is None else np.array(grad)


def _run_scratch_module(case: Case) -> dict[str, Any]:
    from scratch_model.autograd import Tensor
    from scratch_model.autograd.gradcheck import count_backward_calls

    model, named = _scratch_params(case)
    path = case.meta["path"]
    if case.meta["impl"] == "class":
        module = model.get(path)
    else:
        from scratch_model.functional import submodule

        module = submodule(named, case.config, path)
    args = [Tensor(np.array(x, dtype=case.dtype), requires_grad=True) for x in case.inputs()]
    out = module(*(args or [case.arrays["tokens"]]))
    got: dict[str, Any] = {"output": np.array(out.data), "backward_calls": 1}
    grad_output = case.arrays.get("grad_output")
    if case.meta["phase"] != "forward" and grad_output is not None and out.requires_grad:
        with count_backward_calls(out) as counts:
            out.backward(np.asarray(grad_output, dtype=case.dtype))
        got["backward_calls"] = max(counts.values(), default=1)
    for i, a in enumerate(args):
        got[f"grad_input/{i}"] = _grad(a)
    for name in case.group("weight"):
        got[f"param_grad/{name}"] = _grad(named[name])
    return got


def _run_scratch_loss(case: Case) -> dict[str, Any]:
    from scratch_model.autograd import Tensor
    from scratch_model.train import cross_entropy

    logits = Tensor(np.array(case.arrays["logits"], dtype=case.dtype), requires_grad=True)
    loss = cross_entropy(logits, case.arrays["targets"])
    if loss.requires_grad:
        loss.backward()
    return {"loss": np.array(loss.item()), "grad_logits": _grad(logits), "loss_requires_grad": loss.requires_grad}


def _run_scratch_data(case: Case) -> dict[str, Any]:
    """The data code's first batch, as the report draws it, checked against the task's own rule:
    the targets are the inputs reversed, every token lies in 1..vocab_size-1 (0 is reserved)."""
    from scratch_model.data import make_reversal_data

    config, meta = case.config, case.meta
    tokens, targets = next(iter(make_reversal_data(config, num_train=meta["batch"], num_test=1,
                                                   seed=meta["seed"]).batches(0, meta["batch"])))
    tokens = np.asarray(tokens)
    outside = (tokens < 1) | (tokens > config.vocab_size - 1)
    return {"targets": np.asarray(targets, dtype=np.float64), "tokens_outside_vocabulary": outside.astype(np.float64),
            "_rule": {"targets": tokens[:, ::-1].astype(np.float64),
                      "tokens_outside_vocabulary": np.zeros(tokens.shape)}}


def _run_scratch_optimizer(case: Case) -> dict[str, Any]:
    from scratch_model.optim import SGD, Adam

    model, named = _scratch_params(case)
    grads = case.group("grad")
    for name, p in named.items():
        p.grad = None if name not in grads else np.array(grads[name], dtype=case.dtype)
    # the list the implementation's own training hands its optimizer
    params = model.parameters() if case.meta["impl"] == "class" else list(named.values())
    lr = case.meta["lr"]
    opt = Adam(params, lr=lr) if case.meta["optimizer"] == "adam" else SGD(params, lr=lr, momentum=0.9)
    opt.step()
    before = case.group("weight")
    return {f"update/{name}": np.array(named[name].data) - before[name] for name in case.meta["compared_params"]}


def _run_adapter(case: Case) -> dict[str, Any]:
    """A user's framework, through its adapter's hooks (tensor(), backward()): the model is built by
    the adapter's factory with the saved weights, run once on the saved tokens so that each module
    is called as the model calls it, then the blamed module (or the loss, or one optimizer step)
    runs alone on the saved values."""
    from differential.adapter import AdapterOptions, load_adapter
    from differential.adapter_side import AdapterSide

    meta = case.meta
    adapter = load_adapter(meta["adapter"], AdapterOptions(case.config, case.dtype, meta["seed"]))
    side = AdapterSide(adapter, case.config, case.dtype, arrays=case.group("weight"))
    tokens, targets = case.arrays["tokens"], case.arrays["targets"]
    side.capture(tokens, targets)
    state, path = meta.get("adapter_state") or {}, meta["path"]
    for attr, key in (("reshaped", "reshaped"), ("ref_shapes", "ref_shapes"), ("tables", "table"),
                      ("ignored", "ignored")):
        if state.get(key) is not None:
            getattr(side, attr)[path] = _tuples(state[key])
    if meta["target"] == "loss":
        value, grad, requires_grad = side.loss_on(case.arrays["logits"], targets)
        return {"loss": np.array(value), "grad_logits": grad, "loss_requires_grad": requires_grad}
    if meta["target"] == "optimizer":
        after = side.optimizer_step(case.group("grad"), meta["optimizer"], meta["lr"])
        before = case.group("weight")
        return {f"update/{name}": after[name] - before[name] for name in meta["compared_params"]}
    backward = meta["phase"] != "forward"
    out, grad_in, grads = side.run_module(meta["path"], case.inputs(), tokens,
                                          case.arrays.get("grad_output") if backward else None)
    got: dict[str, Any] = {"output": out, "backward_calls": 1}
    got.update({f"grad_input/{i}": g for i, g in enumerate(grad_in)})
    got.update({f"param_grad/{name}": g for name, g in grads.items()})
    return got


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples of shapes an adapter side keeps (a list of ints stays a list)."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return tuple(value)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], list):
        return [tuple(v) for v in value[0]], tuple(value[1])
    return value


# --- judging --------------------------------------------------------------------------------------

def check(case: Case, got: dict[str, Any]) -> list[tuple[str, Metrics]]:
    """Every compared tensor with its metrics, under the report's tolerance model: float64 near
    machine precision; float32 against the float64 reference with the reference's own float32 error
    as the noise floor. Gradients are allowed round-off at the scale of the output gradient."""
    expected, noise = case.group("expected"), case.group("noise")
    expected.update(got.get("_rule", {}))  # the data's expected values follow from the batch drawn
    scale = float(np.max(np.abs(case.arrays["grad_output"]), initial=0.0)) if "grad_output" in case.arrays else 0.0
    out = []
    for key in case.meta["compared"]:
        grad = key.startswith(("grad_input/", "param_grad/"))
        out.append((key, compare(got.get(key), expected.get(key), noise.get(key), scale if grad else 0.0)))
    if case.meta.get("count_backward_calls") and got.get("backward_calls", 1) > 1:
        calls = got["backward_calls"]
        out.append(("backward_calls", Metrics(False, [], [], max_abs=float(calls - 1))))
    if case.meta["target"] == "loss" and not got.get("loss_requires_grad", True):
        out.append(("loss_requires_grad", Metrics(False, [], [], missing="actual")))
    return out


def describe(key: str, m: Metrics) -> str:
    """One line for one compared tensor."""
    if key == "backward_calls":
        return f"backward_calls: one node's backward ran {int(m.max_abs or 0) + 1} times in one backward pass"
    if key == "loss_requires_grad":
        return "loss_requires_grad: the loss does not require grad (built outside the graph)"
    if m.missing:
        return f"{key}: missing on the {m.missing} side"
    if m.shape_actual != m.shape_expected:
        return f"{key}: shape {m.shape_actual} vs the reference's {m.shape_expected}"
    return (f"{key}: max abs {m.max_abs:.4g}, cosine {m.cosine:.4g}, norm ratio {m.norm_ratio:.4g}, "
            f"mismatched {m.mismatched}, tolerance ratio {m.tolerance_ratio:.3g} (1 is where match ends)")


def assert_matches(case: Case, got: dict[str, Any]) -> None:
    """Raise AssertionError naming every tensor that disagrees with the reference."""
    bad = [describe(key, m) for key, m in check(case, got) if not m.match]
    if bad:
        where = case.meta["path"] if case.meta["target"] == "module" else case.meta["module"]
        raise AssertionError(f"{where or '(model)'} ({case.meta['phase']}) still diverges from the reference:\n  "
                             + "\n  ".join(bad))


def run_file(path: str | Path) -> None:
    """Load the case at ``path``, run it, and assert it matches: the body of every generated test."""
    case = load(path)
    assert_matches(case, run(case))
