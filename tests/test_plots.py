"""Figures and tables from a results DataFrame (jaxtd/plots.py), on synthetic tables."""

import math

import numpy as np
import pandas as pd
import pytest

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
