"""Lazy training at a given linearization point: the step of
:func:`jaxtd.algorithms.lazy_gd` under ``lax.scan`` (see :mod:`jaxtd.lazy`)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxtd import optimizers
from jaxtd._checks import check_int
from jaxtd.losses import norm
from jaxtd.shapes import Params
from jaxtd.symcp import SymCP
from jaxtd.lazy._model import _check_model_target, _check_delta, lazy_loss, lazy_residual_sq

__all__ = ["LazyTrainState", "lazy_metrics", "lazy_update", "train_init", "train_step", "train"]


# -- lazy training --------------------------------------------------------------------------------

class LazyTrainState(NamedTuple):
    """State of lazy gradient descent: the perturbation ``Δ`` ``(m, d)`` and the optax state."""
    delta: jax.Array
    opt_state: Any


def lazy_metrics(model: SymCP, delta: Params, target: SymCP) -> dict:
    """``loss`` (``1/2 ||T_lin - T*||^2``, accurate), ``relative_error`` and ``distance``
    (``||Δ||_F / ||W0||_F`` over active rows) of the lazy model at ``Δ``; scalars."""
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


def lazy_update(optimizer: optimizers.Optimizer, model: SymCP, delta: Params, opt_state: Any,
                target: SymCP, learning_rate, regularization=0.0) -> tuple:
    """One optimizer update of ``Δ`` on ``1/2 ||T(W0) + JΔ - T*||^2 + λ/2 ||Δ||_F^2``.

    The one lazy update: :func:`train_step` and :func:`jaxtd.algorithms.lazy_gd` both take it.

    Args:
      optimizer: a normalized spec (:func:`jaxtd.optimizers.make_optimizer`).
      model: the linearization point ``SymCP(c, W0, l)``; rows of weight 0 are masked (their
        lazy gradient is 0, and the update is masked too, so a ridge or weight decay leaves
        them in place).
      delta: ``(m, d)`` perturbation ``Δ``.
      opt_state: the optimizer state of ``delta``.
      target: ``T*``.
      learning_rate: scalar (may be traced).
      regularization: ridge ``λ >= 0`` (scalar, may be traced).
    Returns:
      ``(delta, opt_state, objective)``, the objective evaluated *before* the update.
    """
    def objective(d):
        return lazy_loss(model, d, target) + 0.5 * regularization * jnp.sum(d * d)

    value, grad = jax.value_and_grad(objective)(delta)
    active = (model.weights != 0).astype(delta.dtype)
    delta, opt_state = optimizers.optimizer_step(optimizer, delta, grad, opt_state,
                                                 learning_rate, active)
    return delta, opt_state, value


def train_step(optimizer) -> Callable:
    """``step(state, model, target) -> state``: one optimizer update on :func:`lazy_loss` in ``Δ``
    (:func:`lazy_update` without ridge), at a given linearization point ``model``.

    ``optimizer`` is any spec :func:`jaxtd.algorithms.lazy_gd` accepts; a ready transformation is
    applied as is. Pure and jit/vmap/scan-able; the optimizer structure is static (closed over).
    """
    opt = optimizers.make_optimizer(optimizer)

    def step(state: LazyTrainState, model: SymCP, target: SymCP) -> LazyTrainState:
        lr = jnp.asarray(opt.learning_rate, state.delta.dtype)
        delta, opt_state, _ = lazy_update(opt, model, state.delta, state.opt_state, target, lr)
        return LazyTrainState(delta, opt_state)

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
    steps = check_int(steps, "steps", 1)
    record_every = check_int(record_every, "record_every", 1)
    if steps % record_every:
        raise ValueError(f"steps={steps} must be a multiple of record_every={record_every}")
    state = train_init(model, optimizer, delta)
    step = train_step(optimizer)

    def block(st, i):
        st = jax.lax.fori_loop(0, record_every, lambda _, s: step(s, model, target), st)
        return st, dict(step=(i + 1) * record_every, **lazy_metrics(model, st.delta, target))

    return jax.lax.scan(block, state, jnp.arange(steps // record_every))
