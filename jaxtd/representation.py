"""Which form computes the loss ``1/2 ||T(W) - T*||_F^2`` of a training step: Gram or explicit.

The model ``T(W) = sum_i c_i w_i^{⊗l}`` (``m`` rows in ``R^d``) and the target ``T*`` (``r``
components) can be compared in two ways:

- **Gram form** (:func:`jaxtd.loss`): ``1/2 c'^T (U U^T)^{∘l} c'`` on the ``k = m + r`` stacked
  components. Value and gradient cost two ``k x k x d`` matmuls, ``~2 k^2 d`` multiply-adds, and
  ``O(k^2)`` memory; the ``d^l`` tensor never exists.
- **Explicit form** (:func:`explicit_loss`): build the dense model ``T(W)`` (``(d,) * l``, one
  ``(d^(l-1) x m) @ (m x d)`` matmul after ``l - 2`` row-wise outer products), subtract the
  target's dense tensor and take ``1/2 ||.||^2`` entry by entry. Value and gradient cost three
  ``m d^l`` matmuls (the build and its two transposes) and ``O(m d^(l-1) + d^l)`` memory. The
  difference is formed entry by entry, so no cancellation between ``||T||^2`` and ``<T, T*>``.

The Gram cost grows with ``m^2``, the explicit one with ``m``. Counting multiply-adds the
explicit form is cheaper once ``m > (2/3) d^(l-1)`` (for ``l = 3`` about four times the lazy
threshold ``m* = ceil(C(d+2, 3)/d) ~ d^2/6``, so in the wide, lazy-side buckets); on XLA:CPU its
multiply-adds run 3-9x slower than the Gram form's (measured at ``l = 3, d = 16``, ``m = 256 ..
1400``), which moves the crossover to ``m ~ 7.5 d^(l-1)`` there. :func:`choose` applies this
cost model to one program's static shapes (a sweep's width bucket runs at its padded width, so
the choice is per bucket), with a memory cap on ``d^l`` and a floor below which a step is
dispatch-bound and the Gram form is kept (the form every other part of jaxtd uses, so small
problems compute exactly as before).

The target's dense tensor is built inside the step from its ``r`` components (``r d^l``
multiply-adds, counted in :func:`explicit_cost`; ``r << m`` wherever the explicit form is
chosen), so nothing outside the loss changes: every algorithm built on
:func:`jaxtd.models.regularized_loss` (gradient descent, the variant, deflation) gets the
choice, whose ``representation`` argument is ``"auto"`` (default, :func:`choose`), ``"gram"``
or ``"explicit"``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxtd._checks import check_choice, check_int
from jaxtd._precision import matmul
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["REPRESENTATIONS", "MAX_DENSE_ENTRIES", "MIN_STEP_FLOPS", "EXPLICIT_PENALTY",
           "gram_cost", "explicit_cost", "choose", "resolve", "dense", "explicit_loss"]

REPRESENTATIONS = ("auto", "gram", "explicit")
#: the largest ``d^l`` the explicit form builds (per run: a sweep holds one per vmapped cell)
MAX_DENSE_ENTRIES = 2 ** 20
#: below this Gram cost (multiply-adds per step) a step is dispatch-bound: keep the Gram form
MIN_STEP_FLOPS = 2 ** 18
#: cost of an explicit-form multiply-add in Gram-form ones, per platform (measured on XLA:CPU;
#: other platforms: 1, the leading-term model)
EXPLICIT_PENALTY = {"cpu": 5.0}


def gram_cost(m: int, d: int, r: int, order: int) -> int:
    """Multiply-adds of one Gram-form value and gradient: ``2 (m + r)^2 d`` (``U U^T`` and
    ``K U``; the ``l``-th power is ``O(k^2 l)`` elementwise and not counted)."""
    return 2 * (m + r) ** 2 * d


def explicit_cost(m: int, d: int, r: int, order: int) -> int:
    """Multiply-adds of one explicit-form value and gradient: ``3 m d^l`` (the ``m d^l`` build
    matmul and its two transposes) plus ``r d^l`` for the target's dense tensor."""
    return (3 * m + r) * d ** order


