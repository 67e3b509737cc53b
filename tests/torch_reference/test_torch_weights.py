"""The weight bridge: strict loading into all three implementations, exact round trips through
both file formats, one error that lists every problem, and no pickle."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch_parity import SMALL, Trio, make_trio

from differential.weights import (
    load_into,
    load_into_class,
    load_into_params,
    load_into_torch,
    load_weights,
    save_weights,
    state_of,
)
from scratch_model import functional as F
from scratch_model.layers import ReversalTransformer as ClassModel
from torch_reference.model import ReversalTransformer as TorchModel

FORMATS = (".npz", ".safetensors")
TARGETS = ("class", "functional", "torch")


def target_of(trio: Trio, kind: str):
    return {"class": trio.cls, "functional": trio.params, "torch": trio.torch}[kind]


def assert_identical(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Same names in the same order, same dtypes, same bits."""
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        assert got[name].tobytes() == expected[name].tobytes(), f"{name} differs"


@pytest.mark.parametrize("kind", TARGETS)
def test_state_of_reads_every_implementation_alike(kind):
    trio = make_trio()
    assert_identical(state_of(target_of(trio, kind)), trio.arrays)


def test_state_of_returns_copies():
    trio = make_trio()
    state = state_of(trio.torch)
    state["head.bias"][:] = 0
    assert trio.torch.head.bias.detach().abs().max() > 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_scratch_torch_files_scratch_is_bit_exact(tmp_path, fmt, dtype):
    trio = make_trio(dtype=dtype)
    fresh_torch = TorchModel(SMALL, dtype=getattr(torch, dtype))
    load_into_torch(fresh_torch, state_of(trio.cls))
    path = tmp_path / f"weights{fmt}"
    save_weights(path, state_of(fresh_torch))
    loaded = load_weights(path)
    assert_identical(loaded, trio.arrays)

    params, _ = F.build_simple_transformer(SMALL, seed=9, dtype=dtype)
    load_into_params(params, loaded)
    cls = ClassModel(SMALL, seed=9, dtype=dtype)
    load_into_class(cls, state_of(params))
    assert_identical(state_of(cls), trio.arrays)


def test_loading_copies_the_arrays():
    trio = make_trio()
    arrays = {n: a.copy() for n, a in trio.arrays.items()}
    for kind in TARGETS:
        load_into(target_of(trio, kind), arrays)
    arrays["head.bias"][:] = 123.0
    for kind in TARGETS:
        assert state_of(target_of(trio, kind))["head.bias"].max() < 100, kind


# --- strictness ------------------------------------------------------------------------------

def corrupt(arrays: dict[str, np.ndarray], problem: str) -> dict[str, np.ndarray]:
    """One kind of damage to a copy of ``arrays``."""
    bad = {n: a.copy() for n, a in arrays.items()}
    if problem == "unexpected":
        bad["blocks.0.attn.qkv.weight"] = np.zeros((3, 3))
    elif problem == "missing":
        del bad["head.bias"]
    elif problem == "renamed":
        bad["embeddings.weight"] = bad.pop("embedding.weight")
    elif problem == "shape":
        bad["head.weight"] = np.ascontiguousarray(bad["head.weight"].T)  # (in, out): a missed transpose
    elif problem == "dtype":
        bad["blocks.0.ffn.fc1.weight"] = bad["blocks.0.ffn.fc1.weight"].astype(np.float32)
    elif problem == "nan":
        bad["blocks.0.ln1.weight"][3] = np.nan
    elif problem == "inf":
        bad["blocks.0.attn.q_proj.bias"][0] = -np.inf
    return bad


# problem -> the lines the error must hold
EXPECTED_LINES = {
    "unexpected": ["unexpected: 'blocks.0.attn.qkv.weight'"],
    "missing": ["missing: 'head.bias' (expected shape (11,), dtype float64)"],
    "renamed": ["missing: 'embedding.weight'", "unexpected: 'embeddings.weight'"],
    "shape": ["shape mismatch: 'head.weight' expected (11, 32), got (32, 11)"],
    "dtype": ["dtype mismatch: 'blocks.0.ffn.fc1.weight' expected float64, got float32"],
    "nan": ["non-finite: 'blocks.0.ln1.weight' has 1 NaN and 0 Inf values (first at index (3,))"],
    "inf": ["non-finite: 'blocks.0.attn.q_proj.bias' has 0 NaN and 1 Inf values (first at index (0,))"],
}


