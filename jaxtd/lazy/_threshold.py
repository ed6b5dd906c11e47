"""The lazy threshold: predicted critical widths, the threshold experiment, fitted slopes
(see :mod:`jaxtd.lazy`)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxtd._sizes import (AH_EXCEPTIONS, MAX_WINDOW, near_threshold_widths,  # re-exported
                          predicted_critical_width, predicted_width, sym_dim)
from jaxtd.initialization import antisymmetric, init_factors
from jaxtd.lazy._optimum import _Cell, _check_method, _solve_cell, solver_for
from jaxtd.lazy.cg import _check_solver_args
from jaxtd.symcp import SymCP
from jaxtd.targets import random_unit

__all__ = ["AH_EXCEPTIONS", "predicted_critical_width", "near_threshold_widths", "Threshold",
           "threshold_experiment", "fit_exponent", "local_exponents", "threshold_slopes"]


# -- the threshold experiment ---------------------------------------------------------------------

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
    if widths is None and predicted_critical_width(d, l) + 2 > MAX_WINDOW:
        raise ValueError(f"widths=None would solve every width 1 .. m*+2 = "
                         f"{predicted_critical_width(d, l) + 2} at (dim, order) = ({d}, {l}); "
                         "pass widths=near_threshold_widths() or a list of widths")
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
      seeds: as described above.
      target_rank: as described above.
      init: as described above.
      rcond: as described above.
      key: as described above; an int or PRNG key.
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
    _check_solver_args(cg_tol, max_iter)

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
            predicted[(d, l)] = predicted_width(d, l, init)
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
