"""Lazy training at a given linearization point: the step of
:func:`jaxtd.algorithms.lazy_gd` under ``lax.scan`` (see :mod:`jaxtd.lazy`)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxtd._checks import check_int
from jaxtd.shapes import Params
from jaxtd.symcp import SymCP
from jaxtd._lazy_model import _check_model_target, _check_delta, lazy_residual_sq

__all__ = ["LazyTrainState", "lazy_metrics", "train_init", "train_step", "train"]


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


def train_step(optimizer) -> Callable:
    """``step(state, model, target) -> state``: one optimizer update on :func:`lazy_loss` in ``Δ``.

    The step of :func:`jaxtd.algorithms.lazy_gd` (one trainer; its default ridge is 0 and a ready
    transformation is applied as is), at a given linearization point ``model``. Pure and
    jit/vmap/scan-able; the optimizer structure is static (closed over)."""
    from jaxtd.algorithms import LazyGDState, lazy_gd  # local: the algorithms import this module
    algorithm = lazy_gd(optimizer)

    def step(state: LazyTrainState, model: SymCP, target: SymCP) -> LazyTrainState:
        dtype = state.delta.dtype
        hparams = {k: jnp.asarray(v, dtype) for k, v in algorithm.hparams.items()}
        new, _ = algorithm.step(LazyGDState(state.delta, model, state.opt_state, hparams,
                                            jnp.zeros((), jnp.int32)), target)
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
