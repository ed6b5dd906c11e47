"""The lazy optimum without the dense normal equations: preconditioned conjugate gradients.

``min_Δ ||T(W0) + JΔ - T*||`` is the least-squares problem ``J^T J Δ = J^T y`` with
``y = T* - T(W0)``. Its ``(m d, m d)`` matrix has the closed-form blocks

    (J^T J)_ij = l c_i c_j [G_ij^{l-1} I_d + (l-1) G_ij^{l-2} w_j w_i^T],    G = W0 W0^T,

so one product with a ``(m, d)`` direction ``X`` costs three ``(m, m) x (m, d)`` matmuls,

    (J^T J X)_i = l sum_j c_i c_j [G_ij^{l-1} x_j + (l-1) G_ij^{l-2} <w_i, x_j> w_j],

``O(m^2 d)`` time and ``O(m^2 + m d)`` memory, against ``O((m d)^3)`` and ``O((m d)^2)`` for the
dense solve (:func:`jaxtd.lazy.lstsq`). :func:`cg_lstsq` runs preconditioned CG on these normal
equations (CGNE in Gram form) inside one ``jax.lax.while_loop`` (jit/vmap-able).

Preconditioner: block Jacobi, the inverse of the ``d x d`` diagonal blocks
``a_i I + b_i w_i w_i^T`` (``a_i = l c_i^2 |w_i|^{2(l-1)}``,
``b_i = l (l-1) c_i^2 |w_i|^{2(l-2)}``), applied in ``O(d)`` per row by Sherman–Morrison: ``(v - (l-1)/(l |w_i|^2) w_i <w_i, v>) / a_i``.
It equilibrates the rows (columns of ``J`` scale like ``|c_i| |w_i|^{l-1}``) and the radial
direction ``w_i`` (``l`` times stiffer than the tangential ones).

Residual. Each CG step lowers ``||y - JΔ||^2`` by exactly ``α_k ρ_k`` (``ρ_k = r_k^T z_k``), so the
squared residual is tracked as ``||y||^2 - sum_k α_k ρ_k``: positive terms subtracted once
(compensated sum). This is the quantity the dense solve subtracts too; evaluating
``||T(W0) + JΔ - T*||`` afresh in Gram form gives the same numbers to rounding (measured).

At and above the threshold (``J`` spans ``Sym^l``) ``J^T J`` is singular but the system is
consistent (``J^T y`` lies in the range of ``J^T``): CG from ``Δ = 0`` stays in that range and
converges there, to the minimum-norm solution, exactly as on a regular system restricted to the
range. The computed residual then stops at a rounding floor instead of 0: near the threshold the
optimum is far (``||Δ*|| >> ||W0||``) and every evaluation of the residual, the recurrence
included, cancels terms of size ``(||J|| ||Δ*||)^2``. :func:`residual_floor` bounds that
rounding (``sqrt(16 eps sum |terms|)``); a residual at or below it is reported as 0, the
counterpart of the dense solve's rank test. Measured (float64, standard init, random-unit rank-20
target, 4 seeds each): at the threshold of ``(d, l) = (4, 3), (8, 3), (16, 3), (3, 4), (4, 4),
(5, 3)`` the raw residual was 0 to 2e-5 and always 4-50x below the floor (floor 2e-7 to 3e-5);
at ``d = 32, l = 3, m = 187`` (square ``J``, ``m d = 5984``) raw 5e-6 / 0, floor 5e-5 / 1e-5.
One width below the threshold the residual is 1e-2 to 0.5 (0.07-0.08 at ``d = 32``), with floors
under 1e-5: the gap stays wide, and every case agreed with the dense solve. The floor grows like
``||Δ*||^2``: a seed whose square ``J`` is nearly singular (``||Δ*|| ~ 6e4 ||W0||``, ``d = 4``)
had a floor of 1.3e-3, so read ``floor`` before trusting a small nonzero residual.

Tolerance. ``tol`` bounds the relative *preconditioned normal-equation* residual
``||J^T (y - JΔ)||_{M^{-1}} / ||J^T y||_{M^{-1}}`` (``M`` the block-Jacobi matrix). The excess of
the squared least-squares residual over the optimum is ``r^T (J^T J)^+ r`` for that normal
residual ``r``: ``tol`` bounds it only through the smallest nonzero eigenvalue, tiny near the
threshold, hence the float64 default ``1e-10``, well past where the residual settles in every
case measured. ``converged`` is False when ``max_iter`` ran out first (the residual is then an
upper bound, as the CG residual only decreases).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd._precision import matmul
from jaxtd.losses import norm, residual_sq
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["LazyCG", "residual_floor", "normal_rhs", "normal_matvec", "block_jacobi", "cg_lstsq",
           "default_tol", "default_max_iter"]


class LazyCG(NamedTuple):
    """Result of :func:`cg_lstsq`.

    Attributes:
      delta: ``(m, d)`` the CG iterate, the minimum-norm minimizer once converged (zero on masked
        rows).
      residual: ``||T(W0) + JΔ - T*|| / ||T*||`` from the CG recurrence (module docstring), 0
        when at or below ``floor``, scalar.
      normal_residual: the convergence certificate: relative preconditioned normal-equation
        residual ``||J^T(y - JΔ)||_{M^{-1}} / ||J^T y||_{M^{-1}}`` (0 when ``J^T y = 0``), scalar.
      iterations: CG iterations done, int32 scalar.
      floor: rounding resolution of ``residual`` at this ``Δ`` (:func:`residual_floor`); a
        residual at or below it is reported as 0, scalar.
      converged: ``normal_residual <= tol`` (bool scalar).
      distance: ``||Δ||_F / ||W0||_F`` over the active rows, scalar.
    """
    delta: jax.Array
    residual: jax.Array
    normal_residual: jax.Array
    iterations: jax.Array
    converged: jax.Array
    distance: jax.Array
    floor: jax.Array


def default_tol(dtype) -> float:
    """``1e-10`` in float64, ``1e-4`` in float32 (module docstring, "Tolerance")."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def default_max_iter(width: int, dim: int) -> int:
    """``10 m d + 100``: in exact arithmetic CG ends within ``rank(J) <= m d`` steps; with
    rounding, a square ``J`` (at the threshold) took 2.6 ``m d`` (``d = 8``), 4.9 (``d = 16``) and
    3.3 (``d = 32``) steps at ``l = 3``; away from the threshold far fewer."""
    return 10 * int(width) * int(dim) + 100


