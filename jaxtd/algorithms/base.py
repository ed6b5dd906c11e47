"""The :class:`Algorithm` interface and helpers shared by every algorithm.

An algorithm is an optax-like NamedTuple of pure functions (CONTRIBUTING.md):

- ``init(key, target, width, *, active=None, hparams=None) -> state``
- ``step(state, target) -> (state, metrics)`` with ``metrics`` a dict of scalars (at least
  ``"loss"``, the loss *before* the update, which the runner watches for divergence);
- ``tensor(state) -> SymCP`` of the current model (masked weights);
- ``params(state) -> (width, d)`` trained factors (for the distance from init);
- ``hparams``: defaults of the scalar hyper-parameters a sweep may vmap over. They are stored in
  the state as arrays, so one compiled ``step`` serves every value.

``width`` is a static Python int (the padded width inside a sweep); ``active`` (int or traced
scalar) masks rows ``>= active``. Random re-draws key row ``i`` of epoch ``e`` by
``fold_in(fold_in(key, e), i)``: never by the width, so a width-``m`` run inside a padded grid is
the same run as alone.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import initialization, losses, models, schema
from jaxtd._precision import matmul
# re-exported, so an algorithm finds its whole toolkit here: the one validation policy
# (jaxtd._checks) and the one optimizer plumbing (jaxtd.optimizers)
from jaxtd._checks import check_choice, check_int, check_nonnegative, check_positive, is_real
from jaxtd.optimizers import (Optimizer, OptimizerSpec, check_optimizer, init_optimizer,
                              is_rowwise, make_optimizer, mask_rows, optimizer_step)
from jaxtd.symcp import SymCP

__all__ = ["Algorithm", "constructor", "Static",
           # validation
           "check_int", "check_choice", "check_width", "check_positive", "check_nonnegative",
           "check_ranges", "check_int_range", "check_target", "check_optimizer", "resolve_hparams",
           # init
           "InitContext", "init_context", "small_rows",
           # optimizers
           "OptimizerSpec", "Optimizer", "make_optimizer", "init_optimizer",
           "optimizer_step", "optimizer_params",
           # masks, re-draws, stops
           "row_mask", "mask_rows", "where_rows", "redraw_key", "redraw_rows", "SIGN_RULES",
           "residual_along", "residual_signs", "relative_from_fit", "relative_from_loss", "freeze"]


_FUNCTIONS = ("init", "step", "tensor", "params", "measure")


class _Fields(NamedTuple):
    name: str
    init: Callable     # init(key, target, width, *, active=None, hparams=None) -> state
    step: Callable     # step(state, target) -> (state, metrics: dict[str, scalar])
    tensor: Callable   # tensor(state) -> SymCP of the current model (masked weights)
    params: Callable   # params(state) -> (width, d) factor matrix
    hparams: Mapping[str, float]
    static_key: Any = None
    ranges: Optional[Mapping[str, schema.Param]] = None  # hparam -> its schema Param
    # measure(state, target) -> dict of scalars: metrics of the current iterate that the history
    # records but the step does not need (evaluated at each record only, not at every step)
    measure: Optional[Callable] = None


class Algorithm(_Fields):
    """An algorithm as a value: pure functions plus the defaults of its sweepable hparams.

    ``ranges`` maps a hyper-parameter to the :class:`~jaxtd.schema.Param` of the constructor
    argument that sets it (``schema.hparam_params(SCHEMA)``): the one declaration of its range,
    which the runner and the sweep check overrides against (``None``: finite values only).

    ``measure`` (optional) returns metrics of the current iterate that the history records and
    the step does not need; the runner calls it at each record only, so an exact but costly
    metric (the network's population risk) is not paid at every step.

    ``static_key`` identifies the program the functions trace to. Constructors decorated with
    :func:`constructor` set it from their arguments, so two calls with equal arguments give equal
    algorithms with equal hashes: ``jax.jit`` (the algorithm is a static argument) and the sweep's
    executable cache then reuse compiled programs instead of compiling again. Without a key
    (``None``, e.g. a hand-assembled algorithm) equality falls back to the identity of the
    functions. ``_replace`` of any function drops the key, since it no longer describes them.
    """

    __slots__ = ()

    def _identity(self):
        functions = (None if self.static_key is not None
                     else tuple(getattr(self, f) for f in _FUNCTIONS))
        items = tuple(sorted((k, float(v)) for k, v in self.hparams.items()))
        return self.name, self.static_key, functions, items

    def __eq__(self, other):
        return isinstance(other, Algorithm) and self._identity() == other._identity()

    def __ne__(self, other):
        return not self == other

    # The hparams dict would make the tuple unhashable; jit needs the algorithm as a static arg.
    def __hash__(self):
        return hash(self._identity())

    def _replace(self, **changes):
        if "static_key" not in changes and any(f in changes for f in _FUNCTIONS):
            changes["static_key"] = None
        return super()._replace(**changes)


def _freeze(value):
    """A hashable stand-in for a constructor argument (lists and dicts become tuples)."""
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, np.generic):
        return value.item()
    hash(value)  # raises TypeError for arrays and other unhashable values
    return value


def constructor(fn: Callable[..., Algorithm]) -> Callable[..., Algorithm]:
    """Decorate an algorithm constructor so the algorithms it builds carry a ``static_key``: the
    constructor and its bound arguments (defaults applied). Equal arguments then mean an equal
    algorithm, which compiles once per program shape in a process. Arguments that cannot be
    hashed (arrays) leave the key unset: such algorithms compare by identity.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args, **kwargs) -> Algorithm:
        algorithm = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            arguments = tuple((k, _freeze(v)) for k, v in bound.arguments.items())
        except TypeError:
            return algorithm
        return algorithm._replace(static_key=(fn.__module__, fn.__qualname__, arguments))

    return build


