"""The lazy-threshold figure and its slope table (jaxtd.plots.threshold_table, local_slopes,
threshold_figure), on synthetic results whose critical widths are known."""

import math

import numpy as np
import pandas as pd
import pytest

from jaxtd import plots
from jaxtd.config import lazy_threshold

DIMS = {3: (4, 8, 16, 32), 4: (4, 8, 16)}
SHIFT = {(3, 16): 1}  # this case "measures" one more than the rule: measured != rule there


def _rule(d, l):
    """The exact rule written out independently of jaxtd: ceil(C(d+l-1, l) / d), one more at
    the Alexander-Hirschowitz case (l, d) = (4, 4) (the only one among DIMS)."""
    d, l = int(d), int(l)
    return -(-math.comb(d + l - 1, l) // d) + ((l, d) == (4, 4))


def _crit(d, l):
    return _rule(d, l) + SHIFT.get((l, d), 0)


def _rows(window_below=2, unbracketed=()):
    rows = []
    for l, dims in DIMS.items():
        for d in dims:
            m = _crit(d, l)
            lo = m if (l, d) in unbracketed else m - window_below
            for w in range(lo, m + 2):
                for seed in range(2):
                    rows.append(dict(algorithm="lazy", dim=d, order=l, rank=2, seed=seed,
                                     width=w, final_relative_error=np.nan, success=False,
                                     diverged=False,
                                     lazy_best_residual=0.0 if w >= m else 0.07))
    return pd.DataFrame(rows)


def test_rule_oracle_matches_jaxtd():
    for l, dims in DIMS.items():
        for d in dims:
            assert lazy_threshold(d, l) == _rule(d, l)


def test_local_slopes_measured_and_rule():
    table = plots.threshold_table(_rows(), 1e-3, lazy_threshold)
    assert list(table["critical"]) == [_crit(d, l) for l in DIMS for d in DIMS[l]]
    assert table["bracketed"].all()
    slopes = plots.local_slopes(table)
    assert len(slopes) == 3 + 2
    for row in slopes.itertuples():
        l, lo, hi = row.order, row.dim_lo, row.dim_hi
        assert row.measured == pytest.approx(math.log(_crit(hi, l) / _crit(lo, l)) / math.log(2))
        assert row.rule == pytest.approx(math.log(_rule(hi, l) / _rule(lo, l)) / math.log(2))
        assert row.asymptote == l - 1
    l3 = slopes[slopes["order"] == 3]
    # the rule's local slope rises towards l - 1 = 2 but stays below it
    assert list(l3["rule"]) == sorted(l3["rule"]) and l3["rule"].iloc[-1] < 2
    assert l3["rule"].iloc[-1] == pytest.approx(math.log(187 / 51) / math.log(2))  # 1.87


def test_unbracketed_case_gives_no_measured_slope():
    df = _rows(unbracketed=[(3, 32)])
    table = plots.threshold_table(df, 1e-3, lazy_threshold)
    row = table[(table["order"] == 3) & (table["dim"] == 32)].iloc[0]
    assert not row["bracketed"] and row["critical"] == _crit(32, 3)  # an upper bound only
    slopes = plots.local_slopes(table)
    last = slopes[(slopes["order"] == 3) & (slopes["dim_hi"] == 32)].iloc[0]
    assert math.isnan(last["measured"]) and np.isfinite(last["rule"])


def test_figure_is_written_and_reports_the_slopes(tmp_path):
    df = _rows()
    paths = plots.save_figures(df, tmp_path, plot="lazy-threshold", success_threshold=1e-3,
                               lazy_threshold=lazy_threshold)
    png = tmp_path / "lazy_threshold.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20000
    fig = plots.threshold_figure(df, 1e-3, lazy_threshold)
    ax_m, ax_s = fig.axes
    assert ax_m.get_xscale() == "log" and ax_m.get_yscale() == "log"
    labels = [t.get_text() for t in ax_s.get_legend().get_texts()]
    slopes = plots.local_slopes(plots.threshold_table(df, 1e-3, lazy_threshold))
    for l in (3, 4):
        last = slopes[slopes["order"] == l].iloc[-1]
        lo, hi = int(last["dim_lo"]), int(last["dim_hi"])
        assert f"measured, l={l}: {last['measured']:.2f} at d={lo}→{hi}" in labels
        assert f"rule, l={l}: {last['rule']:.2f}" in labels and f"l−1 = {l - 1}" in labels
    text = plots.format_threshold(df, 1e-3, lazy_threshold)
    assert "local slopes" in text and f"{slopes['rule'].iloc[-1]:.3f}" in text
