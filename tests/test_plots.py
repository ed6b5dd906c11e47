"""Figures and tables from a results DataFrame (jaxtd/plots.py), on synthetic tables.

The figure tests assert what a reader needs: real, distinct tick labels and no offset text on
every axis, one colour and marker per series, a band (PolyCollection) for the seeds' spread,
exact zeros on their own labelled row, threshold labels inside the figure, a reference slope
anchored at the first point.
"""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from jaxtd import plots
from jaxtd.config import lazy_threshold


def _table(dims=(8,), orders=(3,), widths=(2, 4, 8, 16), seeds=3):
    """GD succeeds from width 4 on; lazy's best residual vanishes from the lazy threshold on."""
    rows = []
    for order in orders:
        for dim in dims:
            m_star = lazy_threshold(dim, order)
            for width in widths:
                for seed in range(seeds):
                    gd_err = 1e-4 if width >= 4 else 0.5
                    rows.append(dict(algorithm="gd", dim=dim, order=order, rank=2, seed=seed,
                                     width=width, final_relative_error=gd_err,
                                     success=gd_err <= 1e-2, diverged=False,
                                     lazy_best_residual=np.nan))
                    best = 0.0 if width >= m_star else 0.3
                    rows.append(dict(algorithm="lazy", dim=dim, order=order, rank=2, seed=seed,
                                     width=width, final_relative_error=best + 0.1,
                                     success=False, diverged=False, lazy_best_residual=best))
    return pd.DataFrame(rows)


def test_curves_split_lazy_into_gd_and_best():
    df = _table(widths=(2, 4, 8, 16, 32))
    table = plots.curves(df, 1e-2)
    assert list(table["method"].unique()) == ["lazy best", "lazy GD", "gd"]
    best = table[table["method"] == "lazy best"].set_index("width")
    assert best.loc[16, "success_rate"] == 1.0 and best.loc[8, "success_rate"] == 0.0
    gd = table[table["method"] == "gd"].set_index("width")
    assert gd.loc[2, "successes"] == 0 and gd.loc[4, "successes"] == 3 and gd.loc[4, "n"] == 3
    assert gd.loc[4, "median_error"] == pytest.approx(1e-4)


def test_untrained_lazy_rows_keep_integer_columns():
    df = _table()
    df.loc[df["algorithm"] == "lazy", "final_relative_error"] = np.nan
    df = df[df["algorithm"] == "lazy"]
    table = plots.curves(df, 1e-2)
    assert list(table["method"].unique()) == ["lazy best"]
    assert table["width"].dtype.kind == "i" and table["dim"].dtype.kind == "i"
    assert "1.0" not in plots.format_table(df, 1e-2)


def test_diverged_cells_fail_and_count_as_inf():
    df = _table()
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 16), "diverged"] = True
    gd = plots.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert gd.loc[16, "success_rate"] == 0.0 and math.isinf(gd.loc[16, "median_error"])


def test_critical_widths_and_slope_follow_the_rule():
    dims = (4, 6, 8, 10)
    df = _table(dims=dims, widths=tuple(range(1, 25)), seeds=1)
    crit = plots.critical_widths(plots.curves(df, 1e-2))
    lazy = crit[crit["method"] == "lazy best"].set_index("dim")["critical_width"]
    assert [lazy[d] for d in dims] == [lazy_threshold(d, 3) for d in dims]
    gd = crit[crit["method"] == "gd"]
    assert set(gd["critical_width"]) == {4.0}
    slope, _ = plots.fit_slope(dims, [lazy[d] for d in dims])
    assert 1.2 < slope < 2.0
    assert plots.fit_slope([2, 4], [4, 16])[0] == pytest.approx(2.0)
    assert math.isnan(plots.fit_slope([3], [5])[0])


def test_critical_width_ignores_a_lucky_small_width():
    df = _table(widths=(2, 4, 8))
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 2), "final_relative_error"] = 1e-5
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 4), "final_relative_error"] = 0.5
    crit = plots.critical_widths(plots.curves(df, 1e-2))
    assert crit.set_index("method").loc["gd", "critical_width"] == 8


def test_format_table_shows_counts_and_threshold():
    text = plots.format_table(_table(), 1e-2, lazy_threshold)
    assert "l=3 d=8 r=2" in text and "lazy threshold m = 15" in text
    gd_line = [ln for ln in text.splitlines() if ln.strip().startswith("gd")][0]
    assert gd_line.split()[1:] == ["0/3", "3/3", "3/3", "3/3"]


