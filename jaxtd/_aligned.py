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
import numpy as np

from jaxtd._precision import matmul
from jaxtd.symcp import SymCP

__all__ = ["aligned_residual_sq", "aligned_residual_sq_host"]


def _safe_norm(xp, x, axis=-1, keepdims=False):
    """Norm whose value and derivative are finite at 0 (double ``where``)."""
    sq = xp.sum(x * x, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, sq, 1.0)), 0.0)


def _safe_unit(xp, x):
    n = _safe_norm(xp, x, keepdims=True)
    return x / xp.where(n > 0, n, 1.0), n[..., 0]


def aligned_residual_sq(estimate: SymCP, target: SymCP) -> jax.Array:
    """``||estimate - target||_F^2`` from the aligned telescoped expansion (module docstring).

    ``estimate`` ``(m, d)`` and ``target`` ``(r, d)`` of one order ``l``, computed in their common
    float dtype; returns a scalar ``>= 0``.
    """
    dtype = jnp.result_type(estimate.weights, estimate.factors, target.weights, target.factors)
    estimate, target = (SymCP(t.weights.astype(dtype), t.factors.astype(dtype), t.order)
                        for t in (estimate, target))
    return _expansion(jnp, matmul, _segment_sum, estimate.weights, estimate.factors,
                      target.weights, target.factors, target.order)


def aligned_residual_sq_host(weights, factors, target_weights, target_factors,
                             order: int) -> np.ndarray:
    """The same expansion in float64 numpy, batched over leading axes: ``weights (..., m)``,
    ``factors (..., m, d)`` against one target ``(r,)``, ``(r, d)``; returns ``(...)``.

    Float32 inputs convert exactly, so in float64 the result resolves float32 models' relative
    errors to ~1e-4 down to 1e-12, with no compiled program (a grid computes its final errors
    this way after its compiled run).
    """
    weights = np.asarray(weights, np.float64)
    factors = np.asarray(factors, np.float64)
    batch = weights.shape[:-1]
    tw, tf = np.asarray(target_weights, np.float64), np.asarray(target_factors, np.float64)
    flat_w = weights.reshape((-1,) + weights.shape[-1:])
    flat_f = factors.reshape((-1,) + factors.shape[-2:])
    out = [_expansion(np, np.matmul, _segment_sum_host, c, u, tw, tf, int(order))
           for c, u in zip(flat_w, flat_f)]
    return np.asarray(out, np.float64).reshape(batch)


def _segment_sum(data, ids, n):
    return jax.ops.segment_sum(data, ids, num_segments=n)


def _segment_sum_host(data, ids, n):
    return np.bincount(ids, weights=data, minlength=n)


def _expansion(xp, mm, segment_sum, c, u, target_weights, target_factors, l):
    """The expansion itself, on arrays of the namespace ``xp`` (``jax.numpy`` or ``numpy``)."""
    a_hat, a_norm = _safe_unit(xp, target_factors)
    cos = mm(u, a_hat.T)                                           # (m, r), unnormalized
    j = xp.argmax(xp.abs(cos), axis=1)                             # (m,)
    sigma = xp.where(xp.take_along_axis(cos, j[:, None], 1)[:, 0] < 0, -1.0, 1.0)
    sigma = sigma.astype(u.dtype)
    w = sigma[:, None] * u
    # rho_i = t_i a_j with t_i = ||w_i|| / ||a_j||: a component equal to a target one gives
    # t = 1, e = 0 and beta = 0 exactly (an exact fit is exactly 0)
    a_norm_j = a_norm[j]
    t = _safe_norm(xp, w, axis=1) / xp.where(a_norm_j > 0, a_norm_j, 1.0)
    rho = t[:, None] * target_factors[j]
    e = w - rho
    coef = c * sigma ** l                                          # (m,)
    beta = segment_sum(coef * t ** l, j, target_weights.shape[0]) - target_weights   # (r,)
    # slot vectors of every term: (n, l, d) with n = r + m l
    weight_terms = xp.repeat(target_factors[:, None, :], l, axis=1)
    tele = [xp.stack([w] * k + [e] + [rho] * (l - 1 - k), axis=1) for k in range(l)]
    x = xp.concatenate([weight_terms] + tele, axis=0)
    alpha = xp.concatenate([beta] + [coef] * l)
    h = xp.ones((x.shape[0], x.shape[0]), u.dtype)
    for k in range(l):
        h = h * mm(x[:, k, :], x[:, k, :].T)
    return xp.maximum(mm(alpha, mm(h, alpha)), 0.0)
