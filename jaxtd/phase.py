"""Critical widths with confidence intervals, exponent fits, and an adaptive width search.

The statistics of a phase diagram (critical width against ``d`` and ``r``), on *success tables*:
for one cell of the diagram (algorithm, order, dim, rank, kind of components, weights), a boolean
array ``success`` of shape ``(n_seeds, n_widths)`` over sorted distinct ``widths``, where
``success[s, j]`` says whether seed ``s`` succeeded at width ``widths[j]``.

- The **critical width** is the package's one definition, :func:`jaxtd.results.critical_width_of`
  of the success-rate curve ``rate = success.mean(0) >= 0.5``: the smallest width from which
  every larger width of the grid has success rate ``>= 0.5``. A lucky small width below a failing
  one does not count (non-monotone tables are handled by the definition itself). When the
  largest width fails it is **NaN** (not found in the grid: it lies above ``widths[-1]``); when
  every width succeeds it is ``widths[0]`` (an upper bound: the true value may be smaller).
- Its **confidence interval** (:func:`critical_width`) is either a seed bootstrap (resample the
  seeds with replacement, recompute the critical width, take the percentile interval; a resample
  whose largest width fails counts as ``+inf``, so ``ci_high = inf`` says the interval is open
  above the grid) or the exact binomial one (Clopper-Pearson intervals on each width's success
  rate; see :func:`critical_width`).
- **Exponents** (:func:`fit_exponent`, :func:`exponents`): the least-squares slope ``b`` of
  ``log m_c = a + b log x`` over the cells of one group (``x = dim`` or ``rank``), with a
  bootstrap interval from refitting the cells' bootstrap draws.
- :func:`critical_widths` and :func:`exponents` turn a sweep's results table into the rows of
  ``critical_widths.csv`` and ``exponents.csv``.
- :func:`critical_sample_counts`: the same definition and interval along the sample-count axis
  of :func:`jaxtd.algorithms.network` (hparam ``active_samples`` in place of the width): the
  rows of ``sample_counts.csv``, beside ``dim Sym^l(R^d) = C(d+l-1, l)``.
- :func:`search_critical_width` finds a critical width adaptively (a geometric coarse grid, then
  bisection in batches between the last failing and the first succeeding probed width), calling a
  user ``evaluate(widths) -> success table`` (e.g. :func:`sweep_evaluator`, one
  :func:`jaxtd.sweep` per call) with the same seeds at every probe.
- The loss of the probed runs takes the dense ``d^l`` form where a width bucket is wide enough
  for it to be cheaper (:mod:`jaxtd.representation`, chosen inside the step).

Everything except :func:`sweep_evaluator` computes with numpy/pandas only.
"""

from __future__ import annotations

import math
import os
from typing import Callable, NamedTuple, Optional

import numpy as np
import pandas as pd

from jaxtd._checks import check_choice, check_int
from jaxtd._sizes import sym_dim
from jaxtd._sweep import sweep
from jaxtd.results import critical_width_of

__all__ = ["CELL_COLUMNS", "CRITICAL_WIDTH_COLUMNS", "EXPONENT_COLUMNS", "CriticalWidth",
           "Exponent", "Search", "clopper_pearson", "bootstrap_critical_widths",
           "critical_width", "success_table", "critical_widths", "fit_exponent", "exponents",
           "SAMPLE_COUNT_COLUMNS", "critical_sample_counts",
           "coarse_widths", "search_critical_width", "sweep_evaluator"]

#: the columns that identify one cell of the phase diagram
CELL_COLUMNS = ("algorithm", "order", "dim", "rank", "kind", "weights")
#: the columns of ``critical_widths.csv``, in order
CRITICAL_WIDTH_COLUMNS = CELL_COLUMNS + ("critical_width", "ci_low", "ci_high", "seeds")
#: the columns of ``exponents.csv``, in order
EXPONENT_COLUMNS = ("algorithm", "order", "variable", "exponent", "ci_low", "ci_high",
                    "fitted_range")

