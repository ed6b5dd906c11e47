"""The lazy model and its exact factored loss (see :mod:`jaxtd.lazy`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import _extended, models
from jaxtd._precision import matmul
from jaxtd._checks import check_finite
from jaxtd.losses import norm
from jaxtd.shapes import Params, Scalar
from jaxtd.symcp import SymCP, check_compatible, to_dense

__all__ = ["lazy_loss", "lazy_residual_sq", "lazy_relative_error", "linearize", "polarize"]


# -- validation (plain Python, before tracing) ----------------------------------------------------

def _check_model_target(model: Any, target: Any) -> None:
    check_compatible(model, target, ("model", "target"))


def _check_delta(model: SymCP, delta: Any, name: str = "delta") -> None:
    shape = getattr(delta, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array of shape {tuple(model.factors.shape)} "
                        f"(one perturbation row per model row), got {type(delta).__name__}")
    if tuple(shape) != tuple(model.factors.shape):
        raise ValueError(f"{name} must have the shape of model.factors, "
                         f"{tuple(model.factors.shape)} (width, dim), got {tuple(shape)}")
    check_finite(name, delta, "pass a finite perturbation")


# -- the factored kernel --------------------------------------------------------------------------

def _stacked(model: SymCP, delta, target: SymCP):
    """Rows ``[W0; A]``, weights ``[c; -c*]``, perturbations ``[Δ; 0]`` in one common dtype."""
    dtype = jnp.result_type(model.weights, model.factors, delta, target.weights, target.factors)
    u = jnp.concatenate([model.factors.astype(dtype), target.factors.astype(dtype)])
    s = jnp.concatenate([model.weights.astype(dtype), -target.weights.astype(dtype)])
    e = jnp.concatenate([delta.astype(dtype), jnp.zeros_like(target.factors, dtype)])
    return s, u, e


def _lazy_kernel(u, e, order: int):
    """``(n, n)`` matrix of ``<T_i + J e_i, T_j + J e_j>`` (module docstring)."""
    l = order
    g = matmul(u, u.T)
    p = matmul(e, u.T)
    q = matmul(e, e.T)
    g_lm2 = g ** (l - 2)          # integer power: g^0 = 1 exactly, so order 2 needs no case
    g_lm1 = g_lm2 * g
    return (g_lm1 * g + l * g_lm1 * (p + p.T + q) + (l * (l - 1)) * g_lm2 * (p * p.T))


def _lazy_sq(model: SymCP, delta, target: SymCP):
    s, u, e = _stacked(model, delta, target)
    return matmul(matmul(s, _lazy_kernel(u, e, model.order)), s)


def lazy_loss(model: SymCP, delta: Params, target: SymCP) -> Scalar:
    """Lazy loss ``1/2 ||T(W0) + J Δ - T*||_F^2``, exact, in factored form; scalar.

    Args:
      model: the initialization, ``SymCP(c, W0, l)`` with ``W0`` of shape ``(m, d)``. Rows whose
        weight is 0 (masked rows) contribute nothing and get zero gradient.
      delta: ``(m, d)`` factor perturbation ``Δ``.
      target: ``SymCP(c*, A, l)`` with ``A`` of shape ``(r, d)``.

    Costs ``O((m + r)^2 d)`` (never the ``d**l`` tensor); differentiable in every argument
    (``jax.grad`` in ``delta`` gives the lazy gradient ``J^T (T_lin - T*)``), jit/vmap-able.
    Evaluated as one Gram form, so in float32 it carries an absolute rounding error of about
    ``1e-7 ||T*||^2`` (use :func:`lazy_residual_sq` for reported values).
    """
    _check_model_target(model, target)
    _check_delta(model, delta)
    return 0.5 * _lazy_sq(model, delta, target)


def _lazy_sq_doublefloat(s, u, e, order: int):
    """Double-float ``s^T K s`` for float32 inputs (same kernel as :func:`_lazy_kernel`)."""
    ef = _extended
    l = order
    g = ef.gram(u, u)
    p = ef.gram(e, u)
    q = ef.gram(e, e)
    zero = jnp.zeros_like(g[0])
    ones = (jnp.ones_like(g[0]), zero)
    g_lm2 = ones
    for _ in range(l - 2):
        g_lm2 = ef.mul(g_lm2, g)
    g_lm1 = ef.mul(g_lm2, g)
    pt = (p[0].T, p[1].T)
    lin = ef.add(ef.add(p, pt), q)
    scal = lambda k: (jnp.full_like(g[0], k), zero)  # small integers are exact in float32
    k = ef.add(ef.mul(g_lm1, g), ef.mul(scal(l), ef.mul(g_lm1, lin)))
    k = ef.add(k, ef.mul(scal(l * (l - 1)), ef.mul(g_lm2, ef.mul(p, pt))))
    zs = jnp.zeros_like(s)
    k = ef.mul(k, (s[:, None], zs[:, None]))
    k = ef.mul(k, (s[None, :], zs[None, :]))
    hi, lo = ef.tree_sum(ef.tree_sum(k, axis=1), axis=0)
    return hi + lo


def lazy_residual_sq(model: SymCP, delta: Params, target: SymCP, *,
                     precise: bool = True) -> Scalar:
    """``||T(W0) + J Δ - T*||_F^2`` (``= 2 lazy_loss``), as accurate as the inputs allow; scalar.

    Near a fit the Gram terms (each ``O(||T*||^2)``) cancel. In float64 the plain sum is used
    (absolute error ~``1e-16 ||T*||^2``). In float32 with ``precise`` the kernel and its sum are
    evaluated in double-float arithmetic (~48 bits, :mod:`jaxtd._extended`), so the only error left
    is that of the float32 inputs themselves: relative errors ``sqrt(.)/||T*||`` stay meaningful
    down to ~1e-6. With ``precise=False`` (or for gradients) float32 cancellation limits the
    relative error to ~3e-4. Clamped at 0. Not meant for differentiation (use :func:`lazy_loss`).
    """
    _check_model_target(model, target)
    _check_delta(model, delta)
    s, u, e = _stacked(model, delta, target)
    if precise and u.dtype == jnp.float32:
        value = _lazy_sq_doublefloat(s, u, e, model.order)
    else:
        value = matmul(matmul(s, _lazy_kernel(u, e, model.order)), s)
    return jnp.maximum(value, 0.0)


def lazy_relative_error(model: SymCP, delta: Params, target: SymCP, *,
                        precise: bool = True) -> Scalar:
    """``||T(W0) + J Δ - T*||_F / ||T*||_F`` (see :func:`lazy_residual_sq`); scalar."""
    model, delta, target = jax.lax.stop_gradient((model, delta, target))
    return jnp.sqrt(lazy_residual_sq(model, delta, target, precise=precise)) / norm(target)


# -- the lazy tensor as a symmetric CP tensor ---------------------------------------------------

def _stencil(order: int) -> np.ndarray:
    """``α`` of ``p'(0) = sum_k α_k (p(k) - p(-k))`` for polynomials of degree ``<= 2K``."""
    k = (order + 1) // 2
    nodes = np.arange(1, k + 1, dtype=np.float64)
    powers = 2 * np.arange(k) + 1                          # odd moments 1, 3, ..., 2K-1
    vander = 2.0 * nodes[None, :] ** powers[:, None]       # (K, K)
    rhs = np.zeros(k)
    rhs[0] = 1.0
    return np.linalg.solve(vander, rhs)


