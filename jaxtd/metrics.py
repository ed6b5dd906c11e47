"""Per-record metrics of a run (ALGORITHMS.md §F), as pure functions of SymCPs and arrays.

For a model ``T = sum_i c_i u_i^{⊗l}`` and a ground truth ``T* = sum_j c*_j a_j^{⊗l}`` with unit
directions ``ā_j = a_j / ||a_j||``:

- ``relative_error``: ``||T - T*|| / ||T*||``, accurate in float32 (:func:`jaxtd.relative_error`);
- ``fitted_weights``: ``T(ā_j^{⊗l}) = sum_i c_i <u_i, ā_j>^l``, the weight the model puts along
  each ground-truth direction; compared with ``true_weights`` ``c*_j ||a_j||^l``;
- ``best_correlation``: ``max_i |<ū_i, ā_j>|`` over the components with non-zero weight;
- ``active_count``: components whose tensor norm ``|c_i| ||u_i||^l`` reaches a fraction of the
  smallest ground-truth component's;
- ``distance``: ``||W - W0||_F / ||W0||_F`` (large = not lazy);
- ``fit_times``: per ground-truth component, the first recorded step at which the fitted weight
  reaches ``fraction`` (default one half) of the true weight, ``-1`` if never.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtd import losses
from jaxtd._precision import matmul
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["relative_error", "half_residual_sq", "true_weights", "fitted_weights",
           "best_correlation", "active_count", "distance", "fit_times", "record"]

relative_error = losses.relative_error


def half_residual_sq(model: SymCP, target: SymCP) -> jax.Array:
    """``1/2 ||T - T*||_F^2`` (the unregularized loss), accurate in float32; scalar."""
    return 0.5 * losses.residual_sq(jax.lax.stop_gradient(model), jax.lax.stop_gradient(target))


def _unit(a: jax.Array) -> jax.Array:
    n = jnp.linalg.norm(a, axis=-1, keepdims=True)
    return a / jnp.where(n > 0, n, 1.0)


def true_weights(target: SymCP) -> jax.Array:
    """``(r,)`` weights ``c*_j ||a_j||^l`` of the ground-truth components along their unit
    directions."""
    return target.weights * jnp.linalg.norm(target.factors, axis=-1) ** target.order


def fitted_weights(model: SymCP, target: SymCP) -> jax.Array:
    """``(r,)`` fitted weight ``sum_i c_i <u_i, ā_j>^l`` along each ground-truth direction."""
    check_compatible(model, target, ("model", "target"))
    g = matmul(model.factors, _unit(target.factors).T.astype(model.factors.dtype))  # (m, r)
    return matmul(model.weights, g ** model.order)


def best_correlation(model: SymCP, target: SymCP) -> jax.Array:
    """``(r,)`` ``max_i |<ū_i, ā_j>|`` over components with non-zero weight (0 if none)."""
    check_compatible(model, target, ("model", "target"))
    corr = jnp.abs(matmul(_unit(model.factors), _unit(target.factors).T.astype(model.factors.dtype)))
    live = (model.weights != 0)[:, None]
    return jnp.max(jnp.where(live, corr, 0.0), axis=0)


def active_count(model: SymCP, target: SymCP, fraction=0.1) -> jax.Array:
    """Number of components with ``|c_i| ||u_i||^l >= fraction * min_j |c*_j| ||a_j||^l``; int32."""
    size = jnp.abs(model.weights) * jnp.linalg.norm(model.factors, axis=-1) ** model.order
    threshold = fraction * jnp.min(jnp.abs(true_weights(target))).astype(size.dtype)
    return jnp.sum(size >= threshold).astype(jnp.int32)


def distance(params: jax.Array, params0: jax.Array, mask=None) -> jax.Array:
    """``||W - W0||_F / ||W0||_F`` over the rows where ``mask`` (``(m,)``, default all) is
    non-zero (``||W - W0||_F`` if ``W0 = 0``); scalar."""
    live = jnp.ones(params.shape[:1], bool) if mask is None else mask != 0
    live = live[:, None]
    den = jnp.sqrt(jnp.sum(jnp.where(live, params0 * params0, 0.0)))
    num = jnp.sqrt(jnp.sum(jnp.where(live, (params - params0) ** 2, 0.0)))
    return num / jnp.where(den > 0, den, 1.0)


def fit_times(fitted: jax.Array, true: jax.Array, steps: jax.Array, fraction=0.5) -> jax.Array:
    """First recorded step at which each component is fitted, ``-1`` if never.

    Args:
      fitted: ``(n_records, r)`` fitted weights.
      true: ``(r,)`` true weights (any sign: the test is ``fitted / true >= fraction``).
      steps: ``(n_records,)`` int step of each record.
    Returns:
      ``(r,)`` int32.
    """
    reached = fitted / true[None, :] >= fraction
    first = jnp.argmax(reached, axis=0)
    return jnp.where(jnp.any(reached, axis=0), steps[first], -1).astype(jnp.int32)


def record(model: SymCP, target: SymCP, params: jax.Array, params0: jax.Array, *, mask=None,
           active_fraction=0.1) -> dict:
    """All per-record metrics of §F except the step: a dict of scalars and ``(r,)`` arrays."""
    model, params = jax.lax.stop_gradient((model, params))
    half = half_residual_sq(model, target)  # the costly double-float sum, done once
    return {
        "loss": half,
        "relative_error": jnp.sqrt(2.0 * half) / losses.norm(jax.lax.stop_gradient(target)),
        "distance": distance(params, params0, mask),
        "active_count": active_count(model, target, active_fraction),
        "fitted_weight": fitted_weights(model, target),
        "best_correlation": best_correlation(model, target),
    }
