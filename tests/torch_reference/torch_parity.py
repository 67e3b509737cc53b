"""Shared helpers for the parity tests: one seeded model in three implementations (scratch class,
scratch functional, torch) with shared weights, and a runner that feeds one input to a layer of
each, backpropagates one upstream gradient, and compares forward values, input gradients and
parameter gradients against torch.

Tolerances are relative to the largest magnitude of the expected array (elementwise
``|a - e| <= rtol * (|e| + max|e|)``), so values near zero are judged on the array's scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from differential.weights import load_into_class, load_into_params, load_into_torch
from scratch_model import functional as F
from scratch_model.autograd import Tensor
from scratch_model.config import TransformerConfig
from scratch_model.layers import ReversalTransformer as ClassModel
from torch_reference.model import ReversalTransformer as TorchModel

IMPLS = ("class", "functional", "torch")
SCRATCH = ("class", "functional")
# float64: both sides do the same math in a different order; differences stay near 1e-15.
RTOL64 = 1e-12
# float32: eps is 1.2e-7; sums over D=32 and the LayerNorm's division by a small std amplify the
# rounding differences of reordered sums to about 3e-7 relative. 1e-5 leaves room and still fails
# on any real bug (a missing scale or eps changes values by 1e-3 or more).
RTOL32 = 1e-5
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Small but not degenerate: head_dim 8 > seq_len 6, 4 heads, ff wider than the embedding.
SMALL = TransformerConfig(vocab_size=11, seq_len=6, embed_dim=32, num_heads=4, ff_dim=48, num_layers=1)


def rtol_for(dtype: str) -> float:
    return RTOL64 if dtype == "float64" else RTOL32


@dataclass
class Trio:
    """The same weights in the three implementations."""

    config: TransformerConfig
    arrays: dict[str, np.ndarray]
    cls: ClassModel
    params: dict[str, Tensor]
    torch: TorchModel
    dtype: str


def make_trio(config: TransformerConfig = SMALL, seed: int = 0, dtype: str = "float64") -> Trio:
    """Seeded weights in all three. LayerNorm gains and biases are drawn away from 1 and 0, so a
    swapped or ignored gamma/beta shows."""
    params, _ = F.build_simple_transformer(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng([seed, 7])
    arrays = {}
    for name, tensor in params.items():
        value = tensor.data
        if ".ln" in name:
            base = 1.0 if name.endswith("weight") else 0.0
            value = (base + 0.3 * rng.standard_normal(value.shape)).astype(dtype)
        arrays[name] = value.copy()
    load_into_params(params, arrays)
    cls = ClassModel(config, seed=seed + 1, dtype=dtype)  # different init, then overwritten
    load_into_class(cls, arrays)
    reference = TorchModel(config, dtype=TORCH_DTYPES[dtype])
    load_into_torch(reference, arrays)
    return Trio(config, arrays, cls, params, reference, dtype)


# --- running one layer in each implementation ------------------------------------------------

# The functional counterpart of each class/torch module path; `m` is the mask.
FUNCTIONAL: dict[str, Callable[[dict, TransformerConfig, Any, Any], Tensor]] = {
    "embedding": lambda p, c, x, m: F.embed(p, x),
    "pos_embedding": lambda p, c, x, m: F.add_positions(p, c, x),
    "blocks.0.attn": lambda p, c, x, m: F.attention(p, c, "blocks.0.attn", x, m, None),
    "blocks.0.ffn": lambda p, c, x, m: F.feed_forward(p, c, "blocks.0.ffn", x, None),
    "blocks.0.ln1": lambda p, c, x, m: F.layer_norm(p, c, "blocks.0.ln1", x),
    "blocks.0.ln2": lambda p, c, x, m: F.layer_norm(p, c, "blocks.0.ln2", x),
    "blocks.0": lambda p, c, x, m: F.block(p, c, "blocks.0", x, m, None),
    "head": lambda p, c, x, m: F.linear(p, "head", x),
    "": lambda p, c, x, m: F.forward(p, x, c, mask=m),
}
TAKES_MASK = ("blocks.0.attn", "blocks.0", "")
TAKES_TOKENS = ("embedding", "")


@dataclass
class Outcome:
    out: np.ndarray
    input_grad: np.ndarray | None
    grads: dict[str, np.ndarray | None]  # the layer's parameters, by full dotted name


def upstream_for(shape: tuple[int, ...], dtype: Any, seed: int = 1) -> np.ndarray:
    """The gradient fed into the layer's output: seeded by shape, so every side gets the same."""
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(dtype)


def _in_layer(name: str, path: str) -> bool:
    return path == "" or name.startswith(f"{path}.")


def run_layer(trio: Trio, impl: str, path: str, x: np.ndarray, mask: np.ndarray | None = None,
              upstream_seed: int = 1) -> Outcome:
    """Forward ``x`` through the layer at ``path`` of one implementation, then backward a seeded
    upstream gradient; return the output, the input's gradient and the layer's parameter grads."""
    args = (mask,) if path in TAKES_MASK else ()
    if impl == "torch":
        module = dict(trio.torch.named_modules())[path]
        xt = torch.as_tensor(x) if path in TAKES_TOKENS else torch.tensor(x, requires_grad=True)
        out = module(xt, *(None if m is None else torch.from_numpy(m) for m in args))
        value = out.detach().numpy().copy()
        out.backward(torch.from_numpy(upstream_for(value.shape, value.dtype, upstream_seed)))
        grads = {n: None if p.grad is None else p.grad.numpy().copy()
                 for n, p in trio.torch.named_parameters() if _in_layer(n, path)}
        return Outcome(value, None if xt.grad is None else xt.grad.numpy(), grads)

    xt = x if path in TAKES_TOKENS else Tensor(x, requires_grad=True)
    if impl == "class":
        out = dict(trio.cls.named_modules())[path](xt, *args)
        named = dict(trio.cls.named_parameters())
    else:
        out = FUNCTIONAL[path](trio.params, trio.config, xt, mask)
        named = trio.params
    out.backward(upstream_for(out.shape, out.dtype, upstream_seed))
    grads = {n: None if p.grad is None else p.grad.copy() for n, p in named.items() if _in_layer(n, path)}
    input_grad = None if path in TAKES_TOKENS else xt.grad
    return Outcome(out.data.copy(), input_grad, grads)