@jax.tree_util.register_pytree_node_class
class Static:
    """A pytree with no leaves holding a hashable Python value (e.g. the tensor order) as static
    metadata, so a state can carry it through jit/vmap/scan without it becoming a tracer."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def tree_flatten(self):
        return (), self.value

    @classmethod
    def tree_unflatten(cls, value, leaves):
        return cls(value)

    def __eq__(self, other):
        return isinstance(other, Static) and self.value == other.value

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return f"Static({self.value!r})"


# -- validation (plain Python, before tracing) ---------------------------------------------------

MAX_WIDTH = 2 ** 31 - 1


def check_width(width: Any, name: str = "width") -> int:
    """``width`` must be a static Python int >= 1 (it fixes array shapes), at most 32-bit."""
    width = check_int(width, name, 1, why=" (a static shape)")
    if width > MAX_WIDTH:
        raise ValueError(f"{name}={width} exceeds {MAX_WIDTH} (array dimensions are 32-bit); "
                         "use a smaller width")
    return int(width)


def check_ranges(params, **values) -> None:
    """Check constructor arguments against their :class:`~jaxtd.schema.Param` in ``params`` (the
    algorithm's ``SCHEMA``, the one declaration of each range): a ``TypeError`` for a value that
    is not a real number, else :func:`jaxtd.schema.check_hparam`'s ``ConfigError`` (a
    ``ValueError``) naming the argument, e.g. ``init_scale: must be > 0, got 0.0; fix: ...``."""
    by_name = {p.name: p for p in params}
    for name, value in values.items():
        schema.check_hparam(name, by_name[name], value)


def check_int_range(params, name: str, value: Any, *, why: str = "") -> int:
    """``value`` as an int ``>=`` the ``ge=`` bound that ``params`` (the algorithm's ``SCHEMA``)
    declares for the integer argument ``name``, by :func:`check_int` (its ``TypeError`` or
    ``ValueError``): the bound is written once, in the schema."""
    param = next(p for p in params if p.name == name)
    return check_int(value, name, int(param.ge), why=why)


def check_target(target: Any) -> SymCP:
    """Return ``target`` if it is a :class:`~jaxtd.SymCP`, else a ``TypeError``."""
    if not isinstance(target, SymCP):
        raise TypeError(f"target must be a jaxtd.SymCP (e.g. from jaxtd.targets), got "
                        f"{type(target).__name__}")
    return target


def resolve_hparams(defaults: Mapping[str, float], overrides: Optional[Mapping[str, Any]],
                    dtype) -> dict:
    """Defaults updated by ``overrides`` as a dict of scalar arrays of ``dtype``.

    Unknown names raise a ``ValueError`` listing the known ones; overrides may be traced scalars
    (a sweep vmaps over them).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"hparams has unknown names {unknown}; this algorithm accepts "
                         f"{sorted(defaults)}")
    out = {}
    for k, default in defaults.items():
        v = jnp.asarray(overrides.get(k, default))
        if v.shape != ():
            raise ValueError(f"hparams[{k!r}] must be a scalar, got shape {v.shape}")
        out[k] = v.astype(dtype)
    return out


