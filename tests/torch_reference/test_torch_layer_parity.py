"""Layer by layer, the debugging checklist: each group runs the scratch class layer, the scratch
functional function and the torch layer on one seeded input with shared weights, and compares the
forward value, the input gradient and every parameter gradient of the layer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch_parity import (
    IMPLS,
    RTOL64,
    SCRATCH,
    SMALL,
    assert_close,
    assert_matches_torch,
    capture_attention,
    hidden,
    make_trio,
    rtol_for,
    run_all,
    run_layer,
    upstream_for,
)

from scratch_model import functional as F
from scratch_model.autograd import Tensor
from scratch_model.train import cross_entropy as scratch_cross_entropy
from torch_reference.model import sinusoidal_table
from torch_reference.train import cross_entropy as torch_cross_entropy

DTYPES = ("float64", "float32")
T, D, H = SMALL.seq_len, SMALL.embed_dim, SMALL.num_heads


def causal(t: int = T) -> np.ndarray:
    return np.tril(np.ones((t, t), dtype=bool))  # (T, T), True where a query may attend


def random_mask(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random booleans with the diagonal kept, so no query row is fully blocked."""
    mask = np.random.default_rng(seed).random(shape) < 0.5
    return mask | np.eye(shape[-1], dtype=bool)


MASKS = {
    "none": None,
    "causal (T,T)": causal(),
    "per batch (B,1,T,T)": random_mask((3, 1, T, T), 1),
    "per head (B,h,T,T)": random_mask((3, H, T, T), 2),
}


# --- 1. embedding lookup and positions ---------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_lookup_and_repeated_token_gradient(dtype):
    trio = make_trio(dtype=dtype)
    toks = np.array([[1, 1, 1, 2, 3, 1], [2, 2, 5, 0, 1, 1], [7, 7, 7, 7, 7, 7]])  # many repeats
    outcomes = run_all(trio, "embedding", toks)
    assert_matches_torch(outcomes, "embedding", rtol_for(dtype))

    table = trio.arrays["embedding.weight"]
    scattered = np.zeros_like(table)  # repeated tokens add their upstream rows
    np.add.at(scattered, toks.reshape(-1), upstream_for((3, T, D), dtype).reshape(-1, D))
    for impl in IMPLS:
        assert_close(outcomes[impl].out, table[toks], f"{impl} embedding: rows picked", 0.0)
        assert_close(outcomes[impl].grads["embedding.weight"], scattered,
                     f"{impl} embedding: scatter-added gradient", rtol_for(dtype))


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("seq", [1, 4, T])
def test_positional_embedding_added_once_and_gradient_reaches_table(positional, seq):
    trio = make_trio(replace(SMALL, positional=positional))
    x = hidden(trio.config, seed=seq, seq=seq)
    outcomes = run_all(trio, "pos_embedding", x)
    assert_matches_torch(outcomes, "pos_embedding", RTOL64)

    table = (trio.arrays["pos_embedding.weight"] if positional == "learned"
             else sinusoidal_table(T, D).numpy())
    upstream = upstream_for((3, seq, D), x.dtype)
    for impl in IMPLS:
        got = outcomes[impl]
        assert_close(got.out - x, np.broadcast_to(table[:seq], x.shape), f"{impl}: positions added", RTOL64)
        assert_close(got.input_grad, upstream, f"{impl}: gradient passes to the input", 0.0)
        if positional == "learned":
            expected = np.zeros_like(table)
            expected[:seq] = upstream.sum(axis=0)  # rows past the sequence get nothing
            assert_close(got.grads["pos_embedding.weight"], expected, f"{impl}: table gradient", RTOL64)
        else:
            assert got.grads == {}, f"{impl}: the sinusoidal table must not be a parameter"


# --- 2. attention --------------------------------------------------------------------------------

PROJECTIONS = tuple(f"blocks.0.attn.{p}" for p in ("q_proj", "k_proj", "v_proj"))
OUT_PROJ = "blocks.0.attn.out_proj"


def split(a: np.ndarray, heads: int) -> np.ndarray:
    b, t, d = a.shape
    return a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)  # (B, h, T, hd)


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_weights(q: np.ndarray, k: np.ndarray, heads: int, scale: float,
                      mask: np.ndarray | None) -> np.ndarray:
    scores = split(q, heads) @ split(k, heads).swapaxes(-1, -2) * scale  # (B, h, T, T)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return softmax(scores)


