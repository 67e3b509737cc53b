"""Build the side of one implementation: torch (`torch_reference`, or a user's own torch model), or a
model through an adapter (`AdapterSide`): a user's framework, or one of the bundled class and
functional scratch models, which are adapters too (`differential.bundled_adapters`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from differential.adapter_side import AdapterSide
from differential.side import Side
from differential.sides import TorchSide
from scratch_model.config import TransformerConfig


def make_side(impl: str, config: TransformerConfig, arrays: dict[str, np.ndarray] | None, dtype: str,
              device: str = "cpu", mask: np.ndarray | None = None, adapter: Any = None, reference: Any = None,
              own_weights: bool = False) -> Side:
    """The side of ``impl`` with ``arrays`` loaded. ``reference``: a user's own torch model (the torch
    side, and the names an adapter maps to). ``own_weights``: a user's framework keeps the weights
    it built (the reference copies them, see `Side.shared_weights`)."""
    if impl == "adapter":
        return AdapterSide(adapter, config, dtype, None if own_weights else arrays, reference=reference)
    if impl == "torch":
        return TorchSide(config, arrays, dtype, device, mask, module=reference)
    if impl in ("class", "functional"):  # the bundled models, through the protocol a user's model takes
        if mask is not None:
            raise ValueError("the bundled models take their attention mask from the config (mask='causal'), "
                             "not as an array")
        from differential import bundled_adapters
        from differential.adapter import AdapterOptions

        factory = bundled_adapters.class_model if impl == "class" else bundled_adapters.functional_model
        return AdapterSide(factory(AdapterOptions(config, dtype)), config, dtype, arrays, impl=impl)
    raise ValueError(f"unknown implementation {impl!r}: expected class, functional or torch")


def build_sides(options: Any, arrays: dict[str, np.ndarray], mask: np.ndarray | None = None
                ) -> tuple[Side, Side, Side | None, dict[str, np.ndarray]]:
    """The sides of one report (`differential.options.ReportOptions`): the implementation under test,
    the float64 reference (the oracle), the reference in float32 when the run is float32 (its own
    rounding is the noise floor; else None), and the weights they share. A user's model keeps the
    weights it built unless ``options.weights`` were given; the reference copies them."""
    actual = make_side(options.impl, options.model, arrays, options.dtype, options.device, mask, options.adapter,
                       options.reference, own_weights=options.weights is None)
    arrays = actual.shared_weights(arrays)
    oracle = make_side(options.against, options.model, arrays, "float64", options.device, mask,
                       reference=options.reference)
    noise = make_side(options.against, options.model, arrays, "float32", options.device, mask,
                      reference=options.reference) if options.dtype == "float32" else None
    return actual, oracle, noise, arrays
