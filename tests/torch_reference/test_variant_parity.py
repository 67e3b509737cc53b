"""Every architecture variant (`scratch_model.config.VARIANTS`): both scratch models against the
torch reference with shared weights, at shapes other than the defaults (a sequence length that
differs from the head width, so a transposition cannot hide behind a square matrix).

Checked per variant: the parameter names (the weight contract: a tied head has no head.weight,
no biases means no Linear bias, ...), the logits, the loss and every parameter gradient in float64
(near machine precision) and float32; each block's output and input gradient alone; that a
causal model's outputs ignore future tokens; and one optimizer step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch_parity import assert_close, tokens, upstream_for

from differential.weights import load_into_class, load_into_params, load_into_torch
from scratch_model import functional as F
from scratch_model.autograd import Tensor
from scratch_model.config import VARIANTS, TransformerConfig, variant
from scratch_model.data import reverse_targets
from scratch_model.layers import ReversalTransformer as ClassModel
from scratch_model.optim import Adam
from scratch_model.train import cross_entropy
from torch_reference.model import ReversalTransformer as TorchModel
from torch_reference.train import cross_entropy as torch_cross_entropy

# head_dim 12, seq_len 7, vocab 13, ff 40: no two of the sizes a transpose could confuse are equal
SHAPES = {
    "wide heads": dict(vocab_size=13, seq_len=7, embed_dim=24, num_heads=2, ff_dim=40, num_layers=2),
    "long sequence": dict(vocab_size=6, seq_len=11, embed_dim=12, num_heads=3, ff_dim=20, num_layers=1),
}
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
RTOL = {"float64": 1e-12, "float32": 2e-5}
LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "head")


def build(config: TransformerConfig, dtype: str, seed: int = 0):
    """The three models with one set of weights; LayerNorm gains and biases are moved off 1 and 0
    so that a gain or a bias that is ignored shows."""
    params, _ = F.build_simple_transformer(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng([seed, 11])
    arrays = {}
    for name, tensor in params.items():
        value = tensor.data
        if name.split(".")[-2].startswith("ln"):
            base = 1.0 if name.endswith("weight") else 0.0
            value = (base + 0.3 * rng.standard_normal(value.shape)).astype(dtype)
        arrays[name] = value.copy()
    load_into_params(params, arrays)
    cls = ClassModel(config, seed=seed + 1, dtype=dtype)
    load_into_class(cls, arrays)
    reference = TorchModel(config, dtype=TORCH_DTYPES[dtype])
    load_into_torch(reference, arrays)
    return params, cls, reference


def scratch_logits(impl: str, params, cls, config, toks):
    return cls(toks) if impl == "class" else F.forward(params, toks, config)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_names_are_the_contract(name: str) -> None:
    config = variant(name, num_layers=2)
    params, cls, reference = build(config, "float64")
    names = list(params)
    assert list(dict(cls.named_parameters())) == names
    assert [n for n, _ in reference.named_parameters()] == names
    assert ("head.weight" in names) == (not config.tie_head)
    assert ("ln_f.weight" in names and "ln_f.bias" in names) == config.final_norm
    assert ("pos_embedding.weight" in names) == (config.positional == "learned")
    linear_biases = [n for n in names if n.endswith(".bias") and n.split(".")[-2] in LINEARS]
    assert len(linear_biases) == (6 * config.num_layers + 1 if config.bias else 0), linear_biases
    if config.tie_head:  # one parameter, two uses, in every implementation
        assert cls.head.weight is cls.embedding.weight
        assert reference.head.weight is reference.embedding.weight


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_loss_and_every_gradient_match_torch(name: str, shape: str, dtype: str) -> None:
    config = variant(name, **SHAPES[shape])
    params, cls, reference = build(config, dtype)
    toks = tokens(config, seed=4, batch=5, seq=config.seq_len - 1)  # shorter than the table
    targets = reverse_targets(toks)
    logits_t = reference(torch.from_numpy(toks))
    loss_t = torch_cross_entropy(logits_t, torch.from_numpy(targets))
    loss_t.backward()
    ref = {n: p.grad.numpy() for n, p in reference.named_parameters()}
    scale = max(float(np.abs(g).max()) for g in ref.values())
    rtol = RTOL[dtype]
    for impl in ("class", "functional"):
        logits = scratch_logits(impl, params, cls, config, toks)
        assert_close(logits.data, logits_t.detach().numpy(), f"{name} {impl}: logits", rtol)
        loss = cross_entropy(logits, targets)
        loss.backward()
        assert_close(loss.data, loss_t.detach().numpy(), f"{name} {impl}: loss", rtol)
        named = dict(cls.named_parameters()) if impl == "class" else params
        for pname, grad in ref.items():
            assert_close(named[pname].grad, grad, f"{name} {impl} {dtype}: gradient of {pname}", rtol, floor=scale)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_block_alone_matches_torch(name: str) -> None:
    """A block on a seeded activation, a seeded upstream gradient: output, input gradient and the
    block's parameter gradients (float64)."""
    config = variant(name, **SHAPES["wide heads"])
    params, cls, reference = build(config, "float64")
    x = np.random.default_rng(9).standard_normal((3, 5, config.embed_dim))
    for i in range(config.num_layers):
        path = f"blocks.{i}"
        xt = torch.tensor(x, requires_grad=True)
        out_t = reference.get_submodule(path)(xt)
        upstream = upstream_for(tuple(out_t.shape), np.float64)
        out_t.backward(torch.from_numpy(upstream))
        for impl in ("class", "functional"):
            xs = Tensor(x, requires_grad=True)
            out = cls.get(path)(xs) if impl == "class" else F.block(params, config, path, xs)
            out.backward(upstream)
            assert_close(out.data, out_t.detach().numpy(), f"{name} {impl} {path}: output", 1e-12)
            assert_close(xs.grad, xt.grad.numpy(), f"{name} {impl} {path}: input gradient", 1e-12)
            named = dict(cls.named_parameters()) if impl == "class" else params
            for pname, p in reference.named_parameters():
                if pname.startswith(path + "."):
                    assert_close(named[pname].grad, p.grad.numpy(), f"{name} {impl}: {pname}", 1e-12,
                                 floor=float(np.abs(upstream).max()))
        for p in list(params.values()) + cls.parameters():
            p.grad = None


