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

from scratch_model.config import TransformerConfig


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


def seeded_weights(config: TransformerConfig, seed: int, dtype: np.dtype | str = np.float64) -> dict[str, np.ndarray]:
    """Every parameter of the model ``config`` describes, drawn from ``seed``, by name, in the order
    the class model registers them. The one place the shared initial weights come from: it needs
    the config only, no implementation of the model (each implementation draws the same values)."""
    dtype = np.dtype(dtype)
    d, f, v = config.embed_dim, config.ff_dim, config.vocab_size
    arrays: dict[str, np.ndarray] = {"embedding.weight": normal(seed, "embedding.weight", (v, d), dtype)}
    if config.positional == "learned":
        arrays["pos_embedding.weight"] = normal(seed, "pos_embedding.weight", (config.seq_len, d), dtype)

    def linear_params(path: str, fan_in: int, fan_out: int, weight: bool = True) -> None:
        shape = (fan_out, fan_in)
        if weight:
            arrays[f"{path}.weight"] = uniform_fan_in(seed, f"{path}.weight", shape, fan_in, dtype)
        if config.bias:
            arrays[f"{path}.bias"] = uniform_fan_in(seed, f"{path}.bias", (fan_out,), fan_in, dtype)

    def norm_params(path: str) -> None:
        arrays[f"{path}.weight"] = np.ones(d, dtype=dtype)
        arrays[f"{path}.bias"] = np.zeros(d, dtype=dtype)

    for i in range(config.num_layers):
        block = f"blocks.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear_params(f"{block}.attn.{proj}", d, d)
        norm_params(f"{block}.ln1")
        norm_params(f"{block}.ln2")
        linear_params(f"{block}.ffn.fc1", d, f)
        linear_params(f"{block}.ffn.fc2", f, d)
    if config.final_norm:
        norm_params("ln_f")
    linear_params("head", d, v, weight=not config.tie_head)  # a tied head reads embedding.weight
    return _in_class_order(arrays, config)


def _in_class_order(arrays: dict[str, np.ndarray], config: TransformerConfig) -> dict[str, np.ndarray]:
    """Order names as the class model registers them (blocks: attn, ln1, ffn, ln2), so both list
    parameters identically. The sort is stable: within a layer, creation order stays."""
    top = {"embedding": 0, "pos_embedding": 1, "ln_f": 3, "head": 4}

    def rank(name: str) -> tuple:
        parts = name.split(".")
        if parts[0] == "blocks":
            sub = ["attn", "ln1", "ffn", "ln2"].index(parts[2])
            return (2, int(parts[1]), sub)
        return (top[parts[0]], 0, 0)

    return {name: arrays[name] for name in sorted(arrays, key=rank)}
