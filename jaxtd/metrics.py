"""Per-record metrics of a run (docs/algorithms.md), as pure functions of SymCPs and arrays.

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

Derivatives. Every float metric is differentiable (forward and reverse mode) in the model, the
target and the parameters: the loss and the relative error keep their accurate float32 values and
carry the derivative of the plain Gram form (:func:`half_residual_sq`); square roots and
norms use a double ``where`` so that a derivative at 0 (e.g. ``distance`` at the initial
iterate) is 0 rather than the ``0 * inf = NaN`` that would poison the reverse pass of a run even
when that metric's derivative is not asked for. ``active_count`` and ``fit_times`` are integers:
``jax.grad`` of them raises a ``TypeError`` and their forward tangents are ``float0``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxtd import losses
from jaxtd._aligned import aligned_residual_sq
from jaxtd._precision import matmul
from jaxtd.shapes import FitTimes, History, Params, PerComponent, RowMask, Scalar, Steps
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["relative_error", "half_residual_sq", "aligned_half_residual_sq", "true_weights", "fitted_weights",
           "best_correlation", "active_count", "distance", "fit_times", "record", "safe_sqrt"]


@jax.custom_jvp
def _with_derivative_of(value: jax.Array, proxy: jax.Array) -> jax.Array:
    """``value`` unchanged, carrying the derivative of ``proxy``: another formula for the same
    function whose value is less accurate but whose derivative is right. Forward and reverse
    mode (the tangent rule is linear); an undifferentiated program never computes ``proxy``."""
    return value


@_with_derivative_of.defjvp
def _with_derivative_of_jvp(primals, tangents):
    value, _ = primals
    return value, tangents[1].astype(value.dtype)


def half_residual_sq(model: SymCP, target: SymCP) -> Scalar:
    """``1/2 ||T - T*||_F^2`` (the unregularized loss), accurate in float32; scalar.

    Differentiable in ``model`` and ``target`` (forward and reverse mode, first order): the value
    is :func:`jaxtd.residual_sq`'s accurate one (whose extended-precision arithmetic is never
    differentiated), the derivative that of the plain Gram form :func:`jaxtd.losses.loss_autodiff`
    (the same function, so the same derivative up to float rounding).
    """
    accurate = 0.5 * losses.residual_sq(jax.lax.stop_gradient(model),
                                        jax.lax.stop_gradient(target))
    return _with_derivative_of(accurate, losses.loss_autodiff(model, target).astype(accurate.dtype))


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` whose derivative at ``x <= 0`` is 0, not ``inf`` (double ``where``)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def relative_error(model: SymCP, target: SymCP) -> Scalar:
    """``||T - T*|| / ||T*||``: the value of :func:`jaxtd.relative_error` (accurate in float32),
    differentiable like :func:`half_residual_sq` (derivative 0 at an exact fit); scalar.

    Differentiating costs a second accurate residual (the derivative of the square root needs
    it); the undifferentiated value costs one, as :func:`jaxtd.relative_error`.
    """
    accurate = losses.relative_error(jax.lax.stop_gradient(model), jax.lax.stop_gradient(target))
    proxy = safe_sqrt(2.0 * half_residual_sq(model, target)) / losses.norm(target)
    return _with_derivative_of(accurate, proxy.astype(accurate.dtype))


def _unit(a: jax.Array) -> jax.Array:
    n = safe_sqrt(jnp.sum(a * a, axis=-1, keepdims=True))
    return a / jnp.where(n > 0, n, 1.0)


def true_weights(target: SymCP) -> PerComponent:
    """``(r,)`` weights ``c*_j ||a_j||^l`` of the ground-truth components along their unit
    directions."""
    return target.weights * jnp.linalg.norm(target.factors, axis=-1) ** target.order


def fitted_weights(model: SymCP, target: SymCP) -> PerComponent:
    """``(r,)`` fitted weight ``sum_i c_i <u_i, ā_j>^l`` along each ground-truth direction."""
    check_compatible(model, target, ("model", "target"))
    g = matmul(model.factors, _unit(target.factors).T.astype(model.factors.dtype))  # (m, r)
    return matmul(model.weights, g ** model.order)


def best_correlation(model: SymCP, target: SymCP) -> PerComponent:
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


def distance(params: Params, params0: Params, mask: Optional[RowMask] = None) -> Scalar:
    """``||W - W0||_F / ||W0||_F`` over the rows where ``mask`` (``(m,)``, default all) is
    non-zero (``||W - W0||_F`` if ``W0 = 0``); scalar."""
    live = jnp.ones(params.shape[:1], bool) if mask is None else mask != 0
    live = live[:, None]
    den = safe_sqrt(jnp.sum(jnp.where(live, params0 * params0, 0.0)))
    num = safe_sqrt(jnp.sum(jnp.where(live, (params - params0) ** 2, 0.0)))
    return num / jnp.where(den > 0, den, 1.0)


def fit_times(fitted: History, true: PerComponent, steps: Steps, fraction=0.5) -> FitTimes:
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


def aligned_half_residual_sq(model: SymCP, target: SymCP) -> Scalar:
    """``1/2 ||T - T*||_F^2`` from the aligned expansion (:mod:`jaxtd._aligned`); scalar.

    A few Gram products (cheap to compile and to run, unlike the error-free float32 sums of
    :func:`half_residual_sq`) whose rounding is relative to the residual rather than to
    ``||T*||^2`` once the model is near a fit: in float32 relative errors are resolved to a few
    percent down to ~1e-5, in float64 to 1e-3 down to 1e-12. Differentiable (an exact identity
    for every assignment of components to target directions, which is piecewise constant).
    """
    check_compatible(model, target, ("model", "target"))
    return 0.5 * aligned_residual_sq(model, target)


def record(model: SymCP, target: SymCP, params: Params, params0: Params, *, mask=None,
           active_fraction=0.1, precise: bool = True) -> dict:
    """All per-record metrics (docs/results.md, history) except the step: a dict of scalars and ``(r,)`` arrays.

    ``precise`` (static): the loss and relative error from :func:`half_residual_sq` (accurate to
    1e-6 in float32, but ~20 matmuls and seconds of compilation); ``False``: from
    :func:`aligned_half_residual_sq` (what a run records in its history; its final values are
    the precise ones). Differentiable in every float entry (see the module docstring);
    ``active_count`` is int32.
    """
    half = (half_residual_sq if precise else aligned_half_residual_sq)(model, target)
    return {
        "loss": half,
        "relative_error": safe_sqrt(2.0 * half) / losses.norm(target),
        "distance": distance(params, params0, mask),
        "active_count": active_count(model, target, active_fraction),
        "fitted_weight": fitted_weights(model, target),
        "best_correlation": best_correlation(model, target),
    }
