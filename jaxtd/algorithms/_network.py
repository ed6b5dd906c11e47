"""The two-layer Hermite network of :mod:`jaxtd.network` trained on samples, in three regimes
(docs/algorithms.md, docs/math.md §7).

The target of a run is the *teacher* network ``f* = sum_j c_j φ_{u_j}``; the model is
``f = sum_i a_i φ_{w_i}`` (``a`` the output layer, ``W`` the inner weights). Training minimizes the
empirical loss ``½ mean (f(x) - y)^2`` on labelled samples ``y = f*(x) + σ ε``:

- ``regime="nn"``: the network itself, in ``W`` (and ``a`` with ``train_output=True``);
- ``regime="nt"``: its linearization in ``W`` around ``W0`` (``a`` fixed),
  ``f(x; W0) + ∂_W f(x; W0) Δ``; the trained variable is ``Δ``. With a data set its
  coefficients on the data (:class:`jaxtd.network.Tangent`) are computed once, in ``init``, and
  kept in the state (a step then costs two small products, not a linearization); online, the
  step linearizes the network's output on its batch (``jax.linearize``);
- ``regime="rf"``: the output layer ``a`` alone, ``W = W0`` fixed, from ``a = 0`` (so full-batch
  GD converges to :func:`jaxtd.network.rf_least_squares`, the min-norm least-squares fit).

Data. ``samples=n`` draws one data set of ``n`` samples from the run key inside ``init`` (fixed
for the run); ``batch_size=b < n`` then takes ``b`` of them without replacement at each step
(full batch when ``None``). ``samples=None`` is online SGD: ``batch_size`` fresh samples at every
step.

Samples as a grid axis. With ``samples=n_max`` the hparam ``active_samples`` (default ``n_max``)
keeps the first ``active_samples`` rows of the data set and masks the others: since
:func:`jaxtd.network.sample` draws row ``j`` from ``fold_in(., j)``, that is the data set of size
``active_samples``, and minibatches are drawn among those rows alone, so the run equals the run
with ``samples=active_samples``. ``jaxtd.sweep(..., hparams={"active_samples": [...]})`` then
gives test risk against ``n`` x width x seeds from one compiled program per width bucket. Every draw is keyed by ``fold_in`` of a data stream of the run key and the step count, never
by the width, so a width-``m`` run inside a padded grid is the same run as alone.

Metrics. ``tensor(state)`` is the model's tensor ``sum_i a_i w_i^{⊗l}`` (for ``nt`` the exact
tensor of the linearized network, :func:`jaxtd.algorithms.polarize`: ``φ_w`` is linear in
``w^{⊗l}``, so the linearized network is the network of the linearized tensor). The runner's
``loss``/``relative_error`` are therefore those of the population: the population risk is
``l!`` times the recorded ``loss`` plus ``½ σ^2``. ``step`` reports, before its update, ``loss``
(the batch's empirical loss; the history's ``objective``). ``measure``, which the runner calls at
each record only, reports the recorded iterate's ``empirical_loss`` (on the active data set;
online, on the batch the next step draws) and ``population_loss`` (exact,
:func:`jaxtd.network.population_loss`): at every step they would cost as much again as the step
(the exact risk is a Gram-form loss of the ``m``-row model).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxtd import initialization, lazy, models, schema
from jaxtd import network as hermite_net  # (the constructor below is named network)
from jaxtd._checks import check_bool, host_value
from jaxtd.algorithms import base
from jaxtd.lazy import polarize
from jaxtd.algorithms.base import OptimizerSpec
from jaxtd.symcp import SymCP

__all__ = ["network", "NetworkState", "Batch", "REGIMES", "NETWORK_INITS", "SCHEMA", "Layout",
           "initial_layers", "trained", "with_trained", "outputs", "sample_mask", "whole_data",
           "draw_batch", "empirical_loss", "network_tensor", "population_loss"]

REGIMES = ("nn", "nt", "rf")
NETWORK_INITS = ("standard", "antisymmetric", "small")

# fold_in data deriving the data stream from the run key (independent of split(key), which gives
# the rows and signs, and of base.redraw_key)
_DATA_STREAM = 0xDA7A


class NetworkState(NamedTuple):
    """State of :func:`network`.

    Attributes:
      weights: ``(m,)`` output layer ``a`` (zero on masked rows).
      factors: ``(m, d)`` inner weights: ``W`` for ``nn``, the fixed ``W0`` for ``nt`` and ``rf``.
      delta: ``(m, d)`` perturbation ``Δ`` of ``nt`` (zeros otherwise).
      mask: ``(m,)`` 0/1 activity mask.
      x: ``(n, d)`` the data set (``(0, d)`` online).
      y: ``(n,)`` its labels.
      tangent: ``nt`` with a data set: the linearization at ``W0`` on it
        (:class:`jaxtd.network.Tangent`, computed in ``init``); ``None`` otherwise.
      key: the batch stream (minibatch indices or fresh samples of step ``t``: ``fold_in(key, t)``).
      opt_state: the optimizer state of the trained variables.
      hparams: dict of scalar arrays (``init_scale``, ``noise``, ``learning_rate``, and with a
        data set ``active_samples``).
      count: int32 steps taken.
      order: static tensor order ``l``.
    """

    weights: jax.Array
    factors: jax.Array
    delta: jax.Array
    mask: jax.Array
    x: jax.Array
    y: jax.Array
    tangent: Optional[hermite_net.Tangent]
    key: jax.Array
    opt_state: Any
    hparams: dict
    count: jax.Array
    order: base.Static

    def with_init_params(self, params: jax.Array) -> "NetworkState":
        """This state with initial inner weights ``params`` ``(m, d)`` (``W`` of ``nn``, the
        linearization point / fixed features ``W0`` of ``nt`` / ``rf``; ``Δ = 0`` at init)."""
        factors = params.astype(self.factors.dtype)
        return self._replace(factors=factors,
                             tangent=_data_tangent(self.weights, factors, self.x, self.order.value,
                                                   self.tangent is not None))


def _check_sizes(samples, batch_size):
    if samples is not None:
        samples = base.check_int_range(SCHEMA, "samples", samples, why=" (the data set size) or "
                                       "None (online SGD: fresh samples every step)")
    if batch_size is not None:
        batch_size = base.check_int_range(SCHEMA, "batch_size", batch_size)
        if samples is not None and batch_size > samples:
            raise ValueError(f"batch_size={batch_size} exceeds samples={samples}; use "
                             f"batch_size <= samples, or None for full-batch steps")
    elif samples is None:
        raise ValueError("samples=None (online SGD, fresh samples every step) needs a "
                         "batch_size, e.g. batch_size=64")
    return samples, batch_size


def _check_active_samples(value, samples: int) -> None:
    """A concrete ``active_samples`` must be a whole number in ``[1, samples]``."""
    value = value if not isinstance(value, jax.Array) else host_value(value)
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = float(value)
    if not (1 <= v <= samples and v == int(v)):
        raise ValueError(f"hparams['active_samples'] must be a whole number in [1, "
                         f"samples={samples}] (the first rows of the data set to train on), "
                         f"got {value!r}")


@base.constructor
def network(optimizer: OptimizerSpec = 0.01, *, regime: str = "nn",
            samples: Optional[int] = None, batch_size: Optional[int] = None,
            train_output: bool = False, init: str = "standard", init_scale: float = 1.0,
            noise: float = 0.0, learning_rate: Optional[float] = None, signs: str = "auto",
            name: Optional[str] = None) -> base.Algorithm:
    """A two-layer Hermite network trained on samples of the target network (module docstring).

    Args:
      optimizer: as in :func:`jaxtd.algorithms.gd` (float = SGD step; factory with
        ``learning_rate=``; or a ready transformation whose updates hparam ``learning_rate``
        multiplies).
      regime: ``"nn"`` (train the network), ``"nt"`` (its linearization in ``W`` at ``W0``) or
        ``"rf"`` (the output layer, ``W`` fixed, from ``a = 0``).
      samples: the data set size ``n`` (drawn once, in ``init``), or ``None`` for online SGD.
        With a data set, hparam ``active_samples`` (default ``samples``) uses its first rows
        only (module docstring: samples as a grid axis).
      batch_size: samples per step (``None``: the whole data set; required online).
      train_output: also train the output layer ``a`` (``regime="nn"`` only).
      init: ``W0`` and ``a0``: ``"standard"`` (rows ``N(0, I/d)`` times ``init_scale``, signs by
        ``signs``), ``"antisymmetric"`` (those rows in pairs with weights ``+1, -1``, so
        ``f(·; W0) = 0``) or ``"small"`` (rows of norm exactly ``init_scale``, signs by ``signs``;
        the init of :func:`jaxtd.algorithms.gd`). ``rf`` replaces ``a0`` by 0.
      init_scale: hparam ``init_scale`` (see ``init``).
      noise: label noise standard deviation ``σ >= 0`` (hparam ``noise``).
      learning_rate: see :func:`jaxtd.algorithms.gd`.
      signs: see :func:`jaxtd.algorithms.gd`.
      name: see :func:`jaxtd.algorithms.gd` (default ``"network-<regime>"``).
    Returns:
      An :class:`~jaxtd.algorithms.Algorithm`; ``step`` reports ``loss`` (batch empirical loss)
      before the update; ``measure`` the ``empirical_loss`` and the exact ``population_loss`` of
      the iterate, at each record; ``tensor`` the model's tensor
      (``nt``: of the linearized network); ``params`` the inner weights (``nt``: ``W0 + Δ``).
    """
    base.check_choice(regime, "regime", REGIMES)
    samples, batch_size = _check_sizes(samples, batch_size)
    check_bool(train_output, "train_output")
    if train_output and regime != "nn":
        raise ValueError(f"train_output=True with regime={regime!r}: only regime='nn' trains "
                         "the output layer on top of W ('rf' trains it alone, 'nt' linearizes "
                         "in W with a fixed); leave train_output=False")
    base.check_choice(init, "init", NETWORK_INITS)
    base.check_choice(signs, "signs", models.SIGNS)
    base.check_ranges(SCHEMA, init_scale=init_scale, noise=noise)
    opt = base.make_optimizer(optimizer, learning_rate)
    defaults = {"init_scale": float(init_scale), "noise": float(noise),
                "learning_rate": opt.learning_rate}
    if samples is not None:
        defaults["active_samples"] = float(samples)
    layout = Layout(regime, train_output, samples, batch_size)

    def init_fn(key, target: SymCP, width: int, *, active=None,
                hparams=None) -> NetworkState:
        ctx = base.init_context(key, target, width, defaults, active=active, hparams=hparams)
        if not layout.online:
            _check_active_samples((hparams or {}).get("active_samples"), samples)
        w0, a0 = initial_layers(ctx, target, init, signs, regime)
        data_key, batch_key = jax.random.split(jax.random.fold_in(key, _DATA_STREAM))
        if layout.online:
            x = jnp.zeros((0, target.dim), ctx.dtype)
            y = jnp.zeros((0,), ctx.dtype)
        else:
            x, y = hermite_net.sample(data_key, target, samples, ctx.hparams["noise"])
        tangent = _data_tangent(a0, w0, x, target.order, regime == "nt" and not layout.online)
        state = NetworkState(a0, w0, jnp.zeros_like(w0), ctx.mask, x, y, tangent, batch_key,
                             None, ctx.hparams, jnp.zeros((), jnp.int32), base.Static(target.order))
        return state._replace(opt_state=base.init_optimizer(opt, trained(state, layout)))

    def step(state: NetworkState, target: SymCP):
        batch = draw_batch(state, target, layout)
        value = trained(state, layout)
        loss, grads = jax.value_and_grad(empirical_loss, argnums=1)(state, value, batch, layout)
        new, opt_state = base.optimizer_step(opt, value, grads, state.opt_state,
                                             state.hparams["learning_rate"], state.mask)
        state_new = with_trained(state, new, layout)._replace(opt_state=opt_state,
                                                              count=state.count + 1)
        return state_new, {"loss": loss}

    def measure(state: NetworkState, target: SymCP) -> dict:
        # online: the batch the next step trains on (there is no data set)
        batch = (draw_batch(state, target, layout) if layout.online
                 else whole_data(state, layout))
        return {"empirical_loss": empirical_loss(state, trained(state, layout), batch, layout),
                "population_loss": population_loss(state, target, regime)}

    def params(state: NetworkState) -> jax.Array:
        return state.factors + state.delta if regime == "nt" else state.factors

    return base.Algorithm(name or f"network-{regime}", init_fn, step,
                          lambda state: network_tensor(state, regime), params, defaults,
                          ranges=schema.hparam_params(SCHEMA), measure=measure)


# -- the pieces of a step (static choices in a Layout) ----------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
    """The static choices a step depends on: ``regime``, ``train_output``, the data set size
    ``samples`` (``None``: online) and ``batch_size`` (``None``: the whole data set)."""

    regime: str
    train_output: bool
    samples: Optional[int]
    batch_size: Optional[int]

    @property
    def online(self) -> bool:
        """Fresh samples every step (no data set)."""
        return self.samples is None

    @property
    def minibatch(self) -> bool:
        """A data set, and steps on batches smaller than it."""
        return (self.samples is not None and self.batch_size is not None
                and self.batch_size < self.samples)


def initial_layers(ctx: base.InitContext, target: SymCP, init: str, signs: str,
                   regime: str) -> tuple:
    """``(W0, a0)``: ``(m, d)`` inner weights and ``(m,)`` output layer at initialization.

    ``init="small"``: rows of norm ``δ = init_scale`` with signs by ``signs``
    (:func:`jaxtd.algorithms.base.small_rows`); ``"antisymmetric"``: ``δ`` times the pairs of
    :func:`jaxtd.initialization.antisymmetric` with weights ``+1, -1``; ``"standard"``: ``δ``
    times rows ``N(0, I/d)``, signs by ``signs``. ``rf`` starts from ``a0 = 0``; masked rows
    have ``a0 = 0``.
    """
    hp = ctx.hparams
    if init == "small":
        w0, a0 = base.small_rows(ctx, target, signs)
    elif init == "antisymmetric":
        pairs = initialization.antisymmetric(ctx.row_key, ctx.width, target.dim, target.order,
                                             scale="standard", dtype=ctx.dtype)
        w0, a0 = hp["init_scale"] * pairs.factors, pairs.weights
    else:
        w0 = hp["init_scale"] * initialization.init_factors(
            ctx.row_key, ctx.width, target.dim, scale="standard", dtype=ctx.dtype)
        a0 = models.draw_signs(ctx.sign_key, ctx.width, target.order, signs, ctx.dtype)
    if regime == "rf":
        a0 = jnp.zeros_like(a0)
    return w0, a0 * ctx.mask


def trained(state: NetworkState, layout: Layout):
    """The trained variables (a pytree whose leaves lead with the width): ``Δ`` (``nt``), ``a``
    (``rf``), ``W`` or ``(W, a)`` (``nn``, with ``train_output``)."""
    if layout.regime == "nt":
        return state.delta
    if layout.regime == "rf":
        return state.weights
    return (state.factors, state.weights) if layout.train_output else state.factors


def with_trained(state: NetworkState, value, layout: Layout) -> NetworkState:
    """``state`` with its trained variables (:func:`trained`) set to ``value``."""
    if layout.regime == "nt":
        return state._replace(delta=value)
    if layout.regime == "rf":
        return state._replace(weights=value)
    if layout.train_output:
        return state._replace(factors=value[0], weights=value[1])
    return state._replace(factors=value)


class Batch(NamedTuple):
    """A step's samples: ``x`` ``(b, d)``, ``y`` ``(b,)``, ``weights`` ``(b,)`` 0/1 (masked
    samples count 0), and ``tangent``: the state's :class:`jaxtd.network.Tangent` on these rows
    (``nt`` with a data set; else ``None``)."""

    x: jax.Array
    y: jax.Array
    weights: jax.Array
    tangent: Optional[hermite_net.Tangent] = None


def _data_tangent(a, w0, x, order: int, wanted: bool):
    # nt's outputs on a fixed data set are linear in Δ with coefficients fixed by W0: computed
    # once here, a step then costs two small products instead of a linearization of the network
    return hermite_net._tangent(a, w0, x, order) if wanted else None


def outputs(state: NetworkState, value, x: jax.Array, layout: Layout,
            tangent: Optional[hermite_net.Tangent] = None) -> jax.Array:
    """``(b,)`` outputs on ``x`` ``(b, d)`` of the network with trained variables ``value``
    (``nt``: the first-order expansion ``f(W0) + J_W f(W0) Δ``: from ``tangent``, the
    linearization's coefficients on these ``x``, if given; else by ``jax.linearize``)."""
    l = state.order.value
    if layout.regime == "nt" and tangent is not None:
        return hermite_net._tangent_predict(tangent, state.factors, x, value)
    if layout.regime == "nt":
        f0, lin = jax.linearize(lambda w: hermite_net._predict(state.weights, w, x, l),
                                state.factors)
        return f0 + lin(value)
    s = with_trained(state, value, layout)
    return hermite_net._predict(s.weights, s.factors, x, l)


def sample_mask(state: NetworkState, layout: Layout) -> jax.Array:
    """``(n,)`` 0/1: the first ``active_samples`` rows of the data set (all online)."""
    n = state.x.shape[0]
    if layout.online:
        return jnp.ones((n,), state.x.dtype)
    rows = jnp.arange(n, dtype=state.x.dtype)
    return (rows < state.hparams["active_samples"]).astype(state.x.dtype)


def whole_data(state: NetworkState, layout: Layout) -> Batch:
    """The data set as a :class:`Batch` (masked beyond ``active_samples``)."""
    return Batch(state.x, state.y, sample_mask(state, layout), state.tangent)


def draw_batch(state: NetworkState, target: SymCP, layout: Layout) -> Batch:
    """Step ``count``'s :class:`Batch`, keyed by ``fold_in(key, count)``: fresh samples
    online, the active data set without minibatches, else ``batch_size`` distinct active rows
    drawn uniformly."""
    step_key = jax.random.fold_in(state.key, state.count)
    if layout.online:
        x, y = hermite_net.sample(step_key, target, layout.batch_size, state.hparams["noise"])
        return Batch(x, y, jnp.ones_like(y))
    if not layout.minibatch:
        return whole_data(state, layout)
    mask = sample_mask(state, layout)
    # b distinct active rows, uniformly: the b smallest of per-row uniforms keyed by the row
    # index (so the choice among the first n rows does not depend on the capacity)
    u = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(step_key, j)))(
        jnp.arange(layout.samples))
    idx = jax.lax.top_k(-jnp.where(mask > 0, u, 2.0), layout.batch_size)[1]
    rows = jax.tree.map(lambda v: v[idx], (state.x, state.y, mask, state.tangent))
    return Batch(*rows)


