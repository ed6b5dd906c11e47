"""Figures and terminal tables of a ``jaxtd run``, from its results table (a pandas DataFrame).

The table has one row per cell with at least the columns ``algorithm, dim, order, rank, seed,
width, final_relative_error, success, diverged`` (lazy rows may add ``lazy_best_residual``).
:func:`curves` turns it into one curve per *method* (``gd``, ``variant``, ``deflation``, ``lazy
GD`` from the lazy rows' final error, ``lazy best`` from their exact best residual) and every
figure and table is drawn from those curves, so a saved run can be re-plotted without recomputing.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend):
they render headless and can be saved or shown in a notebook alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

__all__ = ["REQUIRED_COLUMNS", "curves", "critical_widths", "fit_slope", "width_figure",
           "critical_figure", "deflation_figure", "format_table", "save_figures"]

REQUIRED_COLUMNS = ("algorithm", "dim", "order", "rank", "seed", "width", "final_relative_error",
                    "success", "diverged")
SIZE = ["order", "dim", "rank"]
METHOD_ORDER = ("lazy best", "lazy GD", "gd", "variant", "deflation")
COLORS = {"lazy best": "tab:red", "lazy GD": "tab:orange", "gd": "tab:blue",
          "variant": "tab:green", "deflation": "tab:purple"}


def _check(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the columns {missing}; pass the table of a jaxtd run "
                         "(results.csv or Results.to_pandas() with algorithm/dim/order/rank added)")


def _method_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, cell) with an ``error`` column: lazy rows yield two methods."""
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


def curves(df: pd.DataFrame, success_threshold: float) -> pd.DataFrame:
    """Per (method, order, dim, rank, width): ``n`` cells, ``successes``, ``success_rate``
    (error ``<= success_threshold`` and not diverged) and ``median_error`` (diverged = inf)."""
    _check(df)
    rows = _method_rows(df)
    diverged = rows["diverged"].astype(bool).to_numpy()
    err = rows["error"].to_numpy(np.float64)
    err = np.where(diverged | ~np.isfinite(err), np.inf, err)
    rows = rows.assign(_err=err, _ok=(err <= success_threshold).astype(np.float64))
    keys = ["method"] + SIZE + ["width"]
    g = rows.groupby(keys, sort=True)
    out = pd.DataFrame({"n": g.size(), "successes": g["_ok"].sum().astype(int),
                        "success_rate": g["_ok"].mean(), "median_error": g["_err"].median()})
    out = out.reset_index()
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    out["_o"] = out["method"].map(lambda m: rank.get(m, len(rank)))
    return out.sort_values(["_o"] + SIZE + ["width"]).drop(columns="_o").reset_index(drop=True)


