"""The phase-diagram preset (`jaxtd run --preset phase-diagram --quick`): the contract CSVs, the
lazy thresholds and their exact check, critical widths recomputed from the probed runs, the
figures, --dry-run and the [phase] table's validation."""

import math

import numpy as np
import pandas as pd
import pytest

from jaxtd import cli
from jaxtd import config as cfg
from jaxtd import phase

CRIT = ["algorithm", "order", "dim", "rank", "kind", "weights", "critical_width", "ci_low",
        "ci_high", "seeds"]
EXPO = ["algorithm", "order", "variable", "exponent", "ci_low", "ci_high", "fitted_range"]


def lazy_m_star(d: int, order: int = 3) -> int:
    """ceil(C(d+l-1, l) / d), written out (independent of jaxtd.lazy)."""
    return -(-math.comb(d + order - 1, order) // d)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "run"
    assert cli.main(["run", "--preset", "phase-diagram", "--quick", "--out", str(out)]) == 0
    return out


def test_csvs_have_exactly_the_contract_columns(quick_run):
    crit = pd.read_csv(quick_run / "critical_widths.csv")
    expo = pd.read_csv(quick_run / "exponents.csv")
    assert list(crit.columns) == CRIT == list(phase.CRITICAL_WIDTH_COLUMNS)
    assert list(expo.columns) == EXPO == list(phase.EXPONENT_COLUMNS)
    quick = cfg.quick(cfg.preset("phase-diagram"))
    cells = {(k, 3, d, quick.phase.rank) for k in quick.phase.kinds for d in quick.target.dims}
    cells |= {(k, 3, quick.phase.dim, r) for k in quick.phase.kinds for r in quick.target.ranks}
    for name in ("lazy", "gd", "variant"):
        got = crit[crit["algorithm"] == name]
        assert set(zip(got["kind"], got["order"], got["dim"], got["rank"])) == cells
    assert set(expo["variable"]) == {"dim", "rank"}
    assert set(expo["algorithm"]) == {"lazy", "gd", "variant"}


def test_lazy_rows_are_the_threshold_checked_by_the_exact_optimum(quick_run):
    crit = pd.read_csv(quick_run / "critical_widths.csv")
    lazy = crit[crit["algorithm"] == "lazy"]
    for row in lazy.itertuples():
        assert row.critical_width == row.ci_low == row.ci_high == lazy_m_star(row.dim)
    checked = lazy[lazy["seeds"] > 0]
    assert len(checked) >= 1  # the exact lazy optimum measured m* (fails at m*-1, fits at m*)
    rows = pd.read_csv(quick_run / "results.csv")
    lz = rows[rows["algorithm"] == "lazy"]
    for row in checked.itertuples():
        cell = lz[(lz["dim"] == row.dim) & (lz["rank"] == row.rank) & (lz["kind"] == row.kind)]
        m = lazy_m_star(row.dim)
        assert not cell[cell["width"] == m - 1]["success"].any()
        assert cell[cell["width"] == m]["success"].all()
        assert (cell[cell["width"] == m]["lazy_best_residual"] < 1e-2).all()
    # exponent in d of the thresholds: the least-squares slope of log m* against log d
    expo = pd.read_csv(quick_run / "exponents.csv")
    dims = sorted(lazy[lazy["rank"] == 2]["dim"].unique())
    slope = np.polyfit(np.log(dims), np.log([lazy_m_star(d) for d in dims]), 1)[0]
    got = expo[(expo["algorithm"] == "lazy") & (expo["variable"] == "dim")]["exponent"]
    np.testing.assert_allclose(got.to_numpy(), slope, rtol=1e-9)


def test_searched_critical_widths_match_the_probed_runs(quick_run):
    """Recompute each GD / variant cell's critical width from results.csv with plain numpy:
    the smallest probed width from which every larger probed width has success rate >= 1/2."""
    crit = pd.read_csv(quick_run / "critical_widths.csv")
    rows = pd.read_csv(quick_run / "results.csv")
    searched = crit[crit["algorithm"] != "lazy"]
    keys = ["algorithm", "order", "dim", "rank", "kind"]
    for row in searched.itertuples():
        cell = rows.loc[(rows[keys] == [getattr(row, k) for k in keys]).all(axis=1)]
        rate = cell.groupby("width")["success"].mean().sort_index()
        ok = rate.to_numpy() >= 0.5
        expected = math.nan
        for j in range(len(ok) - 1, -1, -1):
            if not ok[j]:
                break
            expected = float(rate.index[j])
        assert (math.isnan(expected) and math.isnan(row.critical_width)) or \
            expected == row.critical_width
        assert row.seeds == cell["seed"].nunique() == 2
        if math.isfinite(row.critical_width):
            assert row.ci_low <= row.critical_width <= row.ci_high
    # where the transition lies well inside the range the search must find it
    found = searched[(searched["kind"] == "orthonormal")]
    assert np.isfinite(found["critical_width"]).all()
    assert (found["critical_width"] < found["dim"].map(lazy_m_star)).all()


def test_figures_are_written_page_wide(quick_run):
    import matplotlib.image as mpimg
    for kind in ("orthonormal", "random"):
        png = quick_run / f"phase_diagram_{kind}.png"
        assert png.is_file()
        assert mpimg.imread(png).shape[1] == 7 * 300  # 7 in at 300 dpi


def test_dry_run_and_config(capsys, tmp_path):
    assert cli.main(["run", "--preset", "phase-diagram", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "24 cells" in text and "d=64: 715" in text and "coarse widths [1, 2, 4, 8, 16, 32, 64]" \
        in text
    full = cfg.preset("phase-diagram")
    assert full.sweep.seeds >= 16 and max(full.target.dims) == 64 and full.target.ranks[-1] == 8
    quick = cfg.quick(full)
    assert cfg.loads(cfg.dumps(quick)) == quick
    raw = cfg.preset_raw("phase-diagram")
    with pytest.raises(cfg.ConfigError, match=r"\[phase\]"):
        cfg.parse({**raw, "plot": "width"})
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] kinds"):
        cfg.parse({**raw, "phase": {**raw["phase"], "kinds": ["orthogonal-ish"]}})
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] dim"):
        cfg.parse({**raw, "phase": {k: v for k, v in raw["phase"].items() if k != "dim"}})
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] dim.*rank 8"):
        cfg.parse({**raw, "phase": {**raw["phase"], "dim": 4}})
