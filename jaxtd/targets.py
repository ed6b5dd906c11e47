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

from jaxtd._checks import check_int
from jaxtd.symcp import SymCP

__all__ = ["weights", "orthonormal", "random_unit", "default_dtype", "check_key", "check_dtype"]

WEIGHT_PROFILES = ("equal", "geometric")


def default_dtype():
    """float32, or float64 when ``jax_enable_x64`` is on."""
    return jnp.result_type(float)


def check_key(key: Any, name: str = "key"):
    """Return ``key`` if it is one PRNG key, else raise naming ``name``.

    Accepted: a typed key (``jax.random.key(0)``, shape ``()``) or a legacy raw key
    (``jax.random.PRNGKey(0)``: uint32 of shape ``(2,)``), concrete or traced (per example under
    ``jax.vmap``). An int, a string or a batch of keys raises a ``TypeError``/``ValueError``
    with the fix, before JAX fails deep inside a random function.
    """
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got a batch of keys of shape "
                             f"{tuple(shape)}; pass one key (use jax.vmap over a batch)")
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and tuple(shape) == (2,):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        got = f"the int {key!r}"
    elif dtype is not None:
        got = f"an array of dtype {dtype} and shape {tuple(shape)}"
    else:
        got = f"{type(key).__name__} {key!r}"
    raise TypeError(f"{name} must be a PRNG key, e.g. jax.random.key({key if isinstance(key, int) else 0}), "
                    f"got {got}")


def check_dtype(dtype: Any, name: str = "dtype"):
    """``dtype`` as a numpy dtype (``None``: :func:`default_dtype`); float32 or float64 only."""
    if dtype is None:
        return np.dtype(default_dtype())
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be jnp.float32 or jnp.float64, got {dtype!r}") from None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name} must be jnp.float32 or jnp.float64, got {out}; jaxtd computes "
                        "in float32 (default) or float64 (under x64)")
    return out


def weights(profile: Any, rank: int, dtype=None) -> jax.Array:
    """Weight vector ``(rank,)`` from a profile name or an explicit array-like.

    ``"equal"``: ones. ``"geometric"``: ``2^{-j}``. An array must have length ``rank`` and finite,
    nonzero, real entries (a zero weight is a missing component: lower ``rank`` instead; an
    all-zero target has no relative error).
    """
    rank = check_int(rank, "rank", 1)
    dtype = check_dtype(dtype)
    if isinstance(profile, str):
        if profile == "equal":
            return jnp.ones((rank,), dtype)
        if profile == "geometric":
            return jnp.asarray(2.0 ** -np.arange(rank), dtype)
        raise ValueError(f"weights must be one of {WEIGHT_PROFILES} or an array, got {profile!r}")
    raw = np.asarray(profile)
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"weights must be real numbers, got dtype {raw.dtype}")
    arr = raw.astype(np.float64)
    if arr.shape != (rank,):
        raise ValueError(f"weights must have shape ({rank},) for rank={rank}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"weights must be finite, got {arr.tolist()}")
    if np.any(arr == 0):
        raise ValueError(f"weights must be nonzero, got {arr.tolist()}; a zero weight removes its "
                         "component: lower rank instead")
    if dtype == np.float32 and np.any(np.abs(arr) > np.finfo(np.float32).max):
        raise ValueError(f"weights overflow float32, got {arr.tolist()}; rescale the target")
    return jnp.asarray(arr, dtype)


def orthonormal(key, dim: int, rank: int, order: int, weights: Any = "equal", *,
                basis: bool = False, dtype=None) -> SymCP:
    """Orthogonally decomposable target: ``rank`` orthonormal components in ``R^dim``.

    With ``basis=True`` the components are the standard basis vectors ``e_0..e_{rank-1}`` (the key
    is then unused). Otherwise they are the rows of ``Q^T`` from a QR factorization of a Gaussian
    ``(dim, rank)`` matrix (a Haar-random orthonormal frame).
    """
    dim = check_int(dim, "dim", 1)
    rank = check_int(rank, "rank", 1)
    check_int(order, "order", 2)
    if rank > dim:
        raise ValueError(f"rank={rank} > dim={dim}: at most dim orthonormal components exist; "
                         "lower rank or use targets.random_unit")
    if not basis:
        check_key(key)
    dtype = check_dtype(dtype)
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
    dim = check_int(dim, "dim", 1)
    rank = check_int(rank, "rank", 1)
    check_int(order, "order", 2)
    check_key(key)
    dtype = check_dtype(dtype)
    w = _weights(weights, rank, dtype)
    z = jax.random.normal(key, (rank, dim), dtype)
    return SymCP(w, z / jnp.linalg.norm(z, axis=1, keepdims=True), order)


_weights = weights