@pytest.mark.parametrize("plot,name", [("width", None), ("lazy-threshold", "lazy_threshold.png"),
                                       ("beyond-lazy", "beyond_lazy.png"),
                                       ("width-vs-rank", "width_vs_rank.png")])
def test_save_figures_writes_pngs(tmp_path, plot, name):
    df = _table(dims=(4, 6), orders=(3, 4), widths=(2, 4, 8, 16, 32))
    paths = plots.save_figures(df, tmp_path, plot=plot, success_threshold=1e-2,
                               lazy_threshold=lazy_threshold)
    names = {p.name for p in paths}
    assert "success_vs_width.png" in names and (name is None or name in names)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_deflation_figure_from_histories(tmp_path):
    df = _table(widths=(8,), seeds=2)
    n, records = len(df), 20
    steps = np.tile(np.arange(records) * 10, (n, 1))
    fitted = np.tile(np.linspace(0, 1, records)[None, :, None], (n, 1, 2))
    paths = plots.save_figures(df, tmp_path, plot="deflation", success_threshold=1e-2,
                               histories={"fitted_weight": fitted, "step": steps},
                               true_weights=[1.0, 0.5])
    assert {p.name for p in paths} == {"success_vs_width.png", "deflation.png"}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="algorithm"):
        plots.curves(pd.DataFrame({"width": [1]}), 1e-2)
    with pytest.raises(TypeError, match="df"):
        plots.curves([1, 2], 1e-2)
    with pytest.raises(ValueError, match="plot"):
        plots.save_figures(_table(), ".", plot="pie", success_threshold=1e-2)


# -- the Wilson interval ------------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 1), (0, 8), (1, 8), (3, 8), (8, 8), (5, 16), (0, 40),
                                 (17, 40), (40, 40)])
def test_wilson_interval_matches_scipy(k, n):
    low, high = plots.wilson_interval(k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_wilson_interval_closed_form_and_score_equation():
    z = stats.norm.ppf(0.975)
    assert plots.Z95 == pytest.approx(z, rel=1e-15)
    # 0 successes: [0, z^2 / (n + z^2)]; n successes: [n / (n + z^2), 1]
    for n in (1, 4, 8, 100):
        low, high = plots.wilson_interval(0, n)
        assert low == pytest.approx(0.0, abs=1e-15)
        assert high == pytest.approx(z * z / (n + z * z), rel=1e-12)
        low, high = plots.wilson_interval(n, n)
        assert low == pytest.approx(n / (n + z * z), rel=1e-12) and high == 1.0
    # in between, both ends solve the score equation (p_hat - p)^2 = z^2 p (1 - p) / n
    k, n = np.array([1, 3, 7, 20]), np.array([8, 8, 9, 50])
    low, high = plots.wilson_interval(k, n)
    for p in (low, high):
        np.testing.assert_allclose((k / n - p) ** 2, z * z * p * (1 - p) / n, rtol=1e-10)
    assert np.all(low < k / n) and np.all(k / n < high)


def test_wilson_interval_edge_and_bad_input():
    low, high = plots.wilson_interval([0, 2], [0, 4])
    assert (low[0], high[0]) == (0.0, 1.0) and 0 < low[1] < 0.5 < high[1] < 1
    with pytest.raises(ValueError, match="successes"):
        plots.wilson_interval(5, 4)
    with pytest.raises(ValueError, match="successes"):
        plots.wilson_interval(-1, 4)
    with pytest.raises(ValueError, match="z"):
        plots.wilson_interval(1, 4, z=0.0)


def test_curves_carry_the_spread():
    df = _table(widths=(2, 4, 8, 16, 32), seeds=4)
    # spread GD's errors at width 8 over the seeds: 1e-4, 1e-3, 1e-2, 1e-1
    sel = (df["algorithm"] == "gd") & (df["width"] == 8)
    df.loc[sel, "final_relative_error"] = [1e-4, 1e-3, 1e-2, 1e-1]
    table = plots.curves(df, 1e-2)
    gd = table[table["method"] == "gd"].set_index("width")
    ref = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    assert gd.loc[8, "q25_error"] == pytest.approx(np.quantile(ref, 0.25))
    assert gd.loc[8, "q75_error"] == pytest.approx(np.quantile(ref, 0.75))
    assert gd.loc[8, "median_error"] == pytest.approx(np.median(ref))
    assert gd.loc[8, "successes"] == 3
    ci = stats.binomtest(3, 4).proportion_ci(method="wilson")
    assert gd.loc[8, "success_low"] == pytest.approx(ci.low)
    assert gd.loc[8, "success_high"] == pytest.approx(ci.high)
    best = table[table["method"] == "lazy best"].set_index("width")
    assert best.loc[32, "zeros"] == 4 and best.loc[2, "zeros"] == 0


def test_quartiles_keep_diverged_cells_infinite():
    df = _table(seeds=4)
    sel = (df["algorithm"] == "gd") & (df["width"] == 16)
    df.loc[sel, "diverged"] = [True, True, True, False]
    gd = plots.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert math.isinf(gd.loc[16, "q75_error"]) and math.isinf(gd.loc[16, "median_error"])
    # [1e-4, inf, inf, inf]: the 25% quantile interpolates towards inf, so it is inf
    assert math.isinf(gd.loc[16, "q25_error"])
    df.loc[sel, "diverged"] = [True, False, False, False]
    gd = plots.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert gd.loc[16, "q25_error"] == pytest.approx(1e-4) and gd.loc[16, "median_error"] == \
        pytest.approx(1e-4) and math.isinf(gd.loc[16, "q75_error"])


def test_seed_critical_widths_per_seed():
    df = _table(widths=(2, 4, 8, 16), seeds=3)
    # seed 1 of gd needs width 8: it fails at 4
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 4) & (df["seed"] == 1),
           "final_relative_error"] = 0.5
    crit = plots.seed_critical_widths(df, 1e-2)
    gd = crit[crit["method"] == "gd"].set_index("seed")["critical_width"]
    assert gd.to_dict() == {0: 4.0, 1: 8.0, 2: 4.0}
    lazy = crit[crit["method"] == "lazy GD"]
    assert lazy["critical_width"].isna().all() and (lazy["max_width"] == 16).all()


