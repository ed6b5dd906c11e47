"""Figures and terminal tables of a ``jaxtd run``, from its results table (a pandas DataFrame).

The numbers come from :mod:`jaxtd.stats` (:func:`~jaxtd.stats.curves`: one curve per *method*,
``gd``, ``variant``, ``deflation``, ``lazy GD`` from the lazy rows' final error, ``lazy best``
from their exact best residual); this module only draws and prints them, so a saved run can be
re-plotted without recomputing. The statistics' names are re-exported here
(``jaxtd.plots.curves`` is :func:`jaxtd.stats.curves`).

Every figure shows the spread over seeds, not only a central value:

- success rate with its 95% Wilson score interval (:func:`jaxtd.stats.wilson_interval`) as a band;
- median relative error with the interquartile range (25%-75% over seeds) as a band;
- critical widths as the median over seeds of each seed's own critical width, with its IQR.

Axes are readable as printed: log axes carry explicit tick labels (the widths, ranks or
dimensions of the data, decades for errors), never an offset; each series has its own colour
*and* marker; exact zeros (a lazy residual that vanishes) sit on a separate row labelled ``0``
below the positive errors instead of at an arbitrary floor.

A series run on a single seed has no spread to show: it is drawn without a band and its label
says so (``lazy GD (1 seed, no interval)``).

Swept hyper-parameters are never pooled (:func:`jaxtd.stats.swept_hyperparameters`): a column
that varies between the rows of one algorithm at the same problem size and width (e.g.
``learning_rate`` from ``hparams={"learning_rate": [0.05, 0.1]}``) splits that algorithm into one
series per value, labelled ``gd (learning_rate=0.05, 8 seeds)``, and into one row group per value
in :func:`format_table`.

Figures are sized for a journal page: :data:`PAGE_WIDTH` (7 in) wide, no text under 7 pt at that
size, legends and labels outside the data. :func:`save_figures` writes PNG at :data:`DPI` (300)
dots per inch and PDF/SVG as vectors whose text stays text (TrueType fonts embedded in PDF,
``svg.fonttype = "none"``), so a journal's editor can still select and restyle it.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend):
they render headless and can be saved or displayed in a notebook alike.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

# the statistics: public names re-exported (plots.curves, ...); the helpers under the short
# private names the drawing code below uses
from jaxtd import transition as tr
from jaxtd._sizes import model_degree, sym_dim
from jaxtd.stats import (REQUIRED_COLUMNS, SIZE, critical_widths, curves, fit_slope,
                         local_slopes, seed_critical_widths, swept_hyperparameters,
                         threshold_table, wilson_interval)
from jaxtd.stats import cell_errors as _errors
from jaxtd.stats import check_table as _check
from jaxtd.stats import method_rows as _method_rows
from jaxtd.stats import quantile as _quantile
from jaxtd.stats import setting_labels as _settings

__all__ = ["REQUIRED_COLUMNS", "PAGE_WIDTH", "DPI", "FORMATS", "check_formats", "STYLE", "curves",
           "critical_widths", "seed_critical_widths", "fit_slope", "wilson_interval",
           "swept_hyperparameters", "width_figure", "method_figure", "critical_figure",
           "deflation_figure", "init_scale_figure", "threshold_table", "local_slopes",
           "threshold_figure", "format_threshold", "format_table", "save_figures",
           "phase_figure", "save_phase_figures", "sample_risk_curves", "samples_figure"]

# one (colour, marker, line style) per method; lazy GD dashed so it stays visible on lazy best
STYLES = {"lazy best": ("tab:red", "v", "-"), "lazy GD": ("tab:orange", "^", "--"),
          "gd": ("tab:blue", "o", "-"), "variant": ("tab:green", "s", "-"),
          "deflation": ("tab:purple", "D", "-")}
# further series (other methods, one per order in the critical-width figures)
PALETTE = [("tab:blue", "o"), ("tab:red", "v"), ("tab:green", "s"), ("tab:purple", "D"),
           ("tab:orange", "^"), ("tab:brown", "P"), ("tab:pink", "X"), ("tab:olive", "<"),
           ("tab:cyan", ">"), ("tab:gray", "h")]

PAGE_WIDTH = 7.0  # inches: the text width of a journal page; every figure is at most this wide
DPI = 300         # dots per inch of the PNG files save_figures writes (journals ask 300+)
FORMATS = ("png", "pdf", "svg")
# fonts >= 7 pt at PAGE_WIDTH; vector text kept as text (TrueType in PDF/PS, <text> in SVG)
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7.5,
         "ytick.labelsize": 7.5, "legend.fontsize": 7.5, "legend.title_fontsize": 7.5,
         "figure.titlesize": 8.5, "lines.markersize": 4.5, "lines.linewidth": 1.3,
         "svg.fonttype": "none", "pdf.fonttype": 42, "ps.fonttype": 42}


def _styled(draw: Callable) -> Callable:
    """Build the figure under :data:`STYLE` (font sizes are fixed when the text is created)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


# -- axes helpers -------------------------------------------------------------------------------

def _fmt_number(v: float, _pos=None) -> str:
    return f"{v:g}"


def _thin_log(values, max_ticks: int = 9) -> list[float]:
    """At most ``max_ticks`` of ``values`` (sorted, positive), roughly evenly spaced in log, the
    smallest and the largest always kept, so labels on a log axis never collide."""
    v = sorted({float(x) for x in values if np.isfinite(x) and x > 0})
    if len(v) <= max_ticks:
        return v
    gap = math.log(v[-1] / v[0]) / (max_ticks - 1) * 0.999
    kept = [v[0]]
    for x in v[1:-1]:
        if math.log(x / kept[-1]) >= gap and math.log(v[-1] / x) >= gap * 0.5:
            kept.append(x)
    return kept + [v[-1]]