#: the columns of ``sample_counts.csv`` (:func:`critical_sample_counts`), in order
SAMPLE_COUNT_COLUMNS = ("algorithm", "order", "dim", "rank", "width", "critical_samples",
                        "ci_low", "ci_high", "seeds", "sym_dim", "ratio")

INTERVAL_METHODS = ("bootstrap", "binomial")


# -- one cell: critical width and its interval ------------------------------------------------

def _check_level(level: float) -> float:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be a probability in (0, 1) such as 0.95, got {level!r}")
    return float(level)


def _check_rate(rate: float) -> float:
    if not (isinstance(rate, (int, float)) and 0 < rate <= 1):
        raise ValueError(f"rate must be in (0, 1] (the success rate a width must reach; the "
                         f"package's definition uses 0.5), got {rate!r}")
    return float(rate)


def _check_table(widths, success) -> tuple[np.ndarray, np.ndarray]:
    """``widths (n,)`` sorted distinct positive, ``success (n_seeds, n)`` bool."""
    widths = np.asarray(widths)
    success = np.asarray(success)
    if widths.ndim != 1 or widths.size == 0:
        raise ValueError(f"widths must be a non-empty 1-d sequence, got shape {widths.shape}")
    if not np.all(np.diff(widths) > 0):
        raise ValueError(f"widths must be strictly increasing, got {widths.tolist()}; sort them "
                         "(and the columns of success with them)")
    if success.ndim != 2 or success.shape[1] != widths.size or success.shape[0] == 0:
        raise ValueError(f"success must be a (n_seeds, n_widths) table with n_widths = "
                         f"{widths.size} and n_seeds >= 1, got shape {success.shape}")
    if success.dtype != bool:
        if not np.all((success == 0) | (success == 1)):
            raise ValueError("success must hold booleans (or 0/1), one per seed and width")
        success = success.astype(bool)
    return widths, success


def _rate_critical(widths: np.ndarray, rates: np.ndarray, rate: float) -> float:
    """The package's critical width of one success-rate curve."""
    return critical_width_of(widths, rates >= rate)


def clopper_pearson(successes, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) binomial interval of a success probability.

    ``low`` solves ``P(X >= k | p = low) = (1 - level) / 2`` and ``high`` solves
    ``P(X <= k | p = high) = (1 - level) / 2`` for ``X ~ Binomial(n, p)`` (``low = 0`` at
    ``k = 0``, ``high = 1`` at ``k = n``): the interval covers the true rate with probability at
    least ``level`` for every ``p``. Computed from the exact binomial tail by bisection (60
    halvings, float64), so it needs no special functions.

    Args:
      successes: integer counts ``k``, array-like.
      n: trials, broadcastable with ``successes``, ``0 <= k <= n``, ``n >= 1``.
      level: coverage, in ``(0, 1)``.

    Returns:
      ``(low, high)`` float64 arrays of the broadcast shape.
    """
    level = _check_level(level)
    k, n = np.broadcast_arrays(np.asarray(successes), np.asarray(n))
    if np.any(k < 0) or np.any(n < 1) or np.any(k > n) or np.any(k != np.round(k)):
        raise ValueError(f"need integer counts with 0 <= successes <= n and n >= 1, got "
                         f"successes={successes!r}, n={n!r}")
    tail = (1 - level) / 2
    low, high = np.zeros(k.shape), np.ones(k.shape)
    for idx in np.ndindex(k.shape):
        ki, ni = int(k[idx]), int(n[idx])
        if ki > 0:  # P(X >= k | p) increases with p
            low[idx] = _bisect(lambda p: 1 - _binom_cdf(ki - 1, ni, p) - tail)
        if ki < ni:  # P(X <= k | p) decreases with p
            high[idx] = _bisect(lambda p: tail - _binom_cdf(ki, ni, p))
    return low, high


def _binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, summed exactly in float64."""
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1)))


