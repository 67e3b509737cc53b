"""The whole model: shapes, loss, every gradient, optimizer steps and 50 training steps, each
scratch implementation against the torch reference with shared weights and batches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch_parity import (
    RTOL64,
    SCRATCH,
    SMALL,
    Trio,
    assert_close,
    make_trio,
    rtol_for,
    tokens,
)

from scratch_model import functional as F
from scratch_model.autograd import Tensor
from scratch_model.config import TrainConfig
from scratch_model.data import make_reversal_data, reverse_targets
from scratch_model.optim import SGD, Adam
from scratch_model.train import cross_entropy, train
from torch_reference.train import cross_entropy as torch_cross_entropy
from torch_reference.train import train_module

CONFIGS = {
    "small": SMALL,
    "sinusoidal": replace(SMALL, positional="sinusoidal"),
    "two layers": replace(SMALL, num_layers=2),
    "one head": replace(SMALL, num_heads=1),
}
# The key projection's bias has a gradient that is zero in exact arithmetic (softmax ignores a shift
# shared by all keys), so each side's is rounding noise (~1e-17). Adam divides it by sqrt(v) + eps,
# about eps = 1e-8, and moves the bias by ~lr * 1e-9 in a direction set by the noise: harmless for
# the output, but above 1e-12 of the parameter's scale. Under Adam it is checked by a bound instead:
# at most lr * 1e-6 per step (noise up to 1e-14), still a million times below one real Adam step.
NOISE_ONLY = ".attn.k_proj.bias"


def scratch_forward(trio: Trio, impl: str):
    if impl == "class":
        return trio.cls
    return lambda toks, mask=None: F.forward(trio.params, toks, trio.config, mask=mask)


def scratch_params(trio: Trio, impl: str) -> dict[str, Tensor]:
    return dict(trio.cls.named_parameters()) if impl == "class" else trio.params


def torch_params(trio: Trio) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in trio.torch.named_parameters()}


# --- forward shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (1, SMALL.seq_len), (5, 3)])
def test_full_forward_shapes(config_name, batch, seq):
    trio = make_trio(CONFIGS[config_name])
    toks = tokens(trio.config, seed=batch, batch=batch, seq=seq)
    expected = (batch, seq, SMALL.vocab_size)
    ref = trio.torch(torch.from_numpy(toks)).detach().numpy()
    assert ref.shape == expected
    for impl in SCRATCH:
        out = scratch_forward(trio, impl)(toks)
        assert out.shape == expected and out.dtype == np.float64, f"{impl}: {out.shape} {out.dtype}"
        assert_close(out.data, ref, f"{impl}: logits", RTOL64)


# --- loss and every gradient ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "causal"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_loss_and_gradients_of_every_parameter(config_name, masked, dtype):
    trio = make_trio(CONFIGS[config_name], dtype=dtype)
    toks = tokens(trio.config, seed=3, batch=4)
    targets = reverse_targets(toks)
    mask = np.tril(np.ones((SMALL.seq_len,) * 2, dtype=bool)) if masked else None
    rtol = rtol_for(dtype)

    loss_t = torch_cross_entropy(trio.torch(torch.from_numpy(toks), None if mask is None
                                            else torch.from_numpy(mask)), torch.from_numpy(targets))
    loss_t.backward()
    ref = {n: p.grad.numpy() for n, p in trio.torch.named_parameters()}
    scale = max(float(np.abs(g).max()) for g in ref.values())
    for impl in SCRATCH:
        loss = cross_entropy(scratch_forward(trio, impl)(toks, mask), targets)
        loss.backward()
        assert_close(loss.data, loss_t.detach().numpy(), f"{impl}: loss", rtol)
        params = scratch_params(trio, impl)
        assert list(params) == list(ref), f"{impl}: parameter names or order differ from torch"
        for name, grad in ref.items():
            assert_close(params[name].grad, grad, f"{impl}: backward of {name}", rtol, floor=scale)


# --- optimizer steps -----------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": (lambda ps: SGD(ps, lr=0.05, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "adam": (lambda ps: Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
}


@pytest.mark.parametrize("impl", SCRATCH)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_optimizer_steps_match_torch_optim(optimizer, impl):
    """Three steps (the second and third use SGD's momentum buffer and Adam's moments): after
    each, every parameter equals torch.optim's and (the key bias aside) differs from before."""
    trio = make_trio()
    make_scratch, make_torch = OPTIMIZERS[optimizer]
    params = scratch_params(trio, impl)
    opt, opt_t = make_scratch(list(params.values())), make_torch(trio.torch.parameters())
    forward = scratch_forward(trio, impl)
    lr = 0.05 if optimizer == "sgd" else 0.01
    for step in range(1, 4):
        toks = tokens(trio.config, seed=100 + step, batch=4)
        before = {n: p.data.copy() for n, p in params.items()}
        opt.zero_grad()
        cross_entropy(forward(toks), reverse_targets(toks)).backward()
        opt.step()
        opt_t.zero_grad()
        torch_cross_entropy(trio.torch(torch.from_numpy(toks)), torch.from_numpy(reverse_targets(toks))).backward()
        opt_t.step()
        for name, value in torch_params(trio).items():
            moved = params[name].data
            if not name.endswith(NOISE_ONLY):  # SGD moves it by lr * 1e-17: below one ulp
                assert not np.array_equal(moved, before[name]), f"{impl} step {step}: {name} did not change"
            if optimizer == "adam" and name.endswith(NOISE_ONLY):
                assert np.abs(moved - value).max() <= lr * 1e-6 * step, f"{impl} step {step}: {name}"
                continue
            assert_close(moved, value, f"{impl} {optimizer} step {step}: {name}", RTOL64)


# --- 50 training steps -------------------------------------------------------------------------

@pytest.mark.parametrize("impl", SCRATCH)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fifty_training_steps_match_torch(optimizer, impl):
    """The scratch training loop and the torch one, same batches: the loss at every step within
    1e-9 relative, then the same parameters and the same test figures."""
    trio = make_trio()
    config = TrainConfig(epochs=2, batch_size=16, num_train=400, num_test=64, optimizer=optimizer,
                         lr=3e-3 if optimizer == "adam" else 0.05)
    data = make_reversal_data(trio.config, config.num_train, config.num_test, seed=5)
    losses, losses_t = [], []

    params = scratch_params(trio, impl)
    forward = scratch_forward(trio, impl)
    result = train(forward, list(params.values()), data, config, lambda s, v: losses.append(v))
    result_t = train_module(trio.torch, data, config, lambda s, v: losses_t.append(v))

    assert len(losses) == len(losses_t) == result.steps == result_t.steps == 50
    assert_close(np.array(losses), np.array(losses_t), f"{impl} {optimizer}: loss per step", 1e-9)
    assert losses_t[-1] < 0.8 * losses_t[0], "the reference did not learn; the check is too weak"
    for name, value in torch_params(trio).items():
        if optimizer == "adam" and name.endswith(NOISE_ONLY):
            assert np.abs(params[name].data - value).max() <= config.lr * 1e-6 * 50, name
            continue
        assert_close(params[name].data, value, f"{impl} {optimizer} after 50 steps: {name}", 1e-9)
    assert_close(np.array(result.train_loss), np.array(result_t.train_loss), "epoch losses", 1e-9)
    assert (result.exact_match, result.token_accuracy) == (result_t.exact_match, result_t.token_accuracy)
    assert_close(np.array(result.loss), np.array(result_t.loss), "test loss", 1e-9)