def _log_x(ax: Axes, values, extra=()) -> None:
    """Log x axis labelled with the data's own values (widths, ranks, dims): no offset text.
    ``extra`` values (a threshold with its own label) widen the range but get no tick."""
    ticks = _thin_log(values)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_number))
    ax.xaxis.set_minor_locator(NullLocator())
    span = ticks + [float(e) for e in extra if e and e > 0]
    ax.set_xlim(min(span) / 1.25, max(span) * 1.25)


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering ``[lo, hi]`` (positive), at most about eight of them."""
    out = []
    for subs in ((1, 2, 5), (1, 3), (1,)):
        out = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1,
                                            math.ceil(math.log10(hi)) + 1)
               for m in subs if lo <= m * 10.0 ** e <= hi]
        if len(out) <= 8:
            break
    return out or [lo, hi]


def _log_y_counts(ax: Axes, lo: float, hi: float) -> None:
    """Log y axis for widths: 1-2-5 ticks labelled as plain numbers, range ``[lo, hi]``."""
    data = {lo, hi}
    lo, hi = max(lo, 1e-300), max(hi, lo * 1.01)
    ax.set_yscale("log")
    ax.set_ylim(lo / 1.3, hi * 1.3)
    ticks = _nice_log_ticks(lo / 1.3, hi * 1.3)
    if len(ticks) < 2:  # one tick cannot say where the data sit: label the data's own range
        ticks = sorted({*ticks, *data})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_fmt_number))
    ax.yaxis.set_minor_locator(NullLocator())


def _decade_label(v: float, _pos=None) -> str:
    e = math.log10(v)
    return "1" if abs(e) < 1e-9 else f"$10^{{{round(e)}}}$"


class _ErrorAxis:
    """Log error axis with an extra row for exact zeros (labelled ``0``) below the positive
    values and one for diverged cells (``inf``) above them, when any occur."""

    def __init__(self, values: np.ndarray, reference: float | None = None):
        v = np.asarray(values, np.float64)
        pos = v[np.isfinite(v) & (v > 0)]
        if reference is not None:
            pos = np.append(pos, reference)
        lo = float(pos.min()) if len(pos) else 1e-3
        hi = float(pos.max()) if len(pos) else 1.0
        self.lo_dec = math.floor(math.log10(lo))
        self.hi_dec = max(math.ceil(math.log10(hi)), self.lo_dec + 1)
        self.has_zero = bool(np.any(v == 0))
        self.has_inf = bool(np.any(np.isinf(v)))
        self.zero_row = 10.0 ** (self.lo_dec - 1)
        self.inf_row = 10.0 ** (self.hi_dec + 1)

    def place(self, v) -> np.ndarray:
        """Positions of ``v``: zeros on the zero row, inf on the inf row, NaN stays NaN."""
        v = np.asarray(v, np.float64)
        return np.where(v == 0, self.zero_row, np.where(np.isposinf(v), self.inf_row, v))

    def apply(self, ax: Axes) -> None:
        ax.set_yscale("log")
        decades = list(range(self.lo_dec, self.hi_dec + 1))
        step = max(1, math.ceil(len(decades) / 7))
        ticks = [10.0 ** e for e in decades[::-1][::step][::-1]]
        labels = [_decade_label(t) for t in ticks]
        lo = 10.0 ** (self.lo_dec - 0.3)
        hi = 10.0 ** (self.hi_dec + 0.3)
        if self.has_zero:
            ticks, labels, lo = [self.zero_row] + ticks, ["0"] + labels, self.zero_row / 2.5
            ax.axhline(math.sqrt(self.zero_row * 10.0 ** self.lo_dec), color="0.75", lw=0.8,
                       ls=(0, (4, 3)), zorder=0)
        if self.has_inf:
            ticks, labels, hi = ticks + [self.inf_row], labels + ["inf"], self.inf_row * 2.5
            ax.axhline(math.sqrt(self.inf_row * 10.0 ** self.hi_dec), color="0.75", lw=0.8,
                       ls=(0, (4, 3)), zorder=0)
        ax.set_ylim(lo, hi)
        # the row's name on the side of the axes its points leave free: never over a marker
        for row, text, on in ((self.zero_row, "exactly 0", self.has_zero),
                              (self.inf_row, "diverged", self.has_inf)):
            if on:
                left = _free_side(ax, row)
                ax.annotate(text, xy=(0.0 if left else 1.0, row),
                            xycoords=("axes fraction", "data"),
                            xytext=(3 if left else -3, 0), textcoords="offset points",
                            ha="left" if left else "right", va="center", fontsize=7,
                            color="0.35")
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda t, pos: dict(zip(ticks, labels)).get(t, _decade_label(t))))
        ax.yaxis.set_minor_locator(NullLocator())


def _free_side(ax: Axes, y: float) -> bool:
    """Whether the left third of ``ax`` holds no plotted point at height ``y`` (else the right
    third is taken, with a label there being the lesser evil)."""
    lo, hi = (math.log(v) for v in ax.get_xlim()) if ax.get_xscale() == "log" else ax.get_xlim()
    for line in ax.get_lines():
        xs, ys = (np.asarray(v, np.float64) for v in line.get_data())
        if xs.shape != ys.shape or not len(xs):
            continue
        xs = xs[np.isclose(ys, y, rtol=1e-9)]
        xs = np.log(xs[xs > 0]) if ax.get_xscale() == "log" else xs
        if np.any((xs - lo) / (hi - lo) < 0.35):
            return False
    return True


def _threshold_line(ax: Axes, x: float, text: str) -> None:
    """A dashed vertical line at ``x``, named by a tick on the top edge of the axes: the name
    sits outside the data area and never crosses a curve."""
    ax.axvline(x, color="0.4", ls="--", lw=1, zorder=1)
    top = ax.secondary_xaxis("top")
    top.xaxis.set_major_locator(FixedLocator([x]))
    top.xaxis.set_major_formatter(FuncFormatter(lambda v, pos: text))
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(labelsize=7, length=3, pad=1, colors="0.3")


def _seed_text(ns) -> str:
    """``"8 seeds"``, ``"4/8 seeds"`` or ``"1 seed, no interval"`` (nothing to spread over)."""
    ns = sorted({int(v) for v in ns})
    return "1 seed, no interval" if ns == [1] else f"{'/'.join(map(str, ns))} seeds"


def _series_label(method: str, setting: str, ns, extra: str = "") -> str:
    """``gd (learning_rate=0.05, 8 seeds)``: the method, its swept values and its seeds."""
    inner = ", ".join(p for p in (setting, _seed_text(ns)) if p)
    return f"{method} ({inner}){extra}"


def _series_styles(keys: Sequence[tuple[str, str]]) -> dict:
    """``{(method, setting): (colour, marker, line style)}``: a method's own style when it has
    one setting; a method split by a swept hyper-parameter keeps its style for the first value
    and takes unused palette entries (distinct colour and marker) for the others."""
    keys = list(dict.fromkeys(keys))
    methods = [m for m, _ in keys]
    taken = {STYLES[m][0] for m in methods if m in STYLES}
    spare = [p for p in PALETTE if p[0] not in taken] + [p for p in PALETTE if p[0] in taken]
    counts = {m: methods.count(m) for m in methods}
    out, seen, k = {}, set(), 0
    for method, setting in keys:
        if counts[method] > 3:  # a long sweep: a sequential colour map along its values
            i = sum(1 for m, _ in out if m == method)
            out[(method, setting)] = (colormaps["viridis"](0.92 * i / (counts[method] - 1)),
                                      PALETTE[i % len(PALETTE)][1], "-")
        elif method in STYLES and method not in seen:
            out[(method, setting)] = STYLES[method]
        else:
            colour, marker = spare[k % len(spare)]
            out[(method, setting)] = (colour, marker, "-" if k < len(spare) else "--")
            k += 1
        seen.add(method)
    return out


def _legend_below(fig: Figure, handles, labels, **kwargs) -> None:
    """The figure's legend under the panels, as many columns as fit the page width."""
    width = max((len(t) for t in labels), default=10)
    ncols = max(1, min(len(labels), int(fig.get_figwidth() * 13 // (width + 4))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False,
               **kwargs)


def _size_label(order, dim, rank) -> str:
    return f"l={order} d={dim} r={rank}"


def _style(method: str, k: int) -> tuple[str, str, str]:
    return STYLES.get(method, PALETTE[k % len(PALETTE)] + ("-",))


def _dodge(k: int, count: int, spread: float = 0.035) -> float:
    """Multiplicative x offset of series ``k`` of ``count``: overlapping curves stay visible."""
    return math.exp(spread * (k - (count - 1) / 2))


# -- figures ------------------------------------------------------------------------------------

def _one_width(table: pd.DataFrame) -> bool:
    """Whether every problem size of a :func:`curves` table was run at a single width."""
    return bool((table.groupby(SIZE)["width"].nunique() == 1).all())


@_styled
def width_figure(df: pd.DataFrame, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None) -> Figure:
    """Success rate and median error vs width, one row of panels per problem size.

    Left: success rate with its 95% Wilson interval (band; error bars with more than four
    series). Right: median relative error with the interquartile range over seeds (band or
    bars); exact zeros on their own row. One series per
    method and value of its swept hyper-parameters (:func:`swept_hyperparameters`), each with its
    own colour and marker, shifted slightly along x so that equal curves stay visible; a dashed
    line marks ``lazy_threshold(dim, order)`` when given, named on the top edge. A series run on
    a single seed gets no band and says so in its label. The legend is under the panels.

    Raises ``ValueError`` when every problem size has a single width (a curve of one point):
    :func:`method_figure` is the figure for such a table.
    """
    table = curves(df, success_threshold)
    if _one_width(table):
        raise ValueError(f"df has a single width per problem size "
                         f"({sorted(set(table['width']))}): a success-vs-width figure would "
                         "show one point per series; draw plots.method_figure(df, ...) instead")
    sizes = list(table[SIZE].drop_duplicates().itertuples(index=False))
    keys = list(dict.fromkeys(zip(table["method"], table["setting"])))
    styles = _series_styles(keys)
    bars = len(keys) > 4  # intervals as error bars rather than bands
    # rows shrink a little with many sizes: four still fit a page's height
    fig = Figure(figsize=(PAGE_WIDTH, (2.55 if len(sizes) <= 2 else 2.1) * len(sizes) + 0.9),
                 layout="constrained")
    axes = fig.subplots(len(sizes), 2, squeeze=False)
    handles = {}
    for (ax_s, ax_e), (order, dim, rank) in zip(axes, sizes):
        sel = table[(table["order"] == order) & (table["dim"] == dim) & (table["rank"] == rank)]
        err_axis = _ErrorAxis(np.concatenate([sel[c].to_numpy() for c in
                                              ("median_error", "q25_error", "q75_error")]),
                              reference=success_threshold)
        for k, key in enumerate(keys):
            grp = sel[(sel["method"] == key[0]) & (sel["setting"] == key[1])].sort_values(
                "width")
            if len(grp):
                label, line = _width_series(ax_s, ax_e, grp, key, styles[key], err_axis,
                                            _dodge(k, len(keys), min(0.035, 0.2 / len(keys))),
                                            bars)
                handles.setdefault(label, line)
        m_star = lazy_threshold(int(dim), int(order)) if lazy_threshold is not None else None
        threshold = _width_axes(ax_s, ax_e, sel["width"].unique(), (order, dim, rank), m_star,
                                err_axis, success_threshold)
    handles[f"success threshold {success_threshold:g}"] = threshold
    if lazy_threshold is not None:
        handles["lazy threshold m* = ⌈C(d+l−1,l)/d⌉"] = matplotlib.lines.Line2D(
            [], [], color="0.4", ls="--", lw=1)
    _legend_below(fig, list(handles.values()), list(handles))
    fig.suptitle(f"Success and error vs width ({'bars' if bars else 'bands'}: 95% Wilson "
                 "interval of the success rate, IQR of the error)")
    return fig


def _width_series(ax_s: Axes, ax_e: Axes, grp: pd.DataFrame, key: tuple, style: tuple,
                  err_axis: "_ErrorAxis", dodge: float, bars: bool):
    """One series of :func:`width_figure` in its row: success rate (left) and median error
    (right) vs width, with their intervals as bands (or bars); returns its label and line."""
    color, marker, ls = style
    x = grp["width"].to_numpy(np.float64) * dodge
    n = sorted(set(grp["n"]))
    label = _series_label(*key, n)
    rate = grp["success_rate"].to_numpy(np.float64)
    med = err_axis.place(grp["median_error"])
    if max(n) > 1 and not bars:  # one seed has no spread; its label says so
        ax_s.fill_between(x, grp["success_low"], grp["success_high"], color=color,
                          alpha=0.12, lw=0)
        ax_e.fill_between(x, err_axis.place(grp["q25_error"]),
                          err_axis.place(grp["q75_error"]), color=color, alpha=0.12, lw=0)
    elif max(n) > 1:  # many series: overlapping bands would hide each other
        ax_s.errorbar(x, rate, yerr=[rate - grp["success_low"], grp["success_high"] - rate],
                      color=color, ls="none", lw=0.8, capsize=0)
        ax_e.errorbar(x, med, yerr=[med - err_axis.place(grp["q25_error"]),
                                    err_axis.place(grp["q75_error"]) - med],
                      color=color, ls="none", lw=0.8, capsize=0)
    line = ax_s.plot(x, rate, color=color, marker=marker, ls=ls, label=label)[0]
    ax_e.plot(x, med, color=color, marker=marker, ls=ls, label=label)
    zero = grp["median_error"].to_numpy() == 0
    if zero.any():  # hollow markers on the zero row: "exactly 0", not "very small"
        ax_e.plot(x[zero], med[zero], ls="none", marker=marker, ms=7, mfc="white", color=color)
    return label, line


def _width_axes(ax_s: Axes, ax_e: Axes, widths, size: tuple, m_star, err_axis: "_ErrorAxis",
                success_threshold: float):
    """Axes, labels and the lazy threshold ``m_star`` of one row of :func:`width_figure`;
    returns the success-threshold line (for the legend)."""
    order, dim, rank = size
    for ax in (ax_s, ax_e):
        _log_x(ax, widths, extra=[m_star] if m_star else ())
        ax.set_xlabel("width m (number of components)")
        ax.grid(True, which="major", color="0.92", lw=0.6)
        if m_star is not None:
            _threshold_line(ax, m_star, f"m*={m_star}")
    ax_s.set_ylim(-0.04, 1.04)
    ax_s.set_yticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "0.25", "0.5", "0.75", "1"])
    ax_s.set_ylabel(f"success rate (error ≤ {success_threshold:g})")
    ax_s.set_title(f"{_size_label(order, dim, rank)}: success rate")
    err_axis.apply(ax_e)
    threshold = ax_e.axhline(success_threshold, color="k", ls=":", lw=0.8)
    ax_e.set_ylabel("relative error ||T − T*|| / ||T*||")
    ax_e.set_title(f"{_size_label(order, dim, rank)}: median error")
    return threshold