def _bisect(f: Callable[[float], float]) -> float:
    """The root in ``[0, 1]`` of an increasing ``f`` (negative at 0, positive at 1)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def bootstrap_critical_widths(widths, success, *, n_boot: int = 1000, rate: float = 0.5,
                              rng: Optional[np.random.Generator] = None,
                              seed: int = 0) -> np.ndarray:
    """Critical widths of ``n_boot`` seed resamples of one success table.

    Each draw resamples the table's rows (seeds) with replacement and applies
    :func:`jaxtd.results.critical_width_of` to the resampled success-rate curve. A draw whose
    largest width fails is ``+inf`` (its critical width lies above the grid), so the draws sort.

    Args:
      widths: ``(n_widths,)`` strictly increasing.
      success: ``(n_seeds, n_widths)`` booleans.
      n_boot: number of resamples.
      rate: the success rate a width must reach.
      rng: a numpy ``Generator`` to draw from (advanced; for several cells in a row).
      seed: seed of the ``Generator`` made when ``rng`` is None: the draws are reproducible.

    Returns:
      ``(n_boot,)`` float64 draws.
    """
    widths, success = _check_table(widths, success)
    n_boot = check_int(n_boot, "n_boot", 1)
    rate = _check_rate(rate)
    rng = np.random.default_rng(seed) if rng is None else rng
    n_seeds = success.shape[0]
    rates = success[rng.integers(0, n_seeds, size=(n_boot, n_seeds))].mean(axis=1)
    draws = np.array([_rate_critical(widths, r, rate) for r in rates])
    return np.where(np.isnan(draws), np.inf, draws)


class CriticalWidth(NamedTuple):
    """The critical width of one success table with its interval.

    Attributes:
      critical_width: the package's critical width (NaN: the largest width fails).
      ci_low: lower end of the interval (a width of the grid).
      ci_high: upper end (a width of the grid; ``inf``: above the grid).
      seeds: number of seeds (rows of the table).
      draws: ``(n_boot,)`` bootstrap critical widths (``inf`` above the grid), or None for the
        binomial interval.
    """

    critical_width: float
    ci_low: float
    ci_high: float
    seeds: int
    draws: Optional[np.ndarray] = None


def critical_width(widths, success, *, method: str = "bootstrap", level: float = 0.95,
                   rate: float = 0.5, n_boot: int = 1000, seed: int = 0,
                   rng: Optional[np.random.Generator] = None) -> CriticalWidth:
    """The critical width of one success table and a confidence interval.

    The estimate is :func:`jaxtd.results.critical_width_of` of ``success.mean(0) >= rate``.
    The interval:

    - ``"bootstrap"``: the percentile interval of :func:`bootstrap_critical_widths` (the
      ``(1-level)/2`` and ``(1+level)/2`` quantiles of the draws, taken as grid widths: the
      lower one rounded down, the upper one up). It says how much the estimate moves when the
      same number of other seeds were drawn.
    - ``"binomial"``: from the exact Clopper-Pearson interval ``[lo_j, hi_j]`` of each width's
      success rate, the same definition applied to the most optimistic and the most
      pessimistic curves: ``ci_low = critical_width_of(widths, hi_j >= rate)`` (every larger
      width may reach the rate) and ``ci_high = critical_width_of(widths, lo_j >= rate)``
      (every larger width surely reaches it, NaN reported as ``inf``). Each width's interval has
      coverage ``level``; the interval of the critical width is conservative, not exact.

    Args:
      widths: ``(n_widths,)`` strictly increasing.
      success: ``(n_seeds, n_widths)`` booleans (or 0/1).
      method: ``"bootstrap"`` or ``"binomial"``.
      level: coverage, in ``(0, 1)``.
      rate: the success rate a width must reach (the package's definition: 0.5).
      n_boot: bootstrap resamples.
      seed: seed of the bootstrap's numpy ``Generator`` (reproducible intervals).
      rng: a ``Generator`` to use instead of ``seed``.

    Returns:
      :class:`CriticalWidth`.
    """
    method = check_choice(method, "method", INTERVAL_METHODS)
    level = _check_level(level)
    widths, success = _check_table(widths, success)
    rate = _check_rate(rate)
    crit = _rate_critical(widths, success.mean(axis=0), rate)
    n_seeds = success.shape[0]
    if method == "binomial":
        lo, hi = clopper_pearson(success.sum(axis=0), n_seeds, level)
        low = _rate_critical(widths, hi, rate)
        high = _rate_critical(widths, lo, rate)
        return CriticalWidth(crit, low if not math.isnan(low) else math.inf,
                             high if not math.isnan(high) else math.inf, n_seeds)
    draws = bootstrap_critical_widths(widths, success, n_boot=n_boot, rate=rate, rng=rng,
                                      seed=seed)
    tail = (1 - level) / 2
    low = float(np.quantile(draws, tail, method="lower"))
    high = float(np.quantile(draws, 1 - tail, method="higher"))
    return CriticalWidth(crit, low, high, n_seeds, draws)


# -- a sweep's table: cells, critical_widths.csv, exponents.csv ------------------------------

def success_table(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cell's rows (columns ``seed``, ``width``, ``success``) as a success table.

    Returns:
      ``(widths (n_widths,), seeds (n_seeds,), success (n_seeds, n_widths))``, widths and
      seeds sorted. Every seed must have run at every width (else a ``ValueError`` naming the
      missing pairs), and each pair once.
    """
    _require(rows, ("seed", "width", "success"))
    if rows.duplicated(["seed", "width"]).any():
        raise ValueError("rows hold a (seed, width) pair more than once: pass the rows of one "
                         "cell (one algorithm, order, dim, rank, kind, weights and "
                         "hyper-parameter setting)")
    table = rows.pivot(index="seed", columns="width", values="success").sort_index()
    table = table[sorted(table.columns)]
    if table.isna().any().any():
        missing = [(s, w) for s in table.index for w in table.columns if pd.isna(table.at[s, w])]
        raise ValueError(f"every seed must run at every width; missing (seed, width): "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return (table.columns.to_numpy(), table.index.to_numpy(), table.to_numpy().astype(bool))


def _require(rows, columns) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be a pandas DataFrame (Results.to_pandas()), got "
                        f"{type(rows).__name__}")
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the columns {missing}: add the constant ones with "
                         f"Results.with_columns(...), e.g. with_columns(kind='orthonormal', "
                         f"weights='equal')")


