"""Statistics of a results table (jaxtd/stats.py) on synthetic tables whose answers are known:
success rates with Wilson intervals (against scipy and the closed form), quartiles with diverged
cells, critical widths of curves and of seeds, log-log slopes, the lazy-threshold table."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from jaxtd import plots, stats
from jaxtd.config import lazy_threshold
from tests.tables import (THRESHOLD_DIMS, results_table, threshold_critical, threshold_rows,
                          threshold_rule)


def test_statistics_load_no_matplotlib_and_plots_reexports_them():
    code = ("import sys, jaxtd.stats; "
            "assert not [m for m in sys.modules if m.startswith('matplotlib')]")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("curves", "critical_widths", "seed_critical_widths", "fit_slope",
                 "wilson_interval", "swept_hyperparameters", "threshold_table", "local_slopes",
                 "REQUIRED_COLUMNS"):
        assert getattr(plots, name) is getattr(stats, name), name


def test_untrained_lazy_rows_keep_integer_columns():
    df = results_table()
    df.loc[df["algorithm"] == "lazy", "final_relative_error"] = np.nan
    table = stats.curves(df[df["algorithm"] == "lazy"], 1e-2)
    assert list(table["method"].unique()) == ["lazy best"]
    assert table["width"].dtype.kind == "i" and table["dim"].dtype.kind == "i"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="algorithm"):
        stats.curves(pd.DataFrame({"width": [1]}), 1e-2)
    with pytest.raises(TypeError, match="df"):
        stats.curves([1, 2], 1e-2)
    with pytest.raises(TypeError, match="df"):
        stats.seed_critical_widths({"width": [1]}, 1e-2)


def test_curves_split_lazy_into_gd_and_best():
    df = results_table(widths=(2, 4, 8, 16, 32))
    table = stats.curves(df, 1e-2)
    assert list(table["method"].unique()) == ["lazy best", "lazy GD", "gd"]
    best = table[table["method"] == "lazy best"].set_index("width")
    assert best.loc[16, "success_rate"] == 1.0 and best.loc[8, "success_rate"] == 0.0
    gd = table[table["method"] == "gd"].set_index("width")
    assert gd.loc[2, "successes"] == 0 and gd.loc[4, "successes"] == 3 and gd.loc[4, "n"] == 3
    assert gd.loc[4, "median_error"] == pytest.approx(1e-4)


def test_diverged_cells_fail_and_count_as_inf():
    df = results_table()
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 16), "diverged"] = True
    gd = stats.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert gd.loc[16, "success_rate"] == 0.0 and math.isinf(gd.loc[16, "median_error"])


def test_critical_widths_and_slope_follow_the_rule():
    dims = (4, 6, 8, 10)
    df = results_table(dims=dims, widths=tuple(range(1, 25)), seeds=1)
    crit = stats.critical_widths(stats.curves(df, 1e-2))
    lazy = crit[crit["method"] == "lazy best"].set_index("dim")["critical_width"]
    assert [lazy[d] for d in dims] == [lazy_threshold(d, 3) for d in dims]
    gd = crit[crit["method"] == "gd"]
    assert set(gd["critical_width"]) == {4.0}
    slope, _ = stats.fit_slope(dims, [lazy[d] for d in dims])
    assert 1.2 < slope < 2.0
    assert stats.fit_slope([2, 4], [4, 16])[0] == pytest.approx(2.0)
    assert math.isnan(stats.fit_slope([3], [5])[0])


def test_critical_width_ignores_a_lucky_small_width():
    df = results_table(widths=(2, 4, 8))
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 2), "final_relative_error"] = 1e-5
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 4), "final_relative_error"] = 0.5
    crit = stats.critical_widths(stats.curves(df, 1e-2))
    assert crit.set_index("method").loc["gd", "critical_width"] == 8


# -- the Wilson interval ------------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 1), (0, 8), (1, 8), (3, 8), (8, 8), (5, 16), (0, 40),
                                 (17, 40), (40, 40)])
def test_wilson_interval_matches_scipy(k, n):
    low, high = stats.wilson_interval(k, n)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_wilson_interval_closed_form_and_score_equation():
    z = scipy_stats.norm.ppf(0.975)
    assert stats.Z95 == pytest.approx(z, rel=1e-15)
    # 0 successes: [0, z^2 / (n + z^2)]; n successes: [n / (n + z^2), 1]
    for n in (1, 4, 8, 100):
        low, high = stats.wilson_interval(0, n)
        assert low == pytest.approx(0.0, abs=1e-15)
        assert high == pytest.approx(z * z / (n + z * z), rel=1e-12)
        low, high = stats.wilson_interval(n, n)
        assert low == pytest.approx(n / (n + z * z), rel=1e-12) and high == 1.0
    # in between, both ends solve the score equation (p_hat - p)^2 = z^2 p (1 - p) / n
    k, n = np.array([1, 3, 7, 20]), np.array([8, 8, 9, 50])
    low, high = stats.wilson_interval(k, n)
    for p in (low, high):
        np.testing.assert_allclose((k / n - p) ** 2, z * z * p * (1 - p) / n, rtol=1e-10)
    assert np.all(low < k / n) and np.all(k / n < high)


def test_wilson_interval_edge_and_bad_input():
    low, high = stats.wilson_interval([0, 2], [0, 4])
    assert (low[0], high[0]) == (0.0, 1.0) and 0 < low[1] < 0.5 < high[1] < 1
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(5, 4)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(-1, 4)
    with pytest.raises(ValueError, match="z"):
        stats.wilson_interval(1, 4, z=0.0)


def test_curves_carry_the_spread():
    df = results_table(widths=(2, 4, 8, 16, 32), seeds=4)
    # spread GD's errors at width 8 over the seeds: 1e-4, 1e-3, 1e-2, 1e-1
    sel = (df["algorithm"] == "gd") & (df["width"] == 8)
    df.loc[sel, "final_relative_error"] = [1e-4, 1e-3, 1e-2, 1e-1]
    table = stats.curves(df, 1e-2)
    gd = table[table["method"] == "gd"].set_index("width")
    ref = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    assert gd.loc[8, "q25_error"] == pytest.approx(np.quantile(ref, 0.25))
    assert gd.loc[8, "q75_error"] == pytest.approx(np.quantile(ref, 0.75))
    assert gd.loc[8, "median_error"] == pytest.approx(np.median(ref))
    assert gd.loc[8, "successes"] == 3
    ci = scipy_stats.binomtest(3, 4).proportion_ci(method="wilson")
    assert gd.loc[8, "success_low"] == pytest.approx(ci.low)
    assert gd.loc[8, "success_high"] == pytest.approx(ci.high)
    best = table[table["method"] == "lazy best"].set_index("width")
    assert best.loc[32, "zeros"] == 4 and best.loc[2, "zeros"] == 0


def test_quartiles_keep_diverged_cells_infinite():
    df = results_table(seeds=4)
    sel = (df["algorithm"] == "gd") & (df["width"] == 16)
    df.loc[sel, "diverged"] = [True, True, True, False]
    gd = stats.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert math.isinf(gd.loc[16, "q75_error"]) and math.isinf(gd.loc[16, "median_error"])
    # [1e-4, inf, inf, inf]: the 25% quantile interpolates towards inf, so it is inf
    assert math.isinf(gd.loc[16, "q25_error"])
    df.loc[sel, "diverged"] = [True, False, False, False]
    gd = stats.curves(df, 1e-2).query("method == 'gd'").set_index("width")
    assert gd.loc[16, "q25_error"] == pytest.approx(1e-4) and gd.loc[16, "median_error"] == \
        pytest.approx(1e-4) and math.isinf(gd.loc[16, "q75_error"])


def test_seed_critical_widths_per_seed():
    df = results_table(widths=(2, 4, 8, 16), seeds=3)
    # seed 1 of gd needs width 8: it fails at 4
    df.loc[(df["algorithm"] == "gd") & (df["width"] == 4) & (df["seed"] == 1),
           "final_relative_error"] = 0.5
    crit = stats.seed_critical_widths(df, 1e-2)
    gd = crit[crit["method"] == "gd"].set_index("seed")["critical_width"]
    assert gd.to_dict() == {0: 4.0, 1: 8.0, 2: 4.0}
    lazy = crit[crit["method"] == "lazy GD"]
    assert lazy["critical_width"].isna().all() and (lazy["max_width"] == 16).all()


# -- the lazy-threshold table --------------------------------------------------------------------

def test_rule_oracle_matches_jaxtd():
    for l, dims in THRESHOLD_DIMS.items():
        for d in dims:
            assert lazy_threshold(d, l) == threshold_rule(d, l)


def test_local_slopes_measured_and_rule():
    table = stats.threshold_table(threshold_rows(), 1e-3, lazy_threshold)
    assert list(table["critical"]) == [threshold_critical(d, l)
                                       for l in THRESHOLD_DIMS for d in THRESHOLD_DIMS[l]]
    assert table["bracketed"].all()
    slopes = stats.local_slopes(table)
    assert len(slopes) == 3 + 2
    for row in slopes.itertuples():
        l, lo, hi = row.order, row.dim_lo, row.dim_hi
        measured = threshold_critical(hi, l) / threshold_critical(lo, l)
        assert row.measured == pytest.approx(math.log(measured) / math.log(2))
        rule = threshold_rule(hi, l) / threshold_rule(lo, l)
        assert row.rule == pytest.approx(math.log(rule) / math.log(2))
        assert row.asymptote == l - 1
    l3 = slopes[slopes["order"] == 3]
    # the rule's local slope rises towards l - 1 = 2 but stays below it
    assert list(l3["rule"]) == sorted(l3["rule"]) and l3["rule"].iloc[-1] < 2
    assert l3["rule"].iloc[-1] == pytest.approx(math.log(187 / 51) / math.log(2))  # 1.87


def test_unbracketed_case_gives_no_measured_slope():
    df = threshold_rows(unbracketed=[(3, 32)])
    table = stats.threshold_table(df, 1e-3, lazy_threshold)
    row = table[(table["order"] == 3) & (table["dim"] == 32)].iloc[0]
    # an upper bound only
    assert not row["bracketed"] and row["critical"] == threshold_critical(32, 3)
    slopes = stats.local_slopes(table)
    last = slopes[(slopes["order"] == 3) & (slopes["dim_hi"] == 32)].iloc[0]
    assert math.isnan(last["measured"]) and np.isfinite(last["rule"])
