"""The runner: one ``lax.scan`` of an algorithm's step, recording §F metrics every few steps.

:func:`simulate` is pure and vmappable (static: ``algorithm``, ``width``, ``steps``,
``record_every``); :func:`run` validates in plain Python and calls a jitted :func:`simulate`, so a
second call with the same algorithm and shapes reuses the compiled program.

Structure: an outer scan over ``steps // record_every + 1`` records, each measuring the state and
then running an inner scan of ``record_every`` steps (skipped after the last record); metrics are
evaluated once per record (the initial state is record 0), so their cost is amortized.

Divergence: the loss that the step reports for the current iterate (``metrics["loss"]``, i.e. the
loss *before* that step's update) is watched. When it is non-finite or exceeds
``divergence_factor * (loss_0 + ||T*||^2)`` (``loss_0`` the first step's loss), the run is frozen at
the previous iterate, the last one whose loss passed the test; ``diverged`` becomes True and
``diverged_step`` is the number of updates after which the bad iterate appeared. Nothing raises
and the reported metrics stay finite.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import losses, metrics
from jaxtd.algorithms.base import (Algorithm, check_positive, check_target, check_width,
                                   row_mask)
from jaxtd.symcp import SymCP

__all__ = ["RunResult", "simulate", "run", "default_record_every"]


class RunResult(NamedTuple):
    """Outcome of one run (a pytree of arrays; under ``vmap`` every field gains batch axes).

    Attributes:
      final_relative_error: ``||T - T*|| / ||T*||`` at the end (accurate in float32).
      final_loss: ``1/2 ||T - T*||^2`` at the end (unregularized).
      history: dict of ``(n_records, ...)`` arrays: ``step`` (int32), ``loss``, ``relative_error``,
        ``distance``, ``active_count``, ``fitted_weight`` ``(n, r)``, ``best_correlation`` ``(n, r)``,
        ``objective`` (the loss the last step reported) and any other metric the step reports.
        ``n_records = steps // record_every + 1``; record 0 is the initial state.
      fit_times: ``(r,)`` int32 first recorded step where the fitted weight along ``a_j`` reaches
        half the true weight; ``-1`` = never.
      diverged: bool.
      diverged_step: int32, ``-1`` = never.
      distance: final ``||W - W0||_F / ||W0||_F``.
      active_count: final number of active components.
    """

    final_relative_error: Any
    final_loss: Any
    history: dict
    fit_times: Any
    diverged: Any
    diverged_step: Any
    distance: Any
    active_count: Any


class _Carry(NamedTuple):
    state: Any
    prev: Any          # the last iterate whose loss passed the divergence test
    last: dict         # the step metrics of that iterate
    diverged: Any
    diverged_step: Any
    reference: Any     # loss_0 + ||T*||^2
    count: Any


def _where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def simulate(algorithm: Algorithm, key, target: SymCP, *, width: int, steps: int,
             record_every: int, active=None, hparams=None, divergence_factor=1e6,
             fit_fraction=0.5, active_fraction=0.1) -> RunResult:
    """Run ``algorithm`` for ``steps`` steps from ``algorithm.init(key, target, width, ...)``.

    Pure and vmappable over ``key``, ``target`` arrays, ``active``, ``hparams`` and the float
    options. ``steps`` must be a multiple of ``record_every``. See the module docstring for the
    divergence rule and :class:`RunResult` for the outputs.
    """
    n_records = steps // record_every
    state0 = algorithm.init(key, target, width, active=active, hparams=hparams)
    params0 = algorithm.params(state0)
    # Distances over the active rows only, so a masked run reports what it would alone.
    mask = row_mask(width, active, params0.dtype)
    target_sq = losses.inner(target, target)
    dtype = target_sq.dtype

    def measure(state, last):
        out = metrics.record(algorithm.tensor(state), target, algorithm.params(state), params0,
                             mask=mask, active_fraction=active_fraction)
        extra = {("objective" if k == "loss" else k): v for k, v in last.items()}
        out.update({k: v for k, v in extra.items() if k not in out})
        return out

    if "loss" not in jax.eval_shape(algorithm.step, state0, target)[1]:
        raise ValueError(f"algorithm {algorithm.name!r}: step must report metrics['loss'] "
                         "(the runner watches it for divergence)")

    def one_step(carry: _Carry, _):
        new, m = algorithm.step(carry.state, target)
        loss = m["loss"].astype(dtype)
        reference = jnp.where(carry.count == 0, loss + target_sq, carry.reference)
        bad = ~jnp.isfinite(loss) | (loss > divergence_factor * reference)
        newly = bad & ~carry.diverged
        diverged = carry.diverged | bad
        frozen = _where(newly, carry.prev, carry.state)
        return _Carry(
            state=_where(diverged, frozen, new),
            prev=_where(diverged, carry.prev, carry.state),
            last=_where(diverged, carry.last, m),
            diverged=diverged,
            diverged_step=jnp.where(newly, carry.count, carry.diverged_step),
            reference=reference,
            count=carry.count + 1,
        ), None

    def advance(carry: _Carry) -> _Carry:
        return jax.lax.scan(one_step, carry, None, length=record_every)[0]

    # Measure, then advance: n_records + 1 measurements share one traced copy of the (costly to
    # compile) metrics; the index predicate is never batched, so the last, skipped advance stays a
    # real branch under vmap.
    def one_record(carry: _Carry, i):
        rec = measure(carry.state, carry.last)
        return jax.lax.cond(i < n_records, advance, lambda c: c, carry), rec

    # Record 0 shows the step metrics of the initial iterate (one extra, discarded step call).
    last0 = algorithm.step(state0, target)[1]
    carry0 = _Carry(state0, state0, last0, jnp.zeros((), bool), jnp.full((), -1, jnp.int32),
                    jnp.zeros((), dtype), jnp.zeros((), jnp.int32))
    carry, history = jax.lax.scan(one_record, carry0, jnp.arange(n_records + 1))
    history["step"] = jnp.arange(n_records + 1, dtype=jnp.int32) * record_every
    fits = metrics.fit_times(history["fitted_weight"], metrics.true_weights(target),
                             history["step"], fit_fraction)
    return RunResult(
        final_relative_error=history["relative_error"][-1],
        final_loss=history["loss"][-1],
        history=history,
        fit_times=fits,
        diverged=carry.diverged,
        diverged_step=carry.diverged_step,
        distance=history["distance"][-1],
        active_count=history["active_count"][-1],
    )


_simulate_jit = jax.jit(simulate, static_argnames=("algorithm", "width", "steps", "record_every"))


def default_record_every(steps: int, records: int = 100) -> int:
    """The largest divisor of ``steps`` that is at most ``max(1, steps // records)``."""
    target = max(1, steps // records)
    return max(k for k in range(1, target + 1) if steps % k == 0)


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a Python int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_key(key) -> None:
    shape = getattr(key, "shape", None)
    typed = shape is not None and jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
    if shape is None or not (typed and shape == () or shape == (2,)):
        raise TypeError(f"key must be one PRNG key (jax.random.PRNGKey(seed) or "
                        f"jax.random.key(seed)), got {type(key).__name__} of shape {shape}; "
                        "vmap jaxtd.simulate for many seeds")


def validate(algorithm, key, target, *, width, steps, record_every, divergence_factor=1e6,
             active=None):
    """The plain-Python checks of :func:`run` (exposed for sweeps); returns the ints."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a jaxtd.algorithms.Algorithm (e.g. "
                        f"jaxtd.algorithms.gd(0.1)), got {type(algorithm).__name__}")
    check_target(target)
    _check_key(key)
    width = check_width(width)
    steps = _check_int(steps, "steps")
    record_every = _check_int(record_every, "record_every")
    if steps % record_every:
        raise ValueError(f"steps={steps} must be a multiple of record_every={record_every}; "
                         f"e.g. record_every={default_record_every(steps)}")
    check_positive(divergence_factor, "divergence_factor")
    if active is not None and np.ndim(active) == 0 and not isinstance(active, jax.core.Tracer):
        if not 1 <= int(active) <= width:
            raise ValueError(f"active must be in [1, width={width}], got {int(active)}")
    return width, steps, record_every


def run(algorithm: Algorithm, key, target: SymCP, *, width: int, steps: int,
        record_every: Optional[int] = None, active=None, hparams=None, divergence_factor=1e6,
        fit_fraction=0.5, active_fraction=0.1) -> RunResult:
    """Validate the arguments, then run the jitted :func:`simulate` (compiled once per algorithm
    and shapes). ``record_every`` defaults to about ``steps / 100``."""
    if record_every is None:
        record_every = default_record_every(_check_int(steps, "steps"))
    width, steps, record_every = validate(algorithm, key, target, width=width, steps=steps,
                                          record_every=record_every,
                                          divergence_factor=divergence_factor, active=active)
    return _simulate_jit(algorithm, key, target, width=width, steps=steps,
                         record_every=record_every, active=active, hparams=hparams,
                         divergence_factor=divergence_factor, fit_fraction=fit_fraction,
                         active_fraction=active_fraction)
