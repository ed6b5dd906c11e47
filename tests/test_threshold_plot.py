"""The lazy-threshold figure (jaxtd.plots.threshold_figure, format_threshold) on synthetic results
whose critical widths are known (its tables, jaxtd.stats.threshold_table and local_slopes, are
tested in tests/test_stats.py)."""

from jaxtd import plots
from jaxtd.config import lazy_threshold
from tests.tables import threshold_rows


def test_figure_is_written_and_reports_the_slopes(tmp_path):
    df = threshold_rows()
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
