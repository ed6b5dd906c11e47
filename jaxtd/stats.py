"""Statistics of a ``jaxtd run``'s results table (a pandas DataFrame): no figures, no matplotlib.

The table has one row per cell with at least the columns ``algorithm, dim, order, rank, seed,
width, final_relative_error, success, diverged`` (:data:`REQUIRED_COLUMNS`; lazy rows may add
``lazy_best_residual``). :func:`curves` turns it into one curve per *method* (``gd``,
``variant``, ``deflation``, ``lazy GD`` from the lazy rows' final error, ``lazy best`` from
their exact best residual); the figures and terminal tables of :mod:`jaxtd.plots` are drawn from
these numbers, so a saved run can be re-plotted without recomputing.

The spread over seeds, not only a central value:

- success rate with its 95% Wilson score interval (:func:`wilson_interval`);
- median relative error with the interquartile range (25%-75% over seeds; a diverged cell counts
  as ``inf``, :func:`quantile`);
- critical widths: of a curve (:func:`critical_widths`) and of each seed
  (:func:`seed_critical_widths`), both the first width after the last failure
  (:func:`jaxtd.results.critical_width_of`, the glossary's definition);
- log-log slopes (:func:`fit_slope`, and for the lazy threshold :func:`threshold_table` and
  :func:`local_slopes`).

Swept hyper-parameters are never pooled: a column that varies between the rows of one algorithm
at the same problem size and width (:func:`swept_hyperparameters`) splits that algorithm into one
series per value (the ``setting`` column, e.g. ``"learning_rate=0.05"``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from jaxtd.results import critical_width_of

__all__ = ["REQUIRED_COLUMNS", "OUTCOME_COLUMNS", "SIZE", "METHOD_ORDER", "Z95", "check_table",
           "wilson_interval", "swept_hyperparameters", "setting_labels", "method_rows",
           "quantile", "cell_errors", "curves", "critical_widths", "seed_critical_widths",
           "fit_slope", "threshold_table", "local_slopes"]

REQUIRED_COLUMNS = ("algorithm", "dim", "order", "rank", "seed", "width", "final_relative_error",
                    "success", "diverged")
# what a cell measured, never a setting: these never split a series (fit_time_<j> too)
OUTCOME_COLUMNS = ("padded_width", "final_relative_error", "final_loss", "success", "diverged",
                   "diverged_step", "distance", "active_count", "lazy_best_residual",
                   "d_error_d_log_init_scale")
# the columns that name a problem size
SIZE = ["order", "dim", "rank"]
# the order of the methods in tables and legends
METHOD_ORDER = ("lazy best", "lazy GD", "gd", "variant", "deflation")
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def check_table(df: pd.DataFrame) -> None:
    """Refuse anything but a results table with the :data:`REQUIRED_COLUMNS` (TypeError for a
    non-DataFrame, ValueError naming the missing columns)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the columns {missing}; pass the table of a jaxtd run "
                         "(results.csv or Results.to_pandas() with algorithm/dim/order/rank added)")


def wilson_interval(successes, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """95% (by default) Wilson score interval of a binomial proportion.

    With ``p = successes / n``: centre ``(p + z^2/2n) / (1 + z^2/n)``, half-width
    ``z / (1 + z^2/n) * sqrt(p (1-p) / n + z^2 / 4n^2)``. Unlike the normal approximation it stays
    inside ``[0, 1]`` and is not empty at ``p = 0`` or ``1`` (with 8 seeds and 0 successes the
    upper end is 0.32). Array-valued; ``n = 0`` gives ``(0, 1)`` (nothing is known).

    Returns:
      ``(low, high)`` arrays of the broadcast shape of ``successes`` and ``n``.
    """
    k = np.asarray(successes, np.float64)
    n = np.asarray(n, np.float64)
    if np.any(k < 0) or np.any(n < 0) or np.any(k > n):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    denom = 1.0 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe))
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def _is_outcome(column: str) -> bool:
    return column in REQUIRED_COLUMNS or column in OUTCOME_COLUMNS or column.startswith("fit_time_")


