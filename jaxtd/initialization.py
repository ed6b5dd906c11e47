"""Prefix-consistent initialization of width-``m`` factor matrices.

Row ``i`` is drawn from ``jax.random.fold_in(key, i)``, so the first ``m`` rows of a width-``M``
initialization equal the width-``m`` initialization: a width-``m`` run inside a padded grid starts
exactly where the same run alone starts (docs/architecture.md: widths are masks).

"Exactly" holds between draws computed the same way (both inside one compiled program, as a
sweep and ``jaxtd.run`` do, or both eagerly): an eager draw and a jitted one may differ in the
last float32 bit, because XLA fuses the normalization ``z / ||z||`` differently.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd._checks import check_int
from jaxtd.symcp import SymCP
from jaxtd.targets import check_dtype, check_key

__all__ = ["gaussian_rows", "init_factors", "antisymmetric", "SCALES"]

SCALES = ("small", "standard")


def gaussian_rows(key, width: int, dim: int, dtype=None, offset=0) -> jax.Array:
    """``(width, dim)`` standard normal rows, row ``i`` from ``fold_in(key, offset + i)``."""
    check_key(key)
    dtype = check_dtype(dtype)
    rows = jnp.arange(width) + offset
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype))(rows)


def init_factors(key, width: int, dim: int, *, scale: str = "small", delta=1e-2,
                 dtype=None) -> jax.Array:
    """Initial factors ``W0`` of shape ``(width, dim)``.

    ``scale="small"``: each row ``delta * z / ||z||`` (norm exactly ``delta``; ``delta`` may be a
    traced scalar). ``scale="standard"``: rows ``N(0, I/d)`` (unit norm on average).

    ``key`` is one PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``); ``dtype`` float32
    or float64 (default: float32, float64 under x64); a concrete ``delta`` must be a finite real
    number with ``delta**2`` a normal number of the dtype (``~1e-19 <= delta <= ~1.8e19`` in
    float32; the two-homogeneous model's weights are ``delta**2``); checked in plain Python, a
    traced ``delta`` is not checked.
    """
    width = check_int(width, "width", 1)
    if width > 2 ** 31 - 1:
        raise ValueError(f"width must be <= 2**31 - 1 (array dimensions are 32-bit), got {width}")
    dim = check_int(dim, "dim", 1)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    check_key(key)
    dtype = check_dtype(dtype)
    _check_delta(delta, dtype)
    z = gaussian_rows(key, width, dim, dtype)
    if scale == "standard":
        return z / jnp.sqrt(jnp.asarray(dim, z.dtype))
    return jnp.asarray(delta, z.dtype) * z / jnp.linalg.norm(z, axis=1, keepdims=True)


def _check_delta(delta, dtype) -> None:
    """A concrete ``delta`` must be a finite real ``> 0`` whose square is a normal number of the
    (canonical) ``dtype``; tracers pass (they cannot be inspected without a host sync)."""
    if isinstance(delta, jax.core.Tracer):
        return
    if isinstance(delta, (bool, np.bool_)) or isinstance(delta, (str, bytes)):
        raise TypeError(f"delta must be a finite real number > 0, got {delta!r}")
    if isinstance(delta, numbers.Real):
        value = float(delta)
    else:
        arr = np.asarray(delta) if hasattr(delta, "dtype") or isinstance(delta, (list, tuple)) \
            else None
        if arr is None or arr.shape != () or arr.dtype.kind not in "iuf":
            raise TypeError(f"delta must be a finite real number > 0 (a scalar), got {delta!r}")
        value = float(arr)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"delta must be > 0 and finite, got {value}")
    info = np.finfo(jax.dtypes.canonicalize_dtype(dtype))
    low, high = math.sqrt(float(info.tiny)), math.sqrt(float(info.max))
    if not low <= value <= high:
        raise ValueError(f"delta={value:g} is outside [{low:.3g}, {high:.3g}]: its square (the "
                         f"scale of the model weights) would under- or overflow {info.dtype}")


def antisymmetric(key, width: int, dim: int, order: int, *, scale: str = "standard",
                  delta=1e-2, dtype=None) -> SymCP:
    """Antisymmetric initialization (docs/algorithms.md): rows in pairs ``(2k, 2k+1)`` with the same
    factor and weights ``+1, -1``, so ``T(W0) = 0`` for every order.

    Returns ``SymCP(c, W0, order)`` with ``W0`` of shape ``(width, dim)``: row ``i`` carries the
    factor of pair ``i // 2``, drawn like row ``i // 2`` of
    :func:`jaxtd.initialization.init_factors` (``fold_in(key, i // 2)``; ``scale``/``delta`` as
    there), and weight ``(-1)**i``. Rows are prefix-consistent: the first ``m`` rows (factors and
    weights) of a wider initialization equal the width-``m`` one.

    Odd widths are allowed: the last row is then an unpaired component of weight ``+1`` and
    ``T(W0) = w^{⊗l}`` for that row. This keeps prefix consistency, so a masked odd-width run
    inside a padded grid equals the standalone run; use an even width when ``T(W0) = 0`` matters.

    Note: a pair spans the tangent directions of one factor only, so the tangent space of a
    width-``2k`` antisymmetric model is that of ``k`` distinct components (the lazy threshold
    sits at twice the width of the standard initialization).
    """
    width = check_int(width, "width", 1)
    check_int(order, "order", 2)
    pairs = (int(width) + 1) // 2
    z = init_factors(key, pairs, dim, scale=scale, delta=delta, dtype=dtype)
    factors = jnp.repeat(z, 2, axis=0)[:width]
    weights = jnp.where(jnp.arange(width) % 2 == 0, 1.0, -1.0).astype(factors.dtype)
    return SymCP(weights, factors, int(order))