def _parts(model: SymCP, target: SymCP):
    dtype = jnp.result_type(model.weights, model.factors, target.weights, target.factors)
    return (model.weights.astype(dtype), model.factors.astype(dtype), target.weights.astype(dtype),
            target.factors.astype(dtype))


def normal_rhs(model: SymCP, target: SymCP) -> jax.Array:
    """``J^T (T* - T(W0))`` as an ``(m, d)`` array: row ``i`` is
    ``l c_i sum_k b_k <w_i, v_k>^{l-1} v_k`` over the stacked components
    ``(b, V) = ([c*; -c], [A; W0])``. ``O((m + r) m d)``."""
    check_compatible(model, target, ("model", "target"))
    c, w, ct, a = _parts(model, target)
    l = model.order
    v = jnp.concatenate([a, w])
    b = jnp.concatenate([ct, -c])
    return (l * c)[:, None] * matmul(matmul(w, v.T) ** (l - 1) * b[None, :], v)


class _Gram(NamedTuple):
    """The loop-invariant ``(m, m)`` coefficient matrices of ``J^T J``."""
    tangential: jax.Array   # l c_i c_j G_ij^{l-1}
    radial: jax.Array       # l (l-1) c_i c_j G_ij^{l-2}
    factors: jax.Array      # W0 (m, d)


def _gram(c, w, order: int) -> _Gram:
    g = matmul(w, w.T)
    cc = order * (c[:, None] * c[None, :])
    g_lm2 = g ** (order - 2)          # integer power: g^0 = 1 exactly, so order 2 needs no case
    return _Gram(cc * g_lm2 * g, (order - 1) * cc * g_lm2, w)


def _matvec(gram: _Gram, x):
    # (J^T J X)_i = sum_j T_ij x_j + R_ij <w_i, x_j> w_j: three (m, m) x (m, d) products
    return matmul(gram.tangential, x) + matmul(gram.radial * matmul(gram.factors, x.T),
                                               gram.factors)