def critical_widths(table: pd.DataFrame, rate: float = 0.5) -> pd.DataFrame:
    """From :func:`curves`: per (method, order, dim, rank) the smallest width whose success rate
    is ``>= rate`` and from which every larger width also reaches it (NaN when none)."""
    out = []
    for key, grp in table.groupby(["method"] + SIZE, sort=False):
        grp = grp.sort_values("width")
        ok = grp["success_rate"].to_numpy() >= rate
        # the first width after the last failure: a lucky small width does not count
        fails = np.nonzero(~ok)[0]
        start = 0 if len(fails) == 0 else fails[-1] + 1
        crit = float(grp["width"].iloc[start]) if start < len(grp) else math.nan
        out.append(dict(zip(["method"] + SIZE, key), critical_width=crit,
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


def _plain_ticks(*axes) -> None:
    """Log axes labelled 2, 4, 10 instead of 2x10^0 (matplotlib's default crowds them)."""
    for axis in axes:
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())


ERROR_FLOOR = 1e-8  # exact zeros (a fitted lazy residual) drawn at this floor on the log axis


def _size_label(order, dim, rank) -> str:
    return f"l={order} d={dim} r={rank}"


def width_figure(df: pd.DataFrame, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None) -> Figure:
    """Success rate and median error vs width, one line per method and one row of panels per
    problem size; a dashed line marks ``lazy_threshold(dim, order)`` when given."""
    table = curves(df, success_threshold)
    sizes = table[SIZE].drop_duplicates().itertuples(index=False)
    sizes = list(sizes)
    fig = Figure(figsize=(10, 3.4 * len(sizes)), layout="constrained")
    axes = fig.subplots(len(sizes), 2, squeeze=False)
    for (ax_s, ax_e), (order, dim, rank) in zip(axes, sizes):
        sel = table[(table["order"] == order) & (table["dim"] == dim) & (table["rank"] == rank)]
        for method, grp in sel.groupby("method", sort=False):
            style = dict(marker="o", ms=4, label=method, color=COLORS.get(method))
            ax_s.plot(grp["width"], grp["success_rate"], **style)
            ax_e.plot(grp["width"], np.clip(grp["median_error"], ERROR_FLOOR, 10.0), **style)
        for ax in (ax_s, ax_e):
            ax.set_xscale("log")
            _plain_ticks(ax.xaxis)
            ax.set_xlabel("width m")
            if lazy_threshold is not None:
                m_star = lazy_threshold(int(dim), int(order))
                ax.axvline(m_star, color="gray", ls="--", lw=1)
                ax.text(m_star, 0.98, f" lazy threshold {m_star}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=8, color="gray")
        ax_s.set_ylim(-0.03, 1.03)
        ax_s.set_ylabel(f"success rate (error <= {success_threshold:g})")
        ax_s.set_title(_size_label(order, dim, rank))
        ax_e.set_yscale("log")
        ax_e.axhline(success_threshold, color="k", ls=":", lw=0.8)
        ax_e.set_ylabel("median relative error")
        ax_e.legend(fontsize=8)
    return fig


def critical_figure(df: pd.DataFrame, success_threshold: float, *, x: str = "dim",
                    methods: Sequence[str] | None = None,
                    theory: Callable[[float, int], float] | None = None,
                    theory_label: str = "theory", rate: float = 0.5) -> Figure:
    """Critical width vs ``x`` (``"dim"`` or ``"rank"``) on log-log axes, one line per (method,
    order) with its fitted slope in the legend; ``theory(x, order)`` drawn dashed when given."""
    if x not in ("dim", "rank"):
        raise ValueError(f"x must be 'dim' or 'rank', got {x!r}")
    crit = critical_widths(curves(df, success_threshold), rate)
    if methods is not None:
        crit = crit[crit["method"].isin(methods)]
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    drawn = set()  # one theory line per order, however many methods
    for (method, order), grp in crit.groupby(["method", "order"], sort=False):
        grp = grp.sort_values(x)
        slope, _ = fit_slope(grp[x], grp["critical_width"])
        label = f"{method}, l={order}: slope {slope:.2f}" if math.isfinite(slope) else \
            f"{method}, l={order}"
        ax.plot(grp[x], grp["critical_width"], marker="o", label=label, color=COLORS.get(method))
        missing = grp[grp["critical_width"].isna()]
        if len(missing):  # no width succeeded: show the largest width tried as a lower bound
            ax.scatter(missing[x], missing["max_width"], marker="^", color=COLORS.get(method))
        if theory is not None and order not in drawn:
            drawn.add(order)
            xs = np.asarray(sorted(grp[x].unique()), np.float64)
            ax.plot(xs, [theory(v, int(order)) for v in xs], ls="--", color="gray", lw=1,
                    label=f"{theory_label}, l={order}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax.xaxis, ax.yaxis)
    ax.set_xlabel("dimension d" if x == "dim" else "rank r")
    ax.set_ylabel(f"critical width (success rate >= {rate:g})")
    ax.legend(fontsize=8)
    return fig


def deflation_figure(df: pd.DataFrame, fitted_weight: np.ndarray, steps: np.ndarray,
                     true_weights: Sequence[float] | None = None) -> Figure:
    """The staircase: fitted weight along each ground-truth direction vs step (log axis), for
    the first seed of each algorithm at its largest width.

    ``fitted_weight`` is ``(n_cells, n_records, r)`` and ``steps`` ``(n_cells, n_records)``, both
    aligned with the rows of ``df``.
    """
    _check(df)
    algorithms = list(dict.fromkeys(df["algorithm"]))
    fig = Figure(figsize=(5.5 * len(algorithms), 4), layout="constrained")
    axes = fig.subplots(1, len(algorithms), squeeze=False)[0]
    for ax, name in zip(axes, algorithms):
        rows = df[df["algorithm"] == name]
        rows = rows[rows["width"] == rows["width"].max()]
        i = int(rows.sort_values("seed").index[0])
        t = np.asarray(steps[i], np.float64)
        keep = np.isfinite(t) & (t > 0)
        w = np.asarray(fitted_weight[i])
        for j in range(w.shape[-1]):
            line = ax.plot(t[keep], w[keep, j], label=f"component {j}")[0]
            if true_weights is not None:
                ax.axhline(true_weights[j], color=line.get_color(), ls=":", lw=0.8)
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
        ax.set_xlabel("step")
        ax.set_ylabel("fitted weight T(ā_j, ..., ā_j)")
        row = rows.loc[i]
        ax.set_title(f"{name}: {_size_label(row['order'], row['dim'], row['rank'])} m={row['width']}")
        ax.legend(fontsize=8)
    return fig


def format_table(df: pd.DataFrame, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None) -> str:
    """A compact plain-text table per problem size: successes/cells and median error for each
    method (rows) and width (columns)."""
    table = curves(df, success_threshold)
    blocks = []
    for (order, dim, rank), sel in table.groupby(SIZE, sort=False):
        widths = sorted(sel["width"].unique())
        head = f"{_size_label(order, dim, rank)}: success = relative error <= {success_threshold:g}"
        if lazy_threshold is not None:
            head += f"; lazy threshold m = {lazy_threshold(int(dim), int(order))}"
        lines = [head, "  " + f"{'width':<11}" + "".join(f"{w:>9}" for w in widths)]
        for label, fmt in (("success", _fmt_success), ("median err", _fmt_error)):
            lines.append(f"  {label}")
            for method, grp in sel.groupby("method", sort=False):
                cells = dict(zip(grp["width"], grp.itertuples(index=False)))
                lines.append("  " + f"  {method:<9}" + "".join(
                    f"{fmt(cells[w]) if w in cells else '-':>9}" for w in widths))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _fmt_success(row) -> str:
    return f"{row.successes}/{row.n}"


def _fmt_error(row) -> str:
    return "inf" if not math.isfinite(row.median_error) else f"{row.median_error:.1e}"


def _theory_rank(r: float, order: int) -> float:
    return r ** (2.5 * order)


def save_figures(df: pd.DataFrame, out_dir: str | Path, *, plot: str, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None,
                 histories: Mapping[str, np.ndarray] | None = None,
                 true_weights: Sequence[float] | None = None) -> list[Path]:
    """Write ``success_vs_width.png`` and the preset's own figure (``plot``: ``width``,
    ``lazy-threshold``, ``beyond-lazy``, ``width-vs-rank`` or ``deflation``) into ``out_dir``;
    return the paths written."""
    out_dir = Path(out_dir)
    figures = {"success_vs_width.png": width_figure(df, success_threshold, lazy_threshold)}
    if plot == "lazy-threshold":
        figures["lazy_threshold.png"] = critical_figure(
            df, success_threshold, x="dim", methods=["lazy best", "lazy GD"],
            theory=(lambda d, l: lazy_threshold(int(d), l)) if lazy_threshold else None,
            theory_label="C(d+l-1,l)/d")
    elif plot == "beyond-lazy":
        figures["beyond_lazy.png"] = critical_figure(df, success_threshold, x="dim")
    elif plot == "width-vs-rank":
        figures["width_vs_rank.png"] = critical_figure(df, success_threshold, x="rank",
                                                       theory=_theory_rank,
                                                       theory_label="r^(2.5 l)")
    elif plot == "deflation" and histories is not None and "fitted_weight" in histories:
        figures["deflation.png"] = deflation_figure(df, histories["fitted_weight"],
                                                    histories["step"], true_weights)
    elif plot not in ("width", "deflation"):
        raise ValueError(f"plot must be one of width, lazy-threshold, beyond-lazy, width-vs-rank, "
                         f"deflation; got {plot!r}")
    paths = []
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=90)
        paths.append(out_dir / name)
    return paths
