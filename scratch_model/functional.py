"""The functional transformer: pure functions over a flat params dict.

A second implementation of the model in `layers.py`, written independently on the same autograd
ops (embedding by integer-array indexing, softmax composed from exp/max/sum, LayerNorm variance
with `pow`), so that comparing the two means something. Parameter names and shapes equal the class
model's.

Every module boundary of the class model is a call through :func:`_scope`, under the same dotted
path; a recorder passed to :func:`forward` sees each one (inputs before, output after) and may
replace the output, just like a forward hook on the class model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from scratch_model import autograd as ag
from scratch_model import init
from scratch_model.autograd import Tensor
from scratch_model.config import TransformerConfig
from scratch_model.data import validate_tokens

Params = dict[str, Tensor]


class Recorder(Protocol):
    """Observes module boundaries; either method may return a replacement (inputs or output)."""

    def before(self, path: str, inputs: tuple) -> tuple | None: ...

    def after(self, path: str, inputs: tuple, output: Any) -> Any: ...


def _scope(recorder: Recorder | None, path: str, fn: Callable[..., Tensor], *inputs: Any) -> Tensor:
    if recorder is None:
        return fn(*inputs)
    replaced_inputs = recorder.before(path, inputs)
    if replaced_inputs is not None:
        inputs = replaced_inputs
    out = fn(*inputs)
    replaced = recorder.after(path, inputs, out)
    return out if replaced is None else replaced


# --- parameters ----------------------------------------------------------------------------

def build_simple_transformer(config: TransformerConfig | None = None, seed: int = 0,
                             dtype: np.dtype | str = np.float64
                             ) -> tuple[Params, Callable[..., Tensor]]:
    """Seeded parameters and ``forward(params, tokens, mask=None, recorder=None)`` for ``config``."""
    config = config or TransformerConfig()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    params = {name: Tensor(a, requires_grad=True) for name, a in init.seeded_weights(config, seed, dtype).items()}

    def bound_forward(params: Params, tokens: np.ndarray, mask: np.ndarray | None = None,
                      recorder: Recorder | None = None) -> Tensor:
        return forward(params, tokens, config, mask=mask, recorder=recorder)

    return params, bound_forward


# --- layers, as pure functions ---------------------------------------------------------------

def linear(params: Params, path: str, x: Tensor, weight: str | None = None) -> Tensor:
    """``x @ W.T (+ b)``: W is ``{path}.weight`` (or the parameter named ``weight``); the bias is
    added when the params have one."""
    out = ag.matmul(x, ag.swapaxes(params[weight or f"{path}.weight"], 0, 1))
    bias = params.get(f"{path}.bias")
    return out if bias is None else out + bias


def head(params: Params, config: TransformerConfig, x: Tensor) -> Tensor:
    """The output projection; with ``tie_head`` its weight is the token embedding's."""
    return linear(params, "head", x, "embedding.weight") if config.tie_head else linear(params, "head", x)


def embed(params: Params, tokens: np.ndarray) -> Tensor:
    return params["embedding.weight"][tokens]  # (B, T) -> (B, T, D)


def add_positions(params: Params, config: TransformerConfig, x: Tensor) -> Tensor:
    """The positional table added (only called when ``config.positional`` is not "none")."""
    t = x.shape[1]
    if config.positional == "learned":
        return x + params["pos_embedding.weight"][:t]
    return x + init.sinusoidal_table(config.seq_len, config.embed_dim, x.dtype)[:t]


def allowed(config: TransformerConfig, length: int, mask: np.ndarray | None) -> np.ndarray | None:
    """Booleans (True: the query may attend): the causal triangle of a causal model, combined
    with the extra ``mask`` when one is given."""
    if config.mask == "none":
        return mask
    triangle = np.arange(length)[None, :] <= np.arange(length)[:, None]  # (T, T): key j <= query i
    return triangle if mask is None else triangle & np.asarray(mask, dtype=bool)