@_styled
def method_figure(df: pd.DataFrame, success_threshold: float) -> Figure:
    """Every series side by side at its width(s), for a table without a width axis (e.g. one
    width per problem size): one row of panels per problem size.

    Left: success rate with its 95% Wilson interval as an error bar (none for a single seed,
    which the tick label says). Right: each seed's final relative error (dots, jittered; exact
    zeros and diverged cells on their own rows), the median as a bar, the success threshold
    dotted. One column per method, value of its swept hyper-parameters and width.
    """
    table = curves(df, success_threshold)
    rows = _method_rows(df)
    rows = rows.assign(_err=_errors(rows))
    sizes = list(table[SIZE].drop_duplicates().itertuples(index=False))
    styles = _series_styles(list(zip(table["method"], table["setting"])))
    fig = Figure(figsize=(PAGE_WIDTH, 2.6 * len(sizes) + 0.5), layout="constrained")
    axes = fig.subplots(len(sizes), 2, squeeze=False)
    rng = np.random.default_rng(0)  # the jitter only spreads dots, fixed so figures reproduce
    for (ax_s, ax_e), size in zip(axes, sizes):
        sel = table[(table[SIZE].to_numpy() == np.asarray(size)).all(axis=1)]
        cell = rows[(rows[SIZE].to_numpy() == np.asarray(size)).all(axis=1)]
        axis = _ErrorAxis(cell["_err"].to_numpy(), reference=success_threshold)
        names = []
        for i, r in enumerate(sel.itertuples(index=False)):
            color, marker, _ = styles[(r.method, r.setting)]
            names.append(_series_label(r.method, r.setting, [r.n]).replace(" (", "\n(", 1)
                         + f"\nm={r.width}")
            if r.n > 1:
                ax_s.errorbar([i], [r.success_rate], yerr=[[r.success_rate - r.success_low],
                                                          [r.success_high - r.success_rate]],
                              color=color, marker=marker, ms=6, capsize=4, ls="none")
            else:
                ax_s.plot([i], [r.success_rate], color=color, marker=marker, ms=6, ls="none")
            e = cell[(cell["method"] == r.method) & (cell["setting"] == r.setting)
                     & (cell["width"] == r.width)]["_err"].to_numpy()
            ax_e.plot(i + rng.uniform(-0.18, 0.18, len(e)), axis.place(e), ls="none",
                      marker=marker, color=color, alpha=0.7, ms=4)
            ax_e.plot([i - 0.3, i + 0.3], axis.place([r.median_error] * 2), color="k", lw=1.5)
        axis.apply(ax_e)
        ax_e.axhline(success_threshold, color="k", ls=":", lw=0.8)
        for ax in (ax_s, ax_e):
            ax.set_xticks(range(len(names)), labels=names, fontsize=7)
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.grid(True, axis="y", color="0.92", lw=0.6)
            ax.set_xlabel("series")
        ax_s.set_ylim(-0.04, 1.04)
        ax_s.set_yticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "0.25", "0.5", "0.75", "1"])
        ax_s.set_ylabel(f"success rate (error ≤ {success_threshold:g})")
        ax_s.set_title(f"{_size_label(*size)}: success rate, 95% Wilson interval")
        ax_e.set_ylabel("final relative error")
        ax_e.set_title(f"{_size_label(*size)}: each seed (dots), median (bar);\n"
                       f"dotted: success threshold {success_threshold:g}")
    return fig


@_styled
def critical_figure(df: pd.DataFrame, success_threshold: float, *, x: str = "dim",
                    methods: Sequence[str] | None = None,
                    theory: Callable[[float, int], float] | None = None,
                    theory_label: str = "theory", rate: float = 0.5,
                    theory_mode: str = "curve") -> Figure:
    """Critical width vs ``x`` (``"dim"`` or ``"rank"``) on log-log axes.

    One series per (method, value of its swept hyper-parameters, order), each with its own
    colour and marker: the median over seeds of each seed's critical width
    (:func:`seed_critical_widths`) with the IQR as a band (a single seed: no band, said in the
    label), and the fitted log-log slope of the medians in the legend. A triangle marks a point
    where the median seed never succeeded (drawn at the largest width tried, a lower bound).
    ``theory(x, order)`` is drawn dashed, as is (``theory_mode="curve"``) or, with
    ``theory_mode="slope"``, only its log-log slope through the series' first point, over the
    whole ``x`` range, in a second panel on the right whose ``y`` axis spans both the medians
    and the theory (a steep exponent such as ``r^7.5`` would leave axes scaled to the data
    within a fraction of the range); the left panel stays scaled to the data. The legend is
    under the axes.
    """
    if x not in ("dim", "rank"):
        raise ValueError(f"x must be 'dim' or 'rank', got {x!r}")
    if theory_mode not in ("curve", "slope"):
        raise ValueError(f"theory_mode must be 'curve' or 'slope', got {theory_mode!r}")
    per_seed = seed_critical_widths(df, success_threshold)
    if methods is not None:
        per_seed = per_seed[per_seed["method"].isin(methods)]
    slope_panel = theory is not None and theory_mode == "slope"
    fig = Figure(figsize=(PAGE_WIDTH if slope_panel else PAGE_WIDTH * 0.75, 4.4),
                 layout="constrained")
    ax, ax_theory = fig.subplots(1, 2) if slope_panel else (fig.subplots(), None)
    xs_all, ys_all, drawn, k = [], [], set(), 0
    theory_lines = []
    series = list(per_seed.groupby(["method", "setting", "order"], sort=False))
    for (method, setting, order), grp in series:
        color, marker = PALETTE[k % len(PALETTE)] if len(series) > 1 or method not in STYLES \
            else STYLES[method][:2]
        k += 1
        st = _critical_stats(grp, x)
        ok = ~st["lower_bound"]
        slope, _ = fit_slope(st.loc[ok, "x"], st.loc[ok, "med"])
        label = _series_label(f"{method}, l={order}", setting, st["n"],
                              f": slope {round(slope, 2) + 0.0:.2f}" if math.isfinite(slope) else "")
        if st["n"].max() > 1:
            ax.fill_between(st["x"], st["q25"], st["q75"], color=color, alpha=0.18, lw=0)
        for a in (ax, ax_theory) if slope_panel else (ax,):
            if ok.any():  # (no empty series in the legend)
                a.plot(st.loc[ok, "x"], st.loc[ok, "med"], color=color, marker=marker, ms=5,
                       label=label)
            if (~ok).any():  # no width succeeded: the largest width tried is a lower bound
                a.plot(st.loc[~ok, "x"], st.loc[~ok, "med"], ls="none", marker="^", ms=7,
                       mfc="white", color=color, label=f"{method}, l={order}: > largest width")
        xs_all += list(st["x"])
        ys_all += list(st["q25"]) + list(st["q75"]) + list(st["med"])
        if theory is not None and order not in drawn and (ok.any() or slope_panel):
            drawn.add(order)
            theory_lines.append((order, st, ok))
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    if theory is not None and theory_mode == "curve":
        for i, (order, st, ok) in enumerate(theory_lines):
            xv = np.asarray(st["x"], np.float64)
            yv = np.array([theory(v, int(order)) for v in xv], np.float64)
            ys_all += list(yv)
            ax.plot(xv, yv, ls=styles[i % len(styles)], color="0.2", lw=1.3,
                    label=f"{theory_label}, l={order}", zorder=4)
    _log_x(ax, xs_all)
    ys = [v for v in ys_all if np.isfinite(v) and v > 0]
    _log_y_counts(ax, min(ys) if ys else 1, max(ys) if ys else 10)
    if slope_panel:
        _theory_slope_panel(ax_theory, theory_lines, theory, theory_label, xs_all, ys, x, styles)
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_xlabel("dimension d" if x == "dim" else "rank r")
    ax.set_ylabel("critical width m (median over seeds)")
    what = "dimension d" if x == "dim" else "rank r"
    title = (f"Critical width vs {what}: smallest m from which a seed succeeds "
             f"(error ≤ {success_threshold:g});\nline: median over seeds, band: "
             "interquartile range")
    if slope_panel:
        handles, labels = ax_theory.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=1, frameon=False)
        fig.suptitle(title)
        ax.set_title("the medians and their spread")
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=1, frameon=False)
        ax.set_title(title)
    return fig


