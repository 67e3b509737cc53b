"""Moving weights between the scratch models, the torch reference and files, strictly.

Weights travel as plain ``{dotted name: numpy array}`` dicts. Loading is strict like torch's
``load_state_dict(strict=True)`` and stricter: missing names, unexpected names, shape and dtype
mismatches, non-arrays and non-finite values are all collected first and reported together in one
``ValueError``, one problem per line; the target is touched only when there is none, so nothing
is ever half-loaded. Files are ``.npz`` (read without pickle) or ``.safetensors``.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from deepdiff import DeepDiff

from differential.errors import InputError
from scratch_model.autograd import Tensor
from scratch_model.module import Module

Arrays = dict[str, np.ndarray]
Layout = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype name)
FORMATS = (".npz", ".safetensors")
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "head")  # the model's Linear layers


# --- reading a model's weights ---------------------------------------------------------------

def state_of(source: Module | torch.nn.Module | Mapping[str, Tensor]) -> Arrays:
    """Copies of the parameters of a scratch class model, a torch module or a functional params
    dict, by dotted name, in the source's own order."""
    return {name: _to_numpy(value) for name, value in _named_values(source).items()}


def layout_of(target: Module | torch.nn.Module | Mapping[str, Tensor]) -> Layout:
    """What ``target`` expects to be loaded with: ``{name: (shape, dtype name)}``."""
    return {name: (tuple(value.shape), _dtype_name(value.dtype))
            for name, value in _named_values(target).items()}


def _named_values(source: Any) -> dict[str, Any]:
    if isinstance(source, torch.nn.Module):
        return dict(source.named_parameters())
    if isinstance(source, Module):
        return dict(source.named_parameters())
    if isinstance(source, Mapping) and all(isinstance(v, Tensor) for v in source.values()):
        return dict(source)
    raise TypeError(f"expected a scratch Module, a torch nn.Module or a dict of scratch Tensors, "
                    f"got {type(source).__name__}")


