"""Reconstruction of the deflation paper's modified gradient flow (docs/algorithms.md).

The sequel (NeurIPS 2021) shows that gradient flow on an orthogonally decomposable tensor fits
the larger components first, and that a modified flow with a small regularizer and
re-initialization provably follows this deflation process. Its exact pseudo-code is not
reproduced here; this is a **reconstruction** with every choice exposed as a parameter:

- initialization: every row at norm ``δ0`` (``w_i = δ0 z_i/||z_i||``, row ``i`` from
  ``fold_in(key, i)``, as :func:`~jaxtd.algorithms.gd`); this draw serves as epoch 0's;
- epoch ``s = 0, 1, ...`` lasts time ``τ0 γ^s``: epoch ``s`` starts at step
  ``round(τ0 (γ^s - 1)/(γ - 1) / η)`` (cumulative time rounded, so rounding never drifts;
  defaults: steps 0, 100, 300, 700, 1500, 3100, ...);
- at the start of every epoch ``s >= 1``, each active row with ``||w_i|| < δ1`` is re-drawn at
  norm ``δ0`` from ``fold_in(fold_in(k_redraw, s), i)`` (independent of the padded width); rows
  that grew past ``δ1`` carry a fitted component and are kept;
- in between, gradient flow on ``L_λ`` by Euler steps ``W <- W - η ∇L_λ(W)`` (masked rows inert);
- stop (freeze the state) once the relative error is ``<= ε`` or after ``max_epochs`` epochs.

Why epochs grow: with ``T(W) ≈ 0`` a direction snaps to ``e_j`` at time ``∝ 1/a_j``, so each
doubling of the epoch length gives the next (half as large) component time to be found, while
re-drawing the rows that stayed small restores the random correlations the fitted components
used up.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxtd import models, schema
from jaxtd.algorithms import base
from jaxtd.algorithms.base import SIGN_RULES, check_choice, freeze, redraw_key
from jaxtd.symcp import SymCP

__all__ = ["deflation", "DeflationState", "epoch_start", "advance_epoch",
           "rows_to_redraw", "redraw_small", "epochs_done", "euler_step", "SCHEMA"]


# int32 step counts: a start beyond this is "never" (γ^s overflows long before a run ends).
_NEVER = 2 ** 30


class DeflationState(NamedTuple):
    """State of :func:`deflation`.

    Attributes:
      params: ``(m, d)`` factors ``W``.
      signs: ``(m,)`` fixed signs ``s``.
      mask: ``(m,)`` 0/1 activity mask.
      hparams: dict of scalar arrays: ``init_scale`` (δ0), ``threshold`` (δ1), ``regularization``
        (λ), ``learning_rate`` (η), ``gamma`` (γ), ``tau0`` (τ0).
      count: int32 number of ``step`` calls so far.
      key: PRNG key of the re-draw stream.
      epoch: int32 current epoch ``s``.
      next_start: int32 step at which epoch ``s + 1`` starts.
      stopped: bool, True once the error reached ``ε`` or ``max_epochs`` epochs are done.
      order: static tensor order ``l``.
    """

    params: jax.Array
    signs: jax.Array
    mask: jax.Array
    hparams: dict
    count: jax.Array
    key: jax.Array
    epoch: jax.Array
    next_start: jax.Array
    stopped: jax.Array
    order: base.Static


def epoch_start(epoch, tau0, gamma, learning_rate) -> jax.Array:
    """int32 step at which ``epoch`` starts: ``round(τ0 (γ^s - 1)/(γ - 1) / η)``.

    ``τ0 (γ^s - 1)/(γ - 1) = sum_{k<s} τ0 γ^k`` is the flow time before epoch ``s``; values past
    ``2^30`` steps are clamped there (never reached by a run).
    """
    s = jnp.asarray(epoch).astype(jnp.result_type(gamma))
    time = tau0 * (gamma ** s - 1) / (gamma - 1)
    return jnp.round(jnp.minimum(time / learning_rate, _NEVER)).astype(jnp.int32)


def advance_epoch(epoch, next_start, begin, hparams: dict) -> tuple:
    """Epoch bookkeeping: ``(epoch, next_start)`` after a step that may start an epoch.

    Where ``begin`` (bool scalar): ``s <- s + 1`` and ``next_start <- epoch_start(s + 1)`` with
    ``hparams``' ``tau0``, ``gamma``, ``learning_rate``; elsewhere both unchanged (int32).
    """
    epoch = epoch + begin.astype(jnp.int32)
    next_start = jnp.where(begin, epoch_start(epoch + 1, hparams["tau0"], hparams["gamma"],
                                              hparams["learning_rate"]), next_start)
    return epoch, next_start


def rows_to_redraw(params: jax.Array, mask: jax.Array, threshold, begin) -> jax.Array:
    """``(m,)`` bool: ``begin & (||w_i|| < δ1) & (mask_i > 0)`` for ``params`` ``(m, d)``.

    Rows that grew past ``δ1 = threshold`` carry a fitted component and are kept; masked rows
    are never touched.
    """
    small = models.safe_norm(params, axis=-1) < threshold
    return begin & small & (mask > 0)


def redraw_small(state: DeflationState, target: SymCP, begin, *, model_fn: Callable,
                 sign_rule: str) -> DeflationState:
    """Where ``begin``: advance the epoch clock, then re-draw the active rows below ``δ1``.

    With ``s`` the new epoch (:func:`advance_epoch`), each row of :func:`rows_to_redraw` becomes
    ``δ0 z/||z||``, ``z ~ N(0, I_d)`` from ``fold_in(fold_in(key, s), i)``
    (:func:`jaxtd.algorithms.base.redraw_rows`, ``δ0 = hparams["init_scale"]``); with
    ``sign_rule="residual"`` its sign becomes ``sign R(w̄_i^{⊗l})``, ``R = T* - T(W)`` over the
    active rows not re-drawn at the old ``W``. Where not ``begin`` the state is unchanged.

    Args:
      state: :class:`DeflationState` with ``params`` ``(m, d)``.
      target: ``T*``.
      begin: bool scalar, whether this step starts an epoch (and the run is not stopped).
      model_fn: the model ``T(W)`` (:func:`jaxtd.models.get`), for the residual sign.
      sign_rule: ``"keep"`` or ``"residual"``.
    """
    hp = state.hparams
    epoch, next_start = advance_epoch(state.epoch, state.next_start, begin, hp)
    chosen = rows_to_redraw(state.params, state.mask, hp["threshold"], begin)
    params = base.redraw_rows(state.key, epoch, state.params, chosen, hp["init_scale"])
    signs = state.signs
    if sign_rule == "residual":
        signs = base.residual_signs(model_fn, state.params, signs, state.mask, target, chosen,
                                    models.unit_rows(params))
    return state._replace(params=params, signs=signs, epoch=epoch, next_start=next_start)


def epochs_done(stopped, starting, epoch, max_epochs: Optional[int]) -> jax.Array:
    """bool scalar: ``stopped`` already, or epoch ``s + 1`` is ``starting`` with
    ``s + 1 >= max_epochs`` (never when ``max_epochs`` is None)."""
    if max_epochs is None:
        return stopped
    return stopped | (starting & (epoch + 1 >= max_epochs))


def euler_step(params: jax.Array, grads: jax.Array, mask: jax.Array, learning_rate) -> jax.Array:
    """``(m, d)`` Euler step of the flow ``W - η mask ∇L_λ(W)``: masked rows stay inert."""
    return params - learning_rate * mask[:, None] * grads


@base.constructor
def deflation(delta0: float = 1e-3, delta1: float = 1e-2, gamma: float = 2.0,
              epsilon: float = 1e-3, regularization: Optional[float] = None, *,
              tau0: float = 5.0, step_size: float = 0.05, max_epochs: Optional[int] = None,
              model: str = "two_homogeneous", signs: str = "auto", sign_rule: str = "keep",
              name: Optional[str] = None) -> base.Algorithm:
    """Reconstruction of the modified gradient flow (docs/algorithms.md; see the module docstring).

    Args:
      delta0: initialization and re-draw norm ``δ0 > 0`` (hparam ``init_scale``).
      delta1: re-draw threshold ``δ1 > δ0`` (hparam ``threshold``).
      gamma: epoch-length growth ``γ > 1`` (hparam ``gamma``).
      epsilon: target relative error ``ε > 0``: the run stops (freezes) once reached. The check
        uses the step's own loss (no extra cost); in float32 its cancellation error makes it
        reliable for ``ε >= ~1e-3`` only (use float64 for smaller ``ε``).
      regularization: ``λ >= 0`` of ``L_λ``, default ``ε/10`` (hparam ``regularization``).
      tau0: length ``τ0 > 0`` of epoch 0 in flow time (hparam ``tau0``).
      step_size: Euler step ``η > 0`` (hparam ``learning_rate``); epoch ``s`` has about
        ``τ0 γ^s / η`` steps.
      max_epochs: stop after this many epochs (``None``: only ``ε`` and the runner stop it).
      model: ``"two_homogeneous"`` (default, the analysed model) or ``"plain"``.
      signs: initial fixed-sign rule (:func:`jaxtd.models.draw_signs`; ``"auto"`` is random for
        even ``l``).
      sign_rule: ``"keep"``: a re-drawn row keeps its sign; ``"residual"``: it takes
        ``sign R(w̄^{⊗l})`` with ``R = T* - T(W)`` over the rows that are not re-drawn.
      name: algorithm name (default ``"deflation"``).
    Returns:
      An :class:`~jaxtd.algorithms.Algorithm`; ``step`` reports ``loss`` (``L_λ`` of the
      iterate the update starts from, after any re-draw), ``epoch`` and ``stopped``. A stopped
      run keeps that iterate. Concrete overrides through ``hparams=`` are checked against the
      ranges of :data:`SCHEMA` (``γ > 1``, ...) by the runner; traced ones are not, and neither
      is ``δ1 > δ0`` (keep it).
    """
    base.check_ranges(SCHEMA, delta0=delta0, delta1=delta1, gamma=gamma, epsilon=epsilon,
                      tau0=tau0, step_size=step_size)
    delta0, delta1, gamma, epsilon, tau0, step_size = map(
        float, (delta0, delta1, gamma, epsilon, tau0, step_size))
    if delta1 <= delta0:
        raise ValueError(f"delta1 (re-draw threshold, {delta1}) must be > delta0 (init norm, "
                         f"{delta0}): otherwise fresh rows are re-drawn forever; e.g. "
                         f"delta1 = 10 * delta0")
    if regularization is None:
        regularization = epsilon / 10
    base.check_ranges(SCHEMA, regularization=regularization)
    if max_epochs is not None:
        max_epochs = base.check_int_range(SCHEMA, "max_epochs", max_epochs)
    check_choice(signs, "signs", models.SIGNS)
    check_choice(sign_rule, "sign_rule", SIGN_RULES)
    model_fn = models.get(model)
    defaults = {"init_scale": delta0, "threshold": delta1, "regularization": float(regularization),
                "learning_rate": step_size, "gamma": gamma, "tau0": tau0}

    def init(key, target: SymCP, width: int, *, active=None,
             hparams=None) -> DeflationState:
        ctx = base.init_context(key, target, width, defaults, active=active, hparams=hparams)
        params, row_signs = base.small_rows(ctx, target, signs)
        hp = ctx.hparams
        return DeflationState(
            params=params, signs=row_signs, mask=ctx.mask, hparams=hp,
            count=jnp.zeros((), jnp.int32), key=redraw_key(key), epoch=jnp.zeros((), jnp.int32),
            next_start=epoch_start(1, hp["tau0"], hp["gamma"], hp["learning_rate"]),
            stopped=jnp.zeros((), bool), order=base.Static(target.order))

    def step(state: DeflationState, target: SymCP):
        starting = state.count == state.next_start
        halted = epochs_done(state.stopped, starting, state.epoch, max_epochs)
        # a stopped run is frozen as it is: no more re-draws, so its loss stays put
        state = redraw_small(state, target, starting & ~halted, model_fn=model_fn,
                             sign_rule=sign_rule)
        lam = state.hparams["regularization"]
        value, grads = jax.value_and_grad(models.regularized_loss, argnums=1)(
            model_fn, state.params, target, signs=state.signs, mask=state.mask,
            regularization=lam)
        relative = base.relative_from_loss(value, state.params, state.mask, lam, target)
        halted = halted | (relative <= epsilon)
        params = euler_step(state.params, grads, state.mask, state.hparams["learning_rate"])
        new = freeze(halted, state, state._replace(params=params))
        new = new._replace(count=state.count + 1, stopped=halted)
        return new, {"loss": value, "epoch": state.epoch, "stopped": halted}

    def tensor(state: DeflationState) -> SymCP:
        return model_fn(state.params, state.order.value, state.signs, state.mask)

    return base.Algorithm(name or "deflation", init, step, tensor, lambda state: state.params,
                          defaults, ranges=schema.hparam_params(SCHEMA))


# The configurable arguments of deflation (names and defaults come from its signature).
SCHEMA = schema.derive(deflation, (
    schema.Param("delta0", "float", "initialization and re-draw norm", gt=0, hparam="init_scale"),
    schema.Param("delta1", "float", "re-draw threshold (> delta0)", gt=0, hparam="threshold"),
    schema.Param("gamma", "float", "epoch-length growth factor", gt=1, hparam="gamma"),
    schema.Param("epsilon", "float", "stop once the relative error is <= epsilon", gt=0),
    schema.Param("regularization", "float", "lambda of L_lambda (default epsilon / 10)", ge=0,
                 hparam="regularization"),
    schema.Param("tau0", "float", "length (time) of the first epoch", gt=0, hparam="tau0"),
    schema.Param("step_size", "float", "gradient step (time step of the flow)", gt=0,
                 hparam="learning_rate"),
    schema.Param("max_epochs", "int", "stop after this many epochs (default: never)", ge=1),
    schema.Param("model", "choice", "parametrization of the model", choices=models.MODELS),
    schema.Param("signs", "choice", "initial fixed-sign rule", choices=models.SIGNS),
    schema.Param("sign_rule", "choice", "sign of a re-drawn row", choices=SIGN_RULES),
))