# -- figure properties --------------------------------------------------------------------------

def _visible_labels(axis):
    lo, hi = sorted(axis.get_view_interval())
    locs = axis.get_majorticklocs()
    labels = [t.get_text() for t in axis.get_majorticklabels()]
    return [lab for loc, lab in zip(locs, labels) if lo <= loc <= hi]


def _assert_readable(fig):
    fig.draw_without_rendering()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = _visible_labels(axis)
            assert len(labels) >= 2, (ax.get_title(), labels)
            assert all(lab.strip() for lab in labels), (ax.get_title(), labels)
            assert len(set(labels)) == len(labels), (ax.get_title(), labels)
            assert axis.get_offset_text().get_text() == "", ax.get_title()
        assert ax.get_xlabel() and ax.get_ylabel()
    title = fig.get_suptitle() or " ".join(ax.get_title() for ax in fig.axes)
    assert title.strip()


def _inside(fig, artist):
    renderer = fig.canvas.get_renderer()
    box, frame = artist.get_window_extent(renderer), fig.bbox
    return (box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1
            and box.y1 <= frame.y1 + 1)


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " ")
            and len(ln.get_xdata()) > 1]


def test_width_figure_is_readable_and_shows_the_spread():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    df = _table(dims=(8,), widths=(2, 3, 4, 6, 8, 12, 16, 24, 32), seeds=4)
    fig = plots.width_figure(df, 1e-2, lazy_threshold)
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    ax_s, ax_e = fig.axes
    for ax in (ax_s, ax_e):
        lines = _data_lines(ax)
        styles = {(ln.get_color(), ln.get_marker()) for ln in lines}
        assert len({c for c, _ in styles}) >= 3 and len({m for _, m in styles}) >= 3
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) >= 3  # one band each
        assert ax.get_xscale() == "log"
    # success band = the Wilson interval of the gd series at width 2 (0 of 4 successes)
    gd_band = [c for c in ax_s.collections if isinstance(c, PolyCollection)][2]
    ys = gd_band.get_paths()[0].vertices[:, 1]
    high = float(plots.wilson_interval(0, 4)[1])
    assert 0.48 < high < 0.5 and np.any(np.isclose(ys, high, atol=1e-12))
    assert np.any(np.isclose(ys, float(plots.wilson_interval(4, 4)[0]), atol=1e-12))
    # exact zeros (lazy best from m* = 15 on: widths 16, 24, 32) sit on a row labelled "0",
    # below every decade
    labels = _visible_labels(ax_e.yaxis)
    assert labels[0] == "0" and "$10^{-2}$" in labels
    zero_row = ax_e.get_yticks()[0]
    best = [ln for ln in ax_e.get_lines() if ln.get_label().startswith("lazy best")][0]
    ys = np.asarray(best.get_ydata())
    assert np.sum(ys == zero_row) == 3 and np.all(ys[ys != zero_row] > 10 * zero_row)
    assert any(t.get_text() == "exactly 0" for t in ax_e.texts)
    # the lazy threshold is labelled, and every label is inside the figure
    fig.draw_without_rendering()
    thr = [t for t in ax_s.texts if "lazy threshold" in t.get_text()]
    assert thr and "15" in thr[0].get_text() and all(_inside(fig, t) for t in ax_s.texts)
    assert fig.legends and _inside(fig, fig.legends[0])
    assert "seeds" in fig.get_suptitle()


