"""The weight bridge's contract where the main weight tests (tests/torch_reference/test_torch_weights.py)
do not pin it: each problem on its own, exact error texts, copies and memory order, dtypes other than
float64, files written by other tools, and archives past the zip32 size limit. Written to kill the
mutants ``benchmarks/mutation.py`` found surviving; every expected value is written out by hand."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from differential.weights import (
    check_arrays,
    layout_of,
    load_into,
    load_into_class,
    load_into_params,
    load_into_torch,
    load_weights,
    save_weights,
    state_of,
)
from scratch_model.autograd import Tensor
from scratch_model.layers import Linear

W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
B = np.array([0.5, -0.5, 1.5])


def scratch_linear() -> Linear:
    return Linear(2, 3, seed=0, name="lin")


def torch_linear() -> torch.nn.Linear:
    return torch.nn.Linear(2, 3, dtype=torch.float64)


# --- reading ---------------------------------------------------------------------------------

def test_state_of_a_scratch_model_or_params_dict_returns_copies() -> None:
    model, params = scratch_linear(), {"w": Tensor(np.array([1.0, 2.0]))}
    before = np.array(model.weight.data, copy=True)
    state_of(model)["weight"][:] = 7.0
    state_of(params)["w"][:] = 7.0
    assert np.array_equal(model.weight.data, before) and np.array_equal(params["w"].data, [1.0, 2.0])


@pytest.mark.parametrize("source, name", [(42, "int"), ("model", "str"), ([W], "list")])
def test_a_source_of_the_wrong_type_is_named(source, name) -> None:
    with pytest.raises(TypeError, match=f"got {name}$"):
        state_of(source)
    with pytest.raises(TypeError, match=f"got {name}$"):
        layout_of(source)


def test_the_layout_names_dtypes_not_byte_orders() -> None:
    params = {"w": Tensor(np.zeros(2))}
    params["w"].data = np.zeros(2, dtype=">f8")  # as a big-endian .npy would hand it over
    assert layout_of(params) == {"w": ((2,), "float64")}
    load_into_params(params, {"w": np.array([1.0, 2.0])})
    assert params["w"].data.dtype.isnative
    assert np.array_equal(params["w"].data, [1.0, 2.0])


# --- checking --------------------------------------------------------------------------------

def test_the_error_header_names_the_target_and_counts_the_problems() -> None:
    layout = {"w": ((2,), "float64"), "u": ((1,), "float64")}
    with pytest.raises(ValueError) as one:
        check_arrays(layout, {"w": np.zeros(2)})
    assert str(one.value) == ("cannot load weights into model: 1 problem\n"
                              "  missing: 'u' (expected shape (1,), dtype float64)")
    with pytest.raises(ValueError) as two:
        check_arrays(layout, {"w": np.zeros(2), "v": np.zeros(1)})
    assert str(two.value) == ("cannot load weights into model: 2 problems\n"
                              "  missing: 'u' (expected shape (1,), dtype float64)\n"
                              "  unexpected: 'v' (got shape (1,), dtype float64)")


def test_arrays_that_share_no_name_with_the_model_list_every_name() -> None:
    with pytest.raises(ValueError) as err:
        check_arrays({"w": ((2,), "float64"), "u": ((1,), "float64")}, {"v": np.zeros(1)})
    assert str(err.value) == ("cannot load weights into model: 3 problems\n"
                              "  missing: 'w' (expected shape (2,), dtype float64)\n"
                              "  missing: 'u' (expected shape (1,), dtype float64)\n"
                              "  unexpected: 'v' (got shape (1,), dtype float64)")


@pytest.mark.parametrize("load, target, header", [
    (load_into_torch, torch_linear, "cannot load weights into torch Linear: 1 problem\n  missing: 'bias'"),
    (load_into_class, scratch_linear, "cannot load weights into scratch Linear: 1 problem\n  missing: 'bias'"),
    (load_into, torch_linear, "cannot load weights into torch Linear: 1 problem\n  missing: 'bias'"),
    (load_into, scratch_linear, "cannot load weights into scratch Linear: 1 problem\n  missing: 'bias'"),
])
def test_the_loaders_name_the_model_class(load, target, header) -> None:
    with pytest.raises(ValueError) as err:
        load(target(), {"weight": W})
    assert str(err.value).startswith(header)


@pytest.mark.parametrize("layout, value, line", [
    (((2,), "float64"), np.zeros(3), "shape mismatch: 'w' expected (2,), got (3,)"),
    (((2,), "float64"), np.zeros(2, np.float32), "dtype mismatch: 'w' expected float64, got float32"),
    (((2,), "float64"), [0.0, 0.0], "not a numpy array: 'w' is a list"),
    (((2,), "float64"), np.array([0.0, np.nan]), "non-finite: 'w' has 1 NaN and 0 Inf values (first at index (1,))"),
    (((2,), "float32"), np.array([0.0, np.nan], np.float32),
     "non-finite: 'w' has 1 NaN and 0 Inf values (first at index (1,))"),
    (((1, 2), "float32"), np.array([[-np.inf, 1.0]], np.float32),
     "non-finite: 'w' has 0 NaN and 1 Inf values (first at index (0, 0))"),
    (((2,), "float64"), np.array(["ab", "cd"]), "dtype mismatch: 'w' expected float64, got <U2"),
])
def test_a_single_problem_with_every_name_right_is_caught(layout, value, line) -> None:
    with pytest.raises(ValueError) as err:
        check_arrays({"w": layout}, {"w": value})
    assert str(err.value) == f"cannot load weights into model: 1 problem\n  {line}"


@pytest.mark.parametrize("layout, value", [
    (((2,), "str64"), np.array(["ab", "cd"])),  # no NaN check on values that are not numbers
    (((2,), "int64"), np.array([1, 2], np.int64)),
    (((2,), "bool"), np.array([True, False])),
])
def test_layouts_of_other_dtypes_pass_when_they_match(layout, value) -> None:
    assert check_arrays({"w": layout}, {"w": value}) is None


# --- loading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["class", "params"])
def test_loaded_parameters_are_c_ordered_copies(kind) -> None:
    fortran = np.asfortranarray(W)
    assert not fortran.flags.c_contiguous
    if kind == "class":
        model = scratch_linear()
        load_into_class(model, {"weight": fortran, "bias": B})
        loaded = model.weight.data
    else:
        params = {"weight": Tensor(np.zeros((3, 2))), "bias": Tensor(np.zeros(3))}
        load_into_params(params, {"weight": fortran, "bias": B})
        loaded = params["weight"].data
    assert loaded.flags.c_contiguous and np.array_equal(loaded, W)
    fortran[0, 0] = 99.0
    assert loaded[0, 0] == 1.0


# --- files -----------------------------------------------------------------------------------

def test_an_unknown_extension_lists_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    with pytest.raises(ValueError) as err:
        load_weights(path)
    assert str(err.value) == f"unknown weight file extension '.pt' in {str(path)!r}; use one of .npz, .safetensors"


def test_saving_names_each_refused_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        save_weights(tmp_path / "w.npz", {"a": np.array([None]), "ok": np.zeros(2), "b": [1.0]})
    assert str(err.value) == ("only numeric numpy arrays can be saved; not: 'a' (ndarray, dtype object), "
                              "'b' (list, dtype -)")


def test_npz_members_past_the_zip32_limit_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A member over 4 GiB needs zip64 headers; stand in for one by lowering the limit to 1 KiB.
    big = np.arange(300.0)  # 2400 bytes
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP64_LIMIT", 1024)
        save_weights(tmp_path / "w.npz", {"big": big, "small": B})
    loaded = load_weights(tmp_path / "w.npz")
    assert list(loaded) == ["big", "small"]
    assert np.array_equal(loaded["big"], big) and np.array_equal(loaded["small"], B)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    cases = []
    garbage_st = tmp_path / "garbage.safetensors"
    garbage_st.write_bytes(b"not a safetensors file")
    cases.append((garbage_st, f"{str(garbage_st)!r} is not a readable safetensors file ("))
    garbage_npz = tmp_path / "garbage.npz"
    garbage_npz.write_bytes(b"not numpy at all")
    cases.append((garbage_npz, f"{str(garbage_npz)!r} is not an npz archive that loads without pickle ("))
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    cases.append((single, f"{str(single)!r} holds a single array, not an npz archive of named arrays"))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, ok=np.zeros(2), o=np.array([1.0, None], dtype=object))
    cases.append((pickled, f"{str(pickled)!r}: array 'o' needs pickle to load ("))
    for path, start in cases:
        with pytest.raises(ValueError) as err:
            load_weights(path)
        assert str(err.value).startswith(start), (str(err.value), start)
    assert re.search(r"refusing it$", str(err.value))


@pytest.mark.parametrize("metadata", [None, {"format": "np"}, {"names": '["x", "y"]'}])
def test_a_safetensors_file_written_elsewhere_loads(tmp_path: Path, metadata) -> None:
    # no names in the metadata, or names that are not the file's: every array, in the file's order
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"b": B, "a": W}, str(path), metadata=metadata)
    loaded = load_weights(path)
    assert sorted(loaded) == ["a", "b"]
    assert np.array_equal(loaded["a"], W) and np.array_equal(loaded["b"], B)
