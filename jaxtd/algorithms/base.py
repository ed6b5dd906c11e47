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
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtd.symcp import SymCP

__all__ = ["Algorithm", "constructor", "Static", "check_width", "check_positive", "check_nonnegative", "check_target",
           "check_optimizer", "resolve_hparams", "row_mask", "mask_rows", "where_rows",
           "redraw_rows"]


_FUNCTIONS = ("init", "step", "tensor", "params")


class _Fields(NamedTuple):
    name: str
    init: Callable     # init(key, target, width, *, active=None, hparams=None) -> state
    step: Callable     # step(state, target) -> (state, metrics: dict[str, scalar])
    tensor: Callable   # tensor(state) -> SymCP of the current model (masked weights)
    params: Callable   # params(state) -> (width, d) factor matrix
    hparams: Mapping[str, float]
    static_key: Any = None


class Algorithm(_Fields):
    """An algorithm as a value: pure functions plus the defaults of its sweepable hparams.

    ``static_key`` identifies the program the functions trace to. Constructors decorated with
    :func:`constructor` set it from their arguments, so two calls with equal arguments give equal
    algorithms with equal hashes: ``jax.jit`` (the algorithm is a static argument) and the sweep's
    executable cache then reuse compiled programs instead of compiling again. Without a key
    (``None``, e.g. a hand-assembled algorithm) equality falls back to the identity of the four
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
    """``width`` must be a static Python int >= 1 (it fixes array shapes)."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise TypeError(f"{name} must be a Python int >= 1 (a static shape), got {width!r}")
    if width < 1:
        raise ValueError(f"{name} must be >= 1, got {width}")
    if width > MAX_WIDTH:
        raise ValueError(f"{name}={width} exceeds {MAX_WIDTH} (array dimensions are 32-bit); "
                         "use a smaller width")
    return int(width)


def _is_concrete_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_positive(value: Any, name: str) -> Any:
    """Raise if a concrete number is not finite and > 0 (traced values pass through)."""
    if _is_concrete_number(value) and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_nonnegative(value: Any, name: str) -> Any:
    """Raise if a concrete number is not finite and >= 0 (traced values pass through)."""
    if _is_concrete_number(value) and not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_target(target: Any) -> SymCP:
    if not isinstance(target, SymCP):
        raise TypeError(f"target must be a jaxtd.SymCP (e.g. from jaxtd.targets), got "
                        f"{type(target).__name__}")
    return target


def check_optimizer(optimizer: Any, name: str = "optimizer") -> optax.GradientTransformation:
    """Return ``optimizer`` if it is an optax ``GradientTransformation`` (has callable ``init``
    and ``update``); otherwise raise a ``TypeError`` saying what to pass."""
    if isinstance(optimizer, optax.GradientTransformation) or (
            callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        return optimizer
    raise TypeError(f"{name} must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), a "
                    f"float learning rate, or a factory learning_rate -> GradientTransformation; "
                    f"got {type(optimizer).__name__}")


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


# -- masks and row surgery (traceable) -----------------------------------------------------------

def row_mask(width: int, active=None, dtype=None) -> jax.Array:
    """``(width,)`` 0/1 mask of the first ``active`` rows (all rows when ``active`` is None)."""
    dtype = dtype or jnp.result_type(float)
    if active is None:
        return jnp.ones((width,), dtype)
    if _is_concrete_number(active) and not (1 <= active <= width):
        raise ValueError(f"active must be in [1, width={width}], got {active}")
    return (jnp.arange(width) < active).astype(dtype)


def _rowwise(leaf, width: int) -> bool:
    return getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == width


def mask_rows(tree: Any, mask: jax.Array) -> Any:
    """Multiply every leaf whose leading axis has length ``width`` by the ``(width,)`` mask.

    Used to zero the gradients/updates (and optimizer moments) of masked rows; scalar leaves
    (step counts, hparams) pass through.
    """
    width = mask.shape[0]

    def f(leaf):
        if not _rowwise(leaf, width):
            return leaf
        return leaf * mask.reshape((width,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype)

    return jax.tree_util.tree_map(f, tree)


def where_rows(selected: jax.Array, new: Any, old: Any) -> Any:
    """Row-wise select: leaves with leading axis ``width`` take ``new`` where ``selected[i]``.

    ``selected`` is a ``(width,)`` bool array; other leaves keep ``old``. E.g. reset the optimizer
    state of re-drawn rows with ``where_rows(sel, optimizer.init(params), opt_state)``.
    """
    width = selected.shape[0]

    def f(n, o):
        if not _rowwise(o, width):
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