def empirical_loss(state: NetworkState, value, batch: Batch, layout: Layout) -> jax.Array:
    """``1/2 sum_j w_j (f(x_j) - y_j)^2 / max(sum_j w_j, 1)`` on ``batch`` at trained
    variables ``value``."""
    f = outputs(state, value, batch.x, layout, batch.tangent)
    sq = batch.weights * (f - batch.y) ** 2
    return 0.5 * jnp.sum(sq) / jnp.maximum(jnp.sum(batch.weights), 1.0)


def network_tensor(state: NetworkState, regime: str) -> SymCP:
    """The model's tensor ``sum_i a_i w_i^{⊗l}`` (``nt``: of the linearized network,
    :func:`jaxtd.algorithms.polarize`)."""
    model = SymCP(state.weights, state.factors, state.order.value)
    return polarize(model, state.delta) if regime == "nt" else model


def population_loss(state: NetworkState, target: SymCP, regime: str) -> jax.Array:
    """The exact population loss (:func:`jaxtd.network.population_loss`; ``nt``: ``l!`` times
    the lazy loss plus ``σ^2 / 2``)."""
    noise = state.hparams["noise"]
    if regime == "nt":
        model0 = SymCP(state.weights, state.factors, state.order.value)
        fit = math.factorial(state.order.value) * lazy.lazy_loss(model0, state.delta, target)
        return fit + 0.5 * noise ** 2
    return hermite_net.population_loss(network_tensor(state, regime), target, noise)


