"""The runner: one ``lax.scan`` of an algorithm's step, recording the metrics of docs/results.md
every few steps.

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

Derivatives. A run is a differentiable function of every continuous input: the hyper-parameters
(``hparams``, e.g. ``learning_rate``, ``init_scale``, ``regularization``, traced values inside
the state), the target's weights and factors, and the initial factors (``init_params``), in
reverse mode (``jax.grad``, ``jax.vjp``) and forward mode (``jax.jvp``, ``jax.jacfwd``), under
``vmap`` (a vmapped grid of :func:`simulate` over seeds, widths via ``active`` and hparams, as
:func:`jaxtd.sweep` compiles it, differentiates cell by cell). Differentiable outputs: ``final_loss``,
``final_relative_error``, ``distance``, ``final_params`` and every float entry of ``history``
(the final loss and relative error are the precise metric with the derivative of the plain Gram
formula; earlier records of ``history["loss"]``/``history["relative_error"]`` are the aligned
residual, differentiated as it is computed; see :mod:`jaxtd.metrics`). Integer and bool outputs (``fit_times``, ``diverged``, ``diverged_step``,
``active_count``, ``history["step"]``, ``history["active_count"]``) are piecewise constant:
``jax.grad`` of them raises a ``TypeError`` and their ``jax.jvp`` tangents are ``float0`` zeros.
Differentiating a step's gradient is second order, which the algorithms' loss
(:func:`jaxtd.losses.gram_loss`, a ``custom_jvp`` whose gradient formulas are plain jax)
supports: forward-over-reverse (``jvp`` of a run) and reverse-over-reverse (``grad`` of a run)
both work.

- Memory: with ``checkpoint=True`` (default) each block of ``record_every`` steps is
  rematerialized (``jax.checkpoint``), so reverse mode stores the state once per record plus one
  block's residuals, ``O((steps / record_every + record_every) * state)`` instead of
  ``O(steps * state)``; ``record_every ~ sqrt(steps)`` minimizes it. The price is one extra
  forward pass of the steps in the backward pass; an undifferentiated run is unaffected
  (``benchmarks/grad.py`` measures both).
- Discrete events (the divergence freeze, the variant's re-draws and stops, the deflation flow's
  re-initializations and stops) are ``jnp.where`` selects whose conditions carry no derivative:
  the derivative is the piecewise one, exact between events and blind to an event moving (e.g.
  ``d/d init_scale`` of a deflation run counts the re-drawn rows' norm ``δ0`` but not a change
  of which rows fall below ``δ1``). Finite differences agree only when no event happens inside
  the perturbation. Beware ties: at init every row of gd, the variant and the deflation flow has
  norm exactly ``δ``, so the variant's first ``selection="smallest"`` re-draw is decided by
  rounding and may flip under any perturbation. The derivative of a run that diverged is not
  meaningful (it may be NaN): check ``diverged``.
- Known limitation: lazy GD with masked rows (``active < width``) has NaN reverse-mode
  derivatives (its polarized tensor divides by the norm of the zero perturbation of a masked
  row); forward mode and unmasked runs are exact.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import losses, metrics, schema
from jaxtd._checks import check_finite, check_int, check_positive, host_value, is_real
from jaxtd._sizes import default_record_every  # re-exported (moved below JAX)
from jaxtd.algorithms.base import Algorithm, check_target, check_width, freeze, row_mask
from jaxtd.log import check_callback, history_records
from jaxtd.symcp import SymCP
from jaxtd.targets import check_key  # one key policy for the whole package

__all__ = ["RunResult", "simulate", "trajectory", "guarded_step", "with_final_loss", "run",
           "default_record_every", "with_init_params"]


class RunResult(NamedTuple):
    """Outcome of one run (a pytree of arrays; under ``vmap`` every field gains batch axes).

    Differentiable fields (float): ``final_relative_error``, ``final_loss``, ``distance``,
    ``final_params`` and the float entries of ``history``; ``final_loss`` and
    ``final_relative_error`` are the precise values (float32 included) with the derivative of the
    plain Gram formula (module docstring).
    Not differentiable (integer/bool, piecewise constant; ``jax.grad`` raises a ``TypeError``,
    ``jax.jvp`` gives ``float0`` tangents): ``fit_times``, ``diverged``, ``diverged_step``,
    ``active_count``, ``history["step"]``, ``history["active_count"]``.

    Attributes:
      final_relative_error: ``||T - T*|| / ||T*||`` at the end (accurate in float32).
      final_loss: ``1/2 ||T - T*||^2`` at the end (unregularized).
      history: dict of ``(n_records, ...)`` arrays: ``step`` (int32), ``loss``, ``relative_error``,
        ``distance``, ``active_count``, ``fitted_weight`` ``(n, r)``, ``best_correlation`` ``(n, r)``,
        ``objective`` (the loss the last step reported) and any other metric the step reports.
        ``n_records = steps // record_every + 1``; record 0 is the initial state. The recorded
        ``loss`` and ``relative_error`` come from the cheap aligned residual
        (:func:`jaxtd.metrics.aligned_half_residual_sq`: a few percent down to errors of ~1e-5
        in float32, 1e-3 down to 1e-12 in float64); the last record holds the precise final
        values, as ``final_loss`` and ``final_relative_error``.
      fit_times: ``(r,)`` int32 first recorded step where the fitted weight along ``a_j`` reaches
        half the true weight; ``-1`` = never.
      diverged: bool.
      diverged_step: int32, ``-1`` = never.
      distance: final ``||W - W0||_F / ||W0||_F``.
      active_count: final number of active components.
      final_params: ``(width, d)`` final ``algorithm.params(state)`` (e.g. the factors ``W``).
    """

    final_relative_error: Any
    final_loss: Any
    history: dict
    fit_times: Any
    diverged: Any
    diverged_step: Any
    distance: Any
    active_count: Any
    final_params: Any


class _Carry(NamedTuple):
    state: Any
    prev: Any          # the last iterate whose loss passed the divergence test
    last: dict         # the step metrics of that iterate
    diverged: Any
    diverged_step: Any
    reference: Any     # loss_0 + ||T*||^2
    count: Any
    first: dict        # the first step's metrics (of the initial iterate): record 0's


def guarded_step(carry: _Carry, algorithm: Algorithm, target: SymCP, divergence_factor,
                 target_sq) -> _Carry:
    """One ``algorithm.step`` under the divergence watch.

    The step's ``loss`` (before its update) is bad when it is not finite or exceeds
    ``divergence_factor * (loss_0 + ||T*||^2)`` (``target_sq = ||T*||^2``, in the loss's dtype).
    At the first bad step the run freezes at the last iterate whose loss passed (``prev``) and
    records that step in ``diverged_step``; a frozen run stays put. The test selects, it is not
    differentiated. Leaves the step returns unchanged (the same object) skip the select. The
    first step's metrics are kept in ``first`` (and are ``last`` after it, bad or not).
    """
    new, m = algorithm.step(carry.state, target)
    loss = jax.lax.stop_gradient(m["loss"]).astype(target_sq.dtype)
    reference = jnp.where(carry.count == 0, loss + target_sq, carry.reference)
    bad = ~jnp.isfinite(loss) | (loss > divergence_factor * reference)
    newly = bad & ~carry.diverged
    diverged = carry.diverged | bad
    # The leaves the step hands back untouched (a data set, masks, hparams) are equal in state
    # and prev at every step, so they are carried through as they are: a select would make them
    # loop-variant, and XLA would then copy them at every step and recompute at every step
    # what depends on them alone (random features' feature matrix) instead of hoisting it.
    moving = [n is not o for n, o in zip(jax.tree_util.tree_leaves(new),
                                         jax.tree_util.tree_leaves(carry.state))]
    frozen = _freeze_moving(newly, carry.prev, carry.state, moving, carry.state)
    return _Carry(
        state=_freeze_moving(diverged, frozen, new, moving, new),
        prev=_freeze_moving(diverged, carry.prev, carry.state, moving, carry.prev),
        last=freeze(diverged & (carry.count > 0), carry.last, m),
        diverged=diverged,
        diverged_step=jnp.where(newly, carry.count, carry.diverged_step),
        reference=reference,
        count=carry.count + 1,
        first=freeze(carry.count > 0, carry.first, m),
    )


def _freeze_moving(halt, old, new, moving: list, fixed):
    """:func:`freeze` on the leaves flagged ``moving``; ``fixed``'s leaves elsewhere."""
    olds, treedef = jax.tree_util.tree_flatten(old)
    pairs = zip(olds, jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(fixed), moving)
    return treedef.unflatten([jnp.where(halt, o, n) if m else f for o, n, f, m in pairs])


def with_init_params(algorithm: Algorithm, state, params):
    """``state`` with its initial factors replaced by ``params`` (``(width, d)``).

    A state that knows better says so with a method ``state.with_init_params(params)`` (lazy
    GD's, whose ``params`` is ``W0 + Δ`` with ``Δ = 0`` at init: the linearization point ``W0``
    is replaced). Otherwise the factors are the state leaf that ``algorithm.params`` returns
    unchanged (found by tracing it: ``state.params`` for gd, the variant and the deflation flow).
    Everything else the init drew (signs, masks, optimizer state, keys) is kept, so hparams that
    only shaped the drawn factors (``init_scale`` of gd) no longer act, while those that act later
    (re-draw norms of the variant and the deflation flow) still do. Raises a ``TypeError`` for
    an algorithm whose ``params`` is computed from several leaves.
    """
    if hasattr(state, "with_init_params"):
        return state.with_init_params(params)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    jaxpr = jax.make_jaxpr(lambda *ls: algorithm.params(treedef.unflatten(ls)))(*leaves).jaxpr
    out = jaxpr.outvars[0]
    hits = [i for i, v in enumerate(jaxpr.invars) if v is out]
    if len(hits) != 1:
        raise TypeError(f"init_params: algorithm {algorithm.name!r} computes params(state) from "
                        "several state leaves, so its initial factors cannot be replaced; run "
                        "its init and build the state yourself")
    leaf = leaves[hits[0]]
    leaves[hits[0]] = jnp.asarray(params).astype(leaf.dtype)
    return treedef.unflatten(leaves)


def _opaque_hparams(algorithm: Algorithm, hparams) -> dict:
    """Every hparam (defaults merged with ``hparams``) behind an optimization barrier.

    A value then yields the same bits whether it reaches the program traced (``run`` passes every
    hparam as an argument) or as a compile-time constant (a default, or a sweep's non-swept
    hparam): XLA cannot fold or fuse a constant through the barrier. This matters beyond the last
    bit where a run has exact ties, e.g. every initial row has norm exactly ``δ`` and the
    variant's first "smallest" re-draw picks among them by rounding.
    """
    merged = {**dict(algorithm.hparams), **dict(hparams or {})}
    return jax.lax.optimization_barrier({k: jnp.asarray(v) for k, v in merged.items()})


def simulate(algorithm: Algorithm, key, target: SymCP, *, width: int, steps: int,
             record_every: int, active=None, hparams=None, init_params=None,
             divergence_factor=1e6, fit_fraction=0.5, active_fraction=0.1,
             checkpoint: bool = True) -> RunResult:
    """Run ``algorithm`` for ``steps`` steps from ``algorithm.init(key, target, width, ...)``.

    Pure and vmappable over ``key``, ``target`` arrays, ``active``, ``hparams``, ``init_params``
    and the float options; differentiable in the float inputs (module docstring). ``steps`` must
    be a multiple of ``record_every``. See the module docstring for the divergence rule and
    :class:`RunResult` for the outputs.

    Args:
      init_params: optional ``(width, d)`` initial factors replacing the drawn ones
        (:func:`with_init_params`); e.g. to differentiate with respect to the initialization.
      checkpoint: static; rematerialize each block of ``record_every`` steps in reverse mode
        (memory ``O(steps / record_every + record_every)`` states instead of ``O(steps)``, for one
        extra forward pass of the steps when differentiating; no cost otherwise).
    """
    result, final = trajectory(algorithm, key, target, width=width, steps=steps,
                               record_every=record_every, active=active, hparams=hparams,
                               init_params=init_params, divergence_factor=divergence_factor,
                               fit_fraction=fit_fraction, active_fraction=active_fraction,
                               checkpoint=checkpoint)
    half = metrics.half_residual_sq(final, target)
    return with_final_loss(result, half, metrics.safe_sqrt(2.0 * half) / losses.norm(target))


def with_final_loss(result: RunResult, final_loss, final_relative_error) -> RunResult:
    """``result`` with its final loss and relative error (and the history's last record of
    both) replaced, e.g. by the precise values of the final model."""
    history = dict(result.history)
    history["loss"] = history["loss"].at[-1].set(final_loss)
    history["relative_error"] = history["relative_error"].at[-1].set(final_relative_error)
    return result._replace(final_loss=history["loss"][-1],
                           final_relative_error=history["relative_error"][-1], history=history)


def trajectory(algorithm: Algorithm, key, target: SymCP, *, width: int, steps: int,
               record_every: int, active=None, hparams=None, init_params=None,
               divergence_factor=1e6, fit_fraction=0.5, active_fraction=0.1,
               checkpoint: bool = True) -> tuple[RunResult, SymCP]:
    """:func:`simulate` without its precise final metric: ``(result, final_model)``.

    ``result``'s final loss and relative error (and the last history record) are the recorded
    aligned residual of the final model, which equals the precise value in float64 and resolves
    float32 errors to a few percent; ``final_model`` is ``algorithm.tensor`` of the final state,
    from which a caller computes the precise values apart (a grid does, on the host, so that its
    compiled program does not carry the extended-precision float32 arithmetic).
    """
    # concrete arguments are checked as run checks them (traced values, e.g. a sweep's, pass)
    width, steps, record_every = validate(algorithm, key, target, width=width, steps=steps,
                                          record_every=record_every,
                                          divergence_factor=divergence_factor, active=active,
                                          init_params=init_params, hparams=hparams)
    n_records = steps // record_every
    state0 = algorithm.init(key, target, width, active=active,
                            hparams=_opaque_hparams(algorithm, hparams))
    if init_params is not None:
        state0 = with_init_params(algorithm, state0, init_params)
    params0 = algorithm.params(state0)
    # Distances over the active rows only, so a masked run reports what it would alone.
    mask = row_mask(width, active, params0.dtype)
    target_sq = jax.lax.stop_gradient(losses.inner(target, target))
    dtype = target_sq.dtype

    def measure(state, last):
        # the cheap aligned residual in the scanned program; the precise one once, at the end
        out = metrics.record(algorithm.tensor(state), target, algorithm.params(state), params0,
                             mask=mask, active_fraction=active_fraction, precise=False)
        own = algorithm.measure(state, target) if algorithm.measure is not None else {}
        return out, own, last

    def columns(out, own, last):
        extra = {("objective" if k == "loss" else k): v for k, v in last.items()}
        extra.update(own)
        out.update({k: v for k, v in extra.items() if k not in out})
        return out

    step_shapes = jax.eval_shape(algorithm.step, state0, target)[1]
    if "loss" not in step_shapes:
        raise ValueError(f"algorithm {algorithm.name!r}: step must report metrics['loss'] "
                         "(the runner watches it for divergence)")

    def one_step(carry: _Carry, _):
        return guarded_step(carry, algorithm, target, divergence_factor, target_sq), None

    def advance(carry: _Carry) -> _Carry:
        return jax.lax.scan(one_step, carry, None, length=record_every)[0]

    if checkpoint:
        # scan already keeps the recomputation from being CSE'd away
        advance = jax.checkpoint(advance, prevent_cse=False)

    # Measure, then advance: n_records + 1 measurements share one traced copy of the (costly to
    # compile) metrics; the index predicate is never batched, so the last, skipped advance stays a
    # real branch under vmap.
    def one_record(carry: _Carry, i):
        rec = measure(carry.state, carry.last)
        return jax.lax.cond(i < n_records, advance, lambda c: c, carry), rec

    # Record 0 shows the step metrics of the initial iterate: those of the first step, which the
    # loop keeps in `first` (a step called apart for them would be a second copy of the step in
    # the compiled program: a sixth of the variant's compile time).
    blank = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), step_shapes)
    carry0 = _Carry(state0, state0, blank, jnp.zeros((), bool), jnp.full((), -1, jnp.int32),
                    jnp.zeros((), dtype), jnp.zeros((), jnp.int32), blank)
    carry, (out, own, last) = jax.lax.scan(one_record, carry0, jnp.arange(n_records + 1))
    last = jax.tree_util.tree_map(lambda h, f: h.at[0].set(f), last, carry.first)
    history = columns(out, own, last)
    history["step"] = jnp.arange(n_records + 1, dtype=jnp.int32) * record_every
    fits = metrics.fit_times(jax.lax.stop_gradient(history["fitted_weight"]),
                             jax.lax.stop_gradient(metrics.true_weights(target)),
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
        final_params=algorithm.params(carry.state),
    ), algorithm.tensor(carry.state)