def _critical_stats(grp: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per value of ``x``: median, quartiles and count of the seeds' critical widths (a seed
    that never succeeds counts at its largest width, a lower bound, in the IQR), and whether
    the median seed never succeeded (``lower_bound``)."""
    stats = []
    for xv, g in grp.groupby(x, sort=True):
        w = np.where(np.isnan(g["critical_width"]), g["max_width"], g["critical_width"])
        stats.append(dict(x=float(xv), med=float(np.median(w)), n=len(g),
                          q25=float(np.quantile(w, 0.25)), q75=float(np.quantile(w, 0.75)),
                          lower_bound=bool(np.median(np.isnan(g["critical_width"])) > 0.5)
                          or bool(np.isnan(np.median(g["critical_width"])))))
    return pd.DataFrame(stats)


def _theory_slope_panel(ax: Axes, theory_lines: list, theory: Callable, theory_label: str,
                        xs_all: list, ys: list, x: str, styles: list) -> None:
    """The right panel of :func:`critical_figure` with ``theory_mode="slope"``: the theory's
    log-log slope through each order's first point (a lower bound where none succeeded), on a
    ``y`` axis spanning both the medians already drawn there and the theory."""
    ys_theory = list(ys)
    for i, (order, st, ok) in enumerate(theory_lines):
        xv = np.asarray(st["x"], np.float64)
        first = st.loc[ok].iloc[0] if ok.any() else st.iloc[0]
        x0, y0 = float(first["x"]), float(first["med"])
        expo, _ = fit_slope(xv, [theory(v, int(order)) for v in xv])
        line_x = np.geomspace(xv.min(), xv.max(), 50)
        line_y = y0 * (line_x / x0) ** expo
        ys_theory += list(line_y)
        through = "the first point" if ok.any() else "the first lower bound"
        ax.plot(line_x, line_y, ls=styles[i % len(styles)], color="0.2", lw=1.3, zorder=4,
                label=f"{theory_label}, l={order}: slope {expo:.2f} (through {through})")
    _log_x(ax, xs_all)
    _log_y_counts(ax, min(ys_theory), max(ys_theory))
    if max(ys_theory) > 1e3 * min(ys_theory):  # decades as 10^k, not 10000000
        ax.yaxis.set_major_formatter(FuncFormatter(_decade_label))
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_xlabel("dimension d" if x == "dim" else "rank r")
    ax.set_ylabel("critical width m (log scale)")
    ax.set_title("the medians against the theory's slope")


@_styled
def threshold_figure(df: pd.DataFrame, success_threshold: float,
                     lazy_threshold: Callable[[int, int], int]) -> Figure:
    """The lazy threshold vs ``d``: two panels, one series per order.

    Left: critical width of the exact lazy optimum (median over seeds; ``lazy best`` rows) vs
    ``d`` on log-log axes, with the interquartile range over seeds as error bars (a single
    seed: none, said in the legend), the rule ``lazy_threshold(d, l)`` dashed (exact: no
    interval), the global fitted slope in the legend; a hollow marker is an unbracketed point
    (an upper bound, see :func:`threshold_table`). Right: the local slope between consecutive
    dims of the medians (:func:`local_slopes`, drawn at their geometric mean) beside the
    rule's, with ``l - 1`` dotted; the legend gives the last pair's values. Legends are under
    the panels.
    """
    table = threshold_table(df, success_threshold, lazy_threshold)
    slopes = local_slopes(table)
    per_seed = seed_critical_widths(df, success_threshold)
    per_seed = per_seed[per_seed["method"] == "lazy best"]
    fig = Figure(figsize=(PAGE_WIDTH, 4.3), layout="constrained")
    ax_m, ax_s = fig.subplots(1, 2)
    ys = []
    for k, (order, g) in enumerate(table.groupby("order", sort=True)):
        color, marker = PALETTE[k % len(PALETTE)]
        ok = g["bracketed"].to_numpy() & np.isfinite(g["critical"].to_numpy())
        slope, _ = fit_slope(g.loc[ok, "dim"], g.loc[ok, "critical"])
        seeds = per_seed[per_seed["order"] == order]
        q = seeds.groupby("dim")["critical_width"].quantile([0.25, 0.75]).unstack()
        q = q.reindex(g["dim"]).to_numpy(np.float64)
        crit = g["critical"].to_numpy(np.float64)
        spread = g["seeds"].max() > 1
        label = f"measured, l={order}: slope {slope:.2f} ({_seed_text(g['seeds'])}" + (
            ", IQR bars)" if spread else ")")
        ax_m.errorbar(g.loc[ok, "dim"], crit[ok],
                      yerr=np.abs(np.stack([crit - q[:, 0], q[:, 1] - crit]))[:, ok]
                      if spread else None, color=color, marker=marker, ms=5, capsize=2.5,
                      label=label, zorder=3)
        if (~ok).any():
            ax_m.plot(g.loc[~ok, "dim"], g.loc[~ok, "critical"], ls="none", marker=marker,
                      ms=7, mfc="white", color=color, label=f"l={order}: not bracketed")
        rule_slope, _ = fit_slope(g["dim"], g["rule"])
        ax_m.plot(g["dim"], g["rule"], ls="--", color="0.2", lw=1.1, marker=marker, ms=9,
                  mfc="none", mec="0.2", zorder=2,
                  label=f"rule ⌈C(d+l−1,l)/d⌉, l={order}: slope {rule_slope:.2f} (exact)")
        ys += list(g["critical"]) + list(g["rule"]) + list(q.ravel())
        sl = slopes[slopes["order"] == order]
        if len(sl):
            mid = np.sqrt(sl["dim_lo"].to_numpy(np.float64) * sl["dim_hi"].to_numpy(np.float64))
            last = sl.iloc[-1]
            # the rule as large hollow markers behind the measured ones: both stay visible
            # where they coincide (as they do when every case is at the rule)
            ax_s.plot(mid, sl["rule"], ls="--", color="0.25", lw=1.1, marker=marker, ms=9,
                      mfc="none", mec="0.25", zorder=2,
                      label=f"rule, l={order}: {last['rule']:.2f}")
            ax_s.plot(mid, sl["measured"], color=color, marker=marker, ms=5, zorder=3,
                      label=f"measured, l={order}: {last['measured']:.2f} at "
                            f"d={int(last['dim_lo'])}→{int(last['dim_hi'])}")
        ax_s.axhline(order - 1, color=color, ls=":", lw=1, label=f"l−1 = {order - 1}")
    dims = sorted(set(table["dim"]))
    _log_x(ax_m, dims)
    ys = [v for v in ys if np.isfinite(v) and v > 0]
    _log_y_counts(ax_m, min(ys) if ys else 1, max(ys) if ys else 10)
    ax_m.set_xlabel("dimension d")
    ax_m.set_ylabel("critical width m* (median over seeds)")
    ax_m.set_title(f"critical width of the exact lazy optimum\n(residual ≤ "
                   f"{success_threshold:g})")
    _log_x(ax_s, dims)
    ax_s.set_xlabel("dimension d (between consecutive d)")
    ax_s.set_ylabel("local slope d log m* / d log d")
    ax_s.set_title("local slope of the medians vs the exact rule's, → l−1\n(from the "
                   "medians: no interval)")
    for ax in (ax_m, ax_s):
        ax.grid(True, color="0.92", lw=0.6)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return fig


def format_threshold(df: pd.DataFrame, success_threshold: float,
                     lazy_threshold: Callable[[int, int], int]) -> str:
    """:func:`threshold_table` and :func:`local_slopes` as terminal text."""
    table = threshold_table(df, success_threshold, lazy_threshold)
    slopes = local_slopes(table)
    shown = table.assign(critical=table["critical"].astype("Int64"))  # NaN prints as <NA>
    return ("critical width of the exact lazy optimum (median over seeds) vs the rule:\n"
            + shown.to_string(index=False) + "\n\nlocal slopes between consecutive d:\n"
            + slopes.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _fit_steps(rows: pd.DataFrame, fitted: np.ndarray, steps: np.ndarray, rank: int,
               true_weights: Sequence[float] | None) -> np.ndarray | None:
    """``(cells, rank)`` first step at which each component's fitted weight reaches half its
    true weight (NaN: never): the run's own ``fit_time_<j>`` columns (``-1`` = never) when
    present, else from the histories and ``true_weights``; ``None`` with neither."""
    cols = [f"fit_time_{j}" for j in range(rank)]
    if all(c in rows.columns for c in cols):
        t = rows[cols].to_numpy(np.float64)
        return np.where(t < 0, np.nan, t)
    if true_weights is None:
        return None
    reached = fitted >= 0.5 * np.asarray(true_weights, np.float64)[None, None, :]
    first = np.argmax(reached, axis=1)                                   # (cells, rank)
    t = np.take_along_axis(steps[:, :, None].repeat(rank, 2), first[:, None, :], 1)[:, 0]
    return np.where(reached.any(axis=1), t, np.nan)


@_styled
def deflation_figure(df: pd.DataFrame, fitted_weight: np.ndarray, steps: np.ndarray,
                     true_weights: Sequence[float] | None = None) -> Figure:
    """Components fitted one at a time, largest first.

    Top, one panel per algorithm (and value of its swept hyper-parameters) at its largest
    width: the staircase, the fitted weight along each ground-truth direction vs step (log
    axis), median over seeds with the IQR as a band, true weights dotted. Bottom: each
    component's fit time (first step with fitted weight ``>= 1/2`` its true weight: the run's
    ``fit_time_<j>`` columns, else from the histories and ``true_weights``) against its true
    weight (or its index without ``true_weights``), median over the seeds that fit it with IQR
    bars; a hollow marker when fewer than half of the seeds fit it. Deflation's staircase reads
    as fit times falling with the weight.

    ``fitted_weight`` is ``(n_cells, n_records, r)`` and ``steps`` ``(n_cells, n_records)``, both
    aligned with the rows of ``df``.
    """
    _check(df)
    fitted_weight, steps = np.asarray(fitted_weight), np.asarray(steps)
    if fitted_weight.ndim != 3 or steps.shape != fitted_weight.shape[:2] or \
            fitted_weight.shape[0] != len(df):
        raise ValueError(f"fitted_weight must be (n_cells={len(df)}, n_records, r) and steps "
                         f"(n_cells, n_records); got {fitted_weight.shape} and {steps.shape}")
    rank = fitted_weight.shape[-1]
    if true_weights is not None and len(true_weights) != rank:
        raise ValueError(f"true_weights must have r={rank} entries, got {len(true_weights)}")
    df = df.reset_index(drop=True).assign(_setting=_settings(df).to_numpy())
    panels = list(dict.fromkeys(zip(df["algorithm"], df["_setting"])))
    fig = Figure(figsize=(PAGE_WIDTH, 5.6), layout="constrained")
    names = [f"s{i}" for i in range(len(panels))]
    axd = fig.subplot_mosaic([names, ["fit"] * len(names)], height_ratios=[1.15, 1])
    handles, fit_series = [], []
    for name, (algorithm, setting) in zip(names, panels):
        sel = np.flatnonzero(((df["algorithm"] == algorithm) & (df["_setting"] == setting))
                             .to_numpy())
        widths = df["width"].to_numpy()[sel]
        lines, series = _staircase_panel(axd[name], df, sel[widths == widths.max()],
                                         fitted_weight, steps, true_weights, algorithm, setting)
        handles += lines if name == names[0] else []
        fit_series.append(series)
    handles += _fit_time_panel(axd["fit"], fit_series, rank, true_weights)
    _legend_below(fig, handles, [h.get_label() for h in handles])
    fig.suptitle("Deflation: components fitted one at a time, largest weight first "
                 "(dotted: true weights)")
    return fig


def _staircase_panel(ax: Axes, df: pd.DataFrame, sel: np.ndarray, fitted_weight: np.ndarray,
                     steps: np.ndarray, true_weights, algorithm: str, setting: str):
    """One algorithm's staircase (rows ``sel`` of ``df``, one width): fitted weight of each
    component vs step, median and IQR band over the seeds. Returns its lines (one per
    component) and ``(label, fit steps (seeds, r), seeds)`` for the fit-time panel."""
    rank = fitted_weight.shape[-1]
    t = np.asarray(steps[sel[0]], np.float64)
    keep = np.isfinite(t) & (t > 0)
    w = np.asarray(fitted_weight[sel], np.float64)[:, keep, :]   # (seeds, records, r)
    lines = []
    for j in range(rank):
        color, marker = PALETTE[j % len(PALETTE)]
        lo, med, hi = np.nanquantile(w[:, :, j], [0.25, 0.5, 0.75], axis=0)
        if len(sel) > 1:
            ax.fill_between(t[keep], lo, hi, color=color, alpha=0.2, lw=0)
        label = f"component {j}" + (f": a={true_weights[j]:g}" if true_weights is not None
                                    else "")
        lines.append(ax.plot(t[keep], med, color=color, marker=marker, ms=3.5,
                             markevery=0.1, label=label)[0])
        if true_weights is not None:
            ax.axhline(true_weights[j], color=color, ls=":", lw=0.9)
    tt = t[keep]
    ax.set_xscale("log")
    ax.set_xlim(tt.min(), tt.max())
    ax.xaxis.set_major_locator(FixedLocator(_nice_log_ticks(tt.min(), tt.max())))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_number))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel("fitted weight along a_j")
    row = df.iloc[sel[0]]
    what = _series_label(algorithm, setting, [len(sel)])
    ax.set_title(f"{what}\n{_size_label(row['order'], row['dim'], row['rank'])} "
                 f"m={row['width']}" + (": median, IQR band" if len(sel) > 1 else ""))
    fit = _fit_steps(df.iloc[sel], w, tt[None, :].repeat(len(sel), 0), rank, true_weights)
    return lines, (what, fit, len(sel))


def _fit_time_panel(ax: Axes, fit_series: list, rank: int, true_weights) -> list:
    """Each component's fit time against its true weight (or index), one grey series per
    staircase: median over the seeds that fit it, IQR bars, hollow where fewer than half did.
    Returns the legend handles of its series."""
    xs = np.asarray(true_weights, np.float64) if true_weights is not None else \
        np.arange(rank, dtype=np.float64)
    drawn = False
    for k, (what, fit, n) in enumerate(fit_series):
        if fit is None:
            continue
        # greys: the colours above name the components, the x axis does here
        color, marker = ("0.1", "0.55", "0.3", "0.7")[k % 4], "osD^v"[k % 5]
        x = xs * _dodge(k, len(fit_series), 0.05) if true_weights is not None else \
            xs + 0.08 * (k - (len(fit_series) - 1) / 2)
        share = np.mean(np.isfinite(fit), axis=0)
        q = np.array([np.nanquantile(c, [0.25, 0.5, 0.75]) if np.isfinite(c).any()
                      else [np.nan] * 3 for c in fit.T])
        ax.errorbar(x, q[:, 1], yerr=np.abs(np.stack([q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]]))
                    if n > 1 else None, color=color, marker=marker, ms=5, capsize=2.5,
                    label=what + (", IQR bars" if n > 1 else ""))
        half = share < 0.5
        ax.plot(x[half], q[half, 1], ls="none", marker=marker, ms=8, mfc="white", color=color)
        drawn = drawn or np.isfinite(q[:, 1]).any()
    if drawn:
        ax.set_yscale("log")
        found = [v for _, fit, _ in fit_series if fit is not None for v in fit.ravel()
                 if np.isfinite(v) and v > 0]
        _log_y_counts(ax, min(found), max(found))
    else:
        ax.text(0.5, 0.5, "no fit times (no fit_time_<j> columns and no true weights)",
                transform=ax.transAxes, ha="center", va="center")
    if true_weights is not None:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs))))
        ax.xaxis.set_major_formatter(FuncFormatter(_fmt_number))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(xs.min() / 1.4, xs.max() * 1.4)
        ax.set_xlabel("true weight a_j of the component")
    else:
        ax.set_xticks(range(rank))
        ax.set_xlabel("component j")
    ax.set_ylabel("fit step")
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_title("fit time of each component: first step with fitted weight ≥ ½ its true "
                 "weight\n(median over the seeds that fit it; hollow: fit by fewer than half "
                 "of the seeds)")
    return ax.get_legend_handles_labels()[0]


def _log_x_scales(ax: Axes, scales: np.ndarray) -> None:
    """Log x axis for init scales spanning decades: ticks at 1 and 3 times powers of ten (the
    grid's own values would crowd), labelled as plain numbers."""
    lo, hi = float(np.min(scales)), float(np.max(scales))
    ticks = [t for t in _nice_log_ticks(lo, hi) if lo / 1.01 <= t <= hi * 1.01]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks or [lo, hi]))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_number))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lo / 1.3, hi * 1.3)


