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

Also here: :func:`antisymmetric` initialization (``T(W0) = 0``); :func:`polarize` (the lazy
tensor ``T(W0) + JΔ`` as an exact SymCP); the exact lazy optimum
:func:`lstsq` (dense normal equations in closed form, ``O((m d)^3)``), :func:`cg_lstsq`
(matrix-free preconditioned conjugate gradients in Gram form, ``O(m^2 d)`` per iteration;
:mod:`jaxtd.lazy.cg`) and :func:`best_residual` choosing between them (float64 needed for the
1e-6 threshold); :func:`best_residual_table`, a whole ``(seed, width)`` table of lazy optima at
the initializations of :func:`jaxtd.algorithms.lazy_gd` with one compiled program; the threshold
experiment :func:`threshold_experiment` (always float64, in a thread-local ``jax.enable_x64``
scope), :func:`predicted_critical_width`, :func:`fit_exponent`, :func:`local_exponents`,
:func:`threshold_slopes`; lazy training :func:`train` (any optax optimizer under ``lax.scan``).

The package holds one module per concept: ``_model`` (the model and its loss), ``_optimum``
(the exact optimum and its tables), ``_threshold`` (the threshold and its slopes), ``_train``
(training at a given point: the step of :func:`jaxtd.algorithms.lazy_gd`, the one lazy trainer)
and the public :mod:`jaxtd.lazy.cg` (the matrix-free solver, also reachable as
``jaxtd.lazy_cg``); this module re-exports their public names. Nothing here imports
:mod:`jaxtd.algorithms` (the algorithms sit above: lazy GD takes its update from here).
"""

from __future__ import annotations

# The implementation lives in one module per concept; this module is the public face.
from jaxtd.lazy._model import lazy_loss, lazy_residual_sq, lazy_relative_error, linearize, polarize
from jaxtd.initialization import antisymmetric
from jaxtd.lazy._optimum import (LazyLstsq, normal_equations, default_rcond, lstsq, sym_dim,
                                 METHODS, DENSE_MAX_SIZE, solver_for, best_residual,
                                 best_residual_table, TableCall, table_call, lower_table)
from jaxtd.lazy._threshold import (AH_EXCEPTIONS, predicted_critical_width, near_threshold_widths,
                                   Threshold, threshold_experiment, fit_exponent, local_exponents,
                                   threshold_slopes)
from jaxtd.lazy._train import (LazyTrainState, lazy_metrics, lazy_update, train_init, train_step,
                               train)
from jaxtd.lazy.cg import (LazyCG, block_jacobi, cg_lstsq, default_max_iter, default_tol,
                           normal_matvec, normal_rhs)

__all__ = ["lazy_loss", "lazy_residual_sq", "lazy_relative_error", "antisymmetric", "linearize",
           "polarize",
           "normal_equations", "lstsq", "best_residual", "LazyLstsq", "sym_dim",
           "cg_lstsq", "LazyCG", "normal_matvec", "normal_rhs", "block_jacobi", "default_tol",
           "default_max_iter", "METHODS", "DENSE_MAX_SIZE", "solver_for", "best_residual_table",
           "TableCall", "table_call", "lower_table",
           "predicted_critical_width", "threshold_experiment", "Threshold", "fit_exponent",
           "local_exponents", "threshold_slopes", "near_threshold_widths",
           "LazyTrainState", "lazy_metrics", "lazy_update", "train_init", "train_step", "train",
           "default_rcond", "AH_EXCEPTIONS"]
