"""The reference mirrors the scratch class model: names, order, module paths, forward signatures,
the sinusoidal table; and it stays independent of the code it checks."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_parity import SMALL, make_trio, tokens

import torch_reference.model
from scratch_model import init
from scratch_model.config import TransformerConfig
from scratch_model.layers import ReversalTransformer as ClassModel
from torch_reference.model import ReversalTransformer as TorchModel
from torch_reference.model import sinusoidal_table

CONFIGS = {
    "small": SMALL,
    "sinusoidal": replace(SMALL, positional="sinusoidal"),
    "three layers": replace(SMALL, num_layers=3),
    "default": TransformerConfig(),
}


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_parameter_names_order_and_shapes_match_the_class_model(config_name):
    config = CONFIGS[config_name]
    scratch = [(n, p.shape) for n, p in ClassModel(config).named_parameters()]
    reference = [(n, tuple(p.shape)) for n, p in TorchModel(config).named_parameters()]
    assert reference == scratch


@pytest.mark.parametrize("config_name", ["small", "three layers"])
def test_module_paths_run_in_the_same_order(config_name):
    """Hooks see the same module paths, finishing in the same order, on both sides."""
    config = CONFIGS[config_name]
    toks = tokens(config, seed=0)
    orders = []
    for model in (ClassModel(config), TorchModel(config)):
        seen: list[str] = []
        handles = [module.register_forward_hook(lambda m, i, o, path=path: seen.append(path))
                   for path, module in model.named_modules()]
        model(toks if isinstance(model, ClassModel) else torch.from_numpy(toks))
        for handle in handles:
            handle.remove()
        orders.append(seen)
    assert orders[0] == orders[1]
    assert "blocks.0.attn.q_proj" in orders[0] and orders[0][-1] == ""


@pytest.mark.parametrize("path", ["", "blocks.0", "blocks.0.attn", "blocks.0.ffn", "blocks.0.ln1",
                                  "embedding", "pos_embedding", "head"])
def test_forward_signatures_match(path):
    def names(module: object) -> list[str]:
        return list(inspect.signature(module.forward).parameters)

    cls, reference = dict(ClassModel(SMALL).named_modules()), dict(TorchModel(SMALL).named_modules())
    assert len(names(reference[path])) == len(names(cls[path]))
    assert names(reference[path])[1:] == names(cls[path])[1:]  # nn.Embedding names its input `input`


@pytest.mark.parametrize(("seq_len", "dim"), [(8, 32), (5, 9), (1, 2), (16, 6)])
def test_sinusoidal_table_matches_the_scratch_formula(seq_len, dim):
    np.testing.assert_allclose(sinusoidal_table(seq_len, dim).numpy(),
                               init.sinusoidal_table(seq_len, dim, np.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinusoidal_table_is_a_buffer_not_a_parameter(dtype):
    model = TorchModel(CONFIGS["sinusoidal"], dtype=dtype)
    assert "pos_embedding.table" not in model.state_dict()
    assert not any("pos_embedding" in n for n, _ in model.named_parameters())
    assert model.pos_embedding.table.dtype == dtype
    expected = init.sinusoidal_table(SMALL.seq_len, SMALL.embed_dim, np.float64).astype(str(dtype)[6:])
    np.testing.assert_allclose(model.pos_embedding.table.numpy(), expected, rtol=0, atol=1e-15)


def test_to_float32_and_back_keeps_forward_working():
    trio = make_trio()
    toks = torch.from_numpy(tokens(SMALL, seed=1))
    expected = trio.torch(toks).detach()
    trio.torch.to(torch.float32)
    got = trio.torch(toks)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_gpu_like_on_the_cpu():
    trio = make_trio()
    toks = tokens(SMALL, seed=2)
    mask = np.tril(np.ones((SMALL.seq_len,) * 2, dtype=bool))
    expected = trio.torch(torch.from_numpy(toks), torch.from_numpy(mask)).detach()
    trio.torch.to("cuda")
    got = trio.torch(torch.from_numpy(toks).cuda(), mask)  # a numpy mask follows the scores' device
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("bad", "message"), [
    (np.ones((2, 3)), "must be integers"),
    (np.array([1, 2, 3]), "rank 2"),
    (np.ones((2, SMALL.seq_len + 1), dtype=np.int64), "sequence length"),
    (np.full((2, 3), SMALL.vocab_size), "outside the vocabulary"),
    (np.full((2, 3), -1), "outside the vocabulary"),
])
def test_bad_tokens_are_refused_like_the_scratch_model(bad, message):
    with pytest.raises(ValueError, match=message):
        ClassModel(SMALL)(bad)
    with pytest.raises(ValueError, match=message):
        TorchModel(SMALL)(torch.as_tensor(bad))


def test_the_oracle_does_not_import_the_code_it_checks():
    """Only scratch_model's plain config and data may load with torch_reference, and the thread
    pinning both sides share (no model code: it sets thread counts)."""
    code = ("import sys, torch_reference.model, torch_reference.train; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('scratch_model'))))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert set(out.stdout.split()) <= {"scratch_model", "scratch_model.config", "scratch_model.data",
                                       "scratch_model.threads"}


def test_attention_is_written_out():
    """No fused attention and no dropout: every step has a visible counterpart on the scratch side."""
    tree = ast.parse(inspect.getsource(torch_reference.model))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not used & {"scaled_dot_product_attention", "MultiheadAttention", "Dropout", "dropout"}
