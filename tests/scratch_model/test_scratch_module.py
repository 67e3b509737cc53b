"""The Module contract: torch-style dotted paths, forward hooks, zero_grad, train/eval, lookup by
path, and the functional model's recorder seeing the same module boundaries as hooks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from scratch_model import functional
from scratch_model.autograd import Tensor
from scratch_model.config import TransformerConfig
from scratch_model.layers import Linear, ReversalTransformer
from scratch_model.module import Module, Parameter
from scratch_model.train import cross_entropy

SMALL = dict(vocab_size=7, seq_len=5, embed_dim=8, num_heads=2, ff_dim=12)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def contracted_module_paths(num_layers: int) -> list[str]:
    paths = ["", "embedding", "pos_embedding", "blocks"]
    for i in range(num_layers):
        b = f"blocks.{i}"
        paths += [b, f"{b}.attn", *(f"{b}.attn.{p}" for p in PROJECTIONS), f"{b}.ln1",
                  f"{b}.ffn", f"{b}.ffn.fc1", f"{b}.ffn.fc2", f"{b}.ln2"]
    return paths + ["head"]


def contracted_parameter_names(num_layers: int, learned: bool) -> list[str]:
    names = ["embedding.weight"] + (["pos_embedding.weight"] if learned else [])
    for i in range(num_layers):
        b = f"blocks.{i}"
        for module in (*(f"attn.{p}" for p in PROJECTIONS), "ln1", "ffn.fc1", "ffn.fc2", "ln2"):
            names += [f"{b}.{module}.weight", f"{b}.{module}.bias"]
    return names + ["head.weight", "head.bias"]


def tokens_for(config: TransformerConfig) -> np.ndarray:
    return np.random.default_rng(0).integers(1, config.vocab_size, size=(2, config.seq_len))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_named_modules_follow_the_contract(num_layers: int) -> None:
    model = ReversalTransformer(TransformerConfig(**SMALL, num_layers=num_layers))
    assert [path for path, _ in model.named_modules()] == contracted_module_paths(num_layers)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_named_parameters_follow_the_contract(num_layers: int, positional: str) -> None:
    config = TransformerConfig(**SMALL, num_layers=num_layers, positional=positional)
    model = ReversalTransformer(config)
    d, f, v = config.embed_dim, config.ff_dim, config.vocab_size
    shapes = dict(model.named_parameters())
    assert list(shapes) == contracted_parameter_names(num_layers, positional == "learned")
    assert shapes["embedding.weight"].shape == (v, d)
    assert shapes["blocks.0.ffn.fc1.weight"].shape == (f, d), "Linear weight must be (out, in)"
    assert shapes["blocks.0.ffn.fc2.weight"].shape == (d, f)
    assert shapes["head.weight"].shape == (v, d) and shapes["head.bias"].shape == (v,)
    assert all(isinstance(p, Parameter) and p.requires_grad for p in shapes.values())
    assert model.parameters() == list(shapes.values())


def test_hooks_see_the_module_its_inputs_and_its_output() -> None:
    config = TransformerConfig(**SMALL)
    model = ReversalTransformer(config)
    mask = np.tril(np.ones((config.seq_len, config.seq_len), dtype=bool))
    seen: dict[str, Any] = {}
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.update(block=(m, args, out)))
    model.head.register_forward_pre_hook(lambda m, args: seen.update(head_pre=(m, args)))
    model.head.register_forward_hook(lambda m, args, out: seen.update(head_post=(m, args, out)))
    logits = model(tokens_for(config), mask)

    block_module, block_args, block_out = seen["block"]
    assert block_module is model.blocks[0]
    assert len(block_args) == 2 and block_args[1] is mask
    head_module, head_args = seen["head_pre"]
    assert head_module is model.head and len(head_args) == 1 and head_args[0] is block_out
    assert seen["head_post"][1] is head_args and seen["head_post"][2] is logits


def test_hooks_can_replace_inputs_and_outputs_and_be_removed() -> None:
    config = TransformerConfig(**SMALL)
    model = ReversalTransformer(config)
    tokens = tokens_for(config)
    original = model(tokens).data
    zeros = Tensor(np.zeros((2, config.seq_len, config.embed_dim)))

    handle = model.head.register_forward_pre_hook(lambda m, args: (zeros,))
    np.testing.assert_array_equal(model(tokens).data, np.broadcast_to(model.head.bias.data, original.shape))
    handle.remove()
    handle.remove()  # a second remove is harmless
    np.testing.assert_array_equal(model(tokens).data, original)

    replacement = Tensor(np.ones_like(original))
    handle = model.register_forward_hook(lambda m, args, out: replacement)
    assert model(tokens) is replacement
    handle.remove()

    calls: list[str] = []
    handles = [model.embedding.register_forward_pre_hook(lambda m, args: calls.append("pre")),
               model.embedding.register_forward_hook(lambda m, args, out: calls.append("post"))]
    model(tokens)
    for h in handles:
        h.remove()
    model(tokens)
    assert calls == ["pre", "post"]
    np.testing.assert_array_equal(model(tokens).data, original)


def test_zero_grad_clears_every_gradient() -> None:
    config = TransformerConfig(**SMALL)
    model = ReversalTransformer(config)
    tokens = tokens_for(config)
    cross_entropy(model(tokens), tokens[:, ::-1]).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_train_and_eval_set_every_module() -> None:
    model = ReversalTransformer(TransformerConfig(**SMALL, num_layers=2))
    assert all(m.training for _, m in model.named_modules())
    assert model.eval() is model
    assert not any(m.training for _, m in model.named_modules())
    assert model.train() is model
    assert all(m.training for _, m in model.named_modules())


def test_get_finds_modules_by_path() -> None:
    model = ReversalTransformer(TransformerConfig(**SMALL, num_layers=2))
    assert model.get("") is model
    assert model.get("blocks.1.attn.q_proj") is model.blocks[1].attn.q_proj
    for path, module in model.named_modules():
        assert model.get(path) is module
    with pytest.raises(ValueError, match=r"blocks\.2"):
        model.get("blocks.2.attn")


def test_module_without_super_init_raises() -> None:
    class Broken(Module):
        def __init__(self) -> None:
            self.lin = Linear(2, 2, seed=0, name="lin")

    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_state_dict_copies_and_load_arrays_round_trips() -> None:
    config = TransformerConfig(**SMALL)
    model = ReversalTransformer(config, seed=0)
    other = ReversalTransformer(config, seed=1)
    tokens = tokens_for(config)
    state = model.state_dict()
    state["head.bias"][0] += 1.0  # a copy: the model is untouched
    assert model.head.bias.data[0] != state["head.bias"][0]
    other.load_arrays(model.state_dict())
    np.testing.assert_array_equal(other(tokens).data, model(tokens).data)
    with pytest.raises(ValueError, match="head.bias"):
        other.load_arrays({k: v for k, v in model.state_dict().items() if k != "head.bias"})
    with pytest.raises(ValueError, match="head.weight"):
        other.load_arrays({**model.state_dict(), "head.weight": np.zeros((1, 1))})


class EventRecorder:
    """Records ("before"/"after", path) for the functional model; may replace one output."""

    def __init__(self, replace: str | None = None) -> None:
        self.events: list[tuple[str, str]] = []
        self.outputs: dict[str, np.ndarray] = {}
        self.replace = replace

    def before(self, path: str, inputs: tuple) -> None:
        self.events.append(("before", path))

    def after(self, path: str, inputs: tuple, output: Any) -> Any:
        self.events.append(("after", path))
        self.outputs[path] = output.data
        return output * 0.5 if path == self.replace else None


def hook_every_module(model: Module, replace: str | None = None) -> EventRecorder:
    """The same recording on the class model, through forward hooks on every named module."""
    record = EventRecorder(replace)
    for path, module in model.named_modules():
        module.register_forward_pre_hook(lambda m, args, path=path: record.before(path, args))
        module.register_forward_hook(lambda m, args, out, path=path: record.after(path, args, out))
    return record


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_recorder_sees_the_same_boundaries_as_hooks(num_layers: int, positional: str) -> None:
    config = TransformerConfig(**SMALL, num_layers=num_layers, positional=positional)
    tokens = tokens_for(config)
    model = ReversalTransformer(config)
    hooked = hook_every_module(model)
    model(tokens)
    params, forward = functional.build_simple_transformer(config)
    recorded = EventRecorder()
    forward(params, tokens, recorder=recorded)

    assert recorded.events == hooked.events
    # execution order is registration order (the ModuleList itself is never called)
    befores = [path for kind, path in hooked.events if kind == "before"]
    assert befores == [p for p in contracted_module_paths(num_layers) if p != "blocks"]
    for path, out in hooked.outputs.items():
        np.testing.assert_allclose(recorded.outputs[path], out, rtol=1e-12, atol=1e-12, err_msg=path)


@pytest.mark.parametrize("path", ["blocks.0.attn", "blocks.0.attn.v_proj", "blocks.0.ln1", "head"])
def test_replacing_an_output_changes_both_models_alike(path: str) -> None:
    config = TransformerConfig(**SMALL)
    tokens = tokens_for(config)
    model = ReversalTransformer(config)
    plain = model(tokens).data
    hook_every_module(model, replace=path)
    params, forward = functional.build_simple_transformer(config)
    class_logits = model(tokens).data
    functional_logits = forward(params, tokens, recorder=EventRecorder(replace=path)).data
    assert not np.allclose(class_logits, plain), "the replacement had no effect"
    np.testing.assert_allclose(functional_logits, class_logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "causal mask"])
def test_functional_submodule_runs_each_module_like_the_class_model(masked: bool) -> None:
    config = TransformerConfig(**SMALL, num_layers=2)
    tokens = tokens_for(config)
    mask = np.tril(np.ones((config.seq_len, config.seq_len), dtype=bool)) if masked else None
    model = ReversalTransformer(config)
    params, _ = functional.build_simple_transformer(config)
    inputs: dict[str, tuple] = {}
    for path, module in model.named_modules():
        module.register_forward_pre_hook(lambda m, args, path=path: inputs.setdefault(path, args))
    model(*((tokens, mask) if masked else (tokens,)))
    for path, args in inputs.items():
        ours = functional.submodule(params, config, path)(*args).data
        np.testing.assert_allclose(ours, model.get(path)(*args).data, rtol=1e-12, atol=1e-12, err_msg=path)
    with pytest.raises(ValueError, match="blocks.7"):
        functional.submodule(params, config, "blocks.7")


def test_seeded_init_draws_are_fresh_arrays_and_independent_of_dtype_and_order() -> None:
    """init remembers its draws; a model that changes its weights in place must not change the
    next model built from the same seed, and float32 must be the float64 draw rounded."""
    first = ReversalTransformer(TransformerConfig(**SMALL), seed=5)
    before = {n: p.data.copy() for n, p in first.named_parameters()}
    for p in first.parameters():
        p.data += 1.0  # in place
    again = ReversalTransformer(TransformerConfig(**SMALL), seed=5)
    single = ReversalTransformer(TransformerConfig(**SMALL), seed=5, dtype=np.float32)
    params, _ = functional.build_simple_transformer(TransformerConfig(**SMALL), seed=5)
    for name, p in again.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
        np.testing.assert_array_equal(params[name].data, before[name])
        np.testing.assert_array_equal(dict(single.named_parameters())[name].data, before[name].astype(np.float32))
        assert p.data.flags.writeable
    other = dict(ReversalTransformer(TransformerConfig(**SMALL), seed=6).named_parameters())
    assert not np.array_equal(other["head.weight"].data, before["head.weight"])