def _to_numpy(value: Tensor | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return np.array(value.data, copy=True)


def _dtype_name(dtype: np.dtype | torch.dtype) -> str:
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else np.dtype(dtype).name


# --- checking --------------------------------------------------------------------------------

def check_arrays(expected: Layout, arrays: Mapping[str, Any], target: str = "model") -> None:
    """Raise one ValueError listing every way ``arrays`` fails to match ``expected``: missing and
    unexpected names, wrong shapes, wrong dtypes, values that are not numpy arrays, NaN or Inf."""
    if _obviously_fine(expected, arrays):
        return
    given = {name: a for name, a in arrays.items() if isinstance(a, np.ndarray)}
    odd = [name for name in arrays if name not in given]
    want = {name: spec for name, spec in expected.items() if name not in odd}
    # Names by set arithmetic; values of the shared names by DeepDiff. (Given whole, two dicts that
    # share few keys come back from DeepDiff as one change of the root, with no names in it.)
    common = [n for n in want if n in given]
    shapes = DeepDiff({n: str(want[n][0]) for n in common}, {n: str(given[n].shape) for n in common}, view="tree")
    dtypes = DeepDiff({n: want[n][1] for n in common}, {n: given[n].dtype.name for n in common}, view="tree")

    problems = [f"missing: {n!r} (expected shape {want[n][0]}, dtype {want[n][1]})" for n in want if n not in given]
    problems += [f"unexpected: {n!r} (got shape {given[n].shape}, dtype {given[n].dtype}){_architecture_note(n, want)}"
                 for n in given if n not in want]
    problems += [f"shape mismatch: {n!r} expected {want[n][0]}, got {given[n].shape}"
                 for n in _names(shapes, "values_changed")]
    problems += [f"dtype mismatch: {n!r} expected {want[n][1]}, got {given[n].dtype}"
                 for n in _names(dtypes, "values_changed")]
    problems += [f"not a numpy array: {n!r} is a {type(arrays[n]).__name__}" for n in odd]
    for name, array in given.items():
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            problems.append(f"non-finite: {name!r} has {nan} NaN and {inf} Inf values "
                            f"(first at index {first})")
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise InputError(f"cannot load weights into {target}: {len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}\n{lines}")


def _architecture_note(name: str, expected: Mapping[str, Any]) -> str:
    """Why a name may be absent from this architecture: a head tied to the token embedding has no
    ``head.weight``, a model without Linear biases no ``*.bias`` of a Linear layer."""
    if name == "head.weight" and "embedding.weight" in expected:
        return "; this model ties its head to the token embedding: the head's weight is embedding.weight"
    linear = name.endswith(".bias") and name.rpartition(".")[0].rpartition(".")[2] in LINEAR_LAYERS
    if linear and not any(n.endswith(".bias") and n.rpartition(".")[0].rpartition(".")[2] in LINEAR_LAYERS
                          for n in expected):
        return "; this model's Linear layers have no biases (bias off)"
    if name.startswith("pos_embedding.") and not any(n.startswith("pos_embedding.") for n in expected):
        return "; this model has no learned positional table (positions sinusoidal or none)"
    if name.startswith("ln_f.") and not any(n.startswith("ln_f.") for n in expected):
        return "; this model has no final LayerNorm"
    return ""


def _obviously_fine(expected: Layout, arrays: Mapping[str, Any]) -> bool:
    """The common case, cheaply: same names, shapes and dtypes, all finite. Anything else goes
    through the full structural diff, which lists every problem."""
    if arrays.keys() != expected.keys():
        return False
    for name, (shape, dtype) in expected.items():
        a = arrays[name]
        # dtype objects compared, not names: reading ``dtype.name`` costs more than the finiteness pass
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != _dtype(dtype):
            return False
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return False
    return True


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype | None:
    """numpy's dtype of that name (None for a name numpy does not know: no array matches it)."""
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _names(diff: DeepDiff, kind: str) -> list[str]:
    """The top-level dict keys that a DeepDiff tree view reports under ``kind``."""
    return [level.path(output_format="list")[0] for level in diff.get(kind, [])]


# --- loading into a model --------------------------------------------------------------------

def load_into_torch(model: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the parameters of a torch module (on its device), strictly."""
    check_arrays(layout_of(model), arrays, f"torch {type(model).__name__}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            a = arrays[name]  # copied into the parameter; numpy's own copy only where torch cannot read it as it is
            param.copy_(torch.from_numpy(a if a.dtype.isnative and a.flags.writeable else _native_copy(a)))


def load_into_class(model: Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the parameters of a scratch class model, strictly."""
    check_arrays(layout_of(model), arrays, f"scratch {type(model).__name__}")
    for name, param in model.named_parameters():
        param.data = _native_copy(arrays[name])


def load_into_params(params: Mapping[str, Tensor], arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into a functional params dict (in place, tensor by tensor), strictly."""
    check_arrays(layout_of(params), arrays, "scratch functional params")
    for name, tensor in params.items():
        tensor.data = _native_copy(arrays[name])


def _native_copy(array: np.ndarray) -> np.ndarray:
    """A C-ordered copy in native byte order (an npz may hold big-endian arrays; torch refuses them)."""
    return np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)


def load_into(target: Module | torch.nn.Module | Mapping[str, Tensor],
              arrays: Mapping[str, np.ndarray]) -> None:
    """Whichever of the three loaders fits ``target``."""
    if isinstance(target, torch.nn.Module):
        load_into_torch(target, arrays)
    elif isinstance(target, Module):
        load_into_class(target, arrays)
    else:
        _named_values(target)  # raises TypeError for anything else
        load_into_params(target, arrays)


# --- files -----------------------------------------------------------------------------------

def _format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = repr(suffix) if suffix else "(none)"
        raise InputError(f"unknown weight file extension {shown} in {str(path)!r}; "
                         f"use one of {', '.join(FORMATS)}")
    return suffix


def save_weights(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``.npz`` (no pickle) or ``.safetensors``, chosen by the extension."""
    fmt = _format(path)
    bad = [f"{name!r} ({type(a).__name__}, dtype {getattr(a, 'dtype', '-')})" for name, a in arrays.items()
           if not isinstance(a, np.ndarray) or a.dtype.hasobject]
    if bad:
        raise ValueError(f"only numeric numpy arrays can be saved; not: {', '.join(bad)}")
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    if fmt == ".safetensors":  # it stores tensors sorted; keep the model's order in the metadata
        safetensors.numpy.save_file(contiguous, str(path), metadata={"names": json.dumps(list(contiguous))})
        return
    # np.savez would take a name such as "file" as its own argument; write the archive directly.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in contiguous.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load_weights(path: str | os.PathLike[str]) -> Arrays:
    """Read a ``.npz`` or ``.safetensors`` file into ``{name: array}``. Pickled (object) arrays in
    an ``.npz`` are refused, never unpickled. A file that cannot be read (missing, empty, truncated,
    not the format its extension says, an archive member that is not a ``.npy`` array) raises
    `InputError` naming the file and what is wrong with it."""
    fmt = _format(path)
    shown = repr(str(path))
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise InputError(f"cannot read the weights file {shown}: {err.strerror}") from None
    if not Path(path).is_file():
        raise InputError(f"the weights file {shown} is not a regular file")
    if size == 0:
        raise InputError(f"the weights file {shown} is empty (0 bytes)")
    return _load_safetensors(path, shown) if fmt == ".safetensors" else _load_npz(path, shown)


def _load_safetensors(path: str | os.PathLike[str], shown: str) -> Arrays:
    try:
        arrays = safetensors.numpy.load_file(str(path))
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except (safetensors.SafetensorError, ValueError, TypeError, OSError) as err:
        raise InputError(f"{shown} is not a readable safetensors file ({_reason(err)})") from None
    try:
        order = json.loads(metadata.get("names", "[]"))
    except json.JSONDecodeError:
        order = []  # a name order written by another tool: keep the file's own order
    if isinstance(order, list) and sorted(map(str, order)) == sorted(arrays):
        return {name: arrays[name] for name in order}
    return dict(arrays)


def _load_npz(path: str | os.PathLike[str], shown: str) -> Arrays:
    with open(path, "rb") as head:
        if head.read(6) == b"\x93NUMPY":
            raise InputError(f"{shown} holds a single array, not an npz archive of named arrays")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise InputError(f"{shown} is not an npz archive that loads without pickle (not a complete zip of .npy "
                         f"arrays: {_reason(err)})") from None
    arrays = {}
    with archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                raise InputError(f"{shown}: member {member!r} is not a .npy array (an npz holds only .npy files)")
            name = member[: -len(".npy")]
            try:
                with archive.open(member) as stream:
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
            except ValueError as err:
                if "pickle" in str(err).lower():  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                    raise InputError(f"{shown}: array {name!r} needs pickle to load ({_reason(err)}); "
                                     "refusing it") from None
                raise InputError(f"{shown}: member {member!r} is not a valid .npy array: {_reason(err)}") from None
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
                raise InputError(f"{shown}: member {member!r} is damaged or truncated: {_reason(err)}") from None
    return arrays


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
