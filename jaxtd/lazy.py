"""The lazy (linearized, NTK-regime) model (docs/math.md, docs/algorithms.md).

Around an initialization ``W0`` (rows ``w_i``, fixed weights ``c``, order ``l``) the lazy model is

    T_lin(W0 + Δ) = T(W0) + J Δ,     J Δ = l sum_i c_i sym(δ_i ⊗ w_i^{⊗(l-1)}),

with ``Δ`` of shape ``(m, d)`` (the factor perturbation; weights stay fixed). Two implementations:

- :func:`linearize`: ``jax.linearize`` of the dense map ``W -> to_dense(SymCP(c, W, l))``. Exact by
  definition but it materializes ``d**l`` entries (and ``m d**l`` while tracing): the reference,
  for small ``d`` only.
- the exact factored twin, :func:`lazy_loss` / :func:`lazy_residual_sq`: every inner product of
  lazy tensors is a Gram form over the rows, costing ``O(m^2 d)`` for any ``d``.

The factored form rests on one kernel. For stacked components ``u_i`` with weights ``s_i`` and
perturbations ``e_i`` (zero for the target's rows), with ``g = <u_i,u_j>``, ``p_ij = <e_i,u_j>``,
``q_ij = <e_i,e_j>``:

    <T_i + J e_i, T_j + J e_j> = g^l + l (p_ij + p_ji) g^{l-1} + l q_ij g^{l-1}
                                 + l (l-1) p_ij p_ji g^{l-2},

the mixed Taylor terms of ``<u_i + s e_i, u_j + t e_j>^l`` (the polynomial is of degree one in
each of ``s`` and ``t`` after linearization, so this is exact), and
``||T(W0) + JΔ - T*||^2 = s^T K s`` over the stacked rows ``[W0; A]``, weights ``[c; -c*]``,
perturbations ``[Δ; 0]``. Rows with zero weight (masked rows) contribute nothing and receive
zero gradient.

Also here: :func:`antisymmetric` initialization (``T(W0) = 0``); the exact lazy optimum
:func:`lstsq` (dense normal equations in closed form, ``O((m d)^3)``), :func:`cg_lstsq`
(matrix-free preconditioned conjugate gradients in Gram form, ``O(m^2 d)`` per iteration;
:mod:`jaxtd.lazy_cg`) and :func:`best_residual` choosing between them (float64 needed for the
1e-6 threshold); :func:`best_residual_table`, a whole ``(seed, width)`` table of lazy optima at
the initializations of :func:`jaxtd.algorithms.lazy_gd` with one compiled program; the threshold
experiment :func:`threshold_experiment` (always float64, in a thread-local ``jax.enable_x64``
scope), :func:`predicted_critical_width`, :func:`fit_exponent`, :func:`local_exponents`,
:func:`threshold_slopes`; lazy training :func:`train` (any optax optimizer under ``lax.scan``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jaxtd import _extended
from jaxtd._precision import einsum, matmul
from jaxtd.initialization import init_factors
from jaxtd.lazy_cg import (LazyCG, block_jacobi, cg_lstsq, default_max_iter, default_tol,
                           normal_matvec, normal_rhs)
from jaxtd.shapes import ArrayLike, Params, Scalar
from jaxtd.symcp import SymCP, check_compatible, to_dense

__all__ = ["lazy_loss", "lazy_residual_sq", "lazy_relative_error", "antisymmetric", "linearize",
           "normal_equations", "lstsq", "best_residual", "LazyLstsq", "sym_dim",
           "cg_lstsq", "LazyCG", "normal_matvec", "normal_rhs", "block_jacobi", "default_tol",
           "default_max_iter", "METHODS", "DENSE_MAX_SIZE", "solver_for", "best_residual_table",
           "predicted_critical_width", "threshold_experiment", "Threshold", "fit_exponent",
           "local_exponents", "threshold_slopes", "near_threshold_widths",
           "LazyTrainState", "lazy_metrics", "train_init", "train_step", "train"]


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
    if not isinstance(delta, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(delta))):
        raise ValueError(f"{name} has non-finite entries (NaN or inf); pass a finite "
                         "perturbation")


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
    from jaxtd.losses import norm  # local: keeps the module's import surface small
    model, delta, target = jax.lax.stop_gradient((model, delta, target))
    return jnp.sqrt(lazy_residual_sq(model, delta, target, precise=precise)) / norm(target)


# -- antisymmetric initialization -----------------------------------------------------------------

def antisymmetric(key, width: int, dim: int, order: int, *, scale: str = "standard",
                  delta=1e-2, dtype=None) -> SymCP:
    """Antisymmetric initialization (docs/algorithms.md): rows in pairs ``(2k, 2k+1)`` with the same
    factor and weights ``+1, -1``, so ``T(W0) = 0`` for every order.

    Returns ``SymCP(c, W0, order)`` with ``W0`` of shape ``(width, dim)``: row ``i`` carries the
    factor of pair ``i // 2``, drawn like row ``i // 2`` of
    :func:`jaxtd.initialization.init_factors` (``fold_in(key, i // 2)``; ``scale``/``delta`` as
    there), and weight ``(-1)**i``. Rows are prefix-consistent: the first ``m`` rows (factors and
    weights) of a wider initialization equal the width-``m`` one.

    Odd widths are allowed: the last row is then an unpaired component of weight ``+1`` and
    ``T(W0) = w^{⊗l}`` for that row. This keeps prefix consistency, so a masked odd-width run
    inside a padded grid equals the standalone run; use an even width when ``T(W0) = 0`` matters.

    Note: a pair spans the tangent directions of one factor only, so the tangent space of a
    width-``2k`` antisymmetric model is that of ``k`` distinct components (the lazy threshold
    sits at twice the width of the standard initialization).
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 2:
        raise ValueError(f"order must be an int >= 2, got {order!r}")
    pairs = (int(width) + 1) // 2
    z = init_factors(key, pairs, dim, scale=scale, delta=delta, dtype=dtype)
    factors = jnp.repeat(z, 2, axis=0)[:width]
    weights = jnp.where(jnp.arange(width) % 2 == 0, 1.0, -1.0).astype(factors.dtype)
    return SymCP(weights, factors, int(order))


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


# -- the exact lazy optimum -----------------------------------------------------------------------

class LazyLstsq(NamedTuple):
    """Least-squares solution of the lazy model (see :func:`lstsq`).

    Attributes:
      delta: ``(m, d)`` minimum-norm minimizer ``Δ*`` (within the rank cut-off).
      residual: ``min_Δ ||T(W0) + JΔ - T*|| / ||T*||``, scalar.
      rank: numerical rank of ``J`` (tangent-space dimension), int scalar.
      distance: ``||Δ*||_F / ||W0||_F`` over the active rows, scalar (how far the optimum sits).
    """
    delta: jax.Array
    residual: jax.Array
    rank: jax.Array
    distance: jax.Array


def normal_equations(model: SymCP, target: SymCP) -> tuple[Float[ArrayLike, "md md"],
                                                           Float[ArrayLike, "md"]]:
    """The ``(m d, m d)`` matrix ``J^T J`` and the ``(m d,)`` vector ``J^T (T* - T(W0))`` in closed
    form (docs/math.md), rows flattened as ``i * d + a``; cost ``O(m^2 d^2 + m r d)``.

    Block ``(i, j)`` of ``J^T J`` is ``l c_i c_j [G_ij^{l-1} I_d + (l-1) G_ij^{l-2} w_j w_i^T]`` with
    ``G = W0 W0^T``; row ``i`` of ``J^T Y`` for ``Y = T(b, V)`` is ``l c_i sum_k b_k <w_i,v_k>^{l-1} v_k``.
    """
    _check_model_target(model, target)
    l = model.order
    dtype = jnp.result_type(model.weights, model.factors, target.weights, target.factors)
    c, w = model.weights.astype(dtype), model.factors.astype(dtype)
    m, d = w.shape
    g = matmul(w, w.T)
    cc = l * (c[:, None] * c[None, :])
    g_lm2 = g ** (l - 2)
    eye = jnp.eye(d, dtype=dtype)
    jtj = (einsum("ij,ab->iajb", cc * g_lm2 * g, eye)
           + (l - 1) * einsum("ij,ja,ib->iajb", cc * g_lm2, w, w)).reshape(m * d, m * d)
    v = jnp.concatenate([target.factors.astype(dtype), w])
    b = jnp.concatenate([target.weights.astype(dtype), -c])
    jty = (l * c)[:, None] * matmul(matmul(w, v.T) ** (l - 1) * b[None, :], v)
    return jtj, jty.reshape(m * d)


def default_rcond(dtype) -> float:
    """Eigenvalue cut-off of the Jacobi-scaled ``J^T J`` relative to its largest eigenvalue. In
    float64 the computed null eigenvalues sit below ~1e-16 and the smallest genuine ones, at the
    threshold width, at ~1e-8 for the sizes measured (d <= 16, l = 3, 4; lower for l = 5):
    1e-12 leaves margin on both sides."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def lstsq(model: SymCP, target: SymCP, *, rcond: float | None = None) -> LazyLstsq:
    """Exact least squares of the lazy model: ``min_Δ ||T(W0) + JΔ - T*||``.

    Builds the normal equations in closed form (:func:`normal_equations`; never the ``d**l``
    tensor), eigendecomposes the Jacobi-scaled ``S J^T J S`` (``S`` = diag of ``J^T J`` to the
    ``-1/2``) and keeps eigenvalues above ``rcond * λ_max`` (default :func:`default_rcond`); the
    count is the numerical ``rank``. ``delta`` is the minimum-norm minimizer, from a second
    eigendecomposition of the unscaled ``J^T J`` truncated to the same rank (two ``eigh`` of size
    ``m d``). The squared residual is ``||T* - T(W0)||^2 - sum_k (v_k^T S J^T y)^2/λ_k``:
    a sum of positive terms subtracted once, so in float64 its absolute error is ~1e-16 ||T*||^2
    and a fitted target comes out at ``<= 1e-7``, not a noisy 1e-3. **Use float64**
    (``jax_enable_x64``): in float32 the squared condition number of ``J^T J`` limits the relative
    residual to ~1e-3 and the rank to ~4 digits.

    By Euler's identity ``J W0 = l T(W0)``, ``T(W0)`` lies in the tangent space, so the residual
    is the distance from ``T*`` to the tangent space for any initialization (not only the
    antisymmetric one). Rows with zero weight (masks) are excluded: their diagonal blocks are
    replaced by the identity (scaled) and their right-hand side is 0, so they neither count in
    ``rank`` nor move. Memory ``O((m d)^2)``, time ``O((m d)^3)``; jit/vmap-able.
    """
    _check_rcond(rcond)
    jtj, jty = normal_equations(model, target)
    m, d = model.factors.shape
    l = model.order
    dtype = jtj.dtype
    rcond = default_rcond(dtype) if rcond is None else float(rcond)
    masked = jnp.repeat(model.weights == 0, d)
    n_masked = jnp.sum(masked)
    # Rank and residual from the Jacobi-scaled matrix S J^T J S (same range as J, but column norms
    # ~ |c_i| ||w_i||^{l-1} equilibrated: a short row no longer hides a genuine direction below
    # the cut-off). Masked rows get identity blocks and zero right-hand side: never cut, no effect.
    diag = jnp.diagonal(jtj)
    scale = jnp.where(masked | (diag <= 0), 1.0, jax.lax.rsqrt(jnp.where(diag > 0, diag, 1.0)))
    lam_s, vec_s = jnp.linalg.eigh(scale[:, None] * jtj * scale[None, :]
                                   + jnp.diag(masked.astype(dtype)))
    keep_s = lam_s > rcond * lam_s[-1]
    coef_s = matmul(vec_s.T, scale * jty)
    proj_sq = jnp.sum(jnp.where(keep_s, coef_s ** 2 / jnp.where(keep_s, lam_s, 1.0), 0.0))
    kept = jnp.sum(keep_s)
    rank = kept - n_masked
    # The minimum-norm minimizer lives in the unscaled coordinates: truncated eigen-solution of
    # J^T J keeping the same number of directions.
    diag_max = jnp.maximum(jnp.max(diag), jnp.finfo(dtype).tiny)
    lam, vec = jnp.linalg.eigh(jtj + jnp.diag(jnp.where(masked, diag_max, 0.0).astype(dtype)))
    keep = (jnp.arange(m * d) >= m * d - kept) & (lam > 0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    delta = matmul(vec, inv * matmul(vec.T, jty)).reshape(m, d)
    from jaxtd.losses import loss, norm
    res_sq = jnp.maximum(2.0 * loss(target, model) - proj_sq, 0.0)
    # A tangent space of full dimension C(d+l-1, l) contains T*: the residual is then exactly 0,
    # which the subtraction above only reaches to ~sqrt(eps) * cond(J) near the threshold.
    res_sq = jnp.where(rank >= sym_dim(d, l), 0.0, res_sq)
    active = (model.weights != 0).astype(dtype)
    w0_norm = jnp.sqrt(jnp.sum(active[:, None] * model.factors.astype(dtype) ** 2))
    return LazyLstsq(delta=delta, residual=jnp.sqrt(res_sq) / norm(target), rank=rank,
                     distance=jnp.linalg.norm(delta) / w0_norm)


def _check_rcond(rcond) -> None:
    if rcond is None or isinstance(rcond, jax.core.Tracer):
        return
    if isinstance(rcond, bool) or not isinstance(rcond, (int, float, np.integer, np.floating)):
        raise TypeError(f"rcond must be a number in [0, 1) or None, got {rcond!r}")
    if not 0 <= float(rcond) < 1:
        raise ValueError(f"rcond must be in [0, 1) (eigenvalues below rcond * the largest are "
                         f"cut), got {rcond!r}; None picks the default for the dtype")


def sym_dim(dim: int, order: int) -> int:
    """``dim Sym^l(R^d) = C(d + l - 1, l)``: the dimension of symmetric order-``l`` tensors."""
    return math.comb(dim + order - 1, order)


METHODS = ("auto", "dense", "iterative")

# "auto" solves densely up to this many unknowns m*d. Measured (float64, 2 shared CPU cores, after
# compilation): one solve at m d = 128 / 512 / 1024: dense 0.25 s / 0.13 s / 2.9 s, CG 1 ms / 1 ms /
# 8 ms; a 2-seed x 44-width table at d = 8, l = 3 (m d = 384): dense 15.5 s, CG 0.1 s (7 s with
# its compilation). Tiny problems keep the dense solve (compiles faster, exact rank); the rest
# gains orders of magnitude from CG, and both agree (tests/test_lazy_cg.py).
DENSE_MAX_SIZE = 128


def _check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def solver_for(method: str, width: int, dim: int) -> str:
    """``"dense"`` or ``"iterative"``: what ``method`` (one of :data:`METHODS`) runs for a
    width-``width`` model in dimension ``dim`` (``"auto"``: dense iff ``width*dim <=``
    :data:`DENSE_MAX_SIZE`)."""
    _check_method(method)
    if method != "auto":
        return method
    return "dense" if int(width) * int(dim) <= DENSE_MAX_SIZE else "iterative"


def best_residual(model: SymCP, target: SymCP, *, rcond: float | None = None,
                  method: str = "auto", tol: float | None = None,
                  max_iter: int | None = None) -> Scalar:
    """``min_Δ ||T(W0) + JΔ - T*||_F / ||T*||_F``, scalar (use float64).

    ``method``: ``"dense"`` (:func:`lstsq`, eigendecomposition of the normal equations, exact 0
    once the tangent space spans ``Sym^l``; ``rcond`` applies), ``"iterative"``
    (:func:`cg_lstsq`, matrix-free CG, ``tol``/``max_iter`` apply; residuals below their rounding
    floor, :func:`jaxtd.lazy_cg.residual_floor`, come out as 0) or ``"auto"``
    (:func:`solver_for`: dense up to ``m d =`` :data:`DENSE_MAX_SIZE`). The two agree to ~1e-9
    wherever both were compared, at the threshold included. For the iterative convergence
    certificate (normal-equation residual, iterations, floor) call :func:`cg_lstsq`.
    """
    _check_model_target(model, target)
    m, d = model.factors.shape
    if solver_for(method, m, d) == "dense":
        return lstsq(model, target, rcond=rcond).residual
    return cg_lstsq(model, target, tol=tol, max_iter=max_iter).residual


# -- a table of lazy optima at the lazy GD initializations ----------------------------------------

class _Cell(NamedTuple):
    residual: jax.Array
    rank: jax.Array          # int32; -1 for the iterative solver (no rank)
    distance: jax.Array
    iterations: jax.Array    # int32; -1 for the dense solver
    converged: jax.Array


def _solve_cell(model: SymCP, target: SymCP, solver: str, rcond, tol, max_iter) -> _Cell:
    if solver == "dense":
        out = lstsq(model, target, rcond=rcond)
        return _Cell(out.residual, out.rank.astype(jnp.int32), out.distance,
                     jnp.full((), -1, jnp.int32), jnp.ones((), bool))
    out = cg_lstsq(model, target, tol=tol, max_iter=max_iter)
    return _Cell(out.residual, jnp.full((), -1, jnp.int32), out.distance, out.iterations,
                 out.converged)


def _lazy_gd_init(key, target: SymCP, width: int, init: str, signs: str, init_scale) -> SymCP:
    """The width-``width`` initialization of ``jaxtd.algorithms.lazy_gd(init=init, signs=signs,
    init_scale=init_scale).init(key, target, width).model``, drawn the same way in the target's
    dtype (the same bits; checked by the tests)."""
    from jaxtd import models  # local: jaxtd.models is not needed for the rest of this module
    dtype = target.factors.dtype
    k_w, k_s = jax.random.split(key)
    if init == "antisymmetric":
        m0 = antisymmetric(k_w, width, target.dim, target.order, scale="standard", dtype=dtype)
        w0, c = m0.factors, m0.weights
    else:
        w0 = init_factors(k_w, width, target.dim, scale="standard", dtype=dtype)
        c = models.draw_signs(k_s, width, target.order, signs, dtype)
    return SymCP(c, init_scale * w0, target.order)


def _to64(t: SymCP) -> SymCP:
    return SymCP(t.weights.astype(jnp.float64), t.factors.astype(jnp.float64), t.order)


@functools.partial(jax.jit, static_argnames=("top", "init", "signs", "solver", "rcond", "tol",
                                             "max_iter", "batch_size"))
def _table_program(keys, target, widths, init_scale, *, top, init, signs, solver, rcond, tol,
                   max_iter, batch_size):
    """``(len(widths), len(keys))`` lazy optima: the width-``top`` init per key, rows ``>= m``
    masked for each width ``m``; ``lax.map`` over widths (``batch_size`` at a time), ``vmap`` over
    keys. Traced under ``jax.enable_x64``; the inits are drawn in the target's own dtype."""
    inits = jax.vmap(lambda k: _to64(_lazy_gd_init(k, target, top, init, signs, init_scale)))(keys)
    tgt = _to64(target)
    rows = jnp.arange(top, dtype=jnp.int32)

    def per_width(m):
        mask = (rows < m).astype(jnp.float64)
        cell = lambda mo: _solve_cell(SymCP(mo.weights * mask, mo.factors, mo.order), tgt, solver,
                                      rcond, tol, max_iter)
        return jax.vmap(cell)(inits).residual

    return jax.lax.map(per_width, widths, batch_size=batch_size)


def _check_keys(keys):
    if isinstance(keys, (list, tuple)):
        if not keys:
            raise ValueError("keys must hold at least one PRNG key")
        keys = jnp.stack([jnp.asarray(k) for k in keys])
    dtype = getattr(keys, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if typed and keys.ndim == 1 and keys.shape[0] >= 1:
        return keys
    if (not typed and dtype == jnp.uint32 and getattr(keys, "ndim", 0) == 2
            and keys.shape[0] >= 1 and keys.shape[1] == 2):
        return jnp.asarray(keys)
    raise TypeError("keys must be a non-empty stack of PRNG keys: shape (n,) typed keys "
                    "(jnp.stack of jax.random.key) or (n, 2) uint32 (jax.random.PRNGKey, "
                    f"jaxtd.key_for_seed), got {type(keys).__name__} "
                    f"{getattr(keys, 'shape', '')} {dtype}")


def _check_widths(widths, name: str = "widths") -> list:
    try:
        ws = [w for w in widths]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints >= 1, got {widths!r}") from None
    if not ws or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 1
                         for w in ws):
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {widths!r}")
    return [int(w) for w in ws]


def best_residual_table(keys, target: SymCP, widths, *, init: str = "standard",
                        signs: str = "auto", init_scale: float = 1.0, method: str = "auto",
                        rcond: float | None = None, tol: float | None = None,
                        max_iter: int | None = None, batch_size: int = 1) -> np.ndarray:
    """Best lazy residuals for every (key, width) at the initializations of lazy GD; one compile.

    Cell ``(s, j)`` is :func:`best_residual` at the very ``W0`` (and weights) of
    ``jaxtd.algorithms.lazy_gd(init=init, signs=signs, init_scale=init_scale).init(keys[s],
    target, widths[j])``: the width-``max(widths)`` initialization is drawn once per key, in the
    target's dtype exactly as lazy GD draws it (row ``i`` from ``fold_in``, so every width is a
    prefix), and each width masks the rows ``>= m`` (zero weight). Every cell is then solved in
    float64 (inside ``jax.enable_x64``, a thread-local scope): float32 normal equations cannot
    resolve a zero residual.

    Args:
      keys: ``(n,)`` typed PRNG keys or ``(n, 2)`` uint32 keys (e.g. ``jnp.stack`` of
        :func:`jaxtd.key_for_seed`), or a list of keys.
      target: ``SymCP`` of any float dtype (the inits are drawn in it).
      widths: sequence of ints ``>= 1`` (any order; columns follow it).
      init, signs, init_scale: as in :func:`jaxtd.algorithms.lazy_gd` (the residual depends on
        neither ``init_scale`` nor the signs in exact arithmetic: the tangent space does not).
      method: :data:`METHODS`, resolved by :func:`solver_for` at the size ``max(widths) * d``
        that every cell is solved at; ``rcond`` (dense), ``tol``/``max_iter`` (iterative) apply.
      batch_size: widths solved at once (``lax.map`` batches; each batch vmaps over keys too).

    Returns:
      ``(len(keys), len(widths))`` float64 numpy array.

    One compiled program per call shape (number of keys, number of widths, ``max(widths)``,
    target shape and dtype, static options): the widths themselves are traced, so another grid
    of the same length and maximum reuses it. Cost: ``len(keys) * len(widths)`` solves of size
    ``max(widths) * d`` (masked rows cost as much as active ones).
    """
    from jaxtd import models
    keys = _check_keys(keys)
    check_compatible(target, target, ("target", "target"))
    ws = _check_widths(widths)
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")
    if signs not in models.SIGN_RULES:
        raise ValueError(f"signs must be one of {models.SIGN_RULES}, got {signs!r}")
    if (isinstance(init_scale, bool) or not isinstance(init_scale, (int, float))
            or not init_scale > 0):
        raise ValueError(f"init_scale must be a float > 0, got {init_scale!r}")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    from jaxtd.lazy_cg import _check_solver_args
    _check_solver_args(tol, max_iter)
    top = max(ws)
    solver = solver_for(method, top, target.dim)
    with jax.enable_x64(True):
        scale = jnp.asarray(init_scale, target.factors.dtype)
        out = _table_program(keys, target, jnp.asarray(ws, jnp.int32), scale, top=top,
                             init=init, signs=signs, solver=solver,
                             rcond=None if rcond is None else float(rcond),
                             tol=None if tol is None else float(tol),
                             max_iter=None if max_iter is None else int(max_iter),
                             batch_size=int(batch_size))
        return np.asarray(out, np.float64).T


# -- the threshold experiment ---------------------------------------------------------------------

# Alexander–Hirschowitz: (order, dim, width) where the tangent space falls one short of
# min(m d, C(d+l-1, l)) for generic W0 (besides order 2).
AH_EXCEPTIONS = ((4, 3, 5), (4, 4, 9), (4, 5, 14), (3, 5, 7))


def predicted_critical_width(dim: int, order: int) -> int:
    """Expected ``m*(d, l)`` for a generic ``W0`` and target (standard, non-antisymmetric init):
    ``⌈C(d+l-1, l) / d⌉``, except order 2 (the tangent space has dimension ``md - m(m-1)/2``, so
    ``m* = d``) and the Alexander–Hirschowitz exceptions (one more)."""
    if order == 2:
        return int(dim)
    m = -(-sym_dim(dim, order) // dim)
    return m + 1 if (order, dim, m) in AH_EXCEPTIONS else m


def _predicted(d: int, l: int, init: str) -> int:
    # antisymmetric: k distinct factors at widths 2k - 1 and 2k (a pair spans one factor's
    # tangent directions, as does the unpaired last row of an odd width)
    m = predicted_critical_width(d, l)
    return 2 * m - 1 if init == "antisymmetric" else m


def near_threshold_widths(below: int = 2, above: int = 2, init: str = "standard") -> Callable:
    """``widths`` for :func:`threshold_experiment`: ``(dim, order) -> [p - below, p + above]``
    around the predicted critical width ``p`` (of ``init``), clipped at 1. Solving only there is
    what makes large ``d`` affordable; ``critical`` is then only found inside that window (a
    window whose smallest width already fits says so: its residual is ``<= tol`` there)."""
    for name, v in (("below", below), ("above", above)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")

    def widths(d, l):
        p = _predicted(int(d), int(l), init)
        return list(range(max(1, p - below), p + above + 1))

    return widths


class Threshold(NamedTuple):
    """Output of :func:`threshold_experiment`.

    Attributes:
      table: ``pandas.DataFrame`` with one row per (dim, order, seed, width): columns ``dim, order,
        seed, width, residual`` (best lazy relative residual), ``rank`` (tangent-space dimension;
        ``<NA>`` for the iterative solver), ``sym_dim`` (``C(d+l-1, l)``), ``distance``
        (``||Δ*|| / ||W0||``, ``Δ*`` the minimum-norm optimum), ``solver`` (``"dense"`` or
        ``"iterative"``), ``iterations`` and ``converged`` (CG; ``<NA>`` / True for dense).
      critical: ``{(dim, order): m*}``, the smallest grid width whose residual is ``<= tol`` for
        every seed (``None`` if no width of the grid reaches it).
      predicted: ``{(dim, order): m*}`` from :func:`predicted_critical_width` (antisymmetric init:
        ``2 m* - 1``, the width holding ``m*`` distinct factors).
    """
    table: Any
    critical: dict
    predicted: dict


def _check_cases(cases):
    out = []
    for case in cases:
        if (not isinstance(case, (tuple, list)) or len(case) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in case)):
            raise TypeError(f"cases must be a sequence of (dim, order) int pairs, got {case!r}")
        d, l = int(case[0]), int(case[1])
        if d < 1 or l < 2:
            raise ValueError(f"cases entries need dim >= 1 and order >= 2, got {case!r}")
        out.append((d, l))
    if not out:
        raise ValueError("cases must hold at least one (dim, order) pair")
    return out


def _case_widths(widths, d, l):
    ws = widths(d, l) if callable(widths) else (
        range(1, predicted_critical_width(d, l) + 3) if widths is None else widths)
    ws = sorted({int(w) for w in ws})
    if not ws or ws[0] < 1:
        raise ValueError(f"widths must be positive ints, got {ws!r} for (dim, order) = ({d}, {l})")
    return ws


def _masked_solve(model: SymCP, target: SymCP, masks, *, solver, rcond, tol, max_iter,
                  batch_size) -> _Cell:
    """:func:`_solve_cell` of ``model`` with weights times each row of ``masks``
    ``(n_widths, M)``."""
    return jax.lax.map(lambda mk: _solve_cell(SymCP(model.weights * mk, model.factors, model.order),
                                              target, solver, rcond, tol, max_iter),
                       masks, batch_size=batch_size)


def threshold_experiment(cases, *, widths=None, seeds: int = 1, target_rank: int = 20,
                         init: str = "standard", tol: float = 1e-6,
                         rcond: float | None = None, key=0, batch_size: int = 8,
                         method: str = "auto", cg_tol: float | None = None,
                         max_iter: int | None = None) -> Threshold:
    """Best lazy residual over a grid of widths for several ``(dim, order)``; the critical widths.

    For each case and seed: ``W0`` of the largest grid width (rows prefix-consistent,
    ``scale="standard"``, unit weights; or :func:`antisymmetric` with ``init="antisymmetric"``) and
    a generic target (``target_rank`` random unit components, unit weights); every width ``m`` is
    the same ``W0`` with rows ``>= m`` masked, and the solve is mapped over the masks
    (``jax.lax.map`` in batches of ``batch_size``, so one compiled solve serves the whole grid).

    Args:
      cases: sequence of ``(dim, order)``.
      widths: ``None`` (``1 .. predicted + 2``), a sequence of widths, or a callable
        ``(dim, order) -> widths`` such as :func:`near_threshold_widths`. ``critical`` is only as
        fine as the grid.
      seeds, target_rank, init, rcond, key: as described above; ``key`` an int or PRNG key.
      tol: residual cut for ``critical`` (both solvers report 0 for a fitted target; just below
        the threshold the residual is ``>= 1e-2`` at every size measured, so the cut is not
        delicate).
      method: :data:`METHODS`, resolved per case at the size ``max(widths) * d``
        (:func:`solver_for`); ``cg_tol`` and ``max_iter`` go to :func:`cg_lstsq`.

    The computation always runs in float64 (inside ``jax.enable_x64(True)``, a thread-local
    scope: the global setting is left alone), because the 1e-6 threshold is below what the
    float32 normal equations can resolve. Cost per case and seed: ``len(widths)`` solves of size
    ``M d`` (``M`` the largest width): ``O((M d)^3)`` dense, ``O(M^2 d)`` per CG iteration
    (iterations: a few ``M d`` for a square ``J``, far fewer away from the threshold).
    """
    cases = _check_cases(cases)
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")
    for name, v in (("seeds", seeds), ("target_rank", target_rank), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
        raise ValueError(f"tol must be a float >= 0, got {tol!r}")
    _check_method(method)
    from jaxtd.lazy_cg import _check_solver_args
    _check_solver_args(cg_tol, max_iter)
    import pandas as pd
    from jaxtd.targets import random_unit

    rows, critical, predicted = [], {}, {}
    with jax.enable_x64(True):
        base = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
        for d, l in cases:
            ws = _case_widths(widths, d, l)
            top = ws[-1]
            solver = solver_for(method, top, d)
            solve = jax.jit(functools.partial(_masked_solve, solver=solver, rcond=rcond,
                                              tol=cg_tol, max_iter=max_iter,
                                              batch_size=batch_size))
            fits = []
            for seed in range(seeds):
                k_init, k_target = jax.random.split(jax.random.fold_in(base, seed))
                if init == "antisymmetric":
                    model = antisymmetric(k_init, top, d, l, dtype=jnp.float64)
                else:
                    model = SymCP(jnp.ones((top,), jnp.float64),
                                  init_factors(k_init, top, d, scale="standard",
                                               dtype=jnp.float64), l)
                tgt = random_unit(k_target, d, target_rank, l, dtype=jnp.float64)
                masks = (jnp.arange(top)[None, :] < jnp.asarray(ws)[:, None]).astype(jnp.float64)
                out = jax.device_get(solve(model, tgt, masks))
                for i, w in enumerate(ws):
                    rows.append(dict(dim=d, order=l, seed=seed, width=w,
                                     residual=float(out.residual[i]),
                                     rank=int(out.rank[i]) if solver == "dense" else pd.NA,
                                     sym_dim=sym_dim(d, l), distance=float(out.distance[i]),
                                     solver=solver,
                                     iterations=(int(out.iterations[i]) if solver == "iterative"
                                                 else pd.NA),
                                     converged=bool(out.converged[i])))
                ok = [w for w, r in zip(ws, out.residual) if r <= tol]
                fits.append(ok[0] if ok else None)
            critical[(d, l)] = None if None in fits else max(fits)
            predicted[(d, l)] = _predicted(d, l, init)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.astype({"rank": "Int64", "iterations": "Int64"})
    return Threshold(table, critical, predicted)


def fit_exponent(dims, widths) -> float:
    """Least-squares slope of ``log m*`` against ``log d`` (the lazy theory: ``-> l - 1``)."""
    x, y = np.log(np.asarray(dims, np.float64)), np.log(np.asarray(widths, np.float64))
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"dims and widths must be equal-length sequences of >= 2 positive values, "
                         f"got {len(x)} and {len(y)}")
    return float(np.polyfit(x, y, 1)[0])


def local_exponents(dims, widths) -> np.ndarray:
    """``(n - 1,)`` local slopes ``log(m_{k+1}/m_k) / log(d_{k+1}/d_k)`` between consecutive
    ``dims`` (sorted increasing, distinct). For the rule ``m* ~ C(d+l-1, l)/d`` they are
    ``~ sum_{k=1}^{l-1} d/(d+k)``, rising towards ``l - 1`` (rule, l = 3: 1.58, 1.77, 1.87 for
    d = 4 -> 8 -> 16 -> 32; l = 4: 2.07, 2.53 for d = 4 -> 8 -> 16), which is why a global fit
    over small ``d`` falls short of ``l - 1``."""
    x, y = np.log(np.asarray(dims, np.float64)), np.log(np.asarray(widths, np.float64))
    if x.shape != y.shape or x.ndim != 1 or x.size < 2 or not np.all(np.isfinite(x + y)):
        raise ValueError(f"dims and widths must be equal-length sequences of >= 2 positive values, "
                         f"got {np.shape(dims)} and {np.shape(widths)}")
    if not np.all(np.diff(x) > 0):
        raise ValueError(f"dims must be strictly increasing, got {list(dims)}")
    return np.diff(y) / np.diff(x)


def threshold_slopes(result: Threshold):
    """Local slopes of the measured critical width beside the exact rule's, per order.

    Returns a ``pandas.DataFrame`` with one row per consecutive pair of dims of an order (cases
    whose critical width was not found are skipped): ``order, dim_lo, dim_hi, critical_lo,
    critical_hi, measured`` (:func:`local_exponents` of the measured ``m*``), ``rule`` (the same
    for :func:`predicted_critical_width`, or the antisymmetric ``2 m* - 1``) and ``asymptote``
    (``l - 1``).
    """
    import pandas as pd
    if not isinstance(result, Threshold):
        raise TypeError(f"result must be a Threshold (threshold_experiment), got "
                        f"{type(result).__name__}")
    out = []
    for l in sorted({l for _, l in result.critical}):
        dims = sorted(d for d, ll in result.critical if ll == l and result.critical[(d, ll)])
        if len(dims) < 2:
            continue
        meas = local_exponents(dims, [result.critical[(d, l)] for d in dims])
        rule = local_exponents(dims, [result.predicted[(d, l)] for d in dims])
        for k in range(len(dims) - 1):
            out.append(dict(order=l, dim_lo=dims[k], dim_hi=dims[k + 1],
                            critical_lo=result.critical[(dims[k], l)],
                            critical_hi=result.critical[(dims[k + 1], l)],
                            measured=float(meas[k]), rule=float(rule[k]), asymptote=l - 1))
    return pd.DataFrame(out, columns=["order", "dim_lo", "dim_hi", "critical_lo", "critical_hi",
                                      "measured", "rule", "asymptote"])


# -- lazy training --------------------------------------------------------------------------------

class LazyTrainState(NamedTuple):
    """State of lazy gradient descent: the perturbation ``Δ`` ``(m, d)`` and the optax state."""
    delta: jax.Array
    opt_state: Any


def lazy_metrics(model: SymCP, delta: Params, target: SymCP) -> dict:
    """``loss`` (``1/2 ||T_lin - T*||^2``, accurate), ``relative_error`` and ``distance``
    (``||Δ||_F / ||W0||_F`` over active rows) of the lazy model at ``Δ``; scalars."""
    from jaxtd.losses import norm
    model, delta, target = jax.lax.stop_gradient((model, delta, target))
    res_sq = lazy_residual_sq(model, delta, target)
    active = (model.weights != 0).astype(delta.dtype)[:, None]
    w0_norm = jnp.sqrt(jnp.sum(active * model.factors ** 2))
    return dict(loss=0.5 * res_sq, relative_error=jnp.sqrt(res_sq) / norm(target),
                distance=jnp.sqrt(jnp.sum(active * delta ** 2)) / w0_norm)


def train_init(model: SymCP, optimizer, delta: Params | None = None) -> LazyTrainState:
    """Start lazy training at ``Δ = delta`` (default 0, i.e. at ``W0``) with an optax optimizer."""
    if not isinstance(model, SymCP):
        raise TypeError(f"model must be a jaxtd.SymCP, got {type(model).__name__}")
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {optimizer!r}")
    if delta is None:
        delta = jnp.zeros_like(model.factors)
    _check_delta(model, delta)
    return LazyTrainState(delta, optimizer.init(delta))


def _lazy_gd_state(state: LazyTrainState, model: SymCP, optimizer):
    """``(algorithm, state)`` of :func:`jaxtd.algorithms.lazy_gd` for ``optimizer`` at ``Δ``: the
    one lazy trainer; a ready transformation is applied as is (multiplier 1, no ridge)."""
    from jaxtd.algorithms import LazyGDState, lazy_gd  # local: the algorithms import this module
    algorithm = lazy_gd(optimizer)
    dtype = state.delta.dtype
    hparams = {k: jnp.asarray(v, dtype) for k, v in algorithm.hparams.items()}
    hparams["regularization"] = jnp.zeros((), dtype)
    return algorithm, LazyGDState(state.delta, model, state.opt_state, hparams,
                                  jnp.zeros((), jnp.int32))


def train_step(optimizer) -> Callable:
    """``step(state, model, target) -> state``: one optimizer update on :func:`lazy_loss` in ``Δ``.

    The step of :func:`jaxtd.algorithms.lazy_gd` (one trainer), at a given linearization point
    ``model``. Pure and jit/vmap/scan-able; the optimizer structure is static (closed over)."""

    def step(state: LazyTrainState, model: SymCP, target: SymCP) -> LazyTrainState:
        algorithm, gd_state = _lazy_gd_state(state, model, optimizer)
        new, _ = algorithm.step(gd_state, target)
        return LazyTrainState(new.delta, new.opt_state)

    return step


def train(model: SymCP, target: SymCP, optimizer, steps: int, *, record_every: int = 1,
          delta: Params | None = None) -> tuple[LazyTrainState, dict]:
    """Lazy gradient descent: ``steps`` updates of ``optimizer`` on ``Δ`` under ``lax.scan``.

    Returns ``(state, history)`` with ``history`` a dict of ``(steps // record_every,)`` arrays:
    ``step`` (updates done), and :func:`lazy_metrics` (``loss``, ``relative_error``, ``distance``)
    after those updates. Pure (jit it, or vmap over models/targets); ``steps`` and
    ``record_every`` are static ints, ``steps`` a multiple of ``record_every``.
    """
    _check_model_target(model, target)
    for name, v in (("steps", steps), ("record_every", record_every)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if steps % record_every:
        raise ValueError(f"steps={steps} must be a multiple of record_every={record_every}")
    state = train_init(model, optimizer, delta)
    step = train_step(optimizer)

    def block(st, i):
        st = jax.lax.fori_loop(0, record_every, lambda _, s: step(s, model, target), st)
        return st, dict(step=(i + 1) * record_every, **lazy_metrics(model, st.delta, target))

    return jax.lax.scan(block, state, jnp.arange(steps // record_every))