# -- the init preamble -----------------------------------------------------------------------------

class InitContext(NamedTuple):
    """What every ``init`` derives first from ``(key, target, width, active, hparams)``.

    Attributes:
      width: the static width ``m`` (checked).
      dtype: the target's float dtype, used for every array of the state.
      hparams: the resolved hparams, a dict of scalar arrays of ``dtype``.
      mask: ``(m,)`` 0/1 mask of the ``active`` rows (:func:`row_mask`).
      row_key: first half of ``split(key)``: the initial rows ``W0``.
      sign_key: second half of ``split(key)``: the fixed signs.
    """

    width: int
    dtype: Any
    hparams: dict
    mask: jax.Array
    row_key: jax.Array
    sign_key: jax.Array


def init_context(key, target: SymCP, width: int, defaults: Mapping[str, float], *,
                 active=None, hparams=None) -> InitContext:
    """Check ``target`` and ``width``, resolve ``hparams`` over ``defaults`` in the target's dtype,
    build the row mask and split ``key`` into the row and sign streams.

    Every algorithm splits the run key the same way, so runs of different algorithms with one
    key start from the same rows (e.g. ``variant`` and ``gd`` at equal ``init_scale``).
    """
    check_target(target)
    width = check_width(width)
    dtype = target.factors.dtype
    resolved = resolve_hparams(defaults, hparams, dtype)
    row_key, sign_key = jax.random.split(key)
    return InitContext(width, dtype, resolved, row_mask(width, active, dtype), row_key, sign_key)


def small_rows(ctx: InitContext, target: SymCP, signs: str = "auto") -> tuple:
    """The small initialization: ``(W0, s)``.

    ``W0`` is ``(m, d)`` with row ``i`` equal to ``δ z_i/||z_i||``, ``z_i`` from
    ``fold_in(ctx.row_key, i)`` and ``δ = ctx.hparams["init_scale"]``
    (:func:`jaxtd.initialization.init_factors`); ``s`` is ``(m,)`` fixed signs from
    ``ctx.sign_key`` by the rule ``signs`` (:func:`jaxtd.models.draw_signs`).
    """
    params = initialization.init_factors(ctx.row_key, ctx.width, target.dim, scale="small",
                                         delta=ctx.hparams["init_scale"], dtype=ctx.dtype)
    return params, models.draw_signs(ctx.sign_key, ctx.width, target.order, signs, ctx.dtype)


# the keys learning_rate / optimizer / optimizer_args of a constructor whose ``optimizer`` is an
# optax spec (gd, variant, lazy_gd, and user factories): declared once, in jaxtd.schema
optimizer_params = schema.optimizer_params


# -- masks and row surgery (traceable) -----------------------------------------------------------

def row_mask(width: int, active=None, dtype=None) -> jax.Array:
    """``(width,)`` 0/1 mask of the first ``active`` rows (all rows when ``active`` is None)."""
    dtype = dtype or jnp.result_type(float)
    if active is None:
        return jnp.ones((width,), dtype)
    if is_real(active) and not (1 <= active <= width):
        raise ValueError(f"active must be in [1, width={width}], got {active}")
    return (jnp.arange(width) < active).astype(dtype)


def where_rows(selected: jax.Array, new: Any, old: Any) -> Any:
    """Row-wise select: leaves with leading axis ``width`` take ``new`` where ``selected[i]``.

    ``selected`` is a ``(width,)`` bool array; other leaves keep ``old``. E.g. reset the optimizer
    state of re-drawn rows with ``where_rows(sel, optimizer.init(params), opt_state)``.
    """
    width = selected.shape[0]

    def f(n, o):
        if not is_rowwise(o, width):
            return o
        return jnp.where(selected.reshape((width,) + (1,) * (o.ndim - 1)), n, o)

    return jax.tree_util.tree_map(f, new, old)