@pytest.mark.parametrize("name", [n for n in VARIANTS if variant(n).mask == "causal"])
def test_a_causal_model_ignores_future_tokens(name: str) -> None:
    """Changing the last token changes only the last position's logits, in all three."""
    config = variant(name, **SHAPES["wide heads"])
    params, cls, reference = build(config, "float64")
    toks = tokens(config, seed=2, batch=4)
    changed = toks.copy()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    runs = {
        "class": lambda t: cls(t).data,
        "functional": lambda t: F.forward(params, t, config).data,
        "torch": lambda t: reference(torch.from_numpy(t)).detach().numpy(),
    }
    for impl, run in runs.items():
        before, after = run(toks), run(changed)
        np.testing.assert_array_equal(before[:, :-1], after[:, :-1], err_msg=f"{impl}: the past saw the future")
        assert not np.allclose(before[:, -1], after[:, -1]), f"{impl}: the last token had no effect"


@pytest.mark.parametrize("name", ["seed", "no_positions"])
def test_without_a_causal_mask_every_position_sees_every_token(name: str) -> None:
    """The opposite check, so the causal test above cannot pass for a model that sees nothing."""
    config = variant(name, **SHAPES["wide heads"])
    _, cls, _ = build(config, "float64")
    toks = tokens(config, seed=2, batch=4)
    changed = toks.copy()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    assert not np.allclose(cls(toks).data[:, 0], cls(changed).data[:, 0])


@pytest.mark.parametrize("impl", ["class", "functional"])
@pytest.mark.parametrize("name", ["gpt", "gpt_no_bias_sinusoidal", "tied_head"])
def test_two_adam_steps_match_torch_optim(name: str, impl: str) -> None:
    """The tied table gets one update from the sum of both uses' gradients, in both."""
    config = variant(name, **SHAPES["wide heads"])
    params, cls, reference = build(config, "float64")
    named = dict(cls.named_parameters()) if impl == "class" else params
    opt, opt_t = Adam(list(named.values()), lr=0.01), torch.optim.Adam(reference.parameters(), lr=0.01)
    for step in range(2):
        toks = tokens(config, seed=20 + step, batch=4)
        opt.zero_grad()
        cross_entropy(scratch_logits(impl, params, cls, config, toks), reverse_targets(toks)).backward()
        opt.step()
        opt_t.zero_grad()
        torch_cross_entropy(reference(torch.from_numpy(toks)), torch.from_numpy(reverse_targets(toks))).backward()
        opt_t.step()
    for pname, p in reference.named_parameters():
        if pname.endswith("k_proj.bias"):  # rounding noise only (see test_torch_model_parity.NOISE_ONLY)
            continue
        assert_close(named[pname].data, p.detach().numpy(), f"{name} {impl}: {pname} after 2 steps", 1e-9)


def test_the_gpt_preset_is_what_the_issue_asks_for() -> None:
    from scratch_model.config import arch

    gpt = arch("gpt")
    assert (gpt.norm, gpt.final_norm, gpt.activation, gpt.mask, gpt.tie_head, gpt.positional) == \
        ("pre", True, "gelu_tanh", "causal", True, "learned")
    assert arch("seed") == TransformerConfig()
    assert replace(gpt, num_layers=3).num_layers == 3