@pytest.mark.parametrize("impl", SCRATCH)
def test_qkv_projections(impl):
    trio = make_trio()
    x = hidden(trio.config, seed=11)
    ref = capture_attention(trio, "torch", x, None, PROJECTIONS)
    got = capture_attention(trio, impl, x, None, PROJECTIONS)
    for path in PROJECTIONS:
        assert_close(got.inputs[path], x, f"{impl} {path}: input", 0.0)
        assert_close(got.outputs[path], ref.outputs[path], f"{impl} {path}: output", RTOL64)
        name = path.rsplit(".", 1)[1]
        w, b = trio.arrays[f"{path}.weight"], trio.arrays[f"{path}.bias"]
        assert_close(ref.outputs[path], x @ w.T + b, f"torch {name}: x @ W.T + b", RTOL64)


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("impl", IMPLS)
def test_attention_scores_are_scaled_by_inverse_sqrt_head_dim(impl, heads):
    """The out_proj input (softmax(q k^T s) v, heads merged) must follow s = 1/sqrt(head_dim)
    computed from the side's own q, k, v, and equal torch's."""
    trio = make_trio(replace(SMALL, num_heads=heads))
    hd = D // heads
    x = hidden(trio.config, seed=12)
    got = capture_attention(trio, impl, x, None, (*PROJECTIONS, OUT_PROJ))
    q, k, v = (got.outputs[p] for p in PROJECTIONS)

    def context(scale: float) -> np.ndarray:
        weights = attention_weights(q, k, heads, scale, None)
        return (weights @ split(v, heads)).transpose(0, 2, 1, 3).reshape(x.shape)  # (B, T, D)

    assert_close(got.inputs[OUT_PROJ], context(1 / np.sqrt(hd)), f"{impl}: context", RTOL64)
    unscaled = context(1.0)  # the test must be able to tell the two apart
    assert np.abs(unscaled - context(1 / np.sqrt(hd))).max() > 1e-3
    ref = capture_attention(trio, "torch", x, None, (OUT_PROJ,))
    assert_close(got.inputs[OUT_PROJ], ref.inputs[OUT_PROJ], f"{impl}: context vs torch", RTOL64)


