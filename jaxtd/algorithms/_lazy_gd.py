"""Lazy (NTK-regime) gradient descent as an :class:`~jaxtd.algorithms.Algorithm` (docs/algorithms.md).

The trained variable is the perturbation ``Δ`` ``(m, d)`` of a fixed initialization
``W0`` (weights ``c`` fixed); the objective is the exact factored lazy loss
``1/2 ||T(W0) + JΔ - T*||^2 + λ/2 ||Δ||_F^2`` (:func:`jaxtd.lazy.lazy_loss`, ridge ``λ`` default 0).
``W0`` is drawn at the standard scale (rows ``N(0, I/d)`` times ``init_scale``), either
antisymmetric (pairs ``(w, +1), (w, -1)``, so ``T(W0) = 0``; :func:`jaxtd.initialization.antisymmetric`) or
plain (weights from :func:`jaxtd.models.draw_signs`).

Metrics. The lazy tensor ``T(W0) + JΔ`` is not a width-``m`` SymCP, but it is an exact SymCP of
width ``m (1 + 2K)``, ``K = ⌈l/2⌉``: with ``p_i(t) = (w_i + t δ_i)^{⊗l}`` a polynomial of degree
``l`` in ``t``, ``J_i δ_i = p_i'(0) = sum_{k=1..K} α_k (p_i(k h_i) - p_i(-k h_i)) / h_i`` exactly,
where ``α`` solves the odd-moment Vandermonde system (the central-difference stencil, exact up to
degree ``2K >= l``). :func:`polarize` builds that SymCP; the scale ``h_i = ||w_i|| / ||δ_i||``
keeps every node at the size of ``w_i``, so the representation is accurate to float rounding
relative to ``||T(W0)||`` and ``||JΔ||``. ``tensor(state)`` returns it, so the runner's relative
error, loss and fitted weights (linear in the tensor) are those of the lazy model. Its
``best_correlation`` and ``active_count`` describe the polarization nodes and mean little; use
``distance`` (``||Δ||_F / ||W0||_F``, via ``params = W0 + Δ``) to see how far lazy GD moved.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxtd import initialization, lazy, models, schema
from jaxtd.lazy import polarize  # re-exported: the lazy tensor as an exact SymCP
from jaxtd.algorithms import base
from jaxtd.algorithms.base import OptimizerSpec
from jaxtd.symcp import SymCP

__all__ = ["lazy_gd", "LazyGDState", "polarize", "LAZY_GD_INITS", "SCHEMA"]

LAZY_GD_INITS = ("antisymmetric", "standard")


class LazyGDState(NamedTuple):
    """State of :func:`lazy_gd`.

    Attributes:
      delta: ``(m, d)`` perturbation ``Δ``.
      model: the initialization ``SymCP(c ∘ mask, W0, l)`` (masked weights; carries the order).
      opt_state: optimizer state.
      hparams: dict of scalar arrays (``init_scale``, ``regularization``, ``learning_rate``).
      count: int32 steps taken.
    """

    delta: jax.Array
    model: SymCP
    opt_state: Any
    hparams: dict
    count: jax.Array

    def with_init_params(self, params: jax.Array) -> "LazyGDState":
        """This state linearized at ``params`` (``(m, d)``) instead of the drawn ``W0``: the
        runner's ``init_params`` (``params(state) = W0 + Δ`` with ``Δ = 0`` at init)."""
        model = self.model
        return self._replace(model=SymCP(model.weights, params.astype(model.factors.dtype),
                                         model.order))