def test_error_axis_marks_diverged_cells():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    df = _table(widths=(2, 4, 8), seeds=2)
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 8), "diverged"] = True
    fig = plots.width_figure(df, 1e-2)
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    labels = _visible_labels(fig.axes[1].yaxis)
    assert labels[-1] == "inf" and any(t.get_text() == "diverged" for t in fig.axes[1].texts)


def test_critical_figure_per_order_series_are_distinct():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    df = _table(dims=(4, 5, 6, 7, 8), orders=(3, 4), widths=tuple(range(1, 50)), seeds=2)
    fig = plots.critical_figure(df, 1e-2, x="dim", methods=["lazy best"],
                                theory=lambda d, l: lazy_threshold(int(d), l),
                                theory_label="rule")
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    ax = fig.axes[0]
    lines = _data_lines(ax)
    assert len(lines) == 2
    assert len({ln.get_color() for ln in lines}) == 2 and len({ln.get_marker() for ln in lines}) == 2
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("l=3: slope" in t for t in legend) and any("l=4: slope" in t for t in legend)
    assert sum("rule" in t for t in legend) == 2


def test_width_vs_rank_draws_the_theory_as_a_slope_through_the_first_point():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    rows = []
    for rank in (1, 2, 3, 4, 6):
        for seed in range(3):
            for width in (1, 2, 3, 4, 6, 8, 12, 16, 24):
                err = 1e-4 if width >= 2 * rank + seed % 2 else 0.5
                rows.append(dict(algorithm="gd", dim=16, order=3, rank=rank, seed=seed,
                                 width=width, final_relative_error=err, success=err < 1e-2,
                                 diverged=False))
    df = pd.DataFrame(rows)
    fig = plots.critical_figure(df, 1e-2, x="rank", theory=lambda r, l: r ** (2.5 * l),
                                theory_label="theory", theory_mode="slope")
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    ax = fig.axes[0]
    (data,) = _data_lines(ax)
    theory = [ln for ln in ax.get_lines() if ln.get_label().startswith("theory")][0]
    tx, ty = np.asarray(theory.get_xdata()), np.asarray(theory.get_ydata())
    assert tx[0] == data.get_xdata()[0] and ty[0] == pytest.approx(data.get_ydata()[0])
    slope = np.polyfit(np.log(tx), np.log(ty), 1)[0]
    assert slope == pytest.approx(7.5)
    # the axes are scaled to the data, not to the theory's r^7.5 (which leaves the top)
    assert ax.get_ylim()[1] < 100 and ty.max() > 1e4
    measured = plots.fit_slope(data.get_xdata(), data.get_ydata())[0]
    assert 0.5 < measured < 1.5
    assert f"slope {measured:.2f}" in data.get_label()


def test_deflation_figure_median_and_band_over_seeds():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    df = _table(widths=(8,), seeds=3)
    df = df[df["algorithm"] == "gd"].reset_index(drop=True)
    records = 30
    steps = np.tile(np.arange(records) * 10, (len(df), 1))
    scale = np.array([0.8, 1.0, 1.3])[:, None, None]
    fitted = scale * np.tile(np.linspace(0, 1, records)[None, :, None], (1, 1, 2)) * \
        np.array([1.0, 0.5])
    fig = plots.deflation_figure(df, fitted, steps, true_weights=[1.0, 0.5])
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    ax = fig.axes[0]
    lines = _data_lines(ax)
    assert len(lines) == 2 and len({ln.get_color() for ln in lines}) == 2
    assert len({ln.get_marker() for ln in lines}) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), np.median(fitted[:, 1:, 0], axis=0))
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    with pytest.raises(ValueError, match="fitted_weight"):
        plots.deflation_figure(df, fitted[:, :, 0], steps)
