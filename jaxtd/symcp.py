"""The symmetric CP tensor: the one currency of jaxtd.

``SymCP(weights, factors, order)`` stands for ``sum_i weights[i] * factors[i]^{⊗order}``.
It is a pytree whose leaves are ``weights`` (shape ``(k,)``) and ``factors`` (shape ``(k, d)``);
``order`` is static metadata. Nothing in jaxtd expands it to the ``d**order`` dense tensor except
:func:`to_dense`, which exists as a test oracle and for tiny problems.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SymCP", "to_dense", "check_compatible"]


def _shape(x: Any):
    return getattr(x, "shape", None)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SymCP:
    """Symmetric CP tensor ``sum_i weights[i] * factors[i]^{⊗order}``.

    Attributes:
      weights: ``(k,)`` component weights ``c``.
      factors: ``(k, d)`` component vectors ``U`` (one per row).
      order: static tensor order ``l >= 2``.

    Construction validates shapes in plain Python (at trace time, before any compilation).
    Batched ("stacked") SymCPs, e.g. the output of ``jax.vmap``, are built through the pytree
    machinery and skip validation; every jaxtd function works on them under ``jax.vmap``.
    """

    weights: Any
    factors: Any
    order: int

    def __post_init__(self):
        order = self.order
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
            raise TypeError(f"order must be a Python int >= 2, got {order!r}")
        if order < 2:
            raise ValueError(f"order must be >= 2 (a symmetric tensor of order {order} is not supported)")
        object.__setattr__(self, "order", int(order))
        fshape, wshape = _shape(self.factors), _shape(self.weights)
        if fshape is None or wshape is None:
            raise TypeError("weights and factors must be arrays (jax or numpy); "
                            f"got {type(self.weights).__name__} and {type(self.factors).__name__}")
        if len(fshape) != 2:
            raise ValueError(f"factors must be 2-D with shape (rank, dim), got shape {tuple(fshape)}")
        if len(wshape) != 1 or wshape[0] != fshape[0]:
            raise ValueError(f"weights must have shape ({fshape[0]},) to match factors of shape "
                             f"{tuple(fshape)}, got {tuple(wshape)}")
        if fshape[1] < 1:
            raise ValueError("factors must have at least one column (dim >= 1)")

    # -- pytree protocol -------------------------------------------------------------------------
    def tree_flatten(self):
        return (self.weights, self.factors), self.order

    @classmethod
    def tree_unflatten(cls, order, leaves):
        obj = object.__new__(cls)
        object.__setattr__(obj, "weights", leaves[0])
        object.__setattr__(obj, "factors", leaves[1])
        object.__setattr__(obj, "order", order)
        return obj

    # -- convenience -----------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """Number of components ``k`` (the width, for a model)."""
        return self.factors.shape[-2]

    @property
    def dim(self) -> int:
        """Dimension ``d`` of each mode."""
        return self.factors.shape[-1]

    @property
    def dtype(self):
        return jnp.result_type(self.weights, self.factors)

    def __repr__(self):
        # leaves may be anything after a tree_map (floats, None, sharding specs)
        shape = _shape(self.factors)
        if shape is None or len(shape) < 2:
            return f"SymCP(order={self.order}, weights={self.weights!r}, factors={self.factors!r})"
        return (f"SymCP(order={self.order}, rank={shape[-2]}, dim={shape[-1]}, "
                f"dtype={getattr(self.factors, 'dtype', None)})")


def check_compatible(a: SymCP, b: SymCP, names=("a", "b")) -> None:
    """Raise a ``ValueError`` naming the argument when two SymCPs differ in order or dim."""
    for name, t in zip(names, (a, b)):
        if not isinstance(t, SymCP):
            raise TypeError(f"{name} must be a jaxtd.SymCP, got {type(t).__name__}")
    if a.order != b.order:
        raise ValueError(f"{names[1]} has order {b.order} but {names[0]} has order {a.order}; "
                         "both tensors must have the same order")
    if a.dim != b.dim:
        raise ValueError(f"{names[1]} has dim {b.dim} but {names[0]} has dim {a.dim}; "
                         "both tensors must have the same dimension d")


def to_dense(t: SymCP) -> jax.Array:
    """Materialize the dense ``(d,) * order`` tensor. Memory ``O(k d^order)``: tiny problems and
    test oracles only."""
    if not isinstance(t, SymCP):
        raise TypeError(f"t must be a jaxtd.SymCP, got {type(t).__name__}")
    u = t.factors
    out = t.weights[:, None] * u  # (k, d)
    for _ in range(t.order - 1):
        out = out[..., None] * u.reshape(u.shape[:1] + (1,) * (out.ndim - 1) + u.shape[1:])
    return out.sum(axis=0)
