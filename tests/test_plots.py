"""Figures and tables from a results DataFrame (jaxtd/plots.py), on synthetic tables (the
statistics they draw are tested in tests/test_stats.py).

The figure tests assert what a reader needs: real, distinct tick labels and no offset text on
every axis, one colour and marker per series, a band (PolyCollection) for the seeds' spread,
exact zeros on their own labelled row, threshold labels inside the figure, a reference slope
anchored at the first point.
"""


import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from jaxtd import plots
from jaxtd.config import lazy_threshold
from tests.tables import results_table as _table
from tests.tables import swept_table as _swept


def test_untrained_lazy_rows_print_integer_widths():
    df = _table()
    df.loc[df["algorithm"] == "lazy", "final_relative_error"] = np.nan
    assert "1.0" not in plots.format_table(df[df["algorithm"] == "lazy"], 1e-2)


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
                               lazy_threshold=lazy_threshold, dpi=60)
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
                               true_weights=[1.0, 0.5], dpi=60)
    # one width: no success-vs-width figure (a curve of one point), the per-method one instead
    assert {p.name for p in paths} == {"success_by_method.png", "deflation.png"}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="algorithm"):
        plots.width_figure(pd.DataFrame({"width": [1]}), 1e-2)
    with pytest.raises(ValueError, match="plot"):
        plots.save_figures(_table(), ".", plot="pie", success_threshold=1e-2)


# -- the Wilson interval ------------------------------------------------------------------------

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


def _top_labels(ax):
    """The tick labels of the axes' secondary top axis (the threshold's name)."""
    return [t.get_text() for child in ax.child_axes
            for t in child.xaxis.get_majorticklabels() if t.get_text()]