def _scale_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the algorithms that sweep ``init_scale`` (several values; the lazy rows never)."""
    if "init_scale" not in df.columns:
        raise ValueError("df has no init_scale column; the init-scale figure needs a sweep over "
                         "init_scale (e.g. [gd] init_scale = [0.01, 0.1, 1])")
    rows = df[(df["algorithm"] != "lazy") & df["init_scale"].notna()]
    varying = rows.groupby("algorithm")["init_scale"].nunique()
    rows = rows[rows["algorithm"].isin(varying[varying > 1].index)]
    if not len(rows):
        raise ValueError("no algorithm sweeps init_scale over several values; the init-scale "
                         "figure needs one (e.g. [gd] init_scale = [0.01, 0.1, 1])")
    return rows


def _lazy_optimum(df: pd.DataFrame, size: tuple) -> dict:
    """``{width: median exact best lazy residual}`` of the lazy rows of problem size ``size``."""
    if "lazy_best_residual" not in df.columns:
        return {}
    lazy = df[(df["algorithm"] == "lazy") & df["lazy_best_residual"].notna()]
    lazy = lazy[(lazy[SIZE].to_numpy() == np.asarray(size)).all(axis=1)]
    return {int(w): float(g.median()) for w, g in lazy.groupby("width")["lazy_best_residual"]}


@_styled
def init_scale_figure(df: pd.DataFrame, success_threshold: float,
                      transitions: pd.DataFrame | None = None) -> Figure:
    """The lazy-to-rich transition: four panels (2 x 2, page width) against the init scale
    ``δ`` (log axis), one curve per width, one block of panels per (algorithm, value of its
    other swept hyper-parameters, problem size) that sweeps ``init_scale``.

    1. success rate (error ``<= success_threshold``, not diverged) with its 95% Wilson band;
    2. distance moved ``||W - W0|| / ||W0||`` (median, IQR band), with the lazy-limit slope
       ``δ^-k`` (``k`` the model's degree in ``W``) through the widest width's largest scale;
    3. final relative error (median, IQR band) beside the lazy optimum of each width (dashed,
       the median exact best lazy residual of the lazy rows; widths whose optimum is 0 have no
       line);
    4. ``dE / d log δ`` through the runs (median over seeds, IQR band; column
       ``d_error_d_log_init_scale``) with the located transition ``δ*`` of each width (dotted,
       listed in the legend; ``transitions`` as from :func:`jaxtd.transition.locate`, computed
       per block when omitted).

    A single seed per point has no band; the block's title says so.
    """
    _check(df)
    rows = _scale_rows(df)
    has_slope = tr.COLUMN in rows.columns and rows[tr.COLUMN].notna().any()
    rows = rows.assign(_setting=_settings(rows, exclude=["init_scale"]))
    groups = list(rows.groupby(["algorithm", "_setting"] + SIZE, sort=False))
    fig = Figure(figsize=(PAGE_WIDTH, 5.6 * len(groups) + 0.3), layout="constrained")
    blocks = fig.subfigures(len(groups), 1, squeeze=False)[:, 0]
    for block, ((name, setting, *size), grp) in zip(blocks, groups):
        _init_scale_block(block, name, setting, tuple(size), grp, _lazy_optimum(df, tuple(size)),
                          success_threshold, transitions, has_slope)
    fig.suptitle("Init scale: rich (small δ, far from W0) to lazy (large δ, the linearized "
                 "model's optimum)")
    return fig


def _init_scale_block(block, name: str, setting: str, size: tuple, grp: pd.DataFrame,
                      optimum: dict, success_threshold: float, transitions, has_slope: bool):
    """One (algorithm, setting, size) block of :func:`init_scale_figure`: its four panels, its
    title and its legend."""
    ax_s, ax_d, ax_e, ax_g = block.subplots(2, 2).ravel()
    seeds = int(grp.groupby(["width", "init_scale"]).size().max())
    spread = seeds > 1
    widths = sorted(grp["width"].unique())
    cmap = colormaps["viridis"]
    colors = {w: cmap(0.9 * i / max(len(widths) - 1, 1)) for i, w in enumerate(widths)}
    scales = np.sort(grp["init_scale"].unique().astype(np.float64))
    err_all = [_init_scale_width(ax_s, ax_d, ax_g, grp[grp["width"] == w], colors[w],
                                 PALETTE[i % len(PALETTE)][1], w, spread, success_threshold,
                                 has_slope) for i, w in enumerate(widths)]
    _init_scale_errors(ax_e, widths, err_all, colors, scales, optimum, spread, success_threshold)
    _init_scale_distance(ax_d, grp, widths, scales, size)
    ax_s.set_ylim(-0.03, 1.03)
    ax_s.set_ylabel(f"success rate (error ≤ {success_threshold:g})")
    ax_s.set_title("success rate" + (", band: 95% Wilson interval" if spread else ""))
    block.suptitle(_series_label(name, setting, [seeds]) + f": {_size_label(*size)}")
    handles, labels = ax_s.get_legend_handles_labels()
    if has_slope:
        lines = _init_scale_slope(ax_g, grp, name, size, colors, success_threshold, transitions)
        handles += lines
        labels += [ln.get_label() for ln in lines]
    else:
        ax_g.text(0.5, 0.5, f"no {tr.COLUMN} column\n(run with plot = \"init-scale\")",
                  transform=ax_g.transAxes, ha="center", va="center")
    block.legend(handles, labels, loc="outside lower center", frameon=False,
                 ncols=min(len(handles), 4))
    for ax in (ax_s, ax_d, ax_e, ax_g):
        _log_x_scales(ax, scales)
        ax.set_xlabel("init scale δ")
        ax.grid(True, color="0.92", lw=0.6)


def _init_scale_width(ax_s: Axes, ax_d: Axes, ax_g: Axes, g: pd.DataFrame, c, marker, w,
                      spread: bool, success_threshold: float, has_slope: bool) -> np.ndarray:
    """One width's curves in the success, distance and slope panels; returns its final-error
    quartiles per scale, flattened ``(scales * 3,)``, for the error panel (drawn once every
    width's errors fix the axis)."""
    by = g.groupby("init_scale", sort=True)
    x = np.asarray(list(by.groups), np.float64)
    err = by.apply(lambda r: _errors(r.assign(error=r["final_relative_error"])),
                   include_groups=False)
    ok = np.array([np.mean(e <= success_threshold) for e in err])
    n = by.size().to_numpy()
    lo, hi = wilson_interval(np.round(ok * n), n)
    if spread:
        ax_s.fill_between(x, lo, hi, color=c, alpha=0.08, lw=0)
    ax_s.plot(x, ok, color=c, marker=marker, label=f"m = {w}")
    dist = by["distance"].quantile([0.25, 0.5, 0.75]).unstack().to_numpy(np.float64)
    if spread:
        ax_d.fill_between(x, dist[:, 0], dist[:, 2], color=c, alpha=0.12, lw=0)
    ax_d.plot(x, dist[:, 1], color=c, marker=marker)
    if has_slope:
        slope = by[tr.COLUMN].quantile([0.25, 0.5, 0.75]).unstack().to_numpy(np.float64)
        if spread:
            ax_g.fill_between(x, slope[:, 0], slope[:, 2], color=c, alpha=0.12, lw=0)
        ax_g.plot(x, slope[:, 1], color=c, marker=marker)
    return np.array([[_quantile(e, p) for p in (0.25, 0.5, 0.75)] for e in err]).ravel()


def _init_scale_errors(ax: Axes, widths, err_all, colors, scales, optimum: dict, spread: bool,
                       success_threshold: float) -> None:
    """The final-error panel: each width's median and IQR beside its lazy optimum (dashed)."""
    positive = [v for w, v in optimum.items() if w in widths and v > 0]
    axis = _ErrorAxis(np.concatenate(err_all + [np.asarray(positive)]), success_threshold)
    for i, (w, q) in enumerate(zip(widths, err_all)):
        c, marker = colors[w], PALETTE[i % len(PALETTE)][1]
        q = axis.place(q.reshape(-1, 3))
        if spread:
            ax.fill_between(scales, q[:, 0], q[:, 2], color=c, alpha=0.12, lw=0)
        ax.plot(scales, q[:, 1], color=c, marker=marker)
        if optimum.get(int(w), 0) > 0:
            ax.axhline(optimum[int(w)], color=c, ls="--", lw=1.1)
    axis.apply(ax)
    ax.axhline(success_threshold, color="0.5", ls=":", lw=1)
    zero = [w for w in widths if optimum.get(int(w), None) == 0]
    note = f"; lazy optimum 0 at m ≥ {min(zero)}" if zero else ""
    ax.set_ylabel("final relative error (median, IQR)")
    ax.set_title(f"final error; dashed: lazy optimum of the width{note};\ndotted: "
                 f"success threshold {success_threshold:g}")


def _init_scale_distance(ax: Axes, grp: pd.DataFrame, widths, scales, size: tuple) -> None:
    """The distance panel's axes and its lazy limit ``||W - W0|| / ||W0|| ∝ δ^-k`` (``k`` the
    model's degree in ``W``; lazy GD and tables without a model: the plain ``w^{⊗l}``) through
    the widest width's largest scale."""
    model = grp["model"].iloc[0] if "model" in grp.columns else ""
    k = model_degree(model if isinstance(model, str) and model else "plain", size[0])
    wide = grp[grp["width"] == widths[-1]]
    d_last = float(wide[wide["init_scale"] == scales[-1]]["distance"].median())
    if d_last > 0 and np.isfinite(d_last):
        xs = scales[scales >= scales[-1] / 10]  # the last decade
        ax.plot(xs, d_last * (xs / scales[-1]) ** (-k), color="0.2", ls="--", lw=1.2)
    ax.set_yscale("log")
    ax.set_ylabel("distance ||W − W0|| / ||W0||")
    ax.set_title(f"distance moved (median, IQR);\ndashed: lazy limit ∝ δ^-{k}")


def _init_scale_slope(ax: Axes, grp: pd.DataFrame, name: str, size: tuple, colors: dict,
                      success_threshold: float, transitions) -> list:
    """The ``dE / d log δ`` panel's axes and each width's located transition ``δ*`` (dotted);
    returns those lines for the legend."""
    ax.axhline(0, color="0.6", lw=0.8)
    # symlog: the peaks (~1) and the flat ends (~1e-3) both readable, and a run at the
    # float32 rounding floor (a large, meaningless derivative) does not flatten the rest
    ax.set_yscale("symlog", linthresh=1e-2)
    lines = []
    # located per block: locate() would pool the values of another swept setting
    sel = transitions if transitions is not None else tr.locate(
        grp.drop(columns="_setting"), success_threshold)
    for key, v in zip(["algorithm"] + SIZE, [name, *size]):
        if sel is not None and key in sel.columns:
            sel = sel[sel[key] == v]
    for t in (sel.itertuples(index=False) if sel is not None else ()):
        if math.isfinite(t.transition_scale) and t.width in colors:
            edge = " (edge)" if t.at_edge else ""
            lines.append(ax.axvline(
                t.transition_scale, color=colors[t.width], ls=":", lw=1.2,
                label=f"m={t.width}: δ* = {t.transition_scale:.3g}{edge}"))
    ax.set_ylabel("dE / d log δ")
    ax.set_title("dE/d log δ through the runs (median, IQR);\n" + (
        "dotted: located transition δ* (peak of the median)" if lines else
        "no δ* located (the error never crosses the threshold)"))
    return lines


# -- terminal table -----------------------------------------------------------------------------

def format_table(df: pd.DataFrame, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None) -> str:
    """A compact plain-text table per problem size: successes/cells and median error for each
    series (rows) and width (columns). A method that sweeps hyper-parameters gets one row per
    value (``gd learning_rate=0.05``): counts are never pooled over settings."""
    table = curves(df, success_threshold)
    blocks = []
    for (order, dim, rank), sel in table.groupby(SIZE, sort=False):
        widths = sorted(sel["width"].unique())
        names = {key: " ".join(p for p in key if p)
                 for key in zip(sel["method"], sel["setting"])}
        pad = max(9, *(len(v) for v in names.values()))
        head = f"{_size_label(order, dim, rank)}: success = relative error <= {success_threshold:g}"
        if lazy_threshold is not None:
            head += f"; lazy threshold m = {lazy_threshold(int(dim), int(order))}"
        lines = [head, "  " + f"{'width':<{pad + 2}}" + "".join(f"{w:>9}" for w in widths)]
        for label, fmt in (("success", _fmt_success), ("median err", _fmt_error)):
            lines.append(f"  {label}")
            for key, grp in sel.groupby(["method", "setting"], sort=False):
                cells = dict(zip(grp["width"], grp.itertuples(index=False)))
                lines.append("  " + f"  {names[key]:<{pad}}" + "".join(
                    f"{fmt(cells[w]) if w in cells else '-':>9}" for w in widths))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _fmt_success(row) -> str:
    return f"{row.successes}/{row.n}"


def _fmt_error(row) -> str:
    return "inf" if not math.isfinite(row.median_error) else f"{row.median_error:.1e}"


def _theory_rank(r: float, order: int) -> float:
    return r ** (2.5 * order)


def check_formats(formats) -> tuple[str, ...]:
    """``"png,pdf"`` or ``["png", "pdf"]`` as a checked tuple of :data:`FORMATS`."""
    if isinstance(formats, str):
        formats = formats.split(",")
    try:
        out = tuple(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in formats))
    except TypeError:
        out = ()
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ValueError(f"formats must name some of {', '.join(FORMATS)} (e.g. 'png,pdf'); got "
                         f"{formats!r}")
    return out


def save_figures(df: pd.DataFrame, out_dir: str | Path, *, plot: str, success_threshold: float,
                 lazy_threshold: Callable[[int, int], int] | None = None,
                 histories: Mapping[str, np.ndarray] | None = None,
                 true_weights: Sequence[float] | None = None,
                 formats: str | Sequence[str] = ("png",), dpi: int = DPI) -> list[Path]:
    """Write the figures of a run into ``out_dir`` and return the paths written.

    ``success_vs_width`` (:func:`width_figure`; when every problem size has a single width,
    ``success_by_method`` from :func:`method_figure` instead: a curve of one point says nothing)
    and the preset's own figure (``plot``: ``width``, ``lazy-threshold``, ``beyond-lazy``,
    ``width-vs-rank``, ``deflation`` or ``init-scale``; ``samples`` draws :func:`samples_figure`
    alone), each in every one of ``formats``
    (``png``, ``pdf``, ``svg``; a list or a comma-separated string). PNG is rendered at ``dpi``
    dots per inch (default :data:`DPI` = 300: a 7 in figure is 2100 px wide); PDF and SVG are
    vectors whose text stays text (TrueType fonts embedded, SVG ``<text>`` elements).
    """
    out_dir = Path(out_dir)
    formats = check_formats(formats)
    if not (isinstance(dpi, (int, float)) and not isinstance(dpi, bool) and 10 <= dpi <= 2400):
        raise ValueError(f"dpi must be a number in [10, 2400] (300 for print), got {dpi!r}")
    if plot not in ("width", "lazy-threshold", "beyond-lazy", "width-vs-rank", "deflation",
                    "init-scale", "samples"):
        raise ValueError(f"plot must be one of width, lazy-threshold, beyond-lazy, width-vs-rank, "
                         f"deflation, init-scale, samples; got {plot!r}")
    if plot == "samples":  # the axis is n, not the width: the width figures would pool it
        figures = {"samples": samples_figure(df, success_threshold)}
    elif _one_width(curves(df, success_threshold)):
        figures = {"success_by_method": method_figure(df, success_threshold)}
    else:
        figures = {"success_vs_width": width_figure(df, success_threshold, lazy_threshold)}
    if plot == "lazy-threshold" and lazy_threshold is not None and (
            "lazy_best_residual" in df and df["lazy_best_residual"].notna().any()):
        figures["lazy_threshold"] = threshold_figure(df, success_threshold, lazy_threshold)
    elif plot == "lazy-threshold":  # no exact lazy optimum (lazy GD only): the plain figure
        figures["lazy_threshold"] = critical_figure(
            df, success_threshold, x="dim", methods=["lazy best", "lazy GD"],
            theory=(lambda d, l: lazy_threshold(int(d), l)) if lazy_threshold else None,
            theory_label="⌈C(d+l−1,l)/d⌉")
    elif plot == "beyond-lazy":
        figures["beyond_lazy"] = critical_figure(
            df, success_threshold, x="dim",
            theory=(lambda d, l: lazy_threshold(int(d), l)) if lazy_threshold else None,
            theory_label="lazy threshold ⌈C(d+l−1,l)/d⌉")
    elif plot == "width-vs-rank":
        figures["width_vs_rank"] = critical_figure(df, success_threshold, x="rank",
                                                   theory=_theory_rank,
                                                   theory_label="theory r^(2.5 l)",
                                                   theory_mode="slope")
    elif plot == "init-scale":
        figures["init_scale"] = init_scale_figure(df, success_threshold)
    elif plot == "deflation" and histories is not None and "fitted_weight" in histories:
        figures["deflation"] = deflation_figure(df, histories["fitted_weight"],
                                                histories["step"], true_weights)
    paths = []
    with matplotlib.rc_context(STYLE):  # the vector formats' font embedding is read at save
        for name, fig in figures.items():
            for fmt in formats:
                path = out_dir / f"{name}.{fmt}"
                fig.savefig(path, dpi=dpi, metadata=_METADATA[fmt])
                paths.append(path)
    return paths


# no creation date in vector files: the same run redrawn gives the same bytes
_METADATA = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}