# The configurable arguments of network (names and defaults come from its signature).
SCHEMA = schema.derive(network, base.optimizer_params("step size of the empirical loss") + (
    schema.Param("regime", "choice", "nn (train the network), nt (its linearization in W at "
                 "W0) or rf (the output layer with W fixed)", choices=REGIMES),
    schema.Param("samples", "int", "data set size n, drawn once per run (absent: online SGD, "
                 "fresh samples every step); a list sweeps n as one vmapped axis (the data set "
                 "of the largest, masked to its first n rows: hparam active_samples)", ge=1,
                 hparam="active_samples", capacity=True),
    schema.Param("batch_size", "int", "samples per step (absent: the whole data set)", ge=1),
    schema.Param("train_output", "bool", "also train the output layer (regime = nn)"),
    schema.Param("init", "choice", "initialization: standard (rows N(0, I/d) times "
                 "init_scale), antisymmetric (pairs with weights +1, -1: f(W0) = 0) or small "
                 "(rows of norm init_scale)", choices=NETWORK_INITS),
    schema.Param("init_scale", "float", "scale of the initial inner weights", gt=0,
                 hparam="init_scale"),
    schema.Param("noise", "float", "label noise standard deviation", ge=0, hparam="noise"),
    schema.Param("signs", "choice", "sign rule of the output layer (init = standard, small)",
                 choices=models.SIGNS),
))
