"""The shared initial weights (`scratch_model.init.seeded_weights`) come from the config alone, and
are exactly what each scratch model draws for itself from the same seed, in every variant."""

from __future__ import annotations

import numpy as np
import pytest

from scratch_model.config import VARIANTS, variant
from scratch_model.functional import build_simple_transformer
from scratch_model.init import seeded_weights
from scratch_model.layers import ReversalTransformer


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seeded_weights_are_what_each_model_draws(name: str, dtype: str) -> None:
    config = variant(name, num_layers=2)
    weights = seeded_weights(config, 3, dtype)
    drawn = {n: p.data for n, p in ReversalTransformer(config, seed=3, dtype=dtype).named_parameters()}
    assert list(weights) == list(drawn)  # same names, same order (the class model's registration order)
    for n, array in weights.items():
        assert array.dtype == np.dtype(dtype), n
        np.testing.assert_array_equal(array, drawn[n], err_msg=n)
    params, _ = build_simple_transformer(config, seed=3, dtype=dtype)
    assert list(params) == list(weights)


def test_seeds_differ_and_arrays_are_fresh() -> None:
    config = variant(sorted(VARIANTS)[0])
    a, b = seeded_weights(config, 0), seeded_weights(config, 1)
    assert not np.array_equal(a["embedding.weight"], b["embedding.weight"])
    a["embedding.weight"][0, 0] += 1.0  # a caller may write into its copy
    assert not np.array_equal(a["embedding.weight"], seeded_weights(config, 0)["embedding.weight"])