def normal_matvec(model: SymCP, x) -> jax.Array:
    """``J^T J X`` for an ``(m, d)`` array ``X`` (rows flattened as in
    :func:`jaxtd.lazy.normal_equations`), matrix-free, ``O(m^2 d)``."""
    c, w = model.weights, model.factors
    dtype = jnp.result_type(c, w, x)
    return _matvec(_gram(c.astype(dtype), w.astype(dtype), model.order), jnp.asarray(x, dtype))


def block_jacobi(model: SymCP):
    """``v -> D^{-1} v`` with ``D`` the ``d x d`` diagonal blocks of ``J^T J`` (``(m, d)`` arrays).

    Block ``i`` is ``a_i I + b_i w_i w_i^T`` with ``a_i = l c_i^2 |w_i|^{2(l-1)}`` and
    ``b_i = l (l-1) c_i^2 |w_i|^{2(l-2)}``; Sherman–Morrison (``a_i + b_i |w_i|^2 = l a_i``) gives
    ``D_i^{-1} v = (v - (l-1)/(l |w_i|^2) w_i <w_i, v>) / a_i``. Rows with a zero block (zero
    weight, i.e. masked, or a zero factor) get the identity: they carry no residual, so stay 0.
    """
    c, w, l = model.weights, model.factors, model.order
    n = jnp.sum(w * w, axis=1)
    a = l * c * c * n ** (l - 1)
    ok = a > 0
    inv_a = jnp.where(ok, 1.0 / jnp.where(ok, a, 1.0), 1.0)
    radial = jnp.where(ok, (l - 1) / (l * jnp.where(ok, n, 1.0)), 0.0)

    def apply(v):
        return inv_a[:, None] * (v - radial[:, None] * w * jnp.sum(w * v, axis=1, keepdims=True))

    return apply


class _CGState(NamedTuple):
    k: jax.Array
    x: jax.Array
    r: jax.Array
    p: jax.Array
    rho: jax.Array
    drop: jax.Array        # sum_k α_k ρ_k (compensated: drop + carry)
    carry: jax.Array


class _CGOut(NamedTuple):
    x: jax.Array
    drop: jax.Array
    normal_residual: jax.Array
    iterations: jax.Array
    converged: jax.Array


def _cg(gram: _Gram, precond, b, tol: float, max_iter: int) -> _CGOut:
    """Preconditioned CG on ``J^T J x = b`` from ``x = 0``; ``drop`` = total decrease of
    ``||y - Jx||^2`` (for any ``y`` with ``J^T y = b``)."""
    z = precond(b)
    rho0 = jnp.sum(b * z)
    stop = (tol * tol) * rho0
    zero = jnp.zeros((), b.dtype)
    init = _CGState(jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, z, rho0, zero, zero)

    def cond(s: _CGState):
        return (s.k < max_iter) & (s.rho > stop)

    def body(s: _CGState):
        q = _matvec(gram, s.p)
        pq = jnp.sum(s.p * q)
        # pq > 0 for p != 0 in the range of J^T J; guard the rounding case anyway
        alpha = jnp.where(pq > 0, s.rho / jnp.where(pq > 0, pq, 1.0), 0.0)
        x = s.x + alpha * s.p
        r = s.r - alpha * q
        z = precond(r)
        rho = jnp.sum(r * z)
        p = z + (rho / s.rho) * s.p
        # Kahan sum of the residual drops α ρ (each >= 0): thousands of terms near the threshold
        term = alpha * s.rho - s.carry
        total = s.drop + term
        carry = (total - s.drop) - term
        rho = jnp.where(pq > 0, rho, zero)     # breakdown (p = 0): stop here
        return _CGState(s.k + 1, x, r, p, rho, total, carry)

    out = jax.lax.while_loop(cond, body, init)
    ok = rho0 > 0
    normal = jnp.where(ok, jnp.sqrt(jnp.maximum(out.rho, 0.0) / jnp.where(ok, rho0, 1.0)), 0.0)
    return _CGOut(out.x, out.drop, normal, out.k, out.rho <= stop)


# Rounding-floor multiplier on the unit roundoff times the sum of magnitudes (module docstring).
_FLOOR_FACTOR = 16.0


