"""``||E - T||^2`` without catastrophic cancellation, by aligning each component with the target.

The Gram form ``||E - T||^2 = sum_ij s_i s_j <u_i, u_j>^l`` sums terms of size ``||T||^2`` to a
result that is tiny near a fit, so in float64 its rounding (~1e-16 ``||T||^2``) swamps relative
errors below ~1e-8. This module rewrites the residual tensor exactly into small terms first.

Each estimate component ``c_i u_i^{⊗l}`` is assigned to the target direction ``â_j`` it is most
aligned with (sign ``σ_i`` so that ``w_i = σ_i u_i`` points along ``+â_j``; ``u^{⊗l} = σ^l w^{⊗l}``).
With ``ρ_i = t_i a_j``, ``t_i = ||w_i|| / ||a_j||``, and ``e_i = w_i - ρ_i`` (small near a fit),
the telescoping identity

    w^{⊗l} - ρ^{⊗l} = sum_{k<l} w^{⊗k} ⊗ e ⊗ ρ^{⊗(l-1-k)}

gives, exactly,

    E - T = sum_j β_j a_j^{⊗l} + sum_i c_i σ_i^l sum_{k<l} w_i^{⊗k} ⊗ e_i ⊗ ρ_i^{⊗(l-1-k)},
    β_j = sum_{i -> j} c_i σ_i^l t_i^l - c*_j.

Every term is now of the size of the residual, and the squared norm of this list of ``r + m l``
rank-one (non-symmetric) terms is the Gram sum ``α^T (∏_k X_k X_k^T) α`` over the slots ``k``.
Its rounding is relative to the residual itself: in float64 relative errors are accurate to
~1e-4 down to ~1e-12 (the only absolute error left, ~1e-16 ``||T||``, comes from rounding
``ρ_i`` and the ``β_j`` sums). The identity holds for any assignment; alignment only decides
how small the terms are. Cost ``O(l (r + m l)^2 d)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtd._precision import matmul
from jaxtd.symcp import SymCP

__all__ = ["aligned_residual_sq"]


def _safe_norm(x, axis=-1, keepdims=False):
    """Norm whose value and derivative are finite at 0 (double ``where``)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _safe_unit(x):
    n = _safe_norm(x, keepdims=True)
    return x / jnp.where(n > 0, n, 1.0), n[..., 0]


def aligned_residual_sq(estimate: SymCP, target: SymCP) -> jax.Array:
    """``||estimate - target||_F^2`` from the aligned telescoped expansion (module docstring).

    ``estimate`` ``(m, d)`` and ``target`` ``(r, d)`` of one order ``l``, computed in their common
    float dtype; returns a scalar ``>= 0``.
    """
    dtype = jnp.result_type(estimate.weights, estimate.factors, target.weights, target.factors)
    estimate, target = (SymCP(t.weights.astype(dtype), t.factors.astype(dtype), t.order)
                        for t in (estimate, target))
    l = target.order
    c, u = estimate.weights, estimate.factors
    a_hat, a_norm = _safe_unit(target.factors)
    cos = matmul(u, a_hat.T)                                       # (m, r), unnormalized
    j = jnp.argmax(jnp.abs(cos), axis=1)                           # (m,)
    sigma = jnp.where(jnp.take_along_axis(cos, j[:, None], 1)[:, 0] < 0, -1.0, 1.0)
    sigma = sigma.astype(u.dtype)
    w = sigma[:, None] * u
    # rho_i = t_i a_j with t_i = ||w_i|| / ||a_j||: a component equal to a target one gives
    # t = 1, e = 0 and beta = 0 exactly (an exact fit is exactly 0)
    a_norm_j = a_norm[j]
    t = _safe_norm(w, axis=1) / jnp.where(a_norm_j > 0, a_norm_j, 1.0)
    rho = t[:, None] * target.factors[j]
    e = w - rho
    coef = c * sigma ** l                                          # (m,)
    beta = (jax.ops.segment_sum(coef * t ** l, j, num_segments=target.rank)
            - target.weights)                                       # (r,)
    # slot vectors of every term: (n, l, d) with n = r + m l
    weight_terms = jnp.repeat(target.factors[:, None, :], l, axis=1)
    tele = [jnp.stack([w] * k + [e] + [rho] * (l - 1 - k), axis=1) for k in range(l)]
    x = jnp.concatenate([weight_terms] + tele, axis=0)
    alpha = jnp.concatenate([beta] + [coef] * l)
    h = jnp.ones((x.shape[0], x.shape[0]), u.dtype)
    for k in range(l):
        h = h * matmul(x[:, k, :], x[:, k, :].T)
    return jnp.maximum(matmul(alpha, matmul(h, alpha)), 0.0)