def run_all(trio: Trio, path: str, x: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Outcome]:
    return {impl: run_layer(trio, impl, path, x, mask) for impl in IMPLS}


# --- comparing -------------------------------------------------------------------------------

def assert_close(actual: np.ndarray | None, expected: np.ndarray | None, what: str, rtol: float,
                 floor: float = 0.0) -> None:
    """Same shape, same dtype, values within ``rtol`` of the expected array's scale (or of
    ``floor``, when that is larger)."""
    assert expected is not None, f"{what}: the reference has no value"
    assert actual is not None, f"{what}: missing (no gradient reached it?)"
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, floor)
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(error <= rtol * (np.abs(expected) + scale))  # NaN counts as bad
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} values differ; max abs error "
                             f"{np.nanmax(error) if not np.isnan(error).all() else np.nan:.3g} "
                             f"(scale {scale:.3g}, rtol {rtol:g}); first at {where}: "
                             f"{actual[where]!r} vs {expected[where]!r}")


def assert_matches_torch(outcomes: dict[str, Outcome], label: str, rtol: float) -> None:
    """Each scratch side's forward, input gradient and parameter gradients equal torch's.

    Gradients are judged on the scale of the largest gradient of the layer: some are zero in exact
    arithmetic (the key bias: softmax ignores a shift shared by all keys) and hold only rounding."""
    ref = outcomes["torch"]
    floor = max([float(np.max(np.abs(g))) for g in ref.grads.values() if g is not None and g.size]
                + ([float(np.max(np.abs(ref.input_grad)))] if ref.input_grad is not None else []),
                default=0.0)
    for impl in SCRATCH:
        got = outcomes[impl]
        assert_close(got.out, ref.out, f"{impl} {label}: forward", rtol)
        if ref.input_grad is not None:
            assert_close(got.input_grad, ref.input_grad, f"{impl} {label}: backward of input", rtol,
                         floor)
        assert got.grads.keys() == ref.grads.keys(), f"{impl} {label}: parameters differ"
        for name, grad in ref.grads.items():
            assert_close(got.grads[name], grad, f"{impl} {label}: backward of {name}", rtol, floor)


# --- looking inside a layer ------------------------------------------------------------------

class Capture:
    """Records the first input and the output of chosen sub-paths, in any implementation."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.inputs: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}

    @staticmethod
    def _array(value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return value.detach().numpy().copy()
        return np.array(value.data if isinstance(value, Tensor) else value, copy=True)

    # the functional model's recorder protocol
    def before(self, path: str, inputs: tuple) -> None:
        if path in self.paths:
            self.inputs[path] = self._array(inputs[0])

    def after(self, path: str, inputs: tuple, output: Any) -> None:
        if path in self.paths:
            self.outputs[path] = self._array(output)

    def attach(self, model: Any) -> list[Any]:
        """Hooks on a class or torch model; returns the handles to remove."""
        handles = []
        modules = dict(model.named_modules())
        for path in self.paths:
            handles.append(modules[path].register_forward_pre_hook(
                lambda m, inputs, path=path: self.before(path, inputs)))
            handles.append(modules[path].register_forward_hook(
                lambda m, inputs, out, path=path: self.after(path, inputs, out)))
        return handles


def capture_attention(trio: Trio, impl: str, x: np.ndarray, mask: np.ndarray | None,
                      paths: tuple[str, ...]) -> Capture:
    """Run ``blocks.0.attn`` of one implementation on ``x`` and record ``paths`` inside it."""
    capture = Capture(paths)
    if impl == "functional":
        F.attention(trio.params, trio.config, "blocks.0.attn", Tensor(x), mask, capture)
        return capture
    model = trio.cls if impl == "class" else trio.torch
    handles = capture.attach(model)
    try:
        attn = dict(model.named_modules())["blocks.0.attn"]
        if impl == "class":
            attn(Tensor(x), mask)
        else:
            with torch.no_grad():
                attn(torch.from_numpy(x), None if mask is None else torch.from_numpy(mask))
    finally:
        for handle in handles:
            handle.remove()
    return capture


def hidden(config: TransformerConfig, seed: int, batch: int = 3, seq: int | None = None,
           scale: float = 1.0, dtype: str = "float64") -> np.ndarray:
    """A seeded activation batch (B, T, D)."""
    shape = (batch, seq or config.seq_len, config.embed_dim)
    return (scale * np.random.default_rng([seed, 3]).standard_normal(shape)).astype(dtype)


def tokens(config: TransformerConfig, seed: int, batch: int = 3, seq: int | None = None) -> np.ndarray:
    """Seeded tokens (B, T) over the whole vocabulary, 0 included."""
    rng = np.random.default_rng([seed, 5])
    return rng.integers(0, config.vocab_size, size=(batch, seq or config.seq_len), dtype=np.int64)
