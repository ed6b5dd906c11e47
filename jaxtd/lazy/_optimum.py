"""The exact lazy optimum: normal equations, dense and iterative solves, tables of
optima (see :mod:`jaxtd.lazy`)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jaxtd import _lapack, models
from jaxtd._checks import host_value
from jaxtd._precision import einsum, matmul
from jaxtd._sizes import sym_dim  # re-exported (moved below JAX)
from jaxtd.initialization import antisymmetric, init_factors
from jaxtd.lazy._model import _check_model_target
from jaxtd.lazy.cg import _check_solver_args, cg_lstsq
from jaxtd.losses import loss, norm
from jaxtd.shapes import ArrayLike, Scalar
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["LazyLstsq", "normal_equations", "default_rcond", "lstsq", "sym_dim", "METHODS",
           "DENSE_MAX_SIZE", "solver_for", "best_residual", "best_residual_table"]


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
    residual to ~1e-3 and the rank to ~4 digits. So concrete float32 inputs (not traced) are
    solved in float64 all the same (``jax.enable_x64`` for the call; ``rcond=None`` then means
    the float64 default) and the result is returned in float32: a fitted tangent space gives 0
    as in float64, not a spurious ~0.2 (the float32 rank falls short of ``C(d+l-1, l)``).
    Traced float32 inputs (inside ``jit``/``vmap``) are solved in float32 with that limit;
    :func:`best_residual` routes them to the iterative solver instead.

    By Euler's identity ``J W0 = l T(W0)``, ``T(W0)`` lies in the tangent space, so the residual
    is the distance from ``T*`` to the tangent space for any initialization (not only the
    antisymmetric one). Rows with zero weight (masks) are excluded: their diagonal blocks are
    replaced by the identity (scaled) and their right-hand side is 0, so they neither count in
    ``rank`` nor move. Memory ``O((m d)^2)``, time ``O((m d)^3)``; jit/vmap-able.
    """
    _check_rcond(rcond)
    if _concrete_float32(model, target):
        return _lstsq_float64(model, target, rcond)
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
    lam_s, vec_s = _lapack.eigh(scale[:, None] * jtj * scale[None, :]
                                + jnp.diag(masked.astype(dtype)))
    keep_s = lam_s > rcond * lam_s[-1]
    coef_s = matmul(vec_s.T, scale * jty)
    proj_sq = jnp.sum(jnp.where(keep_s, coef_s ** 2 / jnp.where(keep_s, lam_s, 1.0), 0.0))
    kept = jnp.sum(keep_s)
    rank = kept - n_masked
    # The minimum-norm minimizer lives in the unscaled coordinates: truncated eigen-solution of
    # J^T J keeping the same number of directions.
    diag_max = jnp.maximum(jnp.max(diag), jnp.finfo(dtype).tiny)
    lam, vec = _lapack.eigh(jtj + jnp.diag(jnp.where(masked, diag_max, 0.0).astype(dtype)))
    keep = (jnp.arange(m * d) >= m * d - kept) & (lam > 0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    delta = matmul(vec, inv * matmul(vec.T, jty)).reshape(m, d)
    res_sq = jnp.maximum(2.0 * loss(target, model) - proj_sq, 0.0)
    # A tangent space of full dimension C(d+l-1, l) contains T*: the residual is then exactly 0,
    # which the subtraction above only reaches to ~sqrt(eps) * cond(J) near the threshold.
    res_sq = jnp.where(rank >= sym_dim(d, l), 0.0, res_sq)
    active = (model.weights != 0).astype(dtype)
    w0_norm = jnp.sqrt(jnp.sum(active[:, None] * model.factors.astype(dtype) ** 2))
    return LazyLstsq(delta=delta, residual=jnp.sqrt(res_sq) / norm(target), rank=rank,
                     distance=jnp.linalg.norm(delta) / w0_norm)


def _concrete_float32(*trees) -> bool:
    """Whether every leaf is a concrete array held here (no tracer) and the common dtype is
    float32: then a dense solve can run in float64 (see :func:`lstsq`)."""
    leaves = jax.tree_util.tree_leaves(trees)
    return (jnp.result_type(*leaves) == jnp.float32
            and all(host_value(x) is not None for x in leaves))


def _lstsq_float64(model: SymCP, target: SymCP, rcond) -> "LazyLstsq":
    """:func:`lstsq` of concrete float32 inputs computed in float64, returned in float32."""
    def to64(t: SymCP) -> SymCP:
        return SymCP(jnp.asarray(np.asarray(host_value(t.weights), np.float64)),
                     jnp.asarray(np.asarray(host_value(t.factors), np.float64)), t.order)

    with jax.enable_x64(True):
        out = jax.tree_util.tree_map(np.asarray, lstsq(to64(model), to64(target), rcond=rcond))
    return LazyLstsq(delta=jnp.asarray(out.delta, jnp.float32),
                     residual=jnp.asarray(out.residual, jnp.float32),
                     rank=jnp.asarray(out.rank, jnp.int32),
                     distance=jnp.asarray(out.distance, jnp.float32))


def _check_rcond(rcond) -> None:
    if rcond is None or isinstance(rcond, jax.core.Tracer):
        return
    if isinstance(rcond, bool) or not isinstance(rcond, (int, float, np.integer, np.floating)):
        raise TypeError(f"rcond must be a number in [0, 1) or None, got {rcond!r}")
    if not 0 <= float(rcond) < 1:
        raise ValueError(f"rcond must be in [0, 1) (eigenvalues below rcond * the largest are "
                         f"cut), got {rcond!r}; None picks the default for the dtype")


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
    floor, :func:`jaxtd.lazy.cg.residual_floor`, come out as 0) or ``"auto"``
    (:func:`solver_for`: dense up to ``m d =`` :data:`DENSE_MAX_SIZE`). Float32 inputs: a
    concrete dense solve runs in float64 (:func:`lstsq`); a traced one (inside ``jit``/``vmap``,
    where float64 is out of reach) is routed to the iterative solver, since a float32
    eigendecomposition misses the rank and reports e.g. 0.17 where the answer is 0. The two agree to ~1e-9
    wherever both were compared, at the threshold included. For the iterative convergence
    certificate (normal-equation residual, iterations, floor) call :func:`cg_lstsq`.
    """
    _check_model_target(model, target)
    m, d = model.factors.shape
    solver = solver_for(method, m, d)
    if solver == "dense" and not (jnp.result_type(model.factors, target.factors) == jnp.float32
                                  and not _concrete_float32(model, target)):
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
      init: as in :func:`jaxtd.algorithms.lazy_gd`.
      signs: as in :func:`jaxtd.algorithms.lazy_gd` (the residual does not depend on the signs
        in exact arithmetic: the tangent space does not).
      init_scale: as in :func:`jaxtd.algorithms.lazy_gd` (the residual does not depend on it in
        exact arithmetic either).
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
    call = table_call(keys, target, widths, init=init, signs=signs, init_scale=init_scale,
                      method=method, rcond=rcond, tol=tol, max_iter=max_iter,
                      batch_size=batch_size)
    with jax.enable_x64(True):
        return np.asarray(_table_program(*call.args, **call.options), np.float64).T


class TableCall(NamedTuple):
    """A checked :func:`best_residual_table` call: its program's arguments and static options.

    For callers that keep compiled programs (``jaxtd run`` saves them across processes): the
    options and the arguments' shapes and dtypes name the program, :func:`lower_table` lowers
    it, and the executable called on ``args`` inside ``jax.enable_x64(True)`` returns the
    ``(len(widths), len(keys))`` table (the transpose of :func:`best_residual_table`'s).
    """
    args: tuple   # (keys, target, widths as int32, init_scale in the target's dtype)
    options: dict  # static: top, init, signs, solver, rcond, tol, max_iter, batch_size


def table_call(keys, target: SymCP, widths, *, init: str = "standard", signs: str = "auto",
               init_scale: float = 1.0, method: str = "auto", rcond: float | None = None,
               tol: float | None = None, max_iter: int | None = None,
               batch_size: int = 1) -> TableCall:
    """The arguments of :func:`best_residual_table`, checked (same errors), as a
    :class:`TableCall`."""
    keys = _check_keys(keys)
    check_compatible(target, target, ("target", "target"))
    ws = _check_widths(widths)
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")
    if signs not in models.SIGNS:
        raise ValueError(f"signs must be one of {models.SIGNS}, got {signs!r}")
    if (isinstance(init_scale, bool) or not isinstance(init_scale, (int, float))
            or not init_scale > 0):
        raise ValueError(f"init_scale must be a float > 0, got {init_scale!r}")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    _check_solver_args(tol, max_iter)
    top = max(ws)
    # numpy inputs: a jnp conversion here would compile an eager program of its own
    args = (keys, target, np.asarray(ws, np.int32),
            np.asarray(init_scale, target.factors.dtype))
    options = dict(top=top, init=init, signs=signs, solver=solver_for(method, top, target.dim),
                   rcond=None if rcond is None else float(rcond),
                   tol=None if tol is None else float(tol),
                   max_iter=None if max_iter is None else int(max_iter),
                   batch_size=int(batch_size))
    return TableCall(args, options)


def lower_table(call: TableCall):
    """``call``'s program, traced and lowered (float64 inside: ``jax.enable_x64``)."""
    with jax.enable_x64(True):
        return _table_program.lower(*call.args, **call.options)