_simulate_jit = jax.jit(simulate, static_argnames=("algorithm", "width", "steps", "record_every",
                                                   "checkpoint"))


# Step counters (``diverged_step``, the divergence reference's count, ``history["step"]``) are
# int32.
MAX_STEPS = 2 ** 31 - 1


def check_steps(steps) -> int:
    """``steps`` as an int in ``[1, MAX_STEPS]`` (TypeError for a non-int, ValueError else)."""
    steps = check_int(steps, "steps", 1)
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be <= {MAX_STEPS} (step counters are 32-bit), got {steps}")
    return steps


def check_record_every(steps: int, record_every: int) -> None:
    """The one message of run, simulate and sweep for a ``record_every`` that does not divide
    ``steps`` (a run records every ``record_every`` steps, so it would stop short)."""
    if steps % record_every:
        raise ValueError(f"steps={steps} must be a multiple of record_every={record_every}; "
                         f"e.g. record_every={default_record_every(steps)}")


def check_active(active, width: int) -> None:
    """A concrete ``active`` must be an int (Python, numpy or an integer array scalar) in
    ``[1, width]``; a float (``2.5`` would mask as ``3`` rows but read as ``2``) or a bool is a
    ``TypeError``. Traced and batched values pass (a sweep's)."""
    if active is None or isinstance(active, jax.core.Tracer):
        return
    if isinstance(active, (jax.Array, np.ndarray, np.generic)):
        value = host_value(np.asarray(active) if isinstance(active, np.generic) else active)
        dtype = np.asarray(active).dtype if value is None else value.dtype
        if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
            raise TypeError(f"active must be an int in [1, width={width}], got an array of "
                            f"dtype {dtype}")
        if value is None or value.ndim != 0:
            return
        active = int(value)
    elif isinstance(active, bool) or not isinstance(active, int):
        raise TypeError(f"active must be an int in [1, width={width}] (the number of unmasked "
                        f"rows), got {active!r}")
    if not 1 <= active <= width:
        raise ValueError(f"active must be in [1, width={width}], got {active}")