def _overlaps(artist, ax):
    """Whether ``artist``'s box overlaps the data area of ``ax``."""
    a, b = artist.get_window_extent(), ax.get_window_extent()
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


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
    # the lazy threshold is named on the top edge (outside the data), every label is inside
    # the figure, and the legend is under the panels, over none of them
    fig.draw_without_rendering()
    assert _top_labels(ax_s) == ["m*=15"] and _top_labels(ax_e) == ["m*=15"]
    assert all(_inside(fig, t) for ax in (ax_s, ax_e) for t in ax.texts)
    assert fig.legends and _inside(fig, fig.legends[0])
    assert not any(_overlaps(fig.legends[0], ax) for ax in fig.axes)
    assert any("lazy threshold" in t.get_text() for t in fig.legends[0].get_texts())
    assert all("seeds)" in t.get_text() for t in fig.legends[0].get_texts()[:3])


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
    assert any("l=3 (2 seeds): slope" in t for t in legend)
    assert any("l=4 (2 seeds): slope" in t for t in legend)
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
    ax, ax_theory = fig.axes
    (data,) = _data_lines(ax)
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("theory")]
    theory = [ln for ln in ax_theory.get_lines() if ln.get_label().startswith("theory")][0]
    tx, ty = np.asarray(theory.get_xdata()), np.asarray(theory.get_ydata())
    x0, y0 = data.get_xdata()[0], data.get_ydata()[0]
    assert ty[np.argmin(abs(tx - x0))] == pytest.approx(y0)
    slope = np.polyfit(np.log(tx), np.log(ty), 1)[0]
    assert slope == pytest.approx(7.5)
    # the left axes are scaled to the data; the right one shows r^7.5 over every plotted rank
    assert ax.get_ylim()[1] < 100
    (y_lo, y_hi), (x_lo, x_hi) = ax_theory.get_ylim(), ax_theory.get_xlim()
    assert tx.min() == pytest.approx(1) and tx.max() == pytest.approx(6)
    assert np.all((ty >= y_lo) & (ty <= y_hi)) and np.all((tx >= x_lo) & (tx <= x_hi))
    assert ty.max() == pytest.approx(y0 * 6 ** 7.5)
    # the legend is under the axes, at most as wide as the figure's page
    fig.draw_without_rendering()
    legend = fig.legends[0]
    assert not _overlaps(legend, ax) and not _overlaps(legend, ax_theory)
    assert legend.get_window_extent().width < 0.9 * fig.bbox.width
    measured = plots.fit_slope(data.get_xdata(), data.get_ydata())[0]
    assert 0.5 < measured < 1.5
    assert f"slope {measured:.2f}" in data.get_label()
    # no seed succeeds (a --quick run): lower bounds only, no empty series in the legend, two
    # labelled ticks on a flat axis, and the theory still drawn (through the first lower bound)
    fig = plots.critical_figure(df.assign(success=False, final_relative_error=0.5), 1e-2,
                                x="rank", theory=lambda r, l: r ** (2.5 * l),
                                theory_label="theory", theory_mode="slope")
    FigureCanvasAgg(fig)
    _assert_readable(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["gd, l=3: > largest width",
                      "theory, l=3: slope 7.50 (through the first lower bound)"]


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


# -- journal figures: formats, intervals, swept hyper-parameters --------------------------------

def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_formats_are_written_with_their_headers_and_text_as_text(tmp_path):
    df = _table(widths=(2, 4, 8), seeds=2)
    paths = plots.save_figures(df, tmp_path, plot="width", success_threshold=1e-2,
                               formats="png,pdf,svg", dpi=50)
    assert [p.name for p in paths] == ["success_vs_width.png", "success_vs_width.pdf",
                                       "success_vs_width.svg"]
    png, pdf, svg = (p.read_bytes() for p in paths)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # IHDR: the width in pixels is the page width at the dpi asked for
    assert int.from_bytes(png[16:20], "big") == round(plots.PAGE_WIDTH * 50)
    # TrueType (type 42) fonts embedded (FontFile2), not glyphs drawn as Type 3 procedures
    assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf and b"/Type3" not in pdf
    assert b"<svg" in svg[:500] and b"<text" in svg and b"success rate" in svg
    assert not plots.save_figures(df, tmp_path, plot="width", success_threshold=1e-2,
                                  formats=["SVG"], dpi=50)[0].name.endswith(".png")
    for bad in ("png,jpg", "", ["tiff"], 3):
        with pytest.raises(ValueError, match="formats must name some of png, pdf, svg"):
            plots.save_figures(df, tmp_path, plot="width", success_threshold=1e-2, formats=bad)
    with pytest.raises(ValueError, match="dpi"):
        plots.save_figures(df, tmp_path, plot="width", success_threshold=1e-2, dpi=0)


def test_cli_format_reaches_the_figures(tmp_path):
    from jaxtd import cli, config as cfg
    from jaxtd.results import Results
    args = cli.build_parser().parse_args(["show", "x", "--format", "pdf,svg", "--dpi", "72"])
    assert args.format == ("pdf", "svg") and args.dpi == 72
    assert cli.build_parser().parse_args(["run", "--quick"]).format == ("png",)
    with pytest.raises(SystemExit) as err:
        cli.build_parser().parse_args(["run", "--format", "gif"])
    assert err.value.code == cli.EXIT_USAGE
    results = Results(rows=_table(widths=(2, 4), seeds=2), histories={})
    paths = cli.write_outputs(results, cfg.preset("headline"), tmp_path, ("svg",))
    assert (tmp_path / "success_vs_width.svg").is_file() and not list(tmp_path.glob("*.png"))
    assert tmp_path / "success_vs_width.svg" in paths


def test_success_bands_are_the_wilson_interval(tmp_path):
    """The band's bounds are the Wilson score interval, computed here by scipy (independent)."""
    df = _swept(seeds=5)
    fig = plots.width_figure(df, 1e-2)
    ax_s = fig.axes[0]
    table = plots.curves(df, 1e-2)
    for band, lr in zip(_bands(ax_s), (0.05, 0.1)):
        sel = table[table["setting"] == f"learning_rate={lr:g}"].sort_values("width")
        verts = band.get_paths()[0].vertices
        for k, n in zip(sel["successes"], sel["n"]):
            ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
            assert np.any(np.isclose(verts[:, 1], ci.low, atol=1e-9)), (lr, k, n)
            assert np.any(np.isclose(verts[:, 1], ci.high, atol=1e-9)), (lr, k, n)
    # the one-width figure draws the same interval as error bars
    one = df[df["width"] == 4]
    fig = plots.method_figure(one, 1e-2)
    caps = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "_"]
    got = sorted(float(y) for ln in caps for y in ln.get_ydata())
    sel = plots.curves(one, 1e-2)
    want = sorted(v for k, n in zip(sel["successes"], sel["n"])
                  for v in stats.binomtest(int(k), int(n)).proportion_ci(method="wilson"))
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_a_single_seed_series_says_so_and_has_no_band():
    df = _table(widths=(2, 4, 8, 16), seeds=3)
    df = df[(df["algorithm"] == "gd") | (df["seed"] == 0)]   # lazy on one seed, as the headline
    fig = plots.width_figure(df, 1e-2, lazy_threshold)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "lazy best (1 seed, no interval)" in labels and "lazy GD (1 seed, no interval)" in labels
    assert "gd (3 seeds)" in labels
    for ax in fig.axes:
        assert len(_bands(ax)) == 1   # gd's only
    per_order = _table(dims=(4, 5, 6), widths=tuple(range(1, 30)), seeds=1)
    fig = plots.critical_figure(per_order, 1e-2, methods=["lazy best"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("(1 seed, no interval)" in t for t in legend) and not _bands(fig.axes[0])


def test_swept_hyperparameters_split_every_series_and_table():
    df = _swept(seeds=4)
    assert plots.swept_hyperparameters(df) == {"gd": ["learning_rate"]}
    table = plots.curves(df, 1e-2)
    assert set(table["setting"]) == {"learning_rate=0.05", "learning_rate=0.1"}
    # counts per value, against a direct count of the rows
    for (lr, width), g in df.groupby(["learning_rate", "width"]):
        row = table[(table["setting"] == f"learning_rate={lr:g}") & (table["width"] == width)]
        assert int(row["successes"].iloc[0]) == int(g["success"].sum())
        assert int(row["n"].iloc[0]) == len(g)
    fig = plots.width_figure(df, 1e-2)
    lines = _data_lines(fig.axes[0])
    assert sorted(ln.get_label() for ln in lines) == ["gd (learning_rate=0.05, 4 seeds)",
                                                      "gd (learning_rate=0.1, 4 seeds)"]
    assert len({(ln.get_color(), ln.get_marker()) for ln in lines}) == 2
    text = plots.format_table(df, 1e-2)
    rows = {ln.split()[1]: ln.split()[2:] for ln in text.splitlines()
            if ln.strip().startswith("gd ") and "/" in ln}
    assert rows == {"learning_rate=0.05": ["0/4", "1/4", "4/4"],
                    "learning_rate=0.1": ["0/4", "4/4", "4/4"]}
    crit = plots.critical_widths(table).set_index("setting")["critical_width"]
    assert crit["learning_rate=0.05"] == 8 and crit["learning_rate=0.1"] == 4
    fig = plots.critical_figure(pd.concat([df, df.assign(dim=12)]), 1e-2, x="dim")
    labels = sorted(ln.get_label() for ln in _data_lines(fig.axes[0]))
    assert labels == ["gd, l=3 (learning_rate=0.05, 4 seeds): slope 0.00",
                      "gd, l=3 (learning_rate=0.1, 4 seeds): slope 0.00"]
    # a lazy table that sweeps a hyper-parameter cannot go into the pooled threshold table
    lazy = _table(widths=(2, 4, 8, 16, 32), seeds=2)
    lazy = pd.concat([lazy.assign(init="standard"), lazy.assign(init="antisymmetric")])
    with pytest.raises(ValueError, match="sweep hyper-parameters"):
        plots.threshold_table(lazy, 1e-2, lazy_threshold)


def test_no_width_figure_for_one_width():
    df = _table(widths=(8,), seeds=3)
    with pytest.raises(ValueError, match="single width.*method_figure"):
        plots.width_figure(df, 1e-2)
    fig = plots.method_figure(df, 1e-2)
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(names) == 3 and all("m=8" in n for n in names)


def _all_figures():
    df = _table(dims=(4, 6), widths=(2, 4, 8, 16, 32), seeds=2)
    records = 12
    steps = np.tile(np.geomspace(1, 1000, records), (len(df), 1))
    fitted = np.tile(np.linspace(0, 1, records)[None, :, None], (len(df), 1, 2))
    return {"width": plots.width_figure(df, 1e-2, lazy_threshold),
            "method": plots.method_figure(df[df["width"] == 4], 1e-2),
            "critical": plots.critical_figure(df, 1e-2),
            "threshold": plots.threshold_figure(df, 1e-2, lazy_threshold),
            "deflation": plots.deflation_figure(df, fitted, steps, [1.0, 0.5])}


def test_figures_fit_the_page_with_readable_text():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text
    for name, fig in _all_figures().items():
        FigureCanvasAgg(fig)
        assert fig.get_figwidth() <= plots.PAGE_WIDTH + 1e-9, name
        fig.draw_without_rendering()
        sizes = [t.get_fontsize() for t in fig.findobj(Text)
                 if t.get_visible() and t.get_text().strip()]
        assert sizes and min(sizes) >= 7, (name, min(sizes))
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert all(_inside(fig, t) for t in texts), (name, [t.get_text() for t in texts
                                                           if not _inside(fig, t)])
        for ax in fig.axes:   # no figure-level legend over a panel
            assert not any(_overlaps(leg, ax) for leg in fig.legends), name


def test_deflation_figure_orders_fit_times_by_weight():
    df = _table(widths=(8,), seeds=3)
    df = df[df["algorithm"] == "gd"].reset_index(drop=True)
    weights = [1.0, 0.5, 0.25]
    fit = np.array([[100, 300, 900], [120, 310, -1], [110, 290, 1000]])
    df = df.assign(**{f"fit_time_{j}": fit[:, j] for j in range(3)})
    steps = np.tile(np.arange(1, 11) * 100, (3, 1))
    fitted = np.zeros((3, 10, 3))
    fig = plots.deflation_figure(df, fitted, steps, weights)
    ax = [a for a in fig.axes if a.get_ylabel() == "fit step"][0]
    (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3
               and ln.get_linestyle() == "-"]
    # medians over the seeds that fit it (never = -1 left out), largest weight first
    np.testing.assert_allclose(line.get_ydata(), [110, 300, 950])
    assert np.all(np.diff(line.get_ydata()) > 0)


def test_init_scale_figure_splits_another_swept_setting_at_page_width():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text
    rows = []
    for lr in (0.05, 0.1):
        for width in (4, 8):
            for seed in range(2):
                for d in np.geomspace(0.1, 10, 5):
                    u = np.log(d)
                    rows.append(dict(algorithm="gd", order=3, dim=6, rank=2, seed=seed,
                                     width=width, init_scale=d, learning_rate=lr,
                                     success=False, diverged=False, distance=1 / d,
                                     final_relative_error=1e-4 + 0.8 / (1 + np.exp(-4 * u)),
                                     d_error_d_log_init_scale=1.0 - u * u))
    fig = plots.init_scale_figure(pd.DataFrame(rows), 1e-2)
    FigureCanvasAgg(fig)
    titles = sorted(sub.get_suptitle() for sub in fig.subfigs)
    assert titles == ["gd (learning_rate=0.05, 2 seeds): l=3 d=6 r=2",
                      "gd (learning_rate=0.1, 2 seeds): l=3 d=6 r=2"]
    assert fig.get_figwidth() <= plots.PAGE_WIDTH
    fig.draw_without_rendering()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 7 and all(_inside(fig, t) for t in texts)
    for sub in fig.subfigs:   # δ* per block, in its legend (the parabola's vertex: δ = 1)
        legend = [t.get_text() for t in sub.legends[0].get_texts()]
        assert "m=4: δ* = 1" in legend and "m=8: δ* = 1" in legend