def _cells(rows: pd.DataFrame, method: str, level: float, rate: float, n_boot: int,
           seed: int) -> list[tuple[dict, CriticalWidth]]:
    """Every cell of ``rows`` with its :class:`CriticalWidth`, in sorted cell order; one numpy
    Generator seeded ``seed`` feeds the cells in that order (independent, reproducible)."""
    _require(rows, CELL_COLUMNS + ("seed", "width", "success"))
    rng = np.random.default_rng(seed)
    out = []
    for key, part in rows.groupby(list(CELL_COLUMNS), sort=True, dropna=False):
        widths, _, success = success_table(part)
        out.append((dict(zip(CELL_COLUMNS, key)),
                    critical_width(widths, success, method=method, level=level, rate=rate,
                                   n_boot=n_boot, rng=rng)))
    return out


def critical_widths(rows: pd.DataFrame, *, method: str = "bootstrap", level: float = 0.95,
                    rate: float = 0.5, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The rows of ``critical_widths.csv``: one per cell of a sweep's results table.

    Args:
      rows: a results table (``Results.to_pandas()``) with the columns ``algorithm, order,
        dim, rank, kind, weights, seed, width, success``; each cell (the first six) must have
        every seed at every width.
      method: ``"bootstrap"`` or ``"binomial"`` (see :func:`critical_width`).
      level: coverage of the interval.
      rate: the success rate a width must reach.
      n_boot: bootstrap resamples per cell.
      seed: seed of the numpy ``Generator`` feeding the cells in sorted order.

    Returns:
      DataFrame with exactly the columns :data:`CRITICAL_WIDTH_COLUMNS`: ``critical_width``
      NaN when the cell's largest width fails, ``ci_high`` inf when the interval reaches above
      the grid, ``seeds`` the number of seeds.
    """
    cells = _cells(rows, method, level, rate, n_boot, seed)
    return pd.DataFrame([dict(key, critical_width=cw.critical_width, ci_low=cw.ci_low,
                              ci_high=cw.ci_high, seeds=cw.seeds) for key, cw in cells],
                        columns=list(CRITICAL_WIDTH_COLUMNS))


def critical_sample_counts(rows: pd.DataFrame, *, method: str = "bootstrap",
                           level: float = 0.95, rate: float = 0.5, n_boot: int = 1000,
                           seed: int = 0) -> pd.DataFrame:
    """The rows of ``sample_counts.csv``: the sample count from which each regime succeeds.

    The critical width's definition and interval (:func:`critical_width`) along the sample
    axis: per (algorithm, order, dim, rank, width) the success table over the sample counts
    ``n`` (column ``active_samples``, swept by ``[network] samples = [...]``) and seeds gives
    the smallest ``n`` from which every larger ``n`` of the grid has success rate ``>= rate``
    (NaN: the largest ``n`` fails), with its interval (``ci_high = inf``: open above the grid).

    Args:
      rows: a results table with the columns ``algorithm, order, dim, rank, width, seed,
        active_samples, success``; each cell must have every seed at every ``n``.
      method: ``"bootstrap"`` or ``"binomial"`` (see :func:`critical_width`).
      level: coverage of the interval.
      rate: the success rate an ``n`` must reach.
      n_boot: bootstrap resamples per cell.
      seed: seed of the numpy ``Generator`` feeding the cells in sorted order.

    Returns:
      DataFrame with exactly the columns :data:`SAMPLE_COUNT_COLUMNS`; ``sym_dim`` is
      ``C(d+l-1, l)`` (the dimension of the degree-``l`` Hermite functions the kernel regimes
      fit, :func:`jaxtd.lazy.predicted_critical_width`'s numerator) and ``ratio`` is
      ``critical_samples / sym_dim``.
    """
    keys = ["algorithm", "order", "dim", "rank", "width"]
    _require(rows, keys + ["seed", "active_samples", "success"])
    rng = np.random.default_rng(seed)
    out = []
    for key, part in rows.groupby(keys, sort=True):
        # the sample count plays the width's part in the success table
        table = part.drop(columns="width").rename(columns={"active_samples": "width"})
        counts, _, success = success_table(table[["seed", "width", "success"]])
        cw = critical_width(counts, success, method=method, level=level, rate=rate,
                            n_boot=n_boot, rng=rng)
        cell = dict(zip(keys, key))
        size = sym_dim(int(cell["dim"]), int(cell["order"]))
        out.append(dict(cell, critical_samples=cw.critical_width, ci_low=cw.ci_low,
                        ci_high=cw.ci_high, seeds=cw.seeds, sym_dim=size,
                        ratio=cw.critical_width / size))
    return pd.DataFrame(out, columns=list(SAMPLE_COUNT_COLUMNS))


class Exponent(NamedTuple):
    """A fitted exponent ``b`` of ``log m_c = a + b log x``.

    Attributes:
      exponent: the least-squares slope through the cells' critical widths.
      intercept: ``a``.
      ci_low: lower end of the bootstrap percentile interval (NaN when too few draws fit).
      ci_high: upper end.
      x: the ``x`` values of the cells used (those with a finite critical width).
    """

    exponent: float
    intercept: float
    ci_low: float
    ci_high: float
    x: np.ndarray


def _slopes(log_x: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of each column of ``log_y (n, k)`` against
    ``log_x (n,)`` at once (vectorized over bootstrap draws)."""
    xc = log_x - log_x.mean()
    slope = xc @ (log_y - log_y.mean(axis=0)) / (xc @ xc)
    return slope, log_y.mean(axis=0) - slope * log_x.mean()


def fit_exponent(x, critical, draws=None, *, level: float = 0.95) -> Exponent:
    """Fit ``log critical = a + b log x`` over cells, with a bootstrap interval on ``b``.

    Cells whose critical width is not finite are left out (the fit uses the others; ``x`` of
    the result lists them). Draw ``k`` of the interval refits ``draws[:, k]`` (one bootstrap
    critical width per cell, the cells resampled independently); a draw holding a cell above
    its grid (``inf``) has no slope and is dropped, and when more than ``1 - level`` of the
    draws are dropped the interval is NaN (the data cannot bound the exponent).

    Args:
      x: ``(n_cells,)`` positive values of the variable (``d`` or ``r``).
      critical: ``(n_cells,)`` critical widths.
      draws: ``(n_cells, n_boot)`` bootstrap critical widths (:attr:`CriticalWidth.draws`), or
        None for no interval (NaN ends).
      level: coverage of the percentile interval.

    Returns:
      :class:`Exponent` (all NaN with fewer than two distinct ``x`` of finite critical width).
    """
    level = _check_level(level)
    x = np.asarray(x, np.float64)
    critical = np.asarray(critical, np.float64)
    if x.ndim != 1 or x.shape != critical.shape or np.any(~(x > 0)):
        raise ValueError(f"x and critical must be equal-length 1-d sequences with x > 0, got "
                         f"shapes {x.shape} and {critical.shape}")
    keep = np.isfinite(critical) & (critical > 0)
    nan = math.nan
    if len(np.unique(x[keep])) < 2:
        return Exponent(nan, nan, nan, nan, x[keep])
    log_x = np.log(x[keep])
    slope, intercept = _slopes(log_x, np.log(critical[keep])[:, None])
    low = high = nan
    if draws is not None:
        draws = np.asarray(draws, np.float64)
        if draws.ndim != 2 or draws.shape[0] != x.size:
            raise ValueError(f"draws must be (n_cells, n_boot) = ({x.size}, n_boot), got "
                             f"{draws.shape}")
        sub = draws[keep]
        ok = np.all(np.isfinite(sub) & (sub > 0), axis=0)
        if ok.mean() >= level:
            boot, _ = _slopes(log_x, np.log(sub[:, ok]))
            tail = (1 - level) / 2
            low, high = (float(q) for q in np.quantile(boot, [tail, 1 - tail]))
    return Exponent(float(slope[0]), float(intercept[0]), low, high, x[keep])


def _fixed(key: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def exponents(rows: pd.DataFrame, variable: str = "dim", *, level: float = 0.95,
              rate: float = 0.5, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The rows of ``exponents.csv``: the exponent of the critical width in ``variable``.

    The cells of ``rows`` (see :func:`critical_widths`; bootstrap intervals, same ``seed`` so
    the draws are those behind ``critical_widths.csv``) are grouped by every cell column but
    ``variable``; each group with at least two distinct values of ``variable`` of finite
    critical width gives one row, fitted by :func:`fit_exponent`.

    Args:
      rows: a results table with the columns of :func:`critical_widths`.
      variable: ``"dim"`` (``x = d``) or ``"rank"`` (``x = r``).
      level: coverage of the interval.
      rate: the success rate a width must reach.
      n_boot: bootstrap resamples per cell.
      seed: seed of the numpy ``Generator``.

    Returns:
      DataFrame with exactly the columns :data:`EXPONENT_COLUMNS`. ``fitted_range`` reads
      ``"<lo>..<hi> (<the other cell columns held fixed>)"``, e.g.
      ``"8..64 (rank=2, kind=orthonormal, weights=equal)"``: the range of ``variable`` over the
      cells used and what the group shares besides algorithm and order.
    """
    variable = check_choice(variable, "variable", ("dim", "rank"))
    cells = _cells(rows, "bootstrap", level, rate, n_boot, seed)
    others = [c for c in CELL_COLUMNS if c != variable]
    groups: dict = {}
    for key, cw in cells:
        groups.setdefault(tuple(key[c] for c in others), []).append((key[variable], cw))
    out = []
    for gkey, members in groups.items():
        fixed = dict(zip(others, gkey))
        x = np.array([m[0] for m in members], np.float64)
        fit = fit_exponent(x, [m[1].critical_width for m in members],
                           np.stack([m[1].draws for m in members]), level=level)
        if math.isnan(fit.exponent):
            continue
        held = {k: v for k, v in fixed.items() if k not in ("algorithm", "order")}
        out.append(dict(algorithm=fixed["algorithm"], order=fixed["order"], variable=variable,
                        exponent=fit.exponent, ci_low=fit.ci_low, ci_high=fit.ci_high,
                        fitted_range=f"{fit.x.min():g}..{fit.x.max():g} ({_fixed(held)})"))
    return pd.DataFrame(out, columns=list(EXPONENT_COLUMNS))


# -- adaptive search --------------------------------------------------------------------------

def coarse_widths(lo: int, hi: int, factor: float = 2.0) -> np.ndarray:
    """Integer widths ``lo, lo*factor, lo*factor^2, ... , hi`` (rounded, distinct, ``hi``
    always included): the coarse grid of :func:`search_critical_width`."""
    lo, hi = check_int(lo, "lo", 1), check_int(hi, "hi", 1)
    if hi < lo:
        raise ValueError(f"need lo <= hi, got lo={lo}, hi={hi}")
    if not (isinstance(factor, (int, float)) and factor > 1):
        raise ValueError(f"factor must be a number > 1 (the coarse grid's ratio), got {factor!r}")
    n = int(math.floor(math.log(hi / lo) / math.log(factor) + 1e-9)) if hi > lo else 0
    grid = np.round(lo * float(factor) ** np.arange(n + 1)).astype(np.int64)
    return np.unique(np.concatenate([grid, [hi]]))


class Search(NamedTuple):
    """What :func:`search_critical_width` probed and found.

    Attributes:
      widths: ``(n_probed,)`` every probed width, sorted.
      success: ``(n_seeds, n_probed)`` the success table at those widths.
      critical_width: the package's critical width of the probed table (NaN: ``hi`` fails;
        ``lo``: every probed width succeeds, the true value may be smaller).
      calls: number of ``evaluate`` calls.

    ``critical_width(search.widths, search.success)`` gives its interval over the probed widths.
    """

    widths: np.ndarray
    success: np.ndarray
    critical_width: float
    calls: int


def _interior(f: int, s: int, batch: int) -> list[int]:
    """Up to ``batch`` distinct integers strictly between ``f`` and ``s``, evenly spaced
    (``batch = 1``: the midpoint, plain bisection)."""
    inside = np.arange(f + 1, s)
    if inside.size <= batch:
        return inside.tolist()
    picks = np.round(f + (s - f) * np.arange(1, batch + 1) / (batch + 1)).astype(np.int64)
    return sorted(set(picks.tolist()))


def search_critical_width(evaluate: Callable[[list], np.ndarray], lo: int, hi: int, *,
                          factor: float = 2.0, batch: int = 3, rate: float = 0.5,
                          max_calls: int = 64) -> Search:
    """Find a critical width adaptively: a coarse geometric grid, then batched bisection.

    1. Evaluate :func:`coarse_widths` ``(lo, hi, factor)`` in one call.
    2. While the probed widths ``f`` (the last failing one) and ``s`` (the next probed one,
       the current critical width) have integers between them, evaluate ``batch`` of them,
       evenly spaced, in one call; recompute the critical width of everything probed.

    The critical width is always :func:`jaxtd.results.critical_width_of` of the probed table's
    success rates, so each round narrows ``(f, s)`` at least ``batch + 1``-fold, and the search
    ends at adjacent integers (``s = f + 1``) after about ``log_{batch+1}`` of the coarse gap
    rounds. When the success rate is monotone in the width it returns the same width as an
    exhaustive evaluation of ``lo..hi``; when it is not, a failure at an unprobed width above
    the bracket goes unseen (the result is the critical width of the probed grid).

    Args:
      evaluate: ``evaluate(widths) -> success`` with ``widths`` a sorted list of new ints and
        ``success`` a boolean ``(n_seeds, len(widths))`` table; it must use the same seeds at
        every call (e.g. :func:`sweep_evaluator`).
      lo: smallest width to consider, ``>= 1``.
      hi: largest width to consider, ``>= lo``.
      factor: ratio of the coarse grid, ``> 1``.
      batch: widths per refinement call, ``>= 1``.
      rate: the success rate a width must reach.
      max_calls: a bound on ``evaluate`` calls (a ``RuntimeError`` past it).

    Returns:
      :class:`Search`.
    """
    batch = check_int(batch, "batch", 1)
    max_calls = check_int(max_calls, "max_calls", 1)
    rate = _check_rate(rate)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function widths -> success table, got "
                        f"{type(evaluate).__name__}")
    probed: dict[int, np.ndarray] = {}
    n_seeds = None
    calls = 0

    def run(new: list) -> None:
        nonlocal n_seeds, calls
        if calls >= max_calls:
            raise RuntimeError(f"search_critical_width used max_calls={max_calls} calls of "
                               "evaluate without closing the bracket; raise max_calls")
        table = np.asarray(evaluate(list(new)))
        calls += 1
        if table.ndim != 2 or table.shape[1] != len(new) or (
                n_seeds is not None and table.shape[0] != n_seeds):
            raise ValueError(f"evaluate({new}) returned shape {table.shape}; it must return a "
                             f"(n_seeds, {len(new)}) success table with the same seeds at "
                             "every call")
        _, table = _check_table(np.arange(len(new)), table)
        n_seeds = table.shape[0]
        probed.update({w: table[:, j] for j, w in enumerate(new)})

    def current() -> tuple[np.ndarray, np.ndarray, float]:
        widths = np.array(sorted(probed))
        success = np.stack([probed[w] for w in widths], axis=1)
        return widths, success, _rate_critical(widths, success.mean(axis=0), rate)

    run(coarse_widths(lo, hi, factor).tolist())
    widths, success, crit = current()
    while not math.isnan(crit) and crit > widths[0]:
        s = int(crit)
        f = int(widths[np.searchsorted(widths, s) - 1])
        new = _interior(f, s, batch)
        if not new:
            break
        run(new)
        widths, success, crit = current()
    return Search(widths, success, crit, calls)


def sweep_evaluator(algorithm, target, *, seeds, steps: int, out_dir=None, **sweep_kwargs):
    """An ``evaluate`` for :func:`search_critical_width`: one :func:`jaxtd.sweep` per call.

    Args:
      algorithm: the :class:`~jaxtd.algorithms.Algorithm` to run.
      target: the ground truth :class:`~jaxtd.SymCP`.
      seeds: the seed count or indices, the same at every call.
      steps: steps per cell.
      out_dir: a folder for the search's runs, or None. Call ``k`` (from 0) saves its sweep in
        ``out_dir/probe_<k>`` (:func:`jaxtd.sweep`'s ``out_dir``), so an interrupted search
        rerun with ``resume=True`` (a sweep argument) reuses every saved probe whose
        configuration (algorithm, target values, seeds, widths, steps, dtype, ...) is identical
        and refuses a folder holding another one (:class:`jaxtd.store.IdentityError`). The
        search asks for the same widths in the same order given the same outcomes, so a rerun
        meets its probes again.
      **sweep_kwargs: further :func:`jaxtd.sweep` arguments (``success_threshold``,
        ``bucketing``, ``progress``, ``resume``, ...); not ``hparams`` (one setting per search).

    Returns:
      ``evaluate(widths) -> success (n_seeds, len(widths))`` (rows in seed order).
    """
    if "hparams" in sweep_kwargs or "widths" in sweep_kwargs:
        raise ValueError("sweep_evaluator runs one setting at the widths the search asks for: "
                         "fix hyper-parameters in the algorithm (e.g. gd(0.1)), not through "
                         "hparams=, and do not pass widths=")
    sweep_kwargs.setdefault("progress", False)
    calls = [0]

    def evaluate(widths) -> np.ndarray:
        folder = None
        if out_dir is not None:
            folder = os.path.join(os.fspath(out_dir), f"probe_{calls[0]}")
            os.makedirs(folder, exist_ok=True)
        calls[0] += 1
        res = sweep(algorithm, target, seeds=seeds, widths=list(widths), steps=steps,
                    out_dir=folder, **sweep_kwargs)
        found, _, table = success_table(res.rows)
        if found.tolist() != sorted(widths):
            raise RuntimeError(f"sweep returned widths {found.tolist()} for {sorted(widths)}")
        return table

    return evaluate