def polarize(model: SymCP, delta: jax.Array) -> SymCP:
    """The lazy tensor ``T(W0) + JΔ`` as an exact SymCP of width ``m (1 + 2K)``, ``K = ⌈l/2⌉``.

    Args:
      model: ``SymCP(c, W0, l)``, ``W0`` of shape ``(m, d)``.
      delta: ``(m, d)``.
    Returns:
      SymCP with rows ``W0`` (weights ``c``) then, for ``k = 1..K``, ``W0 ± k h Δ`` (weights
      ``± c α_k / h``), ``h_i = ||w_i||/||δ_i||`` (1 where either is 0). See the module docstring.
    """
    w, c, l = model.factors, model.weights, model.order
    delta = delta.astype(w.dtype)
    nw, nd = models.safe_norm(w, axis=1), models.safe_norm(delta, axis=1)  # finite gradients at a zero (masked) row
    ok = (nw > 0) & (nd > 0)
    h = jnp.where(ok, nw / jnp.where(ok, nd, 1.0), 1.0)
    rows, weights = [w], [c]
    for k, alpha in enumerate(_stencil(l), start=1):
        for sign in (1.0, -1.0):
            rows.append(w + (sign * k) * h[:, None] * delta)
            weights.append((sign * alpha) * c / h)
    return SymCP(jnp.concatenate(weights), jnp.concatenate(rows), l)


# -- antisymmetric initialization -----------------------------------------------------------------

# -- the jax.linearize reference ------------------------------------------------------------------

def linearize(model: SymCP) -> Callable[[Params], jax.Array]:
    """The lazy model ``Δ -> T(W0) + J Δ`` as a dense tensor, built with ``jax.linearize``.

    ``model = SymCP(c, W0, l)`` is the initialization; weights stay fixed. The returned function
    maps ``Δ`` of shape ``(m, d)`` to the dense ``(d,)*l`` tensor. It materializes ``d**l``
    entries per call (and ``m d**l`` for the stored linearization): a reference for small ``d``;
    use :func:`lazy_loss` for anything else.
    """
    if not isinstance(model, SymCP):
        raise TypeError(f"model must be a jaxtd.SymCP, got {type(model).__name__}")
    c, order = model.weights, model.order
    t0, jvp = jax.linearize(lambda w: to_dense(SymCP(c, w, order)), model.factors)

    def lazy_model(delta):
        _check_delta(model, delta)
        return t0 + jvp(jnp.asarray(delta, model.factors.dtype))

    return lazy_model
