"""Exact Frobenius quantities of symmetric CP tensors in Gram form (MATH.md §2).

For ``A = sum_i c_i u_i^{⊗l}`` and ``B = sum_j b_j v_j^{⊗l}``:

    <A, B> = c^T (U V^T)^{∘l} b

so inner products, norms and the loss ``1/2 ||A - B||_F^2`` cost ``O((k_a + k_b)^2 d)`` and never
build the ``d^l`` tensor. Everything is jit/vmap-able and works in float32 and float64.

Which function to differentiate:

- :func:`loss` / :func:`gram_loss` carry a ``jax.custom_vjp`` that reuses the Gram matrix: one
  value-and-gradient costs two ``k x k x d`` matmuls (``U U^T`` forward, ``K U`` backward) and
  ``O(k^2)`` extra memory. Reverse mode only (``jax.grad``, ``jax.value_and_grad``, ``jax.vjp``);
  no ``jax.jvp``/``jax.linearize``, no grad-of-grad.
- :func:`gram_inner` and :func:`loss_autodiff` are the plain formulas: differentiable in any mode
  and to any order (``jax.jvp``, Hessians, nested ``jvp`` as in :mod:`jaxtd.lazy`), at about 1.5x
  the cost of :func:`loss` under ``jax.grad``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxtd import _extended
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["inner", "norm", "loss", "loss_autodiff", "gram_inner", "gram_loss", "residual_sq",
           "relative_error", "stack"]


def gram_inner(c, u, b, v, order: int) -> jax.Array:
    """Plain Gram form ``c^T (U V^T)^{∘order} b``; scalar.

    ``c (k,)``, ``u (k, d)``, ``b (n,)``, ``v (n, d)``. Differentiable in every mode and to any
    order (the function to use with ``jax.jvp``/``jax.linearize``).
    """
    return c @ ((u @ v.T) ** order) @ b


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def gram_loss(w, u, order: int) -> jax.Array:
    """``1/2 w^T (U U^T)^{∘order} w`` with a Gram-reusing VJP; scalar.

    ``w (k,)``, ``u (k, d)``. With ``G = U U^T`` and ``P = G^{∘(order-1)}``:

        d/dw = (P ∘ G) w,        d/dU = order * (w w^T ∘ P) U,

    so the gradient costs one more ``k x k x d`` matmul than the value. Rows with ``w_i = 0`` get
    zero gradient. Reverse mode only; use :func:`gram_inner` for forward mode.
    """
    return 0.5 * gram_inner(w, u, w, u, order)


def _gram_loss_fwd(w, u, order):
    g = u @ u.T
    p = g ** (order - 1)
    hw = (p * g) @ w
    return 0.5 * (w @ hw), (w, u, p, hw)


def _gram_loss_bwd(order, res, ct):
    w, u, p, hw = res
    k = (order * ct) * (w[:, None] * p * w[None, :])
    return ct * hw, k @ u


gram_loss.defvjp(_gram_loss_fwd, _gram_loss_bwd)


def inner(a: SymCP, b: SymCP) -> jax.Array:
    """Frobenius inner product ``<a, b> = c_a^T (U_a U_b^T)^{∘l} c_b``; scalar."""
    check_compatible(a, b)
    return gram_inner(a.weights, a.factors, b.weights, b.factors, a.order)


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
    """``1/2 ||a - b||_F^2`` via the Gram identity on the stacked components ``[a; -b]``; scalar.

    Reverse-mode differentiable in both arguments through :func:`gram_loss` (two matmuls per
    value-and-gradient). For forward mode or higher derivatives use :func:`loss_autodiff`.
    """
    r = stack(a, b)
    return gram_loss(r.weights, r.factors, r.order)


def loss_autodiff(a: SymCP, b: SymCP) -> jax.Array:
    """Same value as :func:`loss` from the plain formula (any-mode, any-order autodiff)."""
    r = stack(a, b)
    return 0.5 * gram_inner(r.weights, r.factors, r.weights, r.factors, r.order)


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
        value = gram_inner(r.weights, r.factors, r.weights, r.factors, r.order)
    return jnp.maximum(value, 0.0)


def relative_error(estimate: SymCP, target: SymCP, *, precise: bool = True) -> jax.Array:
    """``||estimate - target||_F / ||target||_F``: finite and non-negative, and accurate to ~1e-3
    relative down to errors of 1e-6 in float32 (see :func:`residual_sq`)."""
    check_compatible(estimate, target, ("estimate", "target"))
    num = jnp.sqrt(residual_sq(jax.lax.stop_gradient(estimate), jax.lax.stop_gradient(target),
                               precise=precise))
    return num / norm(jax.lax.stop_gradient(target))
