"""The lazy (linearized, NTK-regime) model of MATH.md §3 and ALGORITHMS.md §B.

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
:func:`lstsq` / :func:`best_residual` (normal equations in closed form, float64 needed for the
1e-6 threshold); the threshold experiment :func:`threshold_experiment` (always float64, in a
thread-local ``jax.enable_x64`` scope), :func:`predicted_critical_width`, :func:`fit_exponent`;
lazy training :func:`train` (any optax optimizer under ``lax.scan``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import _extended
from jaxtd._precision import einsum, matmul
from jaxtd.initialization import init_factors
from jaxtd.symcp import SymCP, check_compatible, to_dense

__all__ = ["lazy_loss", "lazy_residual_sq", "lazy_relative_error", "antisymmetric", "linearize",
           "normal_equations", "lstsq", "best_residual", "LazyLstsq", "sym_dim",
           "predicted_critical_width", "threshold_experiment", "Threshold", "fit_exponent",
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


def lazy_loss(model: SymCP, delta, target: SymCP) -> jax.Array:
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


def lazy_residual_sq(model: SymCP, delta, target: SymCP, *, precise: bool = True) -> jax.Array:
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


def lazy_relative_error(model: SymCP, delta, target: SymCP, *, precise: bool = True) -> jax.Array:
    """``||T(W0) + J Δ - T*||_F / ||T*||_F`` (see :func:`lazy_residual_sq`); scalar."""
    from jaxtd.losses import norm  # local: keeps the module's import surface small
    model, delta, target = jax.lax.stop_gradient((model, delta, target))
    return jnp.sqrt(lazy_residual_sq(model, delta, target, precise=precise)) / norm(target)


# -- antisymmetric initialization -----------------------------------------------------------------

def antisymmetric(key, width: int, dim: int, order: int, *, scale: str = "standard",
                  delta=1e-2, dtype=None) -> SymCP:
    """Antisymmetric initialization (ALGORITHMS.md §B): rows in pairs ``(2k, 2k+1)`` with the same
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

def linearize(model: SymCP) -> Callable[[jax.Array], jax.Array]:
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


def normal_equations(model: SymCP, target: SymCP):
    """The ``(m d, m d)`` matrix ``J^T J`` and the ``(m d,)`` vector ``J^T (T* - T(W0))`` in closed
    form (MATH.md §3), rows flattened as ``i * d + a``; cost ``O(m^2 d^2 + m r d)``.

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


def sym_dim(dim: int, order: int) -> int:
    """``dim Sym^l(R^d) = C(d + l - 1, l)``: the dimension of symmetric order-``l`` tensors."""
    return math.comb(dim + order - 1, order)


def best_residual(model: SymCP, target: SymCP, *, rcond: float | None = None) -> jax.Array:
    """``min_Δ ||T(W0) + JΔ - T*||_F / ||T*||_F``, exact (see :func:`lstsq`; use float64)."""
    return lstsq(model, target, rcond=rcond).residual


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


class Threshold(NamedTuple):
    """Output of :func:`threshold_experiment`.

    Attributes:
      table: ``pandas.DataFrame`` with one row per (dim, order, seed, width): columns ``dim, order,
        seed, width, residual`` (best lazy relative residual), ``rank`` (tangent-space dimension),
        ``sym_dim`` (``C(d+l-1, l)``), ``distance`` (``||Δ*|| / ||W0||``).
      critical: ``{(dim, order): m*}``, the smallest grid width whose residual is ``<= tol`` for
        every seed (``None`` if no width of the grid reaches it).
      predicted: ``{(dim, order): m*}`` from :func:`predicted_critical_width`.
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


def _masked_lstsq(model: SymCP, target: SymCP, masks, *, rcond, batch_size) -> LazyLstsq:
    """:func:`lstsq` of ``model`` with weights times each row of ``masks`` ``(n_widths, M)``."""
    return jax.lax.map(lambda mk: lstsq(SymCP(model.weights * mk, model.factors, model.order),
                                        target, rcond=rcond), masks, batch_size=batch_size)


