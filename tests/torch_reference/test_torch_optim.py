"""TorchOptimizer applies torch.optim's own Adam and SGD rules, step for step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from torch_reference.optim import TorchOptimizer

SHAPES = [(5, 3), (3,), (4, 4), (2,)]


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


def _grads(step: int, dtype: torch.dtype) -> list[torch.Tensor | None]:
    gen = torch.Generator().manual_seed(100 + step)
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    if step % 2:
        grads[1] = None  # a parameter without a gradient on some steps: skipped, as torch.optim skips it
    return grads


@pytest.mark.parametrize("kind", ["adam", "sgd"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("foreach", [True, False])
def test_matches_torch_optim_step_for_step(kind: str, dtype: torch.dtype, foreach: bool) -> None:
    ours, theirs = _params(dtype), _params(dtype)
    mine = TorchOptimizer(ours, kind, lr=0.01)
    reference = (torch.optim.Adam(theirs, lr=0.01, foreach=foreach) if kind == "adam"
                 else torch.optim.SGD(theirs, lr=0.01, momentum=0.9, foreach=foreach))
    for step in range(6):
        for group in (ours, theirs):
            for p, g in zip(group, _grads(step, dtype), strict=True):
                p.grad = None if g is None else g.clone()
        mine.step()
        reference.step()
        for a, b in zip(ours, theirs, strict=True):
            if foreach:  # the very same kernels: bit for bit
                assert torch.equal(a, b)
            else:  # torch's per-tensor loop rounds a little differently
                torch.testing.assert_close(a, b, rtol=4 * torch.finfo(dtype).eps, atol=0.0)
    assert any(not torch.equal(a, p) for a, p in zip(ours, _params(dtype), strict=True))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="adam or sgd"):
        TorchOptimizer(_params(torch.float64), "rmsprop", lr=0.1)
    with pytest.raises(ValueError, match="positive"):
        TorchOptimizer(_params(torch.float64), "adam", lr=0.0)


def test_does_not_import_dynamo() -> None:
    """The point of the class: a report's process never pays for importing torch._dynamo."""
    code = ("import sys, torch\nfrom torch_reference.optim import TorchOptimizer\n"
            "p = torch.zeros(3, requires_grad=True); p.grad = torch.ones(3)\n"
            "TorchOptimizer([p], 'adam', 0.1).step(); TorchOptimizer([p], 'sgd', 0.1).step()\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
