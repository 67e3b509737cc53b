"""Seeded parameter initialisation, keyed by parameter name.

Each parameter draws from its own generator seeded by ``(seed, name)``, so an implementation
gets the same values whatever order it creates its parameters in, and the class-based and the
functional model built from one seed start from identical weights.

Draws are remembered per ``(seed, name, shape)``: seeding a generator costs more than drawing a
small tensor, and the harness builds the same seeded models many times. Every call returns a
fresh array.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np


def param_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


@functools.lru_cache(maxsize=4096)
def _draw(seed: int, name: str, shape: tuple[int, ...], kind: str, scale: float) -> np.ndarray:
    """U(-scale, scale) or N(0, scale^2) for one parameter, float64, read-only (callers get copies)."""
    rng = param_rng(seed, name)
    out = rng.uniform(-scale, scale, size=shape) if kind == "uniform" else scale * rng.standard_normal(size=shape)
    out.flags.writeable = False
    return out


def uniform_fan_in(seed: int, name: str, shape: tuple[int, ...], fan_in: int,
                   dtype: np.dtype) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's default bound for Linear weights and biases."""
    bound = 1.0 / np.sqrt(fan_in)
    return _draw(seed, name, tuple(shape), "uniform", float(bound)).astype(dtype)


def normal(seed: int, name: str, shape: tuple[int, ...], dtype: np.dtype, std: float = 1.0) -> np.ndarray:
    """N(0, std^2), torch's default for Embedding tables."""
    return _draw(seed, name, tuple(shape), "normal", float(std)).astype(dtype)


def sinusoidal_table(seq_len: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """The fixed sin/cos positional table: even columns sin(p / 10000^(2i/d)), odd columns cos."""
    positions = np.arange(seq_len)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
    table = np.zeros((seq_len, dim))
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates[: dim // 2])
    return table.astype(dtype)