def _check_init_params(init_params, width: int, target: SymCP):
    shape = getattr(init_params, "shape", None)
    if shape is None:
        raise TypeError(f"init_params must be an array of shape (width, dim) = ({width}, "
                        f"{target.dim}), got {type(init_params).__name__}")
    if tuple(shape) != (width, target.dim):
        raise ValueError(f"init_params must have shape (width, dim) = ({width}, {target.dim}), "
                         f"got {tuple(shape)}; vmap jaxtd.simulate for a batch of inits")
    if not jnp.issubdtype(init_params.dtype, jnp.floating):
        raise TypeError(f"init_params must be a float array, got dtype {init_params.dtype}")
    check_finite("init_params", init_params, "pass finite factors")


def validate(algorithm, key, target, *, width, steps, record_every, divergence_factor=1e6,
             active=None, init_params=None, hparams=None):
    """The plain-Python checks of :func:`run` and :func:`simulate` (exposed for sweeps): concrete
    values are checked, traced ones pass; returns the ints."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a jaxtd.algorithms.Algorithm (e.g. "
                        f"jaxtd.algorithms.gd(0.1)), got {type(algorithm).__name__}")
    check_target(target)
    check_key(key)
    width = check_width(width)
    steps = check_steps(steps)
    record_every = check_int(record_every, "record_every", 1)
    check_record_every(steps, record_every)
    if not is_real(divergence_factor) and not isinstance(divergence_factor, jax.core.Tracer):
        raise TypeError(f"divergence_factor must be a number > 0, got {divergence_factor!r}")
    check_positive(divergence_factor, "divergence_factor")
    check_active(active, width)
    if init_params is not None:
        _check_init_params(init_params, width, target)
    full_hparams(algorithm, hparams)
    return width, steps, record_every


def full_hparams(algorithm: Algorithm, hparams) -> dict:
    """The algorithm's default hparams updated by ``hparams`` (unknown names raise a
    ``ValueError``), so every value reaches the compiled program as a traced argument."""
    if hparams is None:
        hparams = {}
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a dict name -> scalar, e.g. {{'learning_rate': 0.1}}; "
                        f"got {type(hparams).__name__}")
    unknown = sorted(set(hparams) - set(algorithm.hparams))
    if unknown:
        raise ValueError(f"hparams has unknown names {unknown}; algorithm {algorithm.name!r} "
                         f"accepts {sorted(algorithm.hparams)}")
    for name, value in hparams.items():
        check_hparam(algorithm, name, value)
    return {**dict(algorithm.hparams), **dict(hparams)}


def check_hparam(algorithm: Algorithm, name: str, value):
    """Refuse a concrete override that is not a real number (``TypeError``) or out of the range
    its algorithm's schema declares (``algorithm.ranges``; without one, any finite number):
    :func:`jaxtd.schema.check_hparam`, naming ``hparams[name]`` (:func:`hparam_param`). Traced
    values (a vmapped sweep axis) pass through. Returns the value as a float (a tracer as is)."""
    if isinstance(value, jax.core.Tracer):
        return value
    return schema.check_hparam(f"hparams[{name!r}]", hparam_param(algorithm, name), value)


def hparam_param(algorithm: Algorithm, name: str) -> schema.Param:
    """The declared range of hyper-parameter ``name``: ``algorithm.ranges`` (its schema); for an
    algorithm without one (assembled by hand), :data:`jaxtd.schema.LEARNING_RATE` for
    ``learning_rate`` (the rate of every optimizer spec) and any finite number otherwise."""
    param = (algorithm.ranges or {}).get(name)
    if param is not None:
        return param
    return schema.LEARNING_RATE if name == "learning_rate" else schema.Param(name, "float", "")


def run(algorithm: Algorithm, key, target: SymCP, *, width: int, steps: int,
        record_every: Optional[int] = None, active=None, hparams=None, init_params=None,
        divergence_factor=1e6, fit_fraction=0.5, active_fraction=0.1,
        checkpoint: bool = True, callback: Optional[Callable[[list], None]] = None) -> RunResult:
    """Validate the arguments, then run the jitted :func:`simulate` (compiled once per algorithm
    and shapes). ``record_every`` defaults to about ``steps / 100``. Every hyper-parameter (the
    defaults merged with ``hparams``) is passed as a traced argument: changing a value never
    compiles again, and ``jax.grad``/``jax.jvp`` of a run with respect to it work.

    ``callback``: called once, after the compiled run returns, with the run's history as host
    records, one dict per recorded step (``{"step", "loss", "relative_error", ...}``; see
    :mod:`jaxtd.log`, e.g. ``callback=jaxtd.log.jsonl_writer("run.jsonl")``). The compiled
    program is the same with or without it. Under a transformation (``jax.grad`` of a run) the
    history is traced and a callback is refused: log the returned history instead."""
    if record_every is None:
        record_every = default_record_every(check_steps(steps))
    width, steps, record_every = validate(algorithm, key, target, width=width, steps=steps,
                                          record_every=record_every,
                                          divergence_factor=divergence_factor, active=active,
                                          init_params=init_params)
    if not isinstance(checkpoint, bool):
        raise TypeError(f"checkpoint must be a bool, got {checkpoint!r}")
    check_callback(callback)
    result = _simulate_jit(algorithm, key, target, width=width, steps=steps,
                           record_every=record_every, active=active,
                           hparams=full_hparams(algorithm, hparams), init_params=init_params,
                           divergence_factor=divergence_factor, fit_fraction=fit_fraction,
                           active_fraction=active_fraction, checkpoint=checkpoint)
    if callback is not None:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(result.history)):
            raise TypeError("callback: this run is traced (inside jax.jit, grad or vmap), so its "
                            "history has no values yet; drop callback= and log the returned "
                            "history outside the transformation "
                            "(jaxtd.log.history_records(result.history))")
        callback(history_records(jax.device_get(result.history)))
    return result