def problem_lines(err: pytest.ExceptionInfo) -> list[str]:
    return [line.strip() for line in str(err.value).splitlines()[1:]]


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("problem", list(EXPECTED_LINES))
def test_each_problem_is_reported_and_nothing_loads(problem, kind):
    trio = make_trio()
    target = target_of(trio, kind)
    before = state_of(target)
    with pytest.raises(ValueError) as err:
        load_into(target, corrupt(trio.arrays, problem))
    lines = problem_lines(err)
    assert len(lines) == len(EXPECTED_LINES[problem]), str(err.value)
    for expected in EXPECTED_LINES[problem]:
        assert any(line.startswith(expected) for line in lines), f"{expected!r} not in\n{err.value}"
    assert_identical(state_of(target), before)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", TARGETS)
def test_a_file_with_every_problem_gives_one_error_listing_all(tmp_path, kind, fmt):
    trio = make_trio()
    bad = trio.arrays
    for problem in EXPECTED_LINES:
        bad = corrupt(bad, problem)
    path = tmp_path / f"bad{fmt}"
    save_weights(path, bad)
    target = target_of(trio, kind)
    before = state_of(target)
    with pytest.raises(ValueError) as err:
        load_into(target, load_weights(path))
    lines = problem_lines(err)
    expected = [line for lines_ in EXPECTED_LINES.values() for line in lines_]
    assert len(lines) == len(expected), str(err.value)
    for line in expected:
        assert any(got.startswith(line) for got in lines), f"{line!r} not in\n{err.value}"
    assert str(err.value).startswith(f"cannot load weights into {'torch' if kind == 'torch' else 'scratch'}")
    assert_identical(state_of(target), before)


def test_values_that_are_not_arrays_are_reported():
    trio = make_trio()
    bad = dict(trio.arrays, **{"head.bias": trio.arrays["head.bias"].tolist()})
    with pytest.raises(ValueError, match=r"not a numpy array: 'head.bias' is a list"):
        load_into_torch(trio.torch, bad)


def test_wrong_target_type_is_a_type_error():
    with pytest.raises(TypeError, match="expected a scratch Module"):
        load_into({"embedding.weight": np.zeros((2, 2))}, {})


# --- files -----------------------------------------------------------------------------------

def test_npz_with_an_object_array_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"head.bias": np.array([1.0, "x", None], dtype=object)})  # pickled inside
    with pytest.raises(ValueError, match="'head.bias' needs pickle"):
        load_weights(path)


def test_a_single_array_file_is_not_an_archive(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_weights(path)


def test_saving_refuses_object_arrays_and_non_arrays(tmp_path):
    with pytest.raises(ValueError, match="'a'.*'b'"):
        save_weights(tmp_path / "w.npz", {"a": np.array([None]), "b": [1.0]})
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("name", ["weights.pt", "weights.npy", "weights"])
def test_unknown_extension_is_named(tmp_path, name):
    shown = re.escape(repr(name[name.index("."):]) if "." in name else "(none)")
    with pytest.raises(ValueError, match=f"unknown weight file extension {shown}"):
        save_weights(tmp_path / name, {"a": np.zeros(2)})
    with pytest.raises(ValueError, match=f"unknown weight file extension {shown}"):
        load_weights(tmp_path / name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_names_that_clash_with_numpy_arguments_survive(tmp_path, fmt):
    arrays = {"file": np.arange(3.0), "allow_pickle": np.ones((2, 2), dtype=np.float32)}
    save_weights(tmp_path / f"w{fmt}", arrays)
    assert_identical(load_weights(tmp_path / f"w{fmt}"), arrays)


def test_corrupt_safetensors_is_a_value_error(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(path)


@pytest.mark.parametrize("kind", TARGETS)
def test_big_endian_arrays_load_as_native(kind):
    trio = make_trio()
    swapped = {n: a.astype(a.dtype.newbyteorder(">")) for n, a in trio.arrays.items()}
    target = target_of(make_trio(seed=3), kind)
    load_into(target, swapped)
    state = state_of(target)
    assert all(state[n].dtype.isnative and np.array_equal(state[n], a) for n, a in trio.arrays.items())