@pytest.mark.parametrize("mask_name", ["none", "causal (T,T)"])
@pytest.mark.parametrize("impl", IMPLS)
def test_softmax_over_keys_and_weighted_sum(impl, mask_name):
    """Recover the attention weights from the context: context_h = W_h v_h, and v_h (T, hd) has
    full row rank since T <= hd, so W_h = context_h pinv(v_h). Rows must be softmax over keys."""
    mask = MASKS[mask_name]
    trio = make_trio()
    x = hidden(trio.config, seed=13, scale=2.0)  # sharper softmax
    got = capture_attention(trio, impl, x, mask, (*PROJECTIONS, OUT_PROJ))
    q, k, v = (got.outputs[p] for p in PROJECTIONS)
    v_heads, context = split(v, H), split(got.inputs[OUT_PROJ], H)  # (B, h, T, hd)
    recovered = context @ np.linalg.pinv(v_heads)  # (B, h, T, T)

    expected = attention_weights(q, k, H, 1 / np.sqrt(D // H), mask)
    assert_close(recovered, expected, f"{impl}: attention weights", 1e-9)
    assert_close(recovered.sum(axis=-1), np.ones(recovered.shape[:-1]), f"{impl}: rows sum to 1", 1e-9)
    if mask is not None:
        assert np.abs(recovered[..., ~mask]).max() < 1e-9, f"{impl}: blocked keys got weight"


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_multi_head_split_and_concat(heads):
    """Against a loop over heads on column slices: head i uses columns i*hd:(i+1)*hd of q, k, v
    and writes the same columns of the context. A reshape in place of the transpose fails this."""
    trio = make_trio(replace(SMALL, num_heads=heads))
    hd, a = D // heads, trio.arrays
    x = hidden(trio.config, seed=14)

    def proj(name: str, z: np.ndarray) -> np.ndarray:
        return z @ a[f"blocks.0.attn.{name}.weight"].T + a[f"blocks.0.attn.{name}.bias"]

    q, k, v = proj("q_proj", x), proj("k_proj", x), proj("v_proj", x)
    context = np.empty_like(x)
    for i in range(heads):
        cols = slice(i * hd, (i + 1) * hd)
        weights = softmax(q[..., cols] @ k[..., cols].swapaxes(-1, -2) / np.sqrt(hd))  # (B, T, T)
        context[..., cols] = weights @ v[..., cols]
    expected = proj("out_proj", context)

    outcomes = run_all(trio, "blocks.0.attn", x)
    for impl in IMPLS:
        assert_close(outcomes[impl].out, expected, f"{impl}: {heads} heads vs per-head loop", RTOL64)
    assert_matches_torch(outcomes, f"attention, {heads} heads", RTOL64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_attention_gradients(mask_name, dtype):
    trio = make_trio(dtype=dtype)
    x = hidden(trio.config, seed=15, dtype=dtype)
    outcomes = run_all(trio, "blocks.0.attn", x, MASKS[mask_name])
    assert_matches_torch(outcomes, f"attention, mask {mask_name}", rtol_for(dtype))


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_true_means_may_attend(impl):
    """With a causal mask, position 0 sees only itself: changing later steps leaves it alone."""
    trio = make_trio()
    x = hidden(trio.config, seed=16)
    changed = x.copy()
    changed[:, 1:] += 1.0
    before = run_layer(trio, impl, "blocks.0.attn", x, causal()).out
    after = run_layer(trio, impl, "blocks.0.attn", changed, causal()).out
    assert_close(after[:, 0], before[:, 0], f"{impl}: first step under a causal mask", RTOL64)
    assert np.abs(after[:, -1] - before[:, -1]).max() > 1e-3, f"{impl}: last step ignored the change"


# --- 3. feed-forward -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_feed_forward_linear_relu_linear(scale, dtype):
    trio = make_trio(dtype=dtype)
    x = hidden(trio.config, seed=17, scale=scale, dtype=dtype)
    hidden_pre = x @ trio.arrays["blocks.0.ffn.fc1.weight"].T + trio.arrays["blocks.0.ffn.fc1.bias"]
    assert (hidden_pre > 0).mean() > 0.2 and (hidden_pre < 0).mean() > 0.2  # ReLU both ways
    outcomes = run_all(trio, "blocks.0.ffn", x)
    assert_matches_torch(outcomes, "feed-forward", rtol_for(dtype))
    expected = np.maximum(hidden_pre, 0) @ trio.arrays["blocks.0.ffn.fc2.weight"].T \
        + trio.arrays["blocks.0.ffn.fc2.bias"]
    assert_close(outcomes["torch"].out, expected, "torch feed-forward vs numpy", rtol_for(dtype))


# --- 4. residual connections ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_name", ["none", "causal (T,T)"])
def test_block_residuals_keep_the_graph(mask_name, dtype):
    """The block input's gradient (the skip paths plus both branches) equals torch's, and every
    parameter of both branches receives torch's gradient."""
    trio = make_trio(dtype=dtype)
    x = hidden(trio.config, seed=18, dtype=dtype)
    outcomes = run_all(trio, "blocks.0", x, MASKS[mask_name])
    assert_matches_torch(outcomes, "block", rtol_for(dtype))
    for impl in SCRATCH:
        got = outcomes[impl]
        assert got.input_grad is not None, f"{impl}: no gradient reached the block input"
        for branch in ("attn.q_proj", "attn.v_proj", "attn.out_proj", "ffn.fc1", "ffn.fc2", "ln1", "ln2"):
            grad = got.grads[f"blocks.0.{branch}.weight"]
            assert grad is not None and np.abs(grad).max() > 0, f"{impl}: {branch} got no gradient"


# --- 5. LayerNorm --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("scale", [1.0, 0.05])
@pytest.mark.parametrize("which", ["ln1", "ln2"])
def test_layer_norm_forward_backward(which, scale, eps, dtype):
    """Small inputs (scale 0.05) make eps matter; gamma and beta are not 1 and 0."""
    trio = make_trio(replace(SMALL, ln_eps=eps), dtype=dtype)
    x = hidden(trio.config, seed=19, scale=scale, dtype=dtype) + 0.5  # a mean to remove
    outcomes = run_all(trio, f"blocks.0.{which}", x)
    assert_matches_torch(outcomes, f"{which} eps={eps}", rtol_for(dtype))
    for impl in SCRATCH:
        for param in ("weight", "bias"):
            grad = outcomes[impl].grads[f"blocks.0.{which}.{param}"]
            assert np.abs(grad).max() > 0, f"{impl}: LayerNorm {param} got no gradient"


# --- 6. output projection, reshape and loss --------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq", [1, T])
def test_output_projection(seq, dtype):
    trio = make_trio(dtype=dtype)
    outcomes = run_all(trio, "head", hidden(trio.config, seed=20, seq=seq, dtype=dtype))
    assert outcomes["torch"].out.shape == (3, seq, SMALL.vocab_size)
    assert_matches_torch(outcomes, "head", rtol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_reshape_into_token_loss(dtype):
    """head (B,T,D) -> (B,T,V) -> (B*T,V) -> mean cross-entropy: loss and gradients back to the
    head input and its parameters, the path the training loop takes."""
    trio = make_trio(dtype=dtype)
    x = hidden(trio.config, seed=21, dtype=dtype)
    targets = np.random.default_rng(4).integers(0, SMALL.vocab_size, size=(3, T))
    rtol = rtol_for(dtype)

    xt = torch.tensor(x, requires_grad=True)
    loss_t = torch_cross_entropy(trio.torch.head(xt), torch.from_numpy(targets))
    loss_t.backward()
    grad_w = trio.torch.head.weight.grad.numpy()
    for impl in SCRATCH:
        xs = Tensor(x, requires_grad=True)
        logits = trio.cls.head(xs) if impl == "class" else F.linear(trio.params, "head", xs)
        loss = scratch_cross_entropy(logits, targets)
        loss.backward()
        weight = trio.cls.head.weight if impl == "class" else trio.params["head.weight"]
        assert_close(loss.data, loss_t.detach().numpy(), f"{impl}: loss", rtol)
        assert_close(xs.grad, xt.grad.numpy(), f"{impl}: backward of head input", rtol)
        assert_close(weight.grad, grad_w, f"{impl}: backward of head.weight", rtol)