def redraw_rows(key, epoch, params: jax.Array, selected: jax.Array, delta) -> jax.Array:
    """Re-draw the ``selected`` rows of ``params`` uniformly on the sphere of radius ``delta``.

    Row ``i`` is drawn from ``fold_in(fold_in(key, epoch), i)`` (independent of the width);
    unselected rows are returned unchanged. ``epoch`` and ``delta`` may be traced.

    Args:
      key: PRNG key of the run.
      epoch: int scalar.
      params: ``(width, d)``.
      selected: ``(width,)`` bool.
      delta: scalar radius.
    """
    width, dim = params.shape
    k = jax.random.fold_in(key, epoch)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), (dim,), params.dtype))(
        jnp.arange(width))
    fresh = jnp.asarray(delta).astype(params.dtype) * z / jnp.linalg.norm(z, axis=1, keepdims=True)
    return jnp.where(selected[:, None], fresh, params)


# -- re-draws and stops (traceable) --------------------------------------------------------------

# fold_in data deriving the re-draw stream from the run key: independent of the init stream
# (split(key) -> rows, signs), so runs of two algorithms with one key share their init.
_REDRAW_STREAM = 0x7E_D2A

# the sign a re-drawn row takes (the ``sign_rule`` of variant and deflation): ``"residual"``
# (:func:`residual_signs`) or ``"keep"`` its old one; the initial signs are ``models.SIGNS``
SIGN_RULES = ("residual", "keep")


def redraw_key(key) -> jax.Array:
    """The re-draw stream of a run key (row ``i`` of epoch ``e``: ``fold_in(fold_in(., e), i)``)."""
    return jax.random.fold_in(key, _REDRAW_STREAM)


def residual_along(tensor: SymCP, target: SymCP, directions: jax.Array) -> jax.Array:
    """``R(v_k^{⊗l}) = T*(v_k^{⊗l}) - T(v_k^{⊗l})`` for each row ``v_k`` of ``directions``.

    Args:
      tensor: the current model ``T`` (masked weights).
      target: ``T*``.
      directions: ``(k, d)``.
    Returns:
      ``(k,)``: ``sum_j c*_j <a_j, v_k>^l - sum_i c_i <u_i, v_k>^l``.
    """
    l = target.order
    return (matmul(matmul(directions, target.factors.T) ** l, target.weights)
            - matmul(matmul(directions, tensor.factors.T) ** l, tensor.weights))


def residual_signs(model_fn: Callable, params: jax.Array, signs: jax.Array, mask: jax.Array,
                   target: SymCP, redrawn: jax.Array, directions: jax.Array) -> jax.Array:
    """``(m,)`` signs: ``sign R(v^{⊗l})`` on the ``redrawn`` rows, ``signs`` on the others.

    ``R = T* - T`` with ``T`` the model ``model_fn`` of the rows that are active (``mask``,
    ``(m,)``) and not ``redrawn`` (``(m,)`` bool), evaluated at the old ``params`` ``(m, d)``;
    ``directions`` is ``(k, d)`` of unit rows, ``k = m`` (one per row) or ``k = 1`` (shared by
    every re-drawn row). ``R(v^{⊗l}) >= 0`` gives ``+1``: the fresh row then grows.
    """
    kept = model_fn(params, target.order, signs, mask * (1 - redrawn.astype(mask.dtype)))
    r = residual_along(kept, target, directions)
    return jnp.where(redrawn, jnp.where(r >= 0, 1.0, -1.0).astype(signs.dtype), signs)


def relative_from_fit(fit: jax.Array, target: SymCP) -> jax.Array:
    """``sqrt(2 fit) / ||T*||`` from the unregularized loss ``fit = 1/2 ||T - T*||^2`` (clamped)."""
    return jnp.sqrt(2.0 * jnp.maximum(fit, 0.0)) / losses.norm(target)


def relative_from_loss(value: jax.Array, params: jax.Array, mask: jax.Array, regularization,
                       target: SymCP) -> jax.Array:
    """Relative error from a step's own ``value = L_λ(W)`` (no extra contraction).

    ``fit = L_λ - λ/2 sum_i mask_i ||w_i||^2`` with ``params`` ``(m, d)`` and ``mask`` ``(m,)``,
    then :func:`relative_from_fit`. Cancellation limits it to ``~1e-3`` in float32.
    """
    fit = value - 0.5 * regularization * jnp.sum(mask * jnp.sum(params ** 2, axis=-1))
    return relative_from_fit(fit, target)


def freeze(halt: jax.Array, old: Any, new: Any) -> Any:
    """Leafwise ``where(halt, old, new)``: a stopped run keeps its state (no Python branch)."""
    return jax.tree_util.tree_map(lambda o, n: jnp.where(halt, o, n), old, new)