def threshold_experiment(cases, *, widths=None, seeds: int = 1, target_rank: int = 20,
                         init: str = "standard", tol: float = 1e-6, rcond: float | None = None,
                         key=0, batch_size: int = 8) -> Threshold:
    """Best lazy residual over a grid of widths for several ``(dim, order)``; the critical widths.

    For each case and seed: ``W0`` of the largest grid width (rows prefix-consistent,
    ``scale="standard"``, unit weights; or :func:`antisymmetric` with ``init="antisymmetric"``) and
    a generic target (``target_rank`` random unit components, unit weights); every width ``m`` is
    the same ``W0`` with rows ``>= m`` masked, and :func:`lstsq` is mapped over the masks
    (``jax.lax.map`` in batches of ``batch_size``, so one compiled solve serves the whole grid).

    Args:
      cases: sequence of ``(dim, order)``.
      widths: ``None`` (``1 .. predicted + 2``), a sequence of widths, or a callable
        ``(dim, order) -> widths``. ``critical`` is only as fine as the grid.
      seeds, target_rank, init, tol, rcond, key: as described above; ``key`` an int or PRNG key.

    The computation always runs in float64 (inside ``jax.enable_x64(True)``, a thread-local
    scope: the global setting is left alone), because the 1e-6 threshold is below what the
    float32 normal equations can resolve. Cost per case: ``O(len(widths) (M d)^3)`` with ``M`` the
    largest width.
    """
    cases = _check_cases(cases)
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")
    for name, v in (("seeds", seeds), ("target_rank", target_rank), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    import pandas as pd
    from jaxtd.targets import random_unit

    rows, critical, predicted = [], {}, {}
    with jax.enable_x64(True):
        base = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
        for d, l in cases:
            ws = _case_widths(widths, d, l)
            top = ws[-1]
            solve = jax.jit(functools.partial(_masked_lstsq, rcond=rcond, batch_size=batch_size))
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
                out = solve(model, tgt, masks)
                res, rank, dist = (np.asarray(v) for v in (out.residual, out.rank, out.distance))
                for i, w in enumerate(ws):
                    rows.append(dict(dim=d, order=l, seed=seed, width=w, residual=float(res[i]),
                                     rank=int(rank[i]), sym_dim=sym_dim(d, l),
                                     distance=float(dist[i])))
                ok = [w for w, r in zip(ws, res) if r <= tol]
                fits.append(ok[0] if ok else None)
            critical[(d, l)] = None if None in fits else max(fits)
            predicted[(d, l)] = predicted_critical_width(d, l) * (2 if init == "antisymmetric" else 1)
    return Threshold(pd.DataFrame(rows), critical, predicted)


def fit_exponent(dims, widths) -> float:
    """Least-squares slope of ``log m*`` against ``log d`` (the lazy theory: ``-> l - 1``)."""
    x, y = np.log(np.asarray(dims, np.float64)), np.log(np.asarray(widths, np.float64))
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"dims and widths must be equal-length sequences of >= 2 positive values, "
                         f"got {len(x)} and {len(y)}")
    return float(np.polyfit(x, y, 1)[0])


# -- lazy training --------------------------------------------------------------------------------

class LazyTrainState(NamedTuple):
    """State of lazy gradient descent: the perturbation ``Δ`` ``(m, d)`` and the optax state."""
    delta: jax.Array
    opt_state: Any


def lazy_metrics(model: SymCP, delta, target: SymCP) -> dict:
    """``loss`` (``1/2 ||T_lin - T*||^2``, accurate), ``relative_error`` and ``distance``
    (``||Δ||_F / ||W0||_F`` over active rows) of the lazy model at ``Δ``; scalars."""
    from jaxtd.losses import norm
    model, delta, target = jax.lax.stop_gradient((model, delta, target))
    res_sq = lazy_residual_sq(model, delta, target)
    active = (model.weights != 0).astype(delta.dtype)[:, None]
    w0_norm = jnp.sqrt(jnp.sum(active * model.factors ** 2))
    return dict(loss=0.5 * res_sq, relative_error=jnp.sqrt(res_sq) / norm(target),
                distance=jnp.sqrt(jnp.sum(active * delta ** 2)) / w0_norm)


def train_init(model: SymCP, optimizer, delta=None) -> LazyTrainState:
    """Start lazy training at ``Δ = delta`` (default 0, i.e. at ``W0``) with an optax optimizer."""
    if not isinstance(model, SymCP):
        raise TypeError(f"model must be a jaxtd.SymCP, got {type(model).__name__}")
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {optimizer!r}")
    if delta is None:
        delta = jnp.zeros_like(model.factors)
    _check_delta(model, delta)
    return LazyTrainState(delta, optimizer.init(delta))


def train_step(optimizer) -> Callable:
    """``step(state, model, target) -> state``: one optimizer update on :func:`lazy_loss` in ``Δ``.

    Pure and jit/vmap/scan-able; the optimizer structure is static (closed over)."""
    import optax

    def step(state: LazyTrainState, model: SymCP, target: SymCP) -> LazyTrainState:
        grad = jax.grad(lambda dl: 0.5 * _lazy_sq(model, dl, target))(state.delta)
        # optax's own arithmetic (e.g. adam's bias correction, float ** int32 count) is written
        # for standard promotion; our code stays strict-clean, the optimizer gets its default.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grad, state.opt_state, state.delta)
        return LazyTrainState(optax.apply_updates(state.delta, updates), opt_state)

    return step


def train(model: SymCP, target: SymCP, optimizer, steps: int, *, record_every: int = 1,
          delta=None):
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
