"""What the captures keep without copying stays as it was recorded, and recording leaves nothing
behind (also when the forward raises): no global module hook, no hook or wrapped ``forward`` on a
module; a module with hooks of its own is recorded after them, as its caller sees it; and a capture,
which runs with the cyclic garbage collector paused, leaves no cyclic garbage."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest
import torch
from torch.nn.modules import module as torch_module

from differential.capture import CallLog, collector_paused
from differential.implementations import make_side
from differential.report import initial_weights
from scratch_model.config import TransformerConfig
from scratch_model.data import make_reversal_data

CONFIG = TransformerConfig(num_layers=2)


def _batch() -> tuple[np.ndarray, np.ndarray]:
    return next(make_reversal_data(CONFIG, 4, 1, seed=0).batches(0, 4))


def _arrays(capture) -> list[np.ndarray]:
    out = [capture.logits, *capture.params.values(), *(g for g in capture.param_grads.values() if g is not None)]
    for call in capture.calls.values():
        out += [*call.inputs, call.output, *(g for g in (call.grad_output, *call.grad_inputs) if g is not None)]
    return out


@pytest.mark.parametrize("impl", ["torch", "class", "functional"])
def test_later_work_on_a_side_leaves_its_capture_as_recorded(impl: str) -> None:
    side = make_side(impl, CONFIG, initial_weights(CONFIG, 0), "float64")
    tokens, targets = _batch()
    capture = side.capture(tokens, targets)
    kept = [a.copy() for a in _arrays(capture)]
    # everything a report does with the side afterwards: teacher forcing, an optimizer step from the
    # captured gradients, training steps that update the weights in place, another capture
    call = capture.calls["blocks.0"]
    side.run_module("blocks.0", call.inputs, tokens, call.grad_output)
    side.optimizer_step(capture.param_grads, "adam", 0.1)
    side.train_steps([(tokens, targets)] * 2, "adam", 0.1)
    side.capture(tokens, targets)
    for before, now in zip(kept, _arrays(capture), strict=True):
        np.testing.assert_array_equal(now, before)


def _global_hooks() -> int:
    return len(torch_module._global_forward_pre_hooks) + len(torch_module._global_forward_hooks)


def _own_hooks(model: torch.nn.Module) -> int:
    """Hooks on the model's modules, and instance attributes ``forward`` (how a capture records)."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) + ("forward" in vars(m)) for m in model.modules())


def test_torch_capture_removes_its_hooks_also_when_the_forward_raises() -> None:
    side = make_side("torch", CONFIG, initial_weights(CONFIG, 0), "float64")
    tokens, targets = _batch()
    before = _global_hooks()
    side.capture(tokens, targets)
    assert _global_hooks() == before and _own_hooks(side.model) == 0
    with pytest.raises(ValueError):  # a token past the vocabulary: the model raises
        side.capture(np.full_like(tokens, CONFIG.vocab_size + 5), targets)
    assert _global_hooks() == before and _own_hooks(side.model) == 0
    # a model with hooks of its own is recorded through hooks on each module: those go too
    side = make_side("torch", CONFIG, initial_weights(CONFIG, 0), "float64")
    handle = side.model.blocks[1].attn.register_forward_pre_hook(lambda module, args: None)
    try:
        side.capture(tokens, targets)
        with pytest.raises(ValueError):
            side.capture(np.full_like(tokens, CONFIG.vocab_size + 5), targets)
        assert _global_hooks() == before and _own_hooks(side.model) == 1
    finally:
        handle.remove()  # built models are reused by later sides: leave nothing on them


def test_a_module_with_its_own_hook_is_recorded_as_its_caller_sees_it() -> None:
    side = make_side("torch", CONFIG, initial_weights(CONFIG, 0), "float64")
    side.capture(*_batch())  # a hook added after a first capture counts as well
    ln = side.model.blocks[0].ln1
    handle = ln.register_forward_hook(lambda module, args, out: out * 2.0)  # a user's hook that changes the output
    try:
        capture = side.capture(*_batch())
    finally:
        handle.remove()  # built models are reused by later sides: leave nothing on them
    call = capture.calls["blocks.0.ln1"]
    with torch.no_grad():
        plain = ln.forward(torch.from_numpy(call.inputs[0])).numpy()
    np.testing.assert_array_equal(call.output, 2.0 * plain)


@pytest.mark.parametrize("impl", ["torch", "class", "functional"])
def test_a_capture_leaves_no_cyclic_garbage(impl: str) -> None:
    # the captures run with the cyclic collector paused: what they drop must go by reference counting
    side = make_side(impl, CONFIG, initial_weights(CONFIG, 0), "float64")
    side.capture(*_batch())  # warm: lazy imports, caches
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        capture = side.capture(*_batch())
        del capture
        assert gc.collect() == 0  # nothing unreachable was waiting for the collector
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_only_inside_the_block(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError), collector_paused():
            assert not gc.isenabled()
            raise RuntimeError("a capture that fails")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_call_stack_ends_below_its_container_and_holds_the_line_that_called_it() -> None:
    # a framework of two plain objects: each call goes through a hook function, as module hooks do
    log = CallLog(is_tensor=lambda x: isinstance(x, np.ndarray), alias=lambda x: x, requires_grad=lambda x: False)
    lines = {}

    def call(path, fn, x):  # the framework's __call__: hook in, forward, hook out
        (x,) = log.before(path, (x,))
        return log.after(path, fn(x))

    def child(x):
        return x + 1.0

    def container(x):
        lines["call"] = sys._getframe().f_lineno + 1
        return call("inner", child, x) * 2.0

    def driver():  # where the whole model is called: below the container, left out of the child's stack
        return call("", container, np.zeros(2))

    driver()
    stack = log.raw["inner"]["stack"]
    here = container.__code__.co_filename
    assert (here, lines["call"]) in stack  # the container's line that made the call
    driver_line = driver.__code__.co_firstlineno + 1
    assert (here, driver_line) not in stack and len(stack) < len(log.raw[""]["stack"])
