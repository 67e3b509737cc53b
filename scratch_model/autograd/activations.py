"""GELU activations with their exact backward: the erf form and the tanh approximation.

numpy has no erf, so :func:`erf` is computed here: a series with positive terms below |x| = 2
and a continued fraction for erfc above, both in float64, within about ten ulps of ``math.erf``
(the tests compare them). float32 tensors are computed in float64 and rounded once.
"""

from __future__ import annotations

import numpy as np

from scratch_model.autograd.tensor import Tensor, op

_SQRT_2 = np.sqrt(2.0)
_SQRT_PI = np.sqrt(np.pi)
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_TANH_CUBIC = 0.044715  # the cubic coefficient of the tanh approximation
_SWITCH = 2.0  # the series below, the continued fraction above
_SERIES_TERMS = 50  # enough for |x| < 2: the terms fall below 1e-17 of the sum well before
_FRACTION_DEPTH = 100  # enough for |x| >= 2 (converged to the last bit)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in float64."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    near = a < _SWITCH
    out = np.empty_like(a)
    # erf(a) = 2/sqrt(pi) exp(-a^2) sum_n 2^n a^(2n+1) / (1*3*...*(2n+1)): every term positive
    z = a[near]
    term = z.copy()
    total = z.copy()
    for n in range(1, _SERIES_TERMS):
        term = term * (2.0 * z * z) / (2 * n + 1)
        total += term
    out[near] = 2.0 / _SQRT_PI * np.exp(-z * z) * total
    # erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))), evaluated bottom-up
    w = a[~near]
    fraction = w.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        fraction = w + (k / 2.0) / fraction
    out[~near] = 1.0 - np.exp(-w * w) / (_SQRT_PI * fraction)
    return np.copysign(out, x)


def _gelu_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Phi(x), phi(x)): the standard normal CDF and density, float64."""
    cdf = 0.5 * (1.0 + erf(x / _SQRT_2))
    density = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return cdf, density


@op
def gelu(a: Tensor):
    """x * Phi(x), as torch's ``gelu(x, approximate="none")``; d/dx = Phi(x) + x phi(x)."""
    x = a.data.astype(np.float64)
    cdf, density = _gelu_parts(x)
    out = (x * cdf).astype(a.dtype)
    slope = (cdf + x * density).astype(a.dtype)
    return out, lambda g: (g * slope,)


@op
def gelu_tanh(a: Tensor):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as torch's
    ``gelu(x, approximate="tanh")``; the backward differentiates this formula exactly."""
    x = a.data.astype(np.float64)
    t = np.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x ** 3))
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x * x)
    out = (0.5 * x * (1.0 + t)).astype(a.dtype)
    slope = (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du).astype(a.dtype)
    return out, lambda g: (g * slope,)
