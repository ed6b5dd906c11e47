"""Integer rules on problem sizes, in plain Python (no JAX, no pandas).

They sit below both the engine (runner, sweep, lazy solver) and the configuration, so that
reading and validating a config never loads JAX: the dimension of ``Sym^l(R^d)``, the predicted
lazy threshold and its window of widths, the default history cadence, the width bucketings.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

__all__ = ["sym_dim", "AH_EXCEPTIONS", "predicted_critical_width", "predicted_width",
           "MAX_WINDOW", "near_threshold_widths", "largest_divisor_at_most",
           "default_record_every", "BUCKETINGS", "DEFAULT_BUCKETING", "model_degree"]


def sym_dim(dim: int, order: int) -> int:
    """``dim Sym^l(R^d) = C(d + l - 1, l)``: the dimension of symmetric order-``l`` tensors."""
    return math.comb(dim + order - 1, order)


# -- the lazy threshold ---------------------------------------------------------------------------

# Alexander–Hirschowitz: (order, dim, width) where the tangent space falls one short of
# min(m d, C(d+l-1, l)) for generic W0 (besides order 2).
AH_EXCEPTIONS = ((4, 3, 5), (4, 4, 9), (4, 5, 14), (3, 5, 7))


def predicted_critical_width(dim: int, order: int) -> int:
    """Expected ``m*(d, l)`` for a generic ``W0`` and target (standard, non-antisymmetric init):
    ``⌈C(d+l-1, l) / d⌉``, except order 2 (the tangent space has dimension ``md - m(m-1)/2``, so
    ``m* = d``) and the Alexander–Hirschowitz exceptions (one more)."""
    if order == 2:
        return int(dim)
    m = -(-sym_dim(dim, order) // dim)
    return m + 1 if (order, dim, m) in AH_EXCEPTIONS else m


def predicted_width(dim: int, order: int, init: str = "standard") -> int:
    """The threshold width of ``init``: ``m*`` (:func:`predicted_critical_width`), or ``2 m* - 1``
    for ``"antisymmetric"``.

    The antisymmetric init pairs rows on one factor (a pair spans the tangent directions of one
    factor), so ``m* - 1`` pairs and one unpaired row give the ``m*`` distinct factors needed.
    """
    m = predicted_critical_width(int(dim), int(order))
    return 2 * m - 1 if init == "antisymmetric" else m


# Widths on each side of the predicted threshold (each one a solve), and the most widths a
# default window 1 .. m* + 2 may hold.
MAX_WINDOW = 1000

# The largest tensor order a SymCP may have (jaxtd.symcp checks it, the config's schema bounds
# ``order`` by it). The accurate metric's cost grows as ``order^2`` (jaxtd._aligned) and its
# traced program with the order, and ``<u, v>^order`` of unit vectors underflows float32 long
# before: a larger order is refused up front instead of hanging.
MAX_ORDER = 64


def near_threshold_widths(below: int = 2, above: int = 2, init: str = "standard") -> Callable:
    """``widths`` for :func:`jaxtd.lazy.threshold_experiment`: ``(dim, order) -> [p - below,
    p + above]`` around the predicted critical width ``p`` (of ``init``), clipped at 1. Solving
    only there is what makes large ``d`` affordable; ``critical`` is then only found inside that
    window (a window whose smallest width already fits says so: its residual is ``<= tol``
    there)."""
    for name, v in (("below", below), ("above", above)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if v > MAX_WINDOW:
            raise ValueError(f"{name} must be <= {MAX_WINDOW} (each width is one solve), got {v}")
    if init not in ("standard", "antisymmetric"):
        raise ValueError(f"init must be 'standard' or 'antisymmetric', got {init!r}")

    def widths(d, l):
        p = predicted_width(int(d), int(l), init)
        return list(range(max(1, p - below), p + above + 1))

    return widths


# -- the history cadence --------------------------------------------------------------------------

_TRIAL_LIMIT = 10 ** 6


def largest_divisor_at_most(n: int, bound: int) -> int:
    """The largest divisor of the int ``n >= 1`` that is ``<= bound`` (``>= 1``), in bounded time.

    ``n`` is factored by trial division up to ``10**6`` and the divisors are built from the
    factors (at most ~10^5 of them for any 64-bit ``n``). Exact for ``n < 10**12``; above, a
    leftover cofactor with two large prime factors is treated as prime, so the answer is a
    divisor ``<= bound`` that may not be the largest one."""
    n, bound = int(n), int(bound)
    if bound >= n:
        return n
    if bound <= 1:
        return 1
    factors: dict[int, int] = {}
    rest = n
    p = 2
    while p * p <= rest and p <= _TRIAL_LIMIT:
        while rest % p == 0:
            factors[p] = factors.get(p, 0) + 1
            rest //= p
        p += 1 if p == 2 else 2
    if rest > 1:
        factors[rest] = factors.get(rest, 0) + 1
    divisors = [1]
    for prime, power in factors.items():
        divisors = [d * prime ** e for d in divisors for e in range(power + 1)
                    if d * prime ** e <= bound]
    return max(divisors)


def default_record_every(steps: int, records: int = 100) -> int:
    """The largest divisor of ``steps`` that is at most ``max(1, steps // records)`` (found from
    the factors of ``steps`` in bounded time: :func:`largest_divisor_at_most`)."""
    return largest_divisor_at_most(steps, max(1, steps // records))


# -- the sweep's width buckets --------------------------------------------------------------------

# How :func:`jaxtd.sweep` groups widths into padded buckets sharing one compilation
# (:func:`jaxtd.bucket_widths`), and its default.
BUCKETINGS = ("auto", "pow2", "exact", "single")
DEFAULT_BUCKETING = "auto"


def model_degree(model: str, order: int) -> int:
    """Degree ``k`` of a named model (:data:`jaxtd.models.MODELS`) in its parameters ``W``:
    ``order`` for ``"plain"`` (``w^{⊗l}``), 2 for ``"two_homogeneous"``. Used by gd's
    ``lr_scaling="ntk"`` and by the init-scale figure's lazy-limit slope ``δ^-k``."""
    if model == "plain":
        return int(order)
    if model == "two_homogeneous":
        return 2
    raise ValueError("model must be one of ('plain', 'two_homogeneous') to have a known degree, "
                     f"got {model!r}")
