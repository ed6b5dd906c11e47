"""The symmetric CP tensor: the one currency of jaxtd.

``SymCP(weights, factors, order)`` stands for ``sum_i weights[i] * factors[i]^{⊗order}``.
It is a pytree whose leaves are ``weights`` (shape ``(k,)``) and ``factors`` (shape ``(k, d)``);
``order`` is static metadata. Nothing in jaxtd expands it to the ``d**order`` dense tensor except
:func:`to_dense`, which exists as a test oracle and for tiny problems.

:meth:`SymCP.to_tensorly` / :meth:`SymCP.from_tensorly` convert to and from TensorLy's
``CPTensor`` (TensorLy is an optional dependency); ``from_tensorly(cp, symmetrize=True)`` (and
:func:`symmetrize_cp`, for numpy factors) turns a near-symmetric CP fit, e.g. a ``parafac`` fit of
a symmetric tensor, into the nearest symmetric one and reports its :class:`Asymmetry`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd._checks import check_finite
from jaxtd._sizes import MAX_ORDER  # re-exported: the largest order a SymCP may have

__all__ = ["SymCP", "to_dense", "check_compatible", "MAX_ORDER", "Asymmetry", "symmetrize_cp"]

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
    def from_tensorly(cls, cp, *, dtype=None, rtol: float = 0.0, symmetrize: bool = False):
        """The SymCP of a symmetric TensorLy CP tensor (or of a near-symmetric CP fit).

        Args:
          cp: a ``tensorly.cp_tensor.CPTensor`` or a ``(weights, factors)`` pair, ``weights``
            ``(k,)`` (``None`` means ones) and ``factors`` a list of ``order >= 2`` matrices
            ``(d, k)``.
          dtype: float32 or float64 (default: float32, float64 under x64); values are converted
            explicitly to it.
          rtol: without ``symmetrize``, the factor matrices must all equal the first one (a
            symmetric tensor); with ``rtol > 0`` entries may differ by ``rtol * max|U|``.
          symmetrize: ``True`` accepts any CP tensor whose modes differ (e.g. a ``parafac`` fit
            of a symmetric tensor: each mode's columns differ in sign and scale) and returns the
            symmetric tensor of :func:`symmetrize_cp` together with how far ``cp`` was from it.

        Returns:
          ``SymCP(weights, factors[0].T, len(factors))``; with ``symmetrize=True`` the pair
          ``(tensor, asymmetry)`` of :func:`symmetrize_cp` (an :class:`Asymmetry`).

        Raises ``ValueError`` when the factor matrices differ (not symmetric; unless
        ``symmetrize``) or shapes disagree, ``TypeError`` for complex values, ``ImportError``
        without TensorLy.
        """
        tl, _ = _tensorly("SymCP.from_tensorly")
        if not isinstance(symmetrize, bool):
            raise TypeError(f"symmetrize must be True or False, got {symmetrize!r}")
        if symmetrize and rtol != 0.0:
            raise ValueError("rtol is the tolerance of the exact check; symmetrize=True accepts "
                             "any mismatch and reports it: pass one or the other")
        w, mats, dtype = _cp_arrays(tl, cp, dtype, same_shape=True)
        if symmetrize:
            return symmetrize_cp(w, mats, dtype=dtype)
        first = mats[0]
        for i, m in enumerate(mats):
            diff = float(np.max(np.abs(m - first), initial=0.0))
            if not diff <= rtol * float(np.max(np.abs(first), initial=0.0)):
                raise ValueError(f"cp is not symmetric: cp.factors[{i}] differs from cp.factors[0] "
                                 f"(max abs difference {diff:.3g}); SymCP needs one factor matrix "
                                 "repeated in every mode (pass rtol= to accept a small mismatch, "
                                 "or symmetrize=True for a fit whose modes differ in sign and "
                                 "scale)")
        return cls(jnp.asarray(w.astype(dtype)), jnp.asarray(first.T.astype(dtype)), len(mats))

    def __repr__(self):
        # leaves may be anything after a tree_map (floats, None, sharding specs)
        shape = _shape(self.factors)
        if shape is None or len(shape) < 2:
            return f"SymCP(order={self.order}, weights={self.weights!r}, factors={self.factors!r})"
        return (f"SymCP(order={self.order}, rank={shape[-2]}, dim={shape[-1]}, "
                f"dtype={getattr(self.factors, 'dtype', None)})")


class Asymmetry(NamedTuple):
    """How far a CP tensor was from the symmetric tensor :func:`symmetrize_cp` made of it.

    Attributes:
      cosine_gap: ``max_i component_gaps[i]``; 0 when every component's modes agree up to sign
        and scale.
      component_gaps: ``(k,)`` per component ``i``: ``1 - min_{m < n} |cos(a_m_i, a_n_i)|`` over
        pairs of modes (0 for a zero component).
      relative_distance: ``||A - S||_F / ||A||_F`` between the input ``A`` and the symmetric
        ``S``, in float64 from the CP factors (no dense tensor: Gram matrices of the factors, so
        any size; resolved down to about 1e-8 by the cancellation in ``|A|^2 - 2<A,S> + |S|^2``).
    """

    cosine_gap: float
    component_gaps: np.ndarray
    relative_distance: float


def _cp_arrays(tl, cp, dtype, *, same_shape: bool):
    """``(weights (k,), [factor (d, k)] * order, dtype)`` of a CPTensor or pair, checked."""
    try:
        weights, factors = cp
    except (TypeError, ValueError):
        raise TypeError("cp must be a tensorly CPTensor or a (weights, factors) pair, got "
                        f"{type(cp).__name__}") from None
    if isinstance(factors, (str, bytes)) or not hasattr(factors, "__len__"):
        raise TypeError("cp's factors must be a list of (dim, rank) matrices, one per mode")
    mats = [np.asarray(f if tl is None else tl.to_numpy(f)) for f in factors]
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
        if same_shape and m.shape != first.shape:
            raise ValueError(f"cp.factors[{i}] has shape {m.shape} but cp.factors[0] has "
                             f"{first.shape}; a symmetric CP tensor repeats one factor matrix")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"cp.factors[{i}] holds non-finite values; pass a finite CP tensor")
    k = first.shape[1]
    w = np.ones((k,)) if weights is None else np.asarray(
        weights if tl is None else tl.to_numpy(weights))
    if np.iscomplexobj(w):
        raise TypeError("cp.weights is complex; a SymCP is a real tensor")
    if w.shape != (k,):
        raise ValueError(f"cp.weights must have shape ({k},) to match factors of shape "
                         f"{first.shape}, got {w.shape}")
    return w, mats, dtype


def _cp_inner(wa, mats_a, wb, mats_b) -> float:
    """``<A, B>`` of two CP tensors of the same order: ``wa^T (prod_m Ma_m^T Mb_m) wb``
    (elementwise product of the modes' Gram matrices), float64."""
    gram = np.ones((len(wa), len(wb)))
    for a, b in zip(mats_a, mats_b):
        gram = gram * (a.T @ b)
    return float(wa @ gram @ wb)


def symmetrize_cp(weights, factors, *, dtype=None) -> tuple["SymCP", Asymmetry]:
    """The symmetric CP tensor nearest, component by component, to a CP tensor whose modes differ.

    A CP fit of a symmetric tensor (e.g. TensorLy's ``parafac``) has, per component ``i``, one
    column ``a_m_i`` per mode ``m`` that agree only up to sign and scale (``parafac`` does not
    know the tensor is symmetric). Per component:

    1. normalize: ``a_m_i = n_m u_m`` with ``n_m = ||a_m_i||``;
    2. align signs to mode 0: ``s_m = sign(<u_m, u_0>)`` (``+1`` for a zero inner product);
    3. absorb them into the weight: ``c_i = w_i * prod_m n_m * prod_m s_m``;
    4. average the aligned unit vectors and renormalize: ``u_i = mean_m(s_m u_m) / ||.||``;
    5. odd order: a negative ``c_i`` becomes positive with ``u_i -> -u_i`` (``(-u)^{⊗l} =
       -u^{⊗l}``); even order: a negative weight stays a weight (no real vector gives it).

    For an exactly symmetric input (up to per-mode signs and scales whose product is one
    component's weight) this is exact; otherwise ``sum_i c_i u_i^{⊗order}`` is the symmetric
    tensor of averaged directions and :class:`Asymmetry` reports how far the input was.
    A component with a zero column is zero: weight 0, factor 0.

    Args:
      weights: ``(k,)`` (``None`` means ones).
      factors: a list of ``order >= 2`` numpy arrays ``(d, k)``, one per mode.
      dtype: of the returned SymCP (float32 by default, float64 under x64); the arithmetic is
        float64.

    Returns:
      ``(SymCP (k, d), Asymmetry)``.
    """
    w, mats, dtype = _cp_arrays(None, (weights, factors), dtype, same_shape=True)
    w = w.astype(np.float64)
    mats = [m.astype(np.float64) for m in mats]
    order = len(mats)
    stack = np.stack(mats)                              # (order, d, k)
    norms = np.linalg.norm(stack, axis=1)               # (order, k)
    zero = np.any(norms == 0, axis=0)                   # (k,)
    units = stack / np.where(norms == 0, 1.0, norms)[:, None, :]
    cos = np.einsum("mdk,ndk->kmn", units, units)       # (k, order, order)
    signs = np.where(cos[:, 0, :] < 0, -1.0, 1.0).T      # (order, k): sign of <u_m, u_0>
    direction = np.mean(signs[:, None, :] * units, axis=0)   # (d, k)
    length = np.linalg.norm(direction, axis=0)
    # |mean| >= 1/order > 0 after alignment (every term has a nonnegative inner product with u_0)
    direction = direction / np.where(length == 0, 1.0, length)
    weight = w * np.prod(norms, axis=0) * np.prod(signs, axis=0)
    if order % 2:
        flip = np.where(weight < 0, -1.0, 1.0)
        weight, direction = weight * flip, direction * flip
    weight = np.where(zero, 0.0, weight)
    direction = np.where(zero, 0.0, direction)
    gaps = np.where(zero, 0.0, 1.0 - np.min(np.abs(cos), axis=(1, 2)))
    a_sq = _cp_inner(w, mats, w, mats)
    s_mats = [direction] * order
    dist_sq = max(a_sq - 2.0 * _cp_inner(w, mats, weight, s_mats)
                  + _cp_inner(weight, s_mats, weight, s_mats), 0.0)
    rel = float(np.sqrt(dist_sq / a_sq)) if a_sq > 0 else (0.0 if dist_sq == 0 else np.inf)
    tensor = SymCP(jnp.asarray(weight.astype(dtype)), jnp.asarray(direction.T.astype(dtype)),
                   order)
    return tensor, Asymmetry(float(np.max(gaps, initial=0.0)), gaps, rel)


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