# -- the phase diagram ---------------------------------------------------------------------------

_PHASE_STYLES = {"lazy": ("tab:red", "v"), "gd": ("tab:blue", "o"), "variant": ("tab:green", "s")}


def _phase_series(ax: Axes, table: pd.DataFrame, x: str, k: int, n: int, name: str,
                  search_top: float | None = None) -> None:
    """One algorithm's critical widths vs ``x`` with their intervals as error bars (an interval
    open above the grid: an arrow up; a width not found in the grid: an open triangle just above
    ``search_top``, the search range's largest width, or at the top edge of the axes without
    it)."""
    color, marker = _PHASE_STYLES.get(name, PALETTE[k % len(PALETTE)])
    t = table.sort_values(x)
    xv = t[x].to_numpy(np.float64) * _dodge(k, n)
    y = t["critical_width"].to_numpy(np.float64)
    lo, hi = t["ci_low"].to_numpy(np.float64), t["ci_high"].to_numpy(np.float64)
    ok = np.isfinite(y)
    top = np.where(np.isfinite(hi), hi, y)
    seeds = int(t["seeds"].max()) if len(t) else 0
    label = ("lazy: exact threshold ⌈C(d+l−1,l)/d⌉" if name == "lazy"
             else f"{name}: {seeds} seeds, 95% bootstrap CI")
    ax.errorbar(xv[ok], y[ok], yerr=[y[ok] - lo[ok], top[ok] - y[ok]], color=color,
                marker=marker, ms=4.5, lw=1.2, capsize=2, label=label)
    open_top = ok & ~np.isfinite(hi)
    if open_top.any():
        # above the point, so the arrow does not hide the marker it qualifies
        ax.plot(xv[open_top], y[open_top] * 1.35, ls="none", marker=r"$\uparrow$", ms=9,
                color=color, label=f"{name}: CI open above the search range")
    if (~ok).any() and search_top is not None:  # no value: just above the range it exceeds
        ax.plot(xv[~ok], np.full((~ok).sum(), search_top * 1.35), ls="none", marker="^", ms=7,
                mfc="white", color=color,
                label=f"{name}: above the search range (> {search_top:g})")
    elif (~ok).any():
        ax.plot(xv[~ok], np.full((~ok).sum(), 0.95), ls="none", marker="^", ms=7, mfc="white",
                color=color, transform=ax.get_xaxis_transform(), clip_on=False,
                label=f"{name}: above the search range (at the top edge)")