def swept_hyperparameters(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per algorithm, the setting columns that vary between its rows of the same problem size
    and width: the hyper-parameters it sweeps, on which every figure and table splits.

    A setting column is any column that is not an outcome (``final_relative_error``, ``success``,
    ``fit_time_<j>``, ... see ``OUTCOME_COLUMNS``) and, where it varies, takes at most as many
    values as the group has rows per seed (a per-seed outcome added by hand varies with the seed
    and is left out). ``NaN`` counts as a value.
    """
    check_table(df)
    keys = SIZE + ["width"]
    candidates = [c for c in df.columns if not _is_outcome(c)]
    out = {}
    for name, rows in df.groupby("algorithm", sort=False):
        g = rows.groupby(keys, sort=False)
        per_seed = g.size() / g["seed"].nunique()
        cols = []
        for c in candidates:
            values = g[c].nunique(dropna=False)
            if (values > 1).any() and (values <= per_seed + 1e-9).all():
                cols.append(c)
        out[name] = cols
    return out


def _fmt_value(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{v:g}"
    return str(v)


def setting_labels(df: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.Series:
    """Per row, ``"lr=0.05, init_scale=0.01"`` over its algorithm's swept hyper-parameters
    (``""`` for an algorithm that sweeps none), ``exclude`` left out (e.g. a figure's x axis)."""
    swept = swept_hyperparameters(df)
    out = pd.Series("", index=df.index, dtype=object)
    for name, cols in swept.items():
        cols = [c for c in cols if c not in exclude]
        if cols:
            mask = df["algorithm"] == name
            out[mask] = [", ".join(f"{c}={_fmt_value(v)}" for c, v in zip(cols, vals))
                         for vals in df.loc[mask, cols].itertuples(index=False)]
    return out


def method_rows(df: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (method, cell) with an ``error`` column and a ``setting`` column (the swept
    hyper-parameters' values, :func:`setting_labels`): lazy rows yield two methods."""
    df = df.assign(setting=setting_labels(df, exclude))
    parts = []
    is_lazy = df["algorithm"] == "lazy"
    # callables, not df's columns: assigning a Series to an empty frame would adopt its index
    other = df[~is_lazy].assign(method=lambda x: x["algorithm"],
                                error=lambda x: x["final_relative_error"])
    parts.append(other)
    lazy = df[is_lazy]
    if len(lazy):
        trained = lazy[lazy["final_relative_error"].notna()]
        parts.append(trained.assign(method="lazy GD", error=trained["final_relative_error"]))
        if "lazy_best_residual" in lazy:
            best = lazy[lazy["lazy_best_residual"].notna()]
            parts.append(best.assign(method="lazy best", error=best["lazy_best_residual"],
                                     diverged=False))
    # empty parts would turn integer columns into floats in the concatenation
    return pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)


def quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile (numpy's default) in which a neighbour ``inf`` (a diverged
    cell) gives ``inf`` instead of ``inf - inf = nan``."""
    v = np.sort(np.asarray(values, np.float64))
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(v[hi]) and (hi == lo or pos > lo):
        return math.inf
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo])) if hi != lo else float(v[lo])


def cell_errors(rows: pd.DataFrame) -> np.ndarray:
    """The ``error`` column of :func:`method_rows` as float64, ``inf`` for a diverged or
    non-finite cell (it fails and sorts last)."""
    diverged = rows["diverged"].astype(bool).to_numpy()
    err = rows["error"].to_numpy(np.float64)
    return np.where(diverged | ~np.isfinite(err), np.inf, err)


def curves(df: pd.DataFrame, success_threshold: float) -> pd.DataFrame:
    """Per (method, order, dim, rank, width): the seeds' summary.

    Columns: ``method``, ``setting`` (the swept hyper-parameters' values, e.g.
    ``"learning_rate=0.05"``; ``""`` when the method sweeps none), the size and ``width``,
    ``n`` cells, ``successes``, ``success_rate`` (error ``<= success_threshold`` and
    not diverged), ``success_low`` / ``success_high`` (95% Wilson interval), ``median_error``,
    ``q25_error`` / ``q75_error`` (diverged = inf) and ``zeros`` (cells with error exactly 0).
    """
    check_table(df)
    rows = method_rows(df)
    err = cell_errors(rows)
    rows = rows.assign(_err=err, _ok=(err <= success_threshold).astype(np.float64),
                       _zero=(err == 0).astype(np.int64))
    keys = ["method", "setting"] + SIZE + ["width"]
    g = rows.groupby(keys, sort=True)
    out = pd.DataFrame({"n": g.size(), "successes": g["_ok"].sum().astype(int),
                        "success_rate": g["_ok"].mean(),
                        "median_error": g["_err"].agg(lambda v: quantile(v.to_numpy(), 0.5)),
                        "q25_error": g["_err"].agg(lambda v: quantile(v.to_numpy(), 0.25)),
                        "q75_error": g["_err"].agg(lambda v: quantile(v.to_numpy(), 0.75)),
                        "zeros": g["_zero"].sum().astype(int)})
    out = out.reset_index()
    low, high = wilson_interval(out["successes"].to_numpy(), out["n"].to_numpy())
    out["success_low"], out["success_high"] = low, high
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    out["_o"] = out["method"].map(lambda m: rank.get(m, len(rank)))
    return out.sort_values(["_o", "setting"] + SIZE + ["width"]).drop(columns="_o").reset_index(
        drop=True)


def critical_widths(table: pd.DataFrame, rate: float = 0.5) -> pd.DataFrame:
    """From :func:`curves`: per (method, setting, order, dim, rank) the smallest width whose
    success rate is ``>= rate`` and from which every larger width also reaches it (NaN when
    none)."""
    out = []
    keys = ["method", "setting"] + SIZE
    for key, grp in table.groupby(keys, sort=False):
        grp = grp.sort_values("width")
        # the first width after the last failure: a lucky small width does not count
        crit = critical_width_of(grp["width"].to_numpy(),
                                 grp["success_rate"].to_numpy() >= rate)
        out.append(dict(zip(keys, key), critical_width=crit,
                        max_width=int(grp["width"].max())))
    return pd.DataFrame(out)


def seed_critical_widths(df: pd.DataFrame, success_threshold: float) -> pd.DataFrame:
    """Per (method, setting, order, dim, rank, seed): that seed's critical width, the smallest
    width from which the seed succeeds at every larger width (NaN when it fails at the largest).

    The spread of these over seeds is what the critical-width figures draw as a band.
    """
    check_table(df)
    rows = method_rows(df)
    rows = rows.assign(_ok=cell_errors(rows) <= success_threshold)
    out = []
    keys = ["method", "setting"] + SIZE + ["seed"]
    for key, grp in rows.groupby(keys, sort=False):
        grp = grp.sort_values("width")
        out.append(dict(zip(keys, key),
                        critical_width=critical_width_of(grp["width"].to_numpy(),
                                                         grp["_ok"].to_numpy()),
                        max_width=int(grp["width"].max())))
    return pd.DataFrame(out)


def fit_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``log y = slope * log x + intercept`` over the finite positive points;
    ``(nan, nan)`` with fewer than two distinct ``x``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if len(np.unique(x[keep])) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(slope), float(intercept)



def threshold_table(df: pd.DataFrame, success_threshold: float,
                    lazy_threshold: Callable[[int, int], int],
                    method: str = "lazy best") -> pd.DataFrame:
    """Per (order, dim): the measured critical width of ``method`` against the rule.

    Columns: ``order, dim, critical`` (median over seeds of each seed's critical width,
    :func:`seed_critical_widths`; NaN when the median seed never succeeds), ``rule``
    (``lazy_threshold(dim, order)``), ``bracketed`` (every seed failed at some width below its
    critical width: with a window of widths around the threshold, a case that already fits at
    the window's smallest width gives only an upper bound), ``seeds``. Sorted by order, dim;
    ranks are pooled (the lazy threshold does not depend on the target).
    """
    per_seed = seed_critical_widths(df, success_threshold)
    per_seed = per_seed[per_seed["method"] == method]
    settings = sorted(set(per_seed["setting"]))
    if len(settings) > 1:
        raise ValueError(f"the {method!r} rows sweep hyper-parameters ({settings}); the "
                         "threshold table would pool them: select one value first, e.g. "
                         "df[df['init'] == 'standard']")
    rows = method_rows(df)
    rows = rows[rows["method"] == method]
    low = rows.groupby(["order", "dim", "seed"])["width"].min()
    out = []
    for (order, dim), g in per_seed.groupby(["order", "dim"], sort=True):
        crit = g["critical_width"].to_numpy(np.float64)
        first = np.array([low[(order, dim, s)] for s in g["seed"]], np.float64)
        out.append(dict(order=int(order), dim=int(dim),
                        critical=float(np.median(crit)),
                        rule=int(lazy_threshold(int(dim), int(order))),
                        bracketed=bool(np.all(np.isfinite(crit) & (crit > first))),
                        seeds=len(g)))
    return pd.DataFrame(out, columns=["order", "dim", "critical", "rule", "bracketed", "seeds"])


def local_slopes(table: pd.DataFrame) -> pd.DataFrame:
    """Local log-log slopes between consecutive dims of each order of a :func:`threshold_table`:
    ``log(m_hi / m_lo) / log(d_hi / d_lo)``, measured and for the rule.

    Columns: ``order, dim_lo, dim_hi, measured, rule, asymptote`` (``l - 1``). Pairs with a
    missing or unbracketed measured end get ``measured`` NaN (the rule's slope is still given).
    For ``m* = ⌈C(d+l−1, l)/d⌉`` the rule's local slope rises towards ``l - 1`` only slowly
    (about ``sum_{k<l} d/(d+k)``), so the measured one is to be read against it, not ``l - 1``.
    """
    out = []
    for order, g in table.sort_values(["order", "dim"]).groupby("order", sort=True):
        g = g.reset_index(drop=True)
        for k in range(len(g) - 1):
            lo, hi = g.iloc[k], g.iloc[k + 1]
            step = math.log(hi["dim"] / lo["dim"])
            ok = (lo["bracketed"] and hi["bracketed"] and np.isfinite(lo["critical"])
                  and np.isfinite(hi["critical"]))
            meas = math.log(hi["critical"] / lo["critical"]) / step if ok else math.nan
            out.append(dict(order=int(order), dim_lo=int(lo["dim"]), dim_hi=int(hi["dim"]),
                            measured=meas, rule=math.log(hi["rule"] / lo["rule"]) / step,
                            asymptote=int(order) - 1))
    return pd.DataFrame(out, columns=["order", "dim_lo", "dim_hi", "measured", "rule",
                                      "asymptote"])
