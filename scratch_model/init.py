"""Seeded parameter initialisation, keyed by parameter name.

Each parameter draws from its own generator seeded by ``(seed, name)``, so an implementation
gets the same values whatever order it creates its parameters in, and the class-based and the
functional model built from one seed start from identical weights.
"""

from __future__ import annotations

import zlib

import numpy as np


def param_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def uniform_fan_in(seed: int, name: str, shape: tuple[int, ...], fan_in: int,
                   dtype: np.dtype) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's default bound for Linear weights and biases."""
    bound = 1.0 / np.sqrt(fan_in)
    return param_rng(seed, name).uniform(-bound, bound, size=shape).astype(dtype)


def normal(seed: int, name: str, shape: tuple[int, ...], dtype: np.dtype, std: float = 1.0) -> np.ndarray:
    """N(0, std^2), torch's default for Embedding tables."""
    return (std * param_rng(seed, name).standard_normal(size=shape)).astype(dtype)


def sinusoidal_table(seq_len: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """The fixed sin/cos positional table: even columns sin(p / 10000^(2i/d)), odd columns cos."""
    positions = np.arange(seq_len)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
    table = np.zeros((seq_len, dim))
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates[: dim // 2])
    return table.astype(dtype)
