"""SGD and Adam against torch.optim over several steps with identical fixed gradients (float64)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from scratch_model.autograd import Tensor
from scratch_model.optim import SGD, Adam

STEPS = 6
SHAPES = [(3, 4), (5,), ()]

OPTIMIZERS: dict[str, tuple[Callable, Callable, dict]] = {
    "sgd plain": (SGD, torch.optim.SGD, dict(lr=0.1)),
    "sgd momentum": (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    "sgd momentum dampening": (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
    "sgd weight decay": (SGD, torch.optim.SGD, dict(lr=0.1, weight_decay=0.01)),
    "sgd all": (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.02)),
    "adam defaults": (Adam, torch.optim.Adam, dict()),
    "adam": (Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6)),
    "adam weight decay": (Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_matches_torch(name: str) -> None:
    ours_cls, torch_cls, kwargs = OPTIMIZERS[name]
    rng = np.random.default_rng(7)
    start = [rng.standard_normal(shape) for shape in SHAPES]
    ours = [Tensor(a.copy(), requires_grad=True) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    ours_opt, torch_opt = ours_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    for step in range(STEPS):
        for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
            if i == 1 and step == 2:  # a parameter without a gradient is skipped by both
                p.grad, t.grad = None, None
                continue
            g = rng.standard_normal(p.shape)
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        ours_opt.step()
        torch_opt.step()
        for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}: parameter {i} after step {step + 1}")
    assert all(not np.array_equal(p.data, a) for p, a in zip(ours, start, strict=True)), "nothing moved"


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_zero_grad_clears_gradients(cls: type) -> None:
    p = Tensor(np.ones(3), requires_grad=True)
    p.grad = np.ones(3)
    opt = cls([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: no move
    np.testing.assert_array_equal(p.data, np.ones(3))


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_float32_parameters_stay_float32(cls: type) -> None:
    p = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = cls([p], lr=0.1)
    for _ in range(2):
        p.grad = np.full(3, 0.5, dtype=np.float32)
        opt.step()
    assert p.dtype == np.float32


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(params=[], lr=0.1), "empty"),
    (dict(lr=0.0), "learning rate.*0.0"),
    (dict(lr=-1.0), "learning rate.*-1.0"),
])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_bad_optimizer_arguments_raise(cls: type, kwargs: dict, message: str) -> None:
    kwargs = {"params": [Tensor(np.ones(2), requires_grad=True)], **kwargs}
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("name", ["sgd all", "adam weight decay"])
def test_float32_parameters_stay_float32_and_match_torch(name: str) -> None:
    """The flat update keeps each parameter's dtype and shape; float32 against torch in float32."""
    ours_cls, torch_cls, kwargs = OPTIMIZERS[name]
    rng = np.random.default_rng(8)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    ours = [Tensor(a.copy(), requires_grad=True) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    ours_opt, torch_opt = ours_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    for _ in range(STEPS):
        for p, t in zip(ours, theirs, strict=True):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        ours_opt.step()
        torch_opt.step()
    for p, t, a in zip(ours, theirs, start, strict=True):
        assert p.data.dtype == np.float32 and p.data.shape == a.shape
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=2e-6, atol=1e-7)