def choose(m: int, d: int, r: int, order: int, *, max_entries: int = MAX_DENSE_ENTRIES,
           min_flops: int = MIN_STEP_FLOPS, platform: Optional[str] = None) -> str:
    """``"explicit"`` where the cost model says the dense form is cheaper, else ``"gram"``.

    Explicit when ``penalty * explicit_cost < gram_cost``, ``d^l <= max_entries`` (memory) and
    ``gram_cost >= min_flops`` (a smaller step is dispatch-bound: switching buys nothing).
    ``penalty`` (:data:`EXPLICIT_PENALTY`) is how much slower a multiply-add of the explicit
    form runs than one of the Gram form on ``platform``: measured 3-9 on XLA:CPU, 5 near the
    crossover (``benchmarks/representation.py``: the reshapes and outer products around the
    matmul are memory-bound), so on a CPU the explicit form wins only from ``m ~ 7.5
    d^(l-1)``; elsewhere
    (unmeasured) the plain leading-term comparison, ``m > (2/3) d^(l-1)``. Ties go to the Gram
    form.

    Args:
      m: model width (a sweep's padded width), ``>= 1``.
      d: dimension, ``>= 1``.
      r: target rank, ``>= 1``.
      order: tensor order ``l``, ``>= 2``.
      max_entries: the largest ``d^l`` to build.
      min_flops: the Gram cost below which the Gram form is kept.
      platform: ``"cpu"``, ``"gpu"``, ...; default the default backend's.

    Returns:
      ``"gram"`` or ``"explicit"``.
    """
    m, d = check_int(m, "m", 1), check_int(d, "d", 1)
    r, order = check_int(r, "r", 1), check_int(order, "order", 2)
    platform = jax.default_backend() if platform is None else platform
    gram = gram_cost(m, d, r, order)
    if d ** order > max_entries or gram < min_flops:
        return "gram"
    penalty = EXPLICIT_PENALTY.get(platform, 1.0)
    return "explicit" if penalty * explicit_cost(m, d, r, order) < gram else "gram"


def resolve(representation: str, m: int, target: SymCP) -> str:
    """``representation`` with ``"auto"`` replaced by :func:`choose` of the static shapes."""
    check_choice(representation, "representation", REPRESENTATIONS)
    if representation != "auto":
        return representation
    return choose(m, target.dim, target.rank, target.order)


def dense(t: SymCP) -> jnp.ndarray:
    """The dense ``(d,) * l`` tensor ``sum_i c_i u_i^{⊗l}`` by one matmul at full precision.

    ``X[:, i] = c_i u_i^{⊗(l-1)}`` flattened to ``(d^(l-1), k)`` by ``l - 2`` outer products of
    the columns of ``U^T``, then ``X U``: ``k d^l`` multiply-adds in one ``Precision.HIGHEST``
    matmul (the reverse pass is two more). ``X`` is built transposed because XLA:CPU runs a
    matmul contracting the leading axis of its left operand ~1.5x slower. Differentiable;
    unlike :func:`jaxtd.to_dense` (the test oracle) it has no size limit: callers bound ``d^l``
    (:func:`choose`).
    """
    u = t.factors
    k, d = u.shape
    ut = u.T
    x = t.weights[None, :] * ut
    for _ in range(t.order - 2):
        x = (x[:, None, :] * ut[None, :, :]).reshape(-1, k)
    return matmul(x, u).reshape((d,) * t.order)


def explicit_loss(model: SymCP, target) -> jnp.ndarray:
    """``1/2 ||T(model) - T*||_F^2`` through the dense tensors; scalar.

    Same value and gradient as :func:`jaxtd.loss` (the Gram form) up to rounding.

    Args:
      model: a :class:`~jaxtd.SymCP` (``m`` components, dimension ``d``, order ``l``).
      target: a :class:`~jaxtd.SymCP` of the same order and dimension, or its dense ``(d,) * l``
        tensor (:func:`dense`), e.g. built once outside a training loop.

    Returns:
      scalar of the model's dtype.
    """
    if isinstance(target, SymCP):
        check_compatible(model, target, ("model", "target"))
        target = dense(target)
    shape = (model.dim,) * model.order
    if getattr(target, "shape", None) != shape:
        raise ValueError(f"target must be a SymCP or a dense tensor of shape {shape}, got shape "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    diff = dense(model) - jnp.asarray(target).astype(model.factors.dtype)
    return 0.5 * jnp.sum(diff * diff)
