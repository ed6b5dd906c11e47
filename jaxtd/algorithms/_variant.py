"""Reconstruction of the first paper's "variant of gradient descent" (docs/algorithms.md).

The paper ("Beyond Lazy Training for Over-parameterized Tensor Decomposition", NeurIPS 2020) gives
no pseudo-code we can reproduce bit for bit; this is a **reconstruction** consistent with what is
known, every choice exposed as a parameter:

1. Small init ``w_i = δ z_i/||z_i||`` (row ``i`` from ``fold_in(key, i)``, as :func:`gd`); fixed
   signs ``s_i`` (``+1`` for odd ``l``, random for even ``l`` by default).
2. Epoch ``e`` (``H_amp + H_fit`` gradient steps):

   a. *re-draw*: pick one active row ``i`` (``"smallest"`` norm, or ``"round_robin"``) and set
      ``w_i = δ z/||z||`` with ``z`` from ``fold_in(fold_in(k_redraw, e), i)`` (never depends on the
      padded width); with ``sign_rule="residual"`` its sign becomes ``s_i = sign R(w̄_i^{⊗l})``,
      ``R = T* - T(W)`` without row ``i``, so its norm grows at rate ``2|R(w̄^{⊗l})| - λ``;
   b. *amplify*: ``H_amp`` steps on ``L_λ`` moving row ``i`` alone (the others frozen): the
      tensor-power-like flow of the direction amplifies its random correlation with ``R``;
   c. *fit*: ``H_fit`` steps on ``L_λ`` moving every active row.
3. Stop after ``K`` epochs, or once the relative error is ``<= ε`` (the state then stays frozen).

One ``step`` call is one gradient step (the re-draw happens inside the first step of an epoch),
so the common runner drives it like :func:`~jaxtd.algorithms.gd`. Epoch, phase and selection come
from a step counter in the state through ``jnp.where`` and masks: no Python branching on traced
values, so a step jits once and vmaps over seeds, widths and hparams.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxtd import models, schema
from jaxtd.algorithms import base
from jaxtd.algorithms.base import SIGN_RULES, check_choice, freeze, redraw_key
from jaxtd.symcp import SymCP

__all__ = ["variant", "VariantState", "SELECTIONS", "select_row", "draw_row",
           "clock", "epochs_done", "redraw_selected", "moving_rows", "SCHEMA"]

SELECTIONS = ("smallest", "round_robin")


class VariantState(NamedTuple):
    """State of :func:`variant`.

    Attributes:
      params: ``(m, d)`` factors ``W``.
      signs: ``(m,)`` signs ``s`` (changed only at a re-draw with ``sign_rule="residual"``).
      mask: ``(m,)`` 0/1 activity mask.
      opt_state: optimizer state (reset on the re-drawn row).
      hparams: dict of scalar arrays ``init_scale`` (δ), ``regularization`` (λ),
        ``learning_rate``.
      count: int32 number of ``step`` calls so far (the clock of the epoch structure).
      key: PRNG key of the re-draw stream.
      selected: int32 row re-drawn at the start of the current epoch.
      stopped: bool, True once ``K`` epochs are done or the error reached ``ε`` (frozen).
      order: static tensor order ``l``.
    """

    params: jax.Array
    signs: jax.Array
    mask: jax.Array
    opt_state: Any
    hparams: dict
    count: jax.Array
    key: jax.Array
    selected: jax.Array
    stopped: jax.Array
    order: base.Static


# -- the re-draw ---------------------------------------------------------------------------------

def draw_row(key, epoch, row, dim: int, delta, dtype) -> jax.Array:
    """``(d,)`` row ``δ z/||z||``, ``z ~ N(0, I)`` from ``fold_in(fold_in(key, epoch), row)``.

    Same draw as :func:`jaxtd.algorithms.base.redraw_rows` gives row ``row``, without drawing the
    other ``width - 1`` rows.
    """
    z = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, epoch), row), (dim,), dtype)
    return jnp.asarray(delta).astype(dtype) * z / jnp.linalg.norm(z)


def select_row(params: jax.Array, mask: jax.Array, epoch, selection: str) -> jax.Array:
    """Row to re-draw at the start of ``epoch``, among active rows only (int32 scalar).

    ``"smallest"``: the first active row whose ``||w_i||^2`` is within a relative ``1e-6`` of the
    smallest over rows with ``mask_i = 1`` (masked rows count as ``+inf``); ``"round_robin"``:
    ``epoch mod (number of active rows)``. Neither depends on the padded width, since active rows
    come first. The tolerance matters at initialization, where every row has norm ``δ`` up to
    rounding: a plain argmin would let the last bit (which depends on how XLA vectorizes the
    program, e.g. batched in a sweep or alone) pick the row, and the runs would part ways.
    """
    if selection == "smallest":
        norms = jnp.where(mask > 0, jnp.sum(params * params, axis=-1), jnp.inf)
        tied = norms <= jnp.min(norms) * (1 + 1e-6)
        return jnp.argmax(tied).astype(jnp.int32)
    active = jnp.maximum(jnp.sum(mask > 0), 1).astype(jnp.int32)
    return (jnp.asarray(epoch, jnp.int32) % active).astype(jnp.int32)


def redraw_selected(state: VariantState, target: SymCP, epoch, begin, *, model_fn: Callable,
                    reset: Callable, selection: str, sign_rule: str) -> VariantState:
    """Step (a) of an epoch: re-draw one row, its sign and its optimizer state where ``begin``.

    Where ``begin`` (bool scalar, traced): ``i = select_row(W, mask, epoch, selection)``,
    ``w_i <- draw_row(key, epoch, i, d, δ)`` (norm ``δ = hparams["init_scale"]``), with
    ``sign_rule="residual"`` ``s_i <- sign R(w̄_i^{⊗l})``, ``R = T* - T(W)`` over the active rows
    other than ``i`` at the old ``W`` (``+1`` where ``R(w̄_i^{⊗l}) >= 0``), and row ``i`` of every
    row-wise optimizer leaf reset to ``reset(W_new)``; ``selected <- i``. Elsewhere the state is
    returned with ``selected`` unchanged.

    Args:
      state: :class:`VariantState` with ``params`` ``(m, d)``.
      target: ``T*`` of dimension ``d``.
      epoch: int scalar, the epoch ``e`` starting (seeds the draw, and the round-robin choice).
      begin: bool scalar, whether this step starts an epoch (and the run is not stopped).
      model_fn: the model ``T(W)`` (:func:`jaxtd.models.get`), for the residual sign.
      reset: the optimizer's ``init(params)``, giving the fresh row's optimizer state.
      selection: ``"smallest"`` or ``"round_robin"`` (:func:`select_row`).
      sign_rule: ``"residual"`` or ``"keep"``.
    """
    row = jnp.where(begin, select_row(state.params, state.mask, epoch, selection), state.selected)
    fresh = draw_row(state.key, epoch, row, target.dim, state.hparams["init_scale"],
                     state.params.dtype)
    onehot = jnp.arange(state.params.shape[0], dtype=jnp.int32) == row
    chosen = onehot & begin
    params = jnp.where(chosen[:, None], fresh[None, :], state.params)
    signs = state.signs
    if sign_rule == "residual":
        # R of the other rows along the fresh direction (a single direction: one row moves)
        signs = base.residual_signs(model_fn, state.params, signs, state.mask, target, chosen,
                                    (fresh / jnp.linalg.norm(fresh))[None, :])
    opt_state = base.where_rows(chosen, reset(params), state.opt_state)
    return state._replace(params=params, signs=signs, opt_state=opt_state, selected=row)


# -- the epoch clock -----------------------------------------------------------------------------

def clock(count, amplify_steps: int, fit_steps: int) -> tuple:
    """``(epoch, phase)`` of step ``count``: ``divmod(count, H_amp + H_fit)`` (int32 scalars).

    Phase ``0`` re-draws; phases ``< H_amp`` amplify; the others fit.
    """
    length = amplify_steps + fit_steps
    return count // length, count % length


def epochs_done(stopped, epoch, epochs: Optional[int]) -> jax.Array:
    """bool scalar: ``stopped`` already, or ``epoch >= K`` (never when ``epochs`` is None)."""
    if epochs is None:
        return stopped
    return stopped | (epoch >= epochs)


def moving_rows(selected, phase, amplify_steps: int, mask: jax.Array) -> jax.Array:
    """``(m,)`` 0/1 rows a step moves: ``mask_i [i = selected]`` while ``phase < H_amp``
    (amplify: the re-drawn row alone), ``mask_i`` after (fit: every active row); dtype of
    ``mask``."""
    onehot = jnp.arange(mask.shape[0], dtype=jnp.int32) == selected
    return jnp.where(phase < amplify_steps, onehot, True).astype(mask.dtype) * mask


# -- the algorithm -------------------------------------------------------------------------------

@base.constructor
def variant(optimizer: Any = 0.05, *, model: str = "two_homogeneous", init_scale: float = 1e-2,
            regularization: float = 1e-3, amplify_steps: int = 100, fit_steps: int = 200,
            epochs: Optional[int] = 30, epsilon: float = 0.0, selection: str = "smallest",
            sign_rule: str = "residual", signs: str = "auto",
            learning_rate: Optional[float] = None, name: Optional[str] = None) -> base.Algorithm:
    """Reconstruction of the paper's variant of GD (docs/algorithms.md; see the module docstring).

    Args:
      optimizer: the step ``η`` as a float (plain SGD, default 0.05), an optax factory with
        ``learning_rate=``, or a ready ``GradientTransformation`` (then ``learning_rate`` is a
        multiplier), exactly as in :func:`~jaxtd.algorithms.gd`.
      model: ``"two_homogeneous"`` (the analysed one, default) or ``"plain"``.
      init_scale: δ > 0, norm of initial and re-drawn rows (hparam ``init_scale``).
      regularization: λ >= 0 of ``L_λ`` (hparam ``regularization``); the fitted weights settle
        ``O(λ)`` below the truth.
      amplify_steps: ``H_amp >= 0`` steps moving the re-drawn row alone.
      fit_steps: ``H_fit >= 0`` steps moving all active rows (``H_amp + H_fit >= 1``).
      epochs: ``K >= 1`` epochs, after which the state is frozen; ``None``: never stop.
      epsilon: stop (freeze) once the relative error ``||T - T*||/||T*|| <= ε``; 0 never stops.
        The check uses the step's own float loss: in float32 reliable for ``ε >= ~1e-3`` only.
      selection: ``"smallest"`` active row by norm, or ``"round_robin"``.
      sign_rule: ``"residual"``: the re-drawn row takes ``sign R(w̄^{⊗l})``; ``"keep"``: its sign
        is unchanged.
      signs: initial fixed-sign rule (:func:`jaxtd.models.draw_signs`).
      learning_rate: default learning rate of a factory optimizer / multiplier of a ready one.
      name: algorithm name (default ``"variant"``).
    Returns:
      An :class:`~jaxtd.algorithms.Algorithm`; ``step`` reports ``loss`` (``L_λ`` of the
      iterate the update starts from, after any re-draw), ``epoch``, ``selected`` (the row
      re-drawn this epoch) and ``stopped``; a stopped run keeps that iterate.
    """
    model_fn = models.get(model)
    check_choice(signs, "signs", models.SIGNS)
    check_choice(selection, "selection", SELECTIONS)
    check_choice(sign_rule, "sign_rule", SIGN_RULES)
    base.check_ranges(SCHEMA, init_scale=init_scale, regularization=regularization,
                      epsilon=epsilon)
    h_amp = base.check_int_range(SCHEMA, "amplify_steps", amplify_steps)
    h_fit = base.check_int_range(SCHEMA, "fit_steps", fit_steps)
    if h_amp + h_fit < 1:
        raise ValueError("amplify_steps + fit_steps must be >= 1 (an epoch needs a step)")
    if epochs is not None:
        epochs = base.check_int_range(SCHEMA, "epochs", epochs)
    opt = base.make_optimizer(optimizer, learning_rate)
    defaults = {"init_scale": float(init_scale), "regularization": float(regularization),
                "learning_rate": opt.learning_rate}

    def init(key, target: SymCP, width: int, *, active=None,
             hparams=None) -> VariantState:
        ctx = base.init_context(key, target, width, defaults, active=active, hparams=hparams)
        params, row_signs = base.small_rows(ctx, target, signs)
        return VariantState(
            params=params, signs=row_signs, mask=ctx.mask,
            opt_state=base.init_optimizer(opt, params),
            hparams=ctx.hparams, count=jnp.zeros((), jnp.int32), key=redraw_key(key),
            selected=jnp.zeros((), jnp.int32), stopped=jnp.zeros((), bool),
            order=base.Static(target.order))

    def step(state: VariantState, target: SymCP):
        epoch, phase = clock(state.count, h_amp, h_fit)
        halted = epochs_done(state.stopped, epoch, epochs)
        # a stopped run is frozen as it is: no more re-draws, so its loss stays put
        state = redraw_selected(state, target, epoch, (phase == 0) & ~halted, model_fn=model_fn,
                                reset=lambda p: base.init_optimizer(opt, p), selection=selection,
                                sign_rule=sign_rule)
        lam = state.hparams["regularization"]
        value, grads = jax.value_and_grad(models.regularized_loss, argnums=1)(
            model_fn, state.params, target, signs=state.signs, mask=state.mask,
            regularization=lam)
        moving = moving_rows(state.selected, phase, h_amp, state.mask)
        params, opt_state = base.optimizer_step(opt, state.params, grads, state.opt_state,
                                                state.hparams["learning_rate"], moving)
        if epsilon > 0:
            relative = base.relative_from_loss(value, state.params, state.mask, lam, target)
            halted = halted | (relative <= epsilon)
        new = state._replace(params=params, opt_state=opt_state)
        new = freeze(halted, state, new)._replace(count=state.count + 1, stopped=halted)
        return new, {"loss": value, "epoch": epoch, "selected": state.selected,
                     "stopped": halted}

    def tensor(state: VariantState) -> SymCP:
        return model_fn(state.params, state.order.value, state.signs, state.mask)

    return base.Algorithm(name or "variant", init, step, tensor, lambda state: state.params,
                          defaults, ranges=schema.hparam_params(SCHEMA))


# The configurable arguments of variant (names and defaults come from its signature).
SCHEMA = schema.derive(variant, base.optimizer_params("gradient step size eta") + (
    schema.Param("model", "choice", "parametrization of the model", choices=models.MODELS),
    schema.Param("init_scale", "float", "norm delta of initial and re-drawn rows", gt=0,
                 hparam="init_scale"),
    schema.Param("regularization", "float", "weight-decay coefficient lambda of L_lambda", ge=0,
                 hparam="regularization"),
    schema.Param("amplify_steps", "int", "steps moving the re-drawn row alone per epoch", ge=0),
    schema.Param("fit_steps", "int", "steps moving every row per epoch", ge=0),
    schema.Param("epochs", "int", "epochs before the run freezes", ge=1),
    schema.Param("epsilon", "float", "freeze once the relative error is <= epsilon (0: never)",
                 ge=0),
    schema.Param("selection", "choice", "which row an epoch re-draws", choices=SELECTIONS),
    schema.Param("sign_rule", "choice", "sign of the re-drawn row", choices=SIGN_RULES),
    schema.Param("signs", "choice", "initial fixed-sign rule", choices=models.SIGNS),
))
