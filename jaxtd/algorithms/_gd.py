"""Gradient descent on the regularized loss ``L_λ`` (docs/algorithms.md), with any optax optimizer.

Initialization (``init``), every row of norm exactly ``δ = init_scale``:

- ``"small"``: row ``i`` is ``δ z_i/||z_i||`` with ``z_i`` from ``fold_in(key, i)``; fixed signs
  per :func:`jaxtd.models.draw_signs`. ``T(W0)`` has norm ``~ sqrt(m) δ^k`` (``k`` the model's
  degree in ``W``: ``l`` plain, 2 two-homogeneous).
- ``"antisymmetric"``: rows in pairs ``(2j, 2j+1)`` on the same factor ``δ z_j/||z_j||`` with signs
  ``+1, -1`` (:func:`jaxtd.initialization.antisymmetric`, the factors of ``lazy_gd(init="antisymmetric")``
  times ``δ/||row||``), so ``T(W0) = 0`` exactly at every scale (even widths; an odd width
  leaves the last row unpaired). This is the centred initialization under which a large ``δ``
  makes training lazy (docs/algorithms.md, "init scale and the lazy regime").

Each step takes the gradient of ``L_λ(W) = 1/2 ||T(W) - T*||^2 + λ/2 sum_i mask_i ||w_i||^2`` and
applies the optimizer's update, zeroed on masked rows.

Scale-normalized step (``lr_scaling="ntk"``): the Jacobian of a degree-``k`` model at rows of
norm ``δ`` scales like ``δ^(k-1)``, so the tangent kernel ``J J^T`` like ``δ^(2(k-1))``. The step
actually taken is then ``learning_rate / (1 + δ^(2(k-1)))`` (:func:`step_factor`): the plain step
for ``δ << 1`` (where the loss curvature is set by the target, of norm ~1, not by the init) and
``learning_rate δ^(-2(k-1))`` for ``δ >> 1``, which keeps the function-space dynamics
``dT = -η J J^T (T - T*)`` independent of ``δ``; the rows then move by ``||W - W0|| / ||W0|| ∝
δ^(-k)``, the lazy limit. ``"none"`` (default) takes ``learning_rate`` at every scale.

Learning rate as a sweepable hyper-parameter. ``optimizer`` may be

- a float ``η``: plain SGD, ``W <- W - η ∇L_λ``; ``hparams["learning_rate"]`` is ``η``;
- a factory ``learning_rate -> GradientTransformation`` (e.g. ``optax.adam``): it is wrapped in
  ``optax.inject_hyperparams`` and each update gets ``hparams["learning_rate"]`` as its own
  learning rate
  (exact for every optax optimizer, schedules and weight decay included); pass its default as
  ``learning_rate=``;
- a ready ``GradientTransformation``: its learning rate is baked in, so ``hparams["learning_rate"]``
  is a *multiplier* of its updates, default 1.

In every case the hparam lives in the state's ``hparams`` only (the optax state holds no copy),
so one compiled step serves a whole sweep.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxtd import initialization, models, schema
from jaxtd._sizes import model_degree as degree  # re-exported (public before)
from jaxtd.algorithms import base
from jaxtd.algorithms.base import OptimizerSpec, make_optimizer  # re-exported (public before)
from jaxtd.symcp import SymCP

__all__ = ["gd", "GDState", "make_optimizer", "step_factor", "degree", "GD_INITS", "LR_SCALINGS",
           "SCHEMA"]

GD_INITS = ("small", "antisymmetric")
LR_SCALINGS = ("none", "ntk")


class GDState(NamedTuple):
    """State of :func:`gd`.

    Attributes:
      params: ``(m, d)`` factors ``W``.
      signs: ``(m,)`` fixed signs ``s``.
      mask: ``(m,)`` 0/1 activity mask.
      opt_state: the optimizer state.
      hparams: dict of scalar arrays (``init_scale``, ``regularization``, ``learning_rate``).
      count: int32 number of steps taken.
      order: static tensor order ``l``.
    """

    params: jax.Array
    signs: jax.Array
    mask: jax.Array
    opt_state: Any
    hparams: dict
    count: jax.Array
    order: base.Static


@base.constructor
def gd(optimizer: OptimizerSpec = 0.1, *, model: str = "plain", init_scale: float = 1e-2,
       regularization: float = 0.0, learning_rate: Optional[float] = None,
       signs: str = "auto", init: str = "small", lr_scaling: str = "none",
       name: Optional[str] = None) -> base.Algorithm:
    """Gradient descent on ``L_λ`` from rows of norm ``init_scale`` (docs/algorithms.md).

    Args:
      optimizer: float SGD step, optax factory (with ``learning_rate=``) or ready
        ``GradientTransformation`` (see module docstring for how ``learning_rate`` is swept).
      model: ``"plain"`` or ``"two_homogeneous"`` (docs/algorithms.md).
      init_scale: norm ``δ > 0`` of each initial row (hparam ``init_scale``).
      regularization: ``λ >= 0`` (hparam ``regularization``).
      learning_rate: default learning rate for a factory optimizer, or default multiplier for a
        ready transformation.
      signs: fixed-sign rule, see :func:`jaxtd.models.draw_signs` (``init="small"`` only: the
        antisymmetric init fixes the signs ``+1, -1`` of each pair).
      init: ``"small"`` or ``"antisymmetric"`` (``T(W0) = 0``), see the module docstring.
      lr_scaling: ``"none"`` or ``"ntk"`` (step ``learning_rate / (1 + δ^(2(k-1)))``, see
        :func:`step_factor`; needs a named ``model``). Meant for plain SGD: with another optax
        optimizer it scales that optimizer's learning rate the same way.
      name: algorithm name (default ``"gd-<model>"``).
    Returns:
      An :class:`~jaxtd.algorithms.Algorithm` with hparams ``init_scale``, ``regularization``,
      ``learning_rate``. ``step`` reports ``{"loss": L_λ(W)}`` before the update.
    """
    model_fn = models.get(model)
    if isinstance(model, str):
        label = model
    else:
        label = getattr(model, "__name__", "custom")
    base.check_choice(signs, "signs", models.SIGNS)
    base.check_choice(init, "init", GD_INITS)
    if init == "antisymmetric" and signs != "auto":
        raise ValueError(f"signs={signs!r} with init='antisymmetric': the antisymmetric init fixes "
                         "the signs (+1, -1 per pair); leave signs at 'auto'")
    base.check_choice(lr_scaling, "lr_scaling", LR_SCALINGS)
    if lr_scaling == "ntk" and not isinstance(model, str):
        raise ValueError("lr_scaling='ntk' needs the model's degree in W: use model='plain' or "
                         "'two_homogeneous', or lr_scaling='none' with a custom model")
    base.check_ranges(SCHEMA, init_scale=init_scale, regularization=regularization)
    opt = make_optimizer(optimizer, learning_rate)
    centred = init == "antisymmetric"  # (the name `init` is taken by the init function below)
    defaults = {"init_scale": float(init_scale), "regularization": float(regularization),
                "learning_rate": opt.learning_rate}

    def init(key, target: SymCP, width: int, *, active=None, hparams=None) -> GDState:
        ctx = base.init_context(key, target, width, defaults, active=active, hparams=hparams)
        hp = ctx.hparams
        if centred:
            # the key split of lazy_gd, so its rows have the directions of lazy_gd's W0
            pairs = initialization.antisymmetric(ctx.row_key, ctx.width, target.dim, target.order,
                                       scale="small", delta=hp["init_scale"], dtype=ctx.dtype)
            params, row_signs = pairs.factors, pairs.weights
        else:
            params, row_signs = base.small_rows(ctx, target, signs)
        opt_state = base.init_optimizer(opt, params)
        return GDState(params, row_signs, ctx.mask, opt_state, hp, jnp.zeros((), jnp.int32),
                       base.Static(target.order))

    def step_size(hp, order):
        """The step actually taken (a traced scalar): the ``learning_rate`` hparam, times
        :func:`step_factor` of the ``init_scale`` hparam under ``lr_scaling="ntk"``."""
        if lr_scaling == "none":
            return hp["learning_rate"]
        return hp["learning_rate"] * step_factor(hp["init_scale"], degree(model, order))

    def objective(params, state: GDState, target: SymCP):
        return models.regularized_loss(model_fn, params, target, signs=state.signs,
                                       mask=state.mask, regularization=state.hparams["regularization"])

    def step(state: GDState, target: SymCP):
        value, grads = jax.value_and_grad(objective)(state.params, state, target)
        lr = step_size(state.hparams, state.order.value)
        params, opt_state = base.optimizer_step(opt, state.params, grads, state.opt_state, lr,
                                                state.mask)
        new = state._replace(params=params, opt_state=opt_state, count=state.count + 1)
        return new, {"loss": value}

    def tensor(state: GDState) -> SymCP:
        return model_fn(state.params, state.order.value, state.signs, state.mask)

    return base.Algorithm(name or f"gd-{label}", init, step, tensor, lambda state: state.params,
                          defaults, ranges=schema.hparam_params(SCHEMA))


def step_factor(init_scale, degree: int):
    """``1 / (1 + δ^(2(k-1)))``: the factor ``lr_scaling="ntk"`` multiplies the step by.

    ``δ = init_scale`` (a scalar, may be traced; smooth in ``δ`` so a run stays differentiable in
    it), ``k = degree`` the model's degree in ``W``. The tangent kernel at rows of norm ``δ`` is
    ``∝ δ^(2(k-1))``, so for ``δ >> 1`` the factor cancels it; for ``δ << 1`` it is ~1.
    """
    d = jnp.asarray(init_scale)
    return 1.0 / (1.0 + d ** (2 * (int(degree) - 1)))


# The configurable arguments of gd (names and defaults come from its signature).
SCHEMA = schema.derive(gd, base.optimizer_params(
    "step size (the optax optimizer's learning rate)") + (
    schema.Param("model", "choice", "parametrization of the model", choices=models.MODELS),
    schema.Param("init_scale", "float", "norm of each initial row", gt=0, hparam="init_scale"),
    schema.Param("regularization", "float", "weight-decay coefficient lambda of L_lambda", ge=0,
                 hparam="regularization"),
    schema.Param("signs", "choice", "fixed-sign rule of the rows (init = small)",
                 choices=models.SIGNS),
    schema.Param("init", "choice", "initialization: small (rows of norm init_scale, fixed "
                 "signs) or antisymmetric (pairs w, w with signs +1, -1: T(W0) = 0)",
                 choices=GD_INITS),
    schema.Param("lr_scaling", "choice", "none, or ntk: step learning_rate / (1 + "
                 "init_scale^(2(k-1))), k the model's degree in W (lazy at large init_scale)",
                 choices=LR_SCALINGS),
))