def residual_floor(model: SymCP, delta, target: SymCP) -> jax.Array:
    """Relative rounding resolution of ``||T(W0) + JΔ - T*||`` near ``Δ``, scalar.

    ``sqrt(16 eps sum_ij |s_i s_j K_ij|) / ||T*||`` with ``s^T K s`` the Gram form of the squared
    lazy residual over the stacked rows ``[W0; A]`` (:func:`jaxtd.lazy.lazy_residual_sq`) and
    ``eps`` the dtype's unit roundoff: the classical error bound of that sum, dominated by
    ``(||J|| ||Δ||)^2`` once ``||Δ|| >> ||W0||``. Residuals below it are not resolved by any
    evaluation in this precision (the CG recurrence included: measured noise sits 10-1000x below
    the floor). ``O((m + r)^2 d)``.
    """
    check_compatible(model, target, ("model", "target"))
    c, w, ct, a = _parts(model, target)
    l = model.order
    x = jnp.asarray(delta, w.dtype)
    u = jnp.concatenate([w, a])
    e = jnp.concatenate([x, jnp.zeros_like(a)])
    s = jnp.abs(jnp.concatenate([c, ct]))
    g, p, q = jnp.abs(matmul(u, u.T)), jnp.abs(matmul(e, u.T)), jnp.abs(matmul(e, e.T))
    g_lm2 = g ** (l - 2)
    k = g_lm2 * g * (g + l * (p + p.T + q)) + (l * (l - 1)) * g_lm2 * (p * p.T)
    eps = jnp.finfo(w.dtype).eps / 2
    return jnp.sqrt(_FLOOR_FACTOR * eps * matmul(matmul(s, k), s)) / norm(target)


def _check_solver_args(tol, max_iter):
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                            or not 0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1) or None (the dtype's default), "
                         f"got {tol!r}")
    if max_iter is not None and (isinstance(max_iter, bool)
                                 or not isinstance(max_iter, (int, np.integer)) or max_iter < 1):
        raise ValueError(f"max_iter must be an int >= 1 or None (10 m d + 100), got {max_iter!r}")


def cg_lstsq(model: SymCP, target: SymCP, *, tol: float | None = None,
             max_iter: int | None = None) -> LazyCG:
    """Lazy least squares ``min_Δ ||T(W0) + JΔ - T*||`` by matrix-free preconditioned CG.

    Args:
      model: the initialization ``SymCP(c, W0, l)``, ``W0`` of shape ``(m, d)``. Rows of zero
        weight (masks) are excluded, as in the dense solve: no residual, ``Δ`` stays 0 there.
      target: ``SymCP(c*, A, l)``.
      tol: stop when the relative preconditioned normal-equation residual is ``<= tol``
        (default :func:`default_tol`: 1e-10 in float64); see the module docstring for what it
        guarantees.
      max_iter: iteration cap (default :func:`default_max_iter`).

    Returns a :class:`LazyCG`; ``delta`` is the minimum-norm minimizer (CG from ``Δ = 0`` never
    leaves the row space of ``J``). Costs ``O(m^2 d)`` per iteration and ``O(m^2 + m d)``
    memory; one ``jax.lax.while_loop``, so jit/vmap-able (under ``vmap`` the batch runs until its
    slowest member has stopped; finished members keep their values). **Use float64** for
    residuals below ~1e-3 (as for the dense solve).
    """
    check_compatible(model, target, ("model", "target"))
    _check_solver_args(tol, max_iter)
    m, d = model.factors.shape
    c, w, _, _ = _parts(model, target)
    dtype = w.dtype
    tol = default_tol(dtype) if tol is None else float(tol)
    max_iter = default_max_iter(m, d) if max_iter is None else int(max_iter)

    model = SymCP(c, w, model.order)
    sol = _cg(_gram(c, w, model.order), block_jacobi(model), normal_rhs(model, target), tol,
              max_iter)
    res_sq = jnp.maximum(residual_sq(model, target) - sol.drop, 0.0)
    residual = jnp.sqrt(res_sq) / norm(target)
    floor = residual_floor(model, sol.x, target)
    active = (c != 0).astype(dtype)
    w0_norm = jnp.sqrt(jnp.sum(active[:, None] * w * w))
    return LazyCG(delta=sol.x, residual=jnp.where(residual > floor, residual, 0.0),
                  normal_residual=sol.normal_residual, iterations=sol.iterations,
                  converged=sol.converged, distance=jnp.sqrt(jnp.sum(sol.x * sol.x)) / w0_norm,
                  floor=floor)