def _reference(ax: Axes, x0: float, y0: float, xs: np.ndarray, f: Callable, label: str,
               ls) -> None:
    """``y0 * f(x) / f(x0)`` over ``xs`` (a theory's shape through one measured point)."""
    line_x = np.geomspace(min(xs), max(xs), 50)
    ax.plot(line_x, y0 * f(line_x) / f(x0), ls=ls, color="0.25", lw=1.1, label=label, zorder=1)


def _phase_weights(crit: pd.DataFrame, weights: str | None) -> str | None:
    """The weight profile :func:`phase_figure` draws: ``weights``, else the table's only one,
    else ``"equal"`` (None: the table has no ``weights`` column)."""
    if "weights" not in crit.columns:
        if weights is not None:
            raise ValueError("crit has no weights column to select weights from")
        return None
    found = sorted(set(crit["weights"].dropna().astype(str)))
    if weights is None:
        if len(found) <= 1:
            return found[0] if found else None
        if "equal" not in found:
            raise ValueError(f"crit holds the weight profiles {found}: pass weights=")
        return "equal"
    if weights not in found:
        raise ValueError(f"no cells of weights {weights!r}; the table has {found}")
    return weights


@_styled
def phase_figure(crit: pd.DataFrame, kind: str = "orthonormal",
                 weights: str | None = None, search_top: float | None = None) -> Figure:
    """The phase diagram of one component kind and weight profile: critical width vs d (left)
    and vs r (right).

    ``crit``: the rows of ``critical_widths.csv`` (:data:`jaxtd.phase.CRITICAL_WIDTH_COLUMNS`),
    the d sweep being the cells at the most common rank and the r sweep those at the most
    common dim. ``weights``: the ``weights`` value to draw (None: the table's only one, or
    ``"equal"``). ``search_top``: the largest width the searches probed (drawn as a thin line;
    a critical width above it is a triangle just above it). Log-log axes; each algorithm's
    critical widths with their 95% intervals. References (dashed, dotted, dash-dotted, through
    an algorithm's first point): the lazy lower bound
    ``d^(l-1)``, the variant's sufficient width ``r^(2.5 l) log d`` (its d part ``log d`` on the
    left, its r part ``r^(2.5 l)`` on the right, cut at the top of the axes).
    """
    need = ("algorithm", "order", "dim", "rank", "kind", "critical_width", "ci_low", "ci_high",
            "seeds")
    if not isinstance(crit, pd.DataFrame) or any(c not in crit.columns for c in need):
        raise ValueError(f"crit must be the critical_widths.csv table with columns {need}")
    t = crit[crit["kind"] == kind]
    if t.empty:
        raise ValueError(f"no cells of kind {kind!r}; the table has {sorted(set(crit['kind']))}")
    weights = _phase_weights(t, weights)
    if weights is not None:
        t = t[t["weights"].astype(str) == weights]
    order = int(t["order"].min())
    t = t[t["order"] == order]
    rank0 = int(t["rank"].mode().iloc[0])
    dim0 = int(t["dim"].mode().iloc[0])
    fig = Figure(figsize=(PAGE_WIDTH, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    algorithms = [a for a in ("lazy", "gd", "variant") if a in set(t["algorithm"])] + sorted(
        set(t["algorithm"]) - {"lazy", "gd", "variant"})
    for ax, x, fixed, value in ((axes[0], "dim", "rank", rank0), (axes[1], "rank", "dim", dim0)):
        _phase_panel(ax, t[t[fixed] == value], x, fixed, value, order, algorithms, search_top)
    profile = {None: "", "equal": ", equal weights $c_j = 1$",
               "geometric": ", geometric weights $c_j = 2^{-j}$"}.get(weights,
                                                                     f", weights {weights}")
    fig.suptitle(f"Critical width: {kind} components{profile}")
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    # the measured series first (in algorithm order), then the references, then the notes
    rank = {lab: (2 if "above the search range" in lab else 0 if any(
        lab.startswith(f"{a}: ") for a in algorithms) else 1) for lab in handles}
    labels = sorted(handles, key=lambda lab: rank[lab])
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncols=2,
               frameon=False)
    return fig


def _phase_panel(ax: Axes, part: pd.DataFrame, x: str, fixed: str, value: int, order: int,
                 algorithms: list, search_top: float | None) -> None:
    """One panel of :func:`phase_figure`: each algorithm's critical widths vs ``x`` (at
    ``fixed = value``), the largest searched width and the theory's references."""
    xs = np.sort(part[x].unique()).astype(np.float64)
    for k, name in enumerate(algorithms):
        series = part[part["algorithm"] == name]
        if len(series):
            _phase_series(ax, series, x, k, len(algorithms), name, search_top)
    ys = part[["critical_width", "ci_low", "ci_high"]].to_numpy(np.float64).ravel()
    ys = ys[np.isfinite(ys) & (ys > 0)]
    searched = part[part["algorithm"] != "lazy"]
    if search_top is not None and len(searched):
        ax.axhline(search_top, color="0.55", lw=0.8, ls=(0, (1, 3)), zorder=0,
                   label=f"largest searched width ({search_top:g})")
        if searched["critical_width"].isna().any() or np.isinf(searched["ci_high"]).any():
            ys = np.append(ys, search_top * 1.35)
    y_lo, y_hi = (max(0.7, ys.min() / 1.5), ys.max() * 1.8) if ys.size else (0.7, 100)
    if len(xs) >= 2:
        _phase_references(ax, part, x, xs, order, y_hi)
    _log_x(ax, xs)
    _log_y_counts(ax, y_lo, y_hi)
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_xlabel("dimension $d$" if x == "dim" else "rank $r$")
    ax.set_ylabel("critical width $m_c$")
    ax.set_title(f"vs {'d' if x == 'dim' else 'r'} at l={order}, {fixed[0]}={value}")


def _phase_references(ax: Axes, part: pd.DataFrame, x: str, xs: np.ndarray, order: int,
                      y_hi: float) -> None:
    """The theory's references through an algorithm's first point: vs d the lazy lower bound
    ``d^(l-1)`` and the variant's ``log d``; vs r the variant's ``r^(2.5 l)``, cut at the top
    of the axes (``y_hi``)."""
    def first(name):
        s = part[(part["algorithm"] == name) & np.isfinite(part["critical_width"])]
        s = s.sort_values(x)
        return (float(s[x].iloc[0]), float(s["critical_width"].iloc[0])) if len(s) else None
    anchor = first("variant") or first("gd")
    if x == "dim":
        if first("lazy"):
            _reference(ax, *first("lazy"), xs, lambda v: v ** (order - 1),
                       f"$d^{{l-1}} = d^{{{order - 1}}}$: lazy lower bound", "--")
        if anchor:
            _reference(ax, *anchor, xs, np.log, r"$\log d$: variant's sufficient width, d part",
                       ":")
    elif anchor:
        expo = 2.5 * order
        x_end = min(xs.max(), anchor[0] * (y_hi / anchor[1]) ** (1 / expo))
        _reference(ax, *anchor, np.array([anchor[0], max(x_end, anchor[0] * 1.001)]),
                   lambda v: v ** expo, f"$r^{{2.5l}} = r^{{{expo:g}}}$: variant's "
                   "sufficient width, r part", "-.")


def save_phase_figures(crit: pd.DataFrame, out_dir: str | Path,
                       formats: str | Sequence[str] = ("png",), dpi: int = DPI,
                       search_top: float | None = None) -> list[Path]:
    """:func:`phase_figure` of each component kind and weight profile in ``crit``, as
    ``out_dir/phase_diagram_<kind>.<fmt>`` (equal weights, or the table's only profile) and
    ``out_dir/phase_diagram_<kind>_<weights>.<fmt>`` (every other profile; ``/`` in an explicit
    profile written ``-``; ``search_top`` as in :func:`phase_figure`); returns the paths
    written."""
    out_dir = Path(out_dir)
    found = (sorted(set(crit["weights"].dropna().astype(str)))
             if "weights" in crit.columns else [])
    paths = []
    for kind in sorted(set(crit["kind"])):
        for weights in found or [None]:
            if weights is not None and not ((crit["kind"] == kind)
                                            & (crit["weights"].astype(str) == weights)).any():
                continue
            fig = phase_figure(crit, kind, weights, search_top)
            plain = weights is None or weights == "equal" or len(found) == 1
            stem = f"phase_diagram_{kind}" + ("" if plain else "_" + weights.replace("/", "-"))
            with matplotlib.rc_context(STYLE):
                for fmt in check_formats(formats):
                    path = out_dir / f"{stem}.{fmt}"
                    fig.savefig(path, dpi=dpi, metadata=_METADATA[fmt])
                    paths.append(path)
    return paths


# -- sample complexity of the network regimes ----------------------------------------------------

# one (colour, marker) per regime of jaxtd.algorithms.network; the kernel regimes warm colours
_REGIME_STYLES = {"rf": ("tab:red", "v"), "nt": ("tab:orange", "^"), "nn": ("tab:blue", "o")}
_REGIME_ORDER = ("rf", "nt", "nn")
_DIM_LINES = ("-", "--", ":", "-.")


def _regime_of(rows: pd.DataFrame) -> str:
    """A series' regime (the ``regime`` column of a network table, else its algorithm name)."""
    return str(rows["regime"].iloc[0]) if "regime" in rows else str(rows["algorithm"].iloc[0])


def sample_risk_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, order, dim, rank, width, n): the seeds' relative test risk.

    The relative population risk of a network run is ``||T - T*||_F^2 / ||T*||_F^2`` =
    ``final_relative_error ** 2`` (docs/math.md: the risk is ``l!`` times the tensor loss, so
    the factor cancels; noise-free labels). Columns ``n`` (``active_samples``), ``seeds``,
    ``median_risk``, ``q25_risk``, ``q75_risk`` (diverged = inf), ``successes``,
    ``success_rate`` and its 95% Wilson interval ``success_low`` / ``success_high``.
    """
    need = ("algorithm", "order", "dim", "rank", "width", "seed", "active_samples",
            "final_relative_error", "success", "diverged")
    if not isinstance(df, pd.DataFrame) or any(c not in df.columns for c in need):
        raise ValueError(f"df must be the results table of a network run swept over samples "
                         f"(columns {need}); sweep [network] samples = [...]")
    risk = np.where(df["diverged"].astype(bool) | ~np.isfinite(df["final_relative_error"]),
                    np.inf, df["final_relative_error"].to_numpy(np.float64) ** 2)
    rows = df.assign(_risk=risk, _ok=df["success"].astype(bool).astype(np.int64))
    out = []
    keys = ["algorithm", "order", "dim", "rank", "width", "active_samples"]
    for key, g in rows.groupby(keys, sort=True):
        r = g["_risk"].to_numpy()
        out.append(dict(zip(keys[:-1], key[:-1]), n=float(key[-1]), regime=_regime_of(g),
                        seeds=len(g), median_risk=_quantile(r, 0.5),
                        q25_risk=_quantile(r, 0.25), q75_risk=_quantile(r, 0.75),
                        successes=int(g["_ok"].sum())))
    table = pd.DataFrame(out)
    low, high = wilson_interval(table["successes"].to_numpy(), table["seeds"].to_numpy())
    return table.assign(success_rate=table["successes"] / table["seeds"], success_low=low,
                        success_high=high)


def _samples_series(top: Axes, bottom: Axes, s: pd.DataFrame, colour, marker, j: int,
                    dodge: float, y_lo: float, y_hi: float) -> None:
    """One regime at one dim (the ``j``-th of its order: its line style, filled for the first):
    median risk with its IQR band (top), success rate with its Wilson interval (bottom)."""
    x = s["n"].to_numpy(np.float64) * dodge
    ls = _DIM_LINES[j % len(_DIM_LINES)]
    fill = colour if j == 0 else "white"
    top.fill_between(x, np.clip(s["q25_risk"], y_lo, y_hi), np.clip(s["q75_risk"], y_lo, y_hi),
                     color=colour, alpha=0.13, lw=0)
    top.plot(x, np.clip(s["median_risk"].to_numpy(np.float64), y_lo, y_hi), color=colour,
             marker=marker, ls=ls, mfc=fill)
    rate = s["success_rate"].to_numpy(np.float64)
    bottom.errorbar(x, rate, yerr=[rate - s["success_low"], s["success_high"] - rate],
                    color=colour, marker=marker, ls=ls, mfc=fill, lw=1.0, elinewidth=0.6,
                    capsize=1.5, ecolor=(*matplotlib.colors.to_rgb(colour), 0.35))


def _samples_axes(top: Axes, bottom: Axes, part: pd.DataFrame, order: int, dims: list,
                  sizes: list, y_lo: float, y_hi: float) -> None:
    """Axes of one order's column: ``n`` on a log axis, each ``C(d+l-1, l)`` named on the top
    edge (outside the data), the risk in decades, labels and titles."""
    _log_x(bottom, part["n"].unique(), extra=sizes)
    names = top.secondary_xaxis("top")  # the lines' names outside the data area
    text = {size: f"C({d + order - 1},{order})={size}" for d, size in zip(dims, sizes)}
    names.xaxis.set_major_locator(FixedLocator(sizes))
    names.xaxis.set_major_formatter(FuncFormatter(
        lambda v, pos, text=text: text.get(int(round(v)), "")))
    names.xaxis.set_minor_locator(NullLocator())
    names.tick_params(labelsize=7, length=3, pad=1, colors="0.3")
    top.set_yscale("log")
    top.set_ylim(y_lo, y_hi)
    top.yaxis.set_major_locator(FixedLocator(
        [10.0 ** e for e in range(math.ceil(math.log10(y_lo)), math.floor(
            math.log10(y_hi)) + 1, 2)]))
    top.yaxis.set_major_formatter(FuncFormatter(_decade_label))
    top.yaxis.set_minor_locator(NullLocator())
    styles = ", ".join(f"d = {d} {('solid', 'dashed', 'dotted', 'dash-dot')[j % 4]}"
                       for j, d in enumerate(dims))
    top.set_title(f"l = {order}: {styles}")
    top.set_ylabel("test risk / teacher's (median, IQR)")
    bottom.set_ylabel("success rate (95% CI)")
    bottom.set_ylim(-0.04, 1.04)
    bottom.set_xlabel("number of samples n")
    for ax in (top, bottom):
        ax.grid(True, color="0.92", lw=0.6)


@_styled
def samples_figure(df: pd.DataFrame, success_threshold: float) -> Figure:
    """Relative test risk (top) and success rate (bottom) against the number of samples ``n``.

    One column per order ``l``; one colour and marker per regime, one line style per dim of
    that order (solid and filled: the smallest; dashed and open: the next): the median over
    seeds with the interquartile range as a band (risk), or the success rate with its 95%
    Wilson interval as error bars. A vertical line per dim, in that dim's line style and named
    on the top edge, marks ``C(d+l-1, l)``, the dimension of the degree-``l`` functions the
    kernel regimes (RF, NT) fit; the dashed horizontal line is the success threshold on the
    risk, ``success_threshold ** 2``.
    """
    table = sample_risk_curves(df)
    orders = sorted(table["order"].unique())
    fig = Figure(figsize=(PAGE_WIDTH, 5.2), layout="constrained")
    axes = fig.subplots(2, len(orders), squeeze=False, sharex="col")
    regimes = sorted(table["regime"].unique(),
                     key=lambda g: (_REGIME_ORDER.index(g) if g in _REGIME_ORDER else 9, g))
    finite = table[["median_risk", "q25_risk", "q75_risk"]].to_numpy(np.float64).ravel()
    finite = finite[np.isfinite(finite) & (finite > 0)]
    y_lo = max(float(finite.min()) / 3 if finite.size else 1e-8, 1e-16)
    y_hi = max(float(finite.max()) * 3 if finite.size else 10.0, 3.0)
    handles, labels = [], []
    for col, order in enumerate(orders):
        part = table[table["order"] == order]
        dims = sorted(part["dim"].unique())
        top, bottom = axes[0, col], axes[1, col]
        sizes = [sym_dim(int(d), int(order)) for d in dims]
        for j, size in enumerate(sizes):
            for ax in (top, bottom):
                ax.axvline(size, color="0.35", ls=_DIM_LINES[j % len(_DIM_LINES)], lw=0.9,
                           zorder=0)
        for k, regime in enumerate(regimes):
            colour, marker = _REGIME_STYLES.get(regime, PALETTE[k % len(PALETTE)])
            for j, dim in enumerate(dims):
                s = part[(part["regime"] == regime) & (part["dim"] == dim)].sort_values("n")
                if not s.empty:
                    _samples_series(top, bottom, s, colour, marker, j,
                                    _dodge(k, len(regimes), 0.04), y_lo, y_hi)
            name = str(part.loc[part["regime"] == regime, "algorithm"].iloc[0]) if (
                part["regime"] == regime).any() else regime
            label = regime.upper() if name == regime else f"{name} ({regime})"
            if label not in labels:
                handles.append(Line2D([], [], color=colour, marker=marker, ls="-"))
                labels.append(label)
        top.axhline(success_threshold ** 2, color="0.2", ls=(0, (5, 3)), lw=0.9, zorder=1)
        _samples_axes(top, bottom, part, order, dims, sizes, y_lo, y_hi)
    handles += [Line2D([], [], color="0.35", ls=_DIM_LINES[0], marker="o", mfc="0.35"),
                Line2D([], [], color="0.35", ls=_DIM_LINES[1], marker="o", mfc="white"),
                Line2D([], [], color="0.2", ls=(0, (5, 3)), lw=0.9)]
    labels += ["smaller d (solid)", "larger d (dashed)",
               f"success: risk ≤ {success_threshold ** 2:g}"]
    ranks = "/".join(map(str, sorted(table["rank"].unique())))
    widths = "/".join(map(str, sorted(table["width"].unique())))
    fig.suptitle(f"rank-{ranks} teacher, width m = {widths}, "
                 f"{_seed_text(table['seeds'].unique())}; vertical lines: C(d+l−1, l)")
    _legend_below(fig, handles, labels)
    return fig
