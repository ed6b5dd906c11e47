"""The symmetric CP tensor: the one currency of jaxtd.

``SymCP(weights, factors, order)`` stands for ``sum_i weights[i] * factors[i]^{⊗order}``.
It is a pytree whose leaves are ``weights`` (shape ``(k,)``) and ``factors`` (shape ``(k, d)``);
``order`` is static metadata. Nothing in jaxtd expands it to the ``d**order`` dense tensor except
:func:`to_dense`, which exists as a test oracle and for tiny problems.

:meth:`SymCP.to_tensorly` / :meth:`SymCP.from_tensorly` convert to and from TensorLy's
``CPTensor`` (TensorLy is an optional dependency).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd._checks import check_finite

__all__ = ["SymCP", "to_dense", "check_compatible", "MAX_ORDER"]

# The largest tensor order a SymCP may have. The accurate metric's cost grows as ``order^2``
# (jaxtd._aligned) and its traced program with the order, and ``<u, v>^order`` of unit vectors
# underflows float32 long before: a larger order is refused up front instead of hanging.
MAX_ORDER = 64

# The floating dtypes jaxtd computes in. float16/bfloat16 are refused: the metrics and the Gram
# powers overflow (max ~6.5e4) or lose all digits long before a fit is resolved.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _shape(x: Any):
    return getattr(x, "shape", None)


def _check_dtype(name: str, x: Any) -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``x`` has dtype float32 or float64."""
    dtype = getattr(x, "dtype", None)
    try:
        if dtype is not None and np.dtype(dtype) in FLOAT_DTYPES:
            return
        kind = np.dtype(dtype).kind if dtype is not None else None
    except TypeError:  # extended dtypes (PRNG keys) have no numpy equivalent
        kind = None
    if kind in ("b", "i", "u"):
        raise TypeError(f"{name} has dtype {dtype}; jaxtd computes in float32 or float64 "
                        "(integer Gram powers overflow silently): cast with "
                        f"{name}.astype(jnp.float32)")
    if kind == "c":
        raise TypeError(f"{name} has complex dtype {dtype}; a SymCP is a real tensor: pass "
                        "real float32 or float64 arrays")
    if kind == "f":
        raise TypeError(f"{name} has dtype {dtype}; jaxtd computes in float32 or float64: cast "
                        f"with {name}.astype(jnp.float32)")
    raise TypeError(f"{name} must be a float32 or float64 array, got dtype {dtype}")


def _check_finite(name: str, x: Any) -> None:
    check_finite(name, x, "a SymCP holds finite values only")


