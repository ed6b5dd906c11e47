"""The sweep's cost model: which widths share one compiled program (docs/architecture.md).

A sweep runs each *width bucket* as one program at its largest width (the smaller widths
masked). :func:`bucket_widths` groups the widths; for ``bucketing="auto"`` it weighs each
program's compilation against the padded work it runs (:class:`BucketCost`).
:func:`plan_buckets` is the one bucket plan of a sweep, used by :func:`jaxtd.sweep` and by the
run plan of :mod:`jaxtd.experiment` alike, so the estimate and the run never disagree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from jaxtd._sizes import BUCKETINGS

__all__ = ["bucket_widths", "BucketCost", "plan_buckets"]


def bucket_widths(widths: Sequence[int], bucketing: str = "pow2", *,
                  cost: Optional["BucketCost"] = None) -> tuple[tuple[int, ...], ...]:
    """Group sorted ``widths`` into buckets that share one compiled computation.

    ``"pow2"``: width ``m`` goes to bucket ``k = ceil(log2 m)``, i.e. ``(2^(k-1), 2^k]``; a bucket
    runs at its largest member, so every width is padded by less than 2×. ``"exact"``: one bucket
    per width (no padding, one compilation each). ``"single"``: one bucket for all widths.
    ``"auto"``: the contiguous grouping of least estimated cost (:class:`BucketCost`: each
    program's compilation against the padded work it runs), found by dynamic programming;
    ``cost`` defaults to ``BucketCost()``.
    """
    if bucketing not in BUCKETINGS:
        raise ValueError(f"bucketing must be one of {BUCKETINGS}, got {bucketing!r}")
    widths = sorted(widths)
    if bucketing == "single":
        return (tuple(widths),)
    if bucketing == "exact":
        return tuple((m,) for m in widths)
    if bucketing == "auto":
        return _cheapest_buckets(widths, cost or BucketCost())
    groups: dict[int, list[int]] = {}
    for m in widths:
        groups.setdefault((m - 1).bit_length(), []).append(m)
    return tuple(tuple(g) for _, g in sorted(groups.items()))


@dataclasses.dataclass(frozen=True)
class BucketCost:
    """A rough cost model of one width bucket, in seconds.

    A bucket of widths ``ws`` padded to ``M = max(ws)`` costs ``compile_seconds`` plus
    ``cell_steps * len(ws) * (step_overhead + flop_seconds * (M + rank)^2 * dim)``, where
    ``cell_steps`` is the number of (seed, hparam) cells times the steps. One step of every
    algorithm is dominated by a few ``(M + r) x (M + r) x d`` Gram products; the constants were
    measured for plain GD on a 2-core CPU (compile ~2 s per program, ~0.1 ns per unit of
    ``(M + r)^2 d``). Accelerators make padding cheaper: pass ``flop_seconds`` smaller there
    (:meth:`for_platform`).
    """

    cell_steps: float = 1e4
    dim: int = 16
    rank: int = 4
    compile_seconds: float = 2.0
    step_overhead: float = 2e-6
    flop_seconds: float = 1e-10

    @classmethod
    def for_platform(cls, platform: str, **fields) -> "BucketCost":
        if platform != "cpu":
            fields = {"compile_seconds": 1.0, "step_overhead": 2e-7, "flop_seconds": 1e-12,
                      **fields}
        return cls(**fields)

    def __call__(self, bucket: Sequence[int]) -> float:
        padded = max(bucket)
        per_cell = self.step_overhead + self.flop_seconds * (padded + self.rank) ** 2 * self.dim
        return self.compile_seconds + self.cell_steps * len(bucket) * per_cell


def _cheapest_buckets(widths: Sequence[int], cost: BucketCost) -> tuple[tuple[int, ...], ...]:
    """Contiguous partition of sorted ``widths`` minimizing the summed bucket cost, by dynamic
    programming over the last cut (O(n^2) bucket costs, one numpy expression per end point for a
    :class:`BucketCost`)."""
    n = len(widths)
    best = np.full(n + 1, math.inf)   # best[j]: cheapest cost of widths[:j]
    best[0] = 0.0
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        total = best[:j] + _bucket_costs(widths, j, cost)
        cut[j] = int(np.argmin(total))  # the first minimum: ties go to the earliest cut
        best[j] = total[cut[j]]
    buckets, j = [], n
    while j > 0:
        buckets.append(tuple(widths[cut[j]:j]))
        j = cut[j]
    return tuple(reversed(buckets))


def _bucket_costs(widths: Sequence[int], j: int, cost) -> np.ndarray:
    """``(j,)``: the cost of the bucket ``widths[i:j]`` for every ``i < j``. A
    :class:`BucketCost` depends only on a bucket's size and largest width, so all ``i`` at once
    (the same arithmetic as :meth:`BucketCost.__call__`); any other callable bucket by bucket."""
    if not isinstance(cost, BucketCost):
        return np.asarray([cost(widths[i:j]) for i in range(j)], np.float64)
    per_cell = cost.step_overhead + cost.flop_seconds * (widths[j - 1] + cost.rank) ** 2 * cost.dim
    return cost.compile_seconds + cost.cell_steps * (j - np.arange(j)) * per_cell


def plan_buckets(widths: Sequence[int], bucketing: str, *, platform: str, dim: int, rank: int,
                 steps: int, n_hparams: int, chunk_size: int,
                 n_devices: int) -> tuple[tuple[int, ...], ...]:
    """The buckets :func:`jaxtd.sweep` runs ``widths`` in, for chunks of ``chunk_size`` seeds
    sharded over ``n_devices`` devices of ``platform`` (``"cpu"``, ``"gpu"``, ...): each device
    runs ``ceil(chunk_size / n_devices)`` seeds times ``n_hparams`` combinations times ``steps``
    steps per cell (the :class:`BucketCost` of that platform for ``"auto"``)."""
    cost = BucketCost.for_platform(platform, dim=dim, rank=rank,
                                   cell_steps=steps * n_hparams * math.ceil(chunk_size / n_devices))
    return bucket_widths(widths, bucketing, cost=cost)