@base.constructor
def lazy_gd(optimizer: OptimizerSpec = 0.01, *, init: str = "antisymmetric",
            init_scale: float = 1.0, regularization: float = 0.0,
            learning_rate: Optional[float] = None, signs: str = "auto",
            name: Optional[str] = None) -> base.Algorithm:
    """Gradient descent on the lazy (linearized) model around a standard-scale initialization.

    Args:
      optimizer: as in :func:`jaxtd.algorithms.gd` (float = SGD step; factory + ``learning_rate=``;
        or a ready transformation whose updates the ``learning_rate`` hparam multiplies). GD on
        the quadratic is stable for steps below ``2 / λ_max(J^T J)``; measured ``λ_max`` at
        ``l = 3`` with antisymmetric init: 32 (``m = d = 64``), 50 (``m = 40, d = 16``), 89
        (``m = 30, d = 8``), hence the default 0.01 (:func:`jaxtd.lazy.normal_equations` gives
        ``J^T J`` to check other sizes).
      init: ``"antisymmetric"`` (``T(W0) = 0``) or ``"standard"``.
      init_scale: multiplies the ``N(0, I/d)`` rows (hparam ``init_scale``).
      regularization: ridge ``λ >= 0`` on ``Δ`` (hparam ``regularization``).
      learning_rate: see :func:`jaxtd.algorithms.gd`.
      signs: see :func:`jaxtd.algorithms.gd`; used by ``init="standard"`` only.
      name: see :func:`jaxtd.algorithms.gd`.
    Returns:
      An :class:`~jaxtd.algorithms.Algorithm`; ``step`` reports ``{"loss": lazy objective}``,
      ``tensor`` the exact lazy tensor (:func:`polarize`), ``params`` ``W0 + Δ``.
    """
    base.check_choice(init, "init", LAZY_GD_INITS)
    base.check_choice(signs, "signs", models.SIGNS)
    base.check_ranges(SCHEMA, init_scale=init_scale, regularization=regularization)
    opt = base.make_optimizer(optimizer, learning_rate)
    defaults = {"init_scale": float(init_scale), "regularization": float(regularization),
                "learning_rate": opt.learning_rate}

    def init_fn(key, target: SymCP, width: int, *, active=None, hparams=None) -> LazyGDState:
        ctx = base.init_context(key, target, width, defaults, active=active, hparams=hparams)
        hp = ctx.hparams
        if init == "antisymmetric":
            m0 = initialization.antisymmetric(ctx.row_key, ctx.width, target.dim, target.order,
                                    scale="standard", dtype=ctx.dtype)
            w0, c = m0.factors, m0.weights
        else:
            w0 = initialization.init_factors(ctx.row_key, ctx.width, target.dim,
                                             scale="standard", dtype=ctx.dtype)
            c = models.draw_signs(ctx.sign_key, ctx.width, target.order, signs, ctx.dtype)
        model = SymCP(c * ctx.mask, hp["init_scale"] * w0, target.order)
        delta = jnp.zeros_like(model.factors)
        return LazyGDState(delta, model, base.init_optimizer(opt, delta),
                           hp, jnp.zeros((), jnp.int32))

    def step(state: LazyGDState, target: SymCP):
        delta, opt_state, value = lazy.lazy_update(
            opt, state.model, state.delta, state.opt_state, target,
            state.hparams["learning_rate"], state.hparams["regularization"])
        return state._replace(delta=delta, opt_state=opt_state, count=state.count + 1), \
            {"loss": value}

    return base.Algorithm(name or f"lazy_gd-{init}", init_fn, step,
                          lambda state: polarize(state.model, state.delta),
                          lambda state: state.model.factors + state.delta, defaults, ranges=schema.hparam_params(SCHEMA))


# The configurable arguments of lazy_gd (names and defaults come from its signature).
SCHEMA = schema.derive(lazy_gd, base.optimizer_params("step size (below 2 / lambda_max(J^T J))") + (
    schema.Param("init", "choice", "initialization W0 the model is linearized at",
                 choices=LAZY_GD_INITS),
    schema.Param("init_scale", "float", "multiplier of the N(0, I/d) rows of W0", gt=0,
                 hparam="init_scale"),
    schema.Param("regularization", "float", "ridge coefficient on the perturbation", ge=0,
                 hparam="regularization"),
    schema.Param("signs", "choice", "sign rule of W0's weights (init = standard)",
                 choices=models.SIGNS),
))