def softmax_last(scores: Tensor) -> Tensor:
    exps = ag.exp(scores - scores.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def attention(params: Params, config: TransformerConfig, path: str, x: Tensor,
              mask: np.ndarray | None = None, recorder: Recorder | None = None) -> Tensor:
    b, t, d = x.shape
    h, hd = config.num_heads, config.head_dim

    def project(name: str) -> Tensor:
        out = _scope(recorder, f"{path}.{name}", lambda z: linear(params, f"{path}.{name}", z), x)
        return ag.transpose(ag.reshape(out, (b, t, h, hd)), (0, 2, 1, 3))  # (B, h, T, hd)

    q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
    scores = ag.matmul(q / np.sqrt(hd), ag.transpose(k, (0, 1, 3, 2)))  # (B, h, T, T)
    mask = allowed(config, t, mask)
    if mask is not None:
        scores = scores + np.where(mask, 0.0, -np.inf).astype(x.dtype)
    context = ag.matmul(softmax_last(scores), v)  # (B, h, T, hd)
    merged = ag.reshape(ag.transpose(context, (0, 2, 1, 3)), (b, t, d))  # (B, T, D)
    return _scope(recorder, f"{path}.out_proj", lambda z: linear(params, f"{path}.out_proj", z), merged)


def activation(config: TransformerConfig, x: Tensor) -> Tensor:
    if config.activation == "gelu":
        return ag.gelu(x)
    if config.activation == "gelu_tanh":
        return ag.gelu_tanh(x)
    return ag.relu(x)


def feed_forward(params: Params, config: TransformerConfig, path: str, x: Tensor,
                 recorder: Recorder | None = None) -> Tensor:
    hidden = _scope(recorder, f"{path}.fc1", lambda z: linear(params, f"{path}.fc1", z), x)
    return _scope(recorder, f"{path}.fc2", lambda z: linear(params, f"{path}.fc2", z), activation(config, hidden))


def layer_norm(params: Params, config: TransformerConfig, path: str, x: Tensor) -> Tensor:
    mu = x.mean(axis=-1, keepdims=True)
    variance = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    normed = (x - mu) * (variance + config.ln_eps) ** -0.5
    return normed * params[f"{path}.weight"] + params[f"{path}.bias"]


def block(params: Params, config: TransformerConfig, path: str, x: Tensor,
          mask: np.ndarray | None = None, recorder: Recorder | None = None) -> Tensor:
    def sub(name: str, fn: Callable[..., Tensor], *inputs: Any) -> Tensor:
        return _scope(recorder, f"{path}.{name}", fn, *inputs)

    def attn(z: Tensor) -> Tensor:
        return sub("attn", lambda y: attention(params, config, f"{path}.attn", y, mask, recorder), z)

    def ffn(z: Tensor) -> Tensor:
        return sub("ffn", lambda y: feed_forward(params, config, f"{path}.ffn", y, recorder), z)

    def norm(name: str, z: Tensor) -> Tensor:
        return sub(name, lambda y: layer_norm(params, config, f"{path}.{name}", y), z)

    if config.norm == "post":  # ln(x + f(x))
        attended = attn(x)
        x = norm("ln1", x + attended)
        transformed = ffn(x)
        return norm("ln2", x + transformed)
    x = x + attn(norm("ln1", x))  # pre: x + f(ln(x))
    return x + ffn(norm("ln2", x))


def forward(params: Params, tokens: np.ndarray, config: TransformerConfig, *,
            mask: np.ndarray | None = None, recorder: Recorder | None = None) -> Tensor:
    """Tokens (B, T) -> logits (B, T, vocab). The whole model is the scope named ``""``."""
    tokens = validate_tokens(tokens, config)

    def model(tokens: np.ndarray) -> Tensor:
        x = _scope(recorder, "embedding", lambda z: embed(params, z), tokens)
        if config.positional != "none":
            x = _scope(recorder, "pos_embedding", lambda z: add_positions(params, config, z), x)
        for i in range(config.num_layers):
            x = _scope(recorder, f"blocks.{i}",
                       lambda z, i=i: block(params, config, f"blocks.{i}", z, mask, recorder), x)
        if config.final_norm:
            x = _scope(recorder, "ln_f", lambda z: layer_norm(params, config, "ln_f", z), x)
        return _scope(recorder, "head", lambda z: head(params, config, z), x)

    return _scope(recorder, "", model, tokens)


def _forward_positional(params: Params, config: TransformerConfig, tokens: np.ndarray,
                        mask: np.ndarray | None = None) -> Tensor:
    """`forward` taking the mask positionally, like the class model's root module."""
    return forward(params, tokens, config, mask=mask)


def submodule(params: Params, config: TransformerConfig, path: str) -> functools.partial:
    """The function behind one module path, bound to ``params``: call it on that module's inputs
    alone (as ``model.get(path)(*inputs)`` on the class model) to run the module in isolation.
    ``.func`` is the plain function, for pointing at its source."""
    parts = path.split(".") if path else []
    leaf = parts[-1] if parts else ""
    if path == "":
        return functools.partial(_forward_positional, params, config)
    if path == "embedding":
        return functools.partial(embed, params)
    if path == "pos_embedding" and config.positional != "none":
        return functools.partial(add_positions, params, config)
    if path == "head":  # an untied head is a plain Linear layer
        return functools.partial(head, params, config) if config.tie_head else functools.partial(linear, params, path)
    if path == "ln_f" and config.final_norm:
        return functools.partial(layer_norm, params, config, path)
    in_block = len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit() \
        and int(parts[1]) < config.num_layers
    if in_block and leaf in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
        return functools.partial(linear, params, path)
    if in_block and leaf in ("ln1", "ln2"):
        return functools.partial(layer_norm, params, config, path)
    if in_block and leaf == "attn":
        return functools.partial(attention, params, config, path)
    if in_block and leaf == "ffn":
        return functools.partial(feed_forward, params, config, path)
    if in_block and len(parts) == 2:
        return functools.partial(block, params, config, path)
    raise ValueError(f"no module at path {path!r} in the functional model")
