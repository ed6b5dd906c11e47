"""Ground-truth tensors ``T* = sum_j c*_j a_j^{⊗l}`` as :class:`~jaxtd.SymCP`.

Every constructor takes a PRNG key and returns a SymCP with ``rank`` rows. Components are
orthonormal (orthogonally decomposable tensor; optionally the standard basis ``e_1..e_r`` as in
the deflation paper's figure) or independent random unit vectors. Weight profiles: ``"equal"``
(all ones), ``"geometric"`` (``2^{-j}``, j = 0..r-1) or an explicit array.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd.symcp import SymCP

__all__ = ["weights", "orthonormal", "random_unit", "default_dtype"]

WEIGHT_PROFILES = ("equal", "geometric")


def default_dtype():
    """float32, or float64 when ``jax_enable_x64`` is on."""
    return jnp.result_type(float)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def weights(profile: Any, rank: int, dtype=None) -> jax.Array:
    """Weight vector ``(rank,)`` from a profile name or an explicit array-like.

    ``"equal"``: ones. ``"geometric"``: ``2^{-j}``. An array must have length ``rank`` and finite
    entries.
    """
    rank = _check_int("rank", rank, 1)
    dtype = dtype or default_dtype()
    if isinstance(profile, str):
        if profile == "equal":
            return jnp.ones((rank,), dtype)
        if profile == "geometric":
            return jnp.asarray(2.0 ** -np.arange(rank), dtype)
        raise ValueError(f"weights must be one of {WEIGHT_PROFILES} or an array, got {profile!r}")
    arr = np.asarray(profile, dtype=np.float64)
    if arr.shape != (rank,):
        raise ValueError(f"weights must have shape ({rank},) for rank={rank}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"weights must be finite, got {arr.tolist()}")
    return jnp.asarray(arr, dtype)


def orthonormal(key, dim: int, rank: int, order: int, weights: Any = "equal", *,
                basis: bool = False, dtype=None) -> SymCP:
    """Orthogonally decomposable target: ``rank`` orthonormal components in ``R^dim``.

    With ``basis=True`` the components are the standard basis vectors ``e_0..e_{rank-1}`` (the key
    is then unused). Otherwise they are the rows of ``Q^T`` from a QR factorization of a Gaussian
    ``(dim, rank)`` matrix (a Haar-random orthonormal frame).
    """
    dim = _check_int("dim", dim, 1)
    rank = _check_int("rank", rank, 1)
    _check_int("order", order, 2)
    if rank > dim:
        raise ValueError(f"rank={rank} > dim={dim}: at most dim orthonormal components exist; "
                         "lower rank or use targets.random_unit")
    dtype = dtype or default_dtype()
    w = _weights(weights, rank, dtype)
    if basis:
        factors = jnp.eye(rank, dim, dtype=dtype)
    else:
        q, r = jnp.linalg.qr(jax.random.normal(key, (dim, rank), dtype))
        factors = (q * jnp.sign(jnp.diagonal(r))).T
    return SymCP(w, factors, order)


def random_unit(key, dim: int, rank: int, order: int, weights: Any = "equal", *,
                dtype=None) -> SymCP:
    """Target with ``rank`` independent uniformly random unit components (incoherent when
    ``rank << dim``; not orthogonal)."""
    dim = _check_int("dim", dim, 1)
    rank = _check_int("rank", rank, 1)
    _check_int("order", order, 2)
    dtype = dtype or default_dtype()
    w = _weights(weights, rank, dtype)
    z = jax.random.normal(key, (rank, dim), dtype)
    return SymCP(w, z / jnp.linalg.norm(z, axis=1, keepdims=True), order)


_weights = weights
