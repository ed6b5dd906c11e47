"""Exact Frobenius quantities of symmetric CP tensors in Gram form (MATH.md §2).

For ``A = sum_i c_i u_i^{⊗l}`` and ``B = sum_j b_j v_j^{⊗l}``:

    <A, B> = c^T (U V^T)^{∘l} b

so inner products, norms and the loss ``1/2 ||A - B||_F^2`` cost ``O((k_a + k_b)^2 d)`` and never
build the ``d^l`` tensor. All functions are differentiable (``jax.grad`` in either argument),
jit/vmap-able, and work in float32 and float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtd import _extended
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["inner", "norm", "loss", "residual_sq", "relative_error", "stack"]


def _gram_form(c, u, b, v, order: int):
    return c @ ((u @ v.T) ** order) @ b


def inner(a: SymCP, b: SymCP) -> jax.Array:
    """Frobenius inner product ``<a, b> = c_a^T (U_a U_b^T)^{∘l} c_b``; scalar."""
    check_compatible(a, b)
    return _gram_form(a.weights, a.factors, b.weights, b.factors, a.order)


def norm(a: SymCP) -> jax.Array:
    """Frobenius norm ``||a||_F``; scalar (clamped at 0 before the square root)."""
    sq = inner(a, a)
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def stack(a: SymCP, b: SymCP, sign: float = -1.0) -> SymCP:
    """The SymCP of ``a + sign * b`` as one list of ``k_a + k_b`` components."""
    check_compatible(a, b)
    dtype = jnp.result_type(a.weights, b.weights, a.factors, b.factors)
    weights = jnp.concatenate([a.weights.astype(dtype), sign * b.weights.astype(dtype)])
    factors = jnp.concatenate([a.factors.astype(dtype), b.factors.astype(dtype)])
    return SymCP(weights, factors, a.order)


def loss(a: SymCP, b: SymCP) -> jax.Array:
    """``1/2 ||a - b||_F^2`` via the Gram identity on the stacked components ``[a; -b]``."""
    r = stack(a, b)
    return 0.5 * _gram_form(r.weights, r.factors, r.weights, r.factors, r.order)


def residual_sq(estimate: SymCP, target: SymCP, *, precise: bool = True) -> jax.Array:
    """``||estimate - target||_F^2``, accurate even when the two nearly cancel.

    With ``precise`` and float32 inputs the Gram form is evaluated in double-float arithmetic
    (about 48 significant bits); float64 inputs are summed directly. The result is clamped at 0.
    Not meant for differentiation (use :func:`loss`).
    """
    r = stack(estimate, target)
    if precise and r.factors.dtype == jnp.float32:
        hi, lo = _extended.weighted_gram_power_sum(r.weights, r.factors, r.order)
        value = hi + lo
    else:
        value = _gram_form(r.weights, r.factors, r.weights, r.factors, r.order)
    return jnp.maximum(value, 0.0)


def relative_error(estimate: SymCP, target: SymCP, *, precise: bool = True) -> jax.Array:
    """``||estimate - target||_F / ||target||_F``: finite and non-negative, and accurate to ~1e-3
    relative down to errors of 1e-6 in float32 (see :func:`residual_sq`)."""
    check_compatible(estimate, target, ("estimate", "target"))
    num = jnp.sqrt(residual_sq(jax.lax.stop_gradient(estimate), jax.lax.stop_gradient(target),
                               precise=precise))
    return num / norm(jax.lax.stop_gradient(target))