def _tensorly(what: str):
    try:
        import tensorly
        from tensorly.cp_tensor import CPTensor
    except ImportError as err:
        raise ImportError(f"{what} needs the optional dependency TensorLy: pip install tensorly"
                          ) from err
    return tensorly, CPTensor


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SymCP:
    """Symmetric CP tensor ``sum_i weights[i] * factors[i]^{⊗order}``.

    Attributes:
      weights: ``(k,)`` component weights ``c``.
      factors: ``(k, d)`` component vectors ``U`` (one per row).
      order: static tensor order ``2 <= l <= MAX_ORDER`` (64).

    Construction validates in plain Python (at trace time, before any compilation):

    - shapes: ``weights`` ``(k,)``, ``factors`` ``(k, d)`` with ``d >= 1``; ``order`` an int
      in ``[2, MAX_ORDER]`` (larger orders are refused: the accurate metric's cost grows as
      ``order^2``);
    - dtypes: ``weights`` and ``factors`` must be float32 or float64. Integer and bool arrays
      raise a ``TypeError`` (integer Gram powers overflow silently), as do complex arrays (a
      SymCP is real) and float16/bfloat16; nothing is converted implicitly: cast with
      ``.astype(jnp.float32)`` (or ``jnp.float64`` under x64);
    - values: concrete arrays (numpy, or a ``jax.Array`` held by this process) must be finite,
      else ``ValueError``. Inside ``jax.jit``/``jax.vmap``/``jax.grad`` the leaves are tracers
      and the value check is skipped (it would force a host sync), so a model that diverges
      inside a compiled run stays representable; the runner reports divergence as data.

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
        if order > MAX_ORDER:
            raise ValueError(f"order must be <= {MAX_ORDER} (jaxtd.symcp.MAX_ORDER: the accurate "
                             f"metric's cost grows as order^2), got {order}")
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
        _check_dtype("weights", self.weights)
        _check_dtype("factors", self.factors)
        _check_finite("weights", self.weights)
        _check_finite("factors", self.factors)

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

    # -- TensorLy interop ---------------------------------------------------------------------
    def to_tensorly(self):
        """This tensor as a TensorLy ``CPTensor((weights, [U.T] * order))``.

        TensorLy stores a CP tensor as weights ``(k,)`` and one ``(d, k)`` factor matrix per mode;
        a symmetric tensor repeats ``U.T`` ``order`` times. Arrays are copied to the active
        TensorLy backend with their dtype. Needs ``pip install tensorly``.
        """
        tl, CPTensor = _tensorly("SymCP.to_tensorly")
        if self.factors.ndim != 2:
            raise ValueError(f"to_tensorly converts one SymCP, got a batch of factors of shape "
                             f"{tuple(self.factors.shape)}; index the batch first")
        weights = np.asarray(self.weights)
        factor = np.asarray(self.factors).T
        return CPTensor((tl.tensor(weights, dtype=weights.dtype),
                         [tl.tensor(factor, dtype=factor.dtype) for _ in range(self.order)]))

    @classmethod
    def from_tensorly(cls, cp, *, dtype=None, rtol: float = 0.0) -> "SymCP":
        """The SymCP of a symmetric TensorLy CP tensor.

        Args:
          cp: a ``tensorly.cp_tensor.CPTensor`` or a ``(weights, factors)`` pair, ``weights``
            ``(k,)`` (``None`` means ones) and ``factors`` a list of ``order >= 2`` matrices
            ``(d, k)``.
          dtype: float32 or float64 (default: float32, float64 under x64); values are converted
            explicitly to it.
          rtol: the factor matrices must all equal the first one (a symmetric tensor); with
            ``rtol > 0`` entries may differ by ``rtol * max|U|``.

        Returns:
          ``SymCP(weights, factors[0].T, len(factors))``.

        Raises ``ValueError`` when the factor matrices differ (not symmetric) or shapes disagree,
        ``TypeError`` for complex values, ``ImportError`` without TensorLy.
        """
        tl, _ = _tensorly("SymCP.from_tensorly")
        try:
            weights, factors = cp
        except (TypeError, ValueError):
            raise TypeError("cp must be a tensorly CPTensor or a (weights, factors) pair, got "
                            f"{type(cp).__name__}") from None
        if isinstance(factors, (str, bytes)) or not hasattr(factors, "__len__"):
            raise TypeError("cp's factors must be a list of (dim, rank) matrices, one per mode")
        mats = [np.asarray(tl.to_numpy(f)) for f in factors]
        if len(mats) < 2:
            raise ValueError(f"cp has {len(mats)} factor matrices; a symmetric tensor of order "
                             ">= 2 needs at least 2")
        if dtype is None:
            dtype = jnp.result_type(float)
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        first = mats[0]
        if first.ndim != 2:
            raise ValueError(f"cp.factors[0] must be a (dim, rank) matrix, got shape {first.shape}")
        for i, m in enumerate(mats):
            if np.iscomplexobj(m):
                raise TypeError(f"cp.factors[{i}] is complex; a SymCP is a real tensor")
            if m.shape != first.shape:
                raise ValueError(f"cp.factors[{i}] has shape {m.shape} but cp.factors[0] has "
                                 f"{first.shape}; a symmetric CP tensor repeats one factor matrix")
            diff = float(np.max(np.abs(m - first), initial=0.0))
            if not diff <= rtol * float(np.max(np.abs(first), initial=0.0)):
                raise ValueError(f"cp is not symmetric: cp.factors[{i}] differs from cp.factors[0] "
                                 f"(max abs difference {diff:.3g}); SymCP needs one factor matrix "
                                 "repeated in every mode (pass rtol= to accept a small mismatch)")
        k = first.shape[1]
        w = np.ones((k,)) if weights is None else np.asarray(tl.to_numpy(weights))
        if np.iscomplexobj(w):
            raise TypeError("cp.weights is complex; a SymCP is a real tensor")
        if w.shape != (k,):
            raise ValueError(f"cp.weights must have shape ({k},) to match factors of shape "
                             f"{first.shape}, got {w.shape}")
        return cls(jnp.asarray(w.astype(dtype)), jnp.asarray(first.T.astype(dtype)), len(mats))

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


# The k d^l intermediate of to_dense: 2^28 float32 entries are 1 GiB.
DENSE_MAX_ENTRIES = 2 ** 28


def to_dense(t: SymCP) -> jax.Array:
    """Materialize the dense ``(d,) * order`` tensor. Memory ``O(k d^order)``: tiny problems and
    test oracles only."""
    if not isinstance(t, SymCP):
        raise TypeError(f"t must be a jaxtd.SymCP, got {type(t).__name__}")
    k, d = t.factors.shape[-2:]
    entries = k * d ** t.order
    if entries > DENSE_MAX_ENTRIES:
        raise ValueError(f"to_dense(t) would build {k} x {d}^{t.order} = {entries:.3g} entries "
                         f"(limit {DENSE_MAX_ENTRIES:.3g}); the dense tensor is for small test "
                         "oracles: use jaxtd.loss / jaxtd.inner, which never build it")
    u = t.factors
    out = t.weights[:, None] * u  # (k, d)
    for _ in range(t.order - 1):
        out = out[..., None] * u.reshape(u.shape[:1] + (1,) * (out.ndim - 1) + u.shape[1:])
    return out.sum(axis=0)
