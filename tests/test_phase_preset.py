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
    assert quick.phase.weights == ("equal", "geometric")
    kw = [(k, w) for k in quick.phase.kinds for w in quick.phase.weights]
    cells = {(k, w, 3, d, quick.phase.rank) for k, w in kw for d in quick.target.dims}
    cells |= {(k, w, 3, quick.phase.dim, r) for k, w in kw for r in quick.target.ranks}
    for name in ("lazy", "gd", "variant"):
        got = crit[crit["algorithm"] == name]
        assert set(zip(got["kind"], got["weights"], got["order"], got["dim"],
                       got["rank"])) == cells
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
    keys = ["algorithm", "order", "dim", "rank", "kind", "weights"]
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


def test_unequal_weights_are_their_own_cells(quick_run):
    """At r = 1 the geometric profile is the single weight 2^0 = 1: the same problem as equal
    weights, searched once, so the same outcome at every probed width; at r = 2 the targets
    differ (weights 1, 1/2) and the runs are their own."""
    rows = pd.read_csv(quick_run / "results.csv")
    keys = ["algorithm", "kind", "dim", "rank", "seed", "width"]
    searched = rows[rows["algorithm"] != "lazy"]
    eq = searched[searched["weights"] == "equal"].set_index(keys)["success"].sort_index()
    geo = searched[searched["weights"] == "geometric"].set_index(keys)["success"].sort_index()
    assert len(geo) > 0
    r1 = eq.index.get_level_values("rank") == 1
    assert r1.any()
    pd.testing.assert_series_equal(eq[r1], geo[geo.index.get_level_values("rank") == 1])
    # r = 2: weights (1, 1/2) are another problem, searched on its own (not copied from equal)
    both = pd.concat([eq[~r1].rename("eq"), geo.rename("geo")], axis=1, join="inner")
    assert len(both) and (both["eq"] != both["geo"]).any()
    from jaxtd import experiment
    quick = cfg.quick(cfg.preset("phase-diagram"))
    cell = next(c for c in experiment.phase_cells(quick) if c[1] == "geometric" and c[4] == 2)
    np.testing.assert_allclose(np.asarray(experiment._phase_target(quick, cell).weights),
                               [1.0, 0.5])


def test_figures_are_written_page_wide(quick_run, tmp_path):
    """One figure per kind and weight profile: the quick run's kind (--quick runs the first
    one), and the random kind from the same table relabelled (no second run needed)."""
    import matplotlib.image as mpimg
    from jaxtd import plots
    assert cfg.quick(cfg.preset("phase-diagram")).phase.kinds == ("orthonormal",)
    crit = pd.read_csv(quick_run / "critical_widths.csv")
    plots.save_phase_figures(crit.assign(kind="random"), tmp_path, search_top=16)
    for folder, kinds in ((quick_run, ("orthonormal",)), (tmp_path, ("random",))):
        for kind in kinds:
            for stem in (f"phase_diagram_{kind}", f"phase_diagram_{kind}_geometric"):
                png = folder / f"{stem}.png"
                assert png.is_file()
                assert mpimg.imread(png).shape[1] == 7 * 300  # 7 in at 300 dpi
    assert not (quick_run / "phase_diagram_random.png").exists()


def test_dry_run_and_config(capsys, tmp_path):
    assert cli.main(["run", "--preset", "phase-diagram", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "28 cells" in text and "weights equal, geometric" in text and "d=64: 715" in text \
        and "coarse widths [1, 4, 16, 64]" in text
    full = cfg.preset("phase-diagram")
    assert full.sweep.seeds >= 16 and max(full.target.dims) == 64 and full.target.ranks[-1] == 8
    quick = cfg.quick(full)
    assert cfg.loads(cfg.dumps(quick)) == quick
    raw = cfg.preset_raw("phase-diagram")
    with pytest.raises(cfg.ConfigError, match=r"\[phase\]"):
        cfg.parse({**raw, "plot": "width"})
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] kinds"):
        cfg.parse({**raw, "phase": {**raw["phase"], "kinds": ["orthogonal-ish"]}})
    for bad in (["equal", "equal"], ["decaying"], "geometric", [[1.0, 0.5]]):
        with pytest.raises(cfg.ConfigError, match=r"\[phase\] weights"):
            cfg.parse({**raw, "phase": {**raw["phase"], "weights": bad}})
    one = cfg.parse({**raw, "phase": {k: v for k, v in raw["phase"].items() if k != "weights"}})
    assert one.phase.weights is None
    from jaxtd import experiment
    assert {c[1] for c in experiment.phase_cells(one)} == {"equal"}  # [target] weights
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] dim"):
        cfg.parse({**raw, "phase": {k: v for k, v in raw["phase"].items() if k != "dim"}})
    with pytest.raises(cfg.ConfigError, match=r"\[phase\] dim.*rank 8"):
        cfg.parse({**raw, "phase": {**raw["phase"], "dim": 4}})


def test_phase_progress_bar_counts_finished_cells():
    """The progress display of a phase run: a real tqdm bar advances by one per finished
    (algorithm, cell), names the cell being searched, and counts the last one only when the
    run finished; without a bar each cell is one [jaxtd] line."""
    import io

    from tqdm import tqdm
    cells = [("orthonormal", "equal", 3, 8, 2), ("random", "geometric", 3, 16, 1)]
    stream = io.StringIO()
    bar = tqdm(total=4, file=stream, disable=False)
    progress = cli._PhaseProgress(bar)
    progress("gd", cells[0])
    assert bar.n == 0 and "gd: orthonormal, equal weights, l=3 d=8 r=2" in stream.getvalue()
    progress("gd", cells[1])
    progress("variant", cells[0])
    assert bar.n == 2 and "random, geometric weights, l=3 d=16 r=1" in stream.getvalue()
    progress.close(finished=False)  # interrupted during the third search
    assert bar.n == 2
    done = cli._PhaseProgress(tqdm(total=1, file=io.StringIO(), disable=False))
    done("lazy", cells[0])
    done.close()
    assert done.bar.n == 1


def test_phase_progress_without_a_terminal_logs_each_cell(capsys):
    from tqdm import tqdm
    progress = cli._PhaseProgress(tqdm(total=2, disable=True))
    progress("variant", ("random", (1.0, 0.5), 3, 16, 2))
    progress.close()
    assert "[jaxtd] variant: random, explicit weights, l=3 d=16 r=2" in capsys.readouterr().err


def test_phase_figure_draws_one_weight_profile(quick_run):
    """Each figure draws the critical widths of its own kind and weight profile (the points
    are those of critical_widths.csv); an unknown profile is refused naming those present."""
    from jaxtd import plots
    crit = pd.read_csv(quick_run / "critical_widths.csv")
    for weights in ("equal", "geometric"):
        fig = plots.phase_figure(crit, "orthonormal", weights)
        assert weights in fig._suptitle.get_text()
        left = fig.axes[0]
        (gd,) = [c for c in left.containers if c.get_label().startswith("gd: ")]
        cells = crit[(crit["algorithm"] == "gd") & (crit["kind"] == "orthonormal")
                     & (crit["weights"] == weights) & (crit["rank"] == 2)].sort_values("dim")
        finite = cells["critical_width"].notna().to_numpy()
        np.testing.assert_allclose(gd.lines[0].get_ydata(),
                                   cells["critical_width"].to_numpy()[finite])
    relabelled = crit.assign(kind="random")  # --quick runs one kind
    assert "equal" in plots.phase_figure(relabelled, "random")._suptitle.get_text()
    with pytest.raises(ValueError, match=r"weights 'decaying'.*geometric"):
        plots.phase_figure(relabelled, "random", "decaying")


def _tiny_phase(steps=300):
    """gd on one cell (orthonormal, equal weights, l=3 d=8 r=2): a few probes, one program."""
    import dataclasses
    quick = cfg.quick(cfg.preset("phase-diagram"))
    return dataclasses.replace(
        quick, target=dataclasses.replace(quick.target, dims=(8,), dims_per_order=((3, (8,)),),
                                          ranks=(2,)),
        sweep=dataclasses.replace(quick.sweep, algorithms=("gd",), steps=steps),
        phase=dataclasses.replace(quick.phase, kinds=("orthonormal",), weights=("equal",)))


def test_phase_run_resumes_from_its_saved_probes(tmp_path, monkeypatch):
    """Every probe is saved as it finishes; a rerun with resume=True computes only the probes
    missing (here the last, as after Ctrl-C) and gives the same tables; another configuration
    in the folder is refused, and so is a fresh run into it."""
    from jaxtd import _sweep, experiment
    from jaxtd.store import IdentityError, ResultsError
    config = _tiny_phase()
    first = experiment.run_phase(config, out_dir=tmp_path)
    search = tmp_path / "searches" / "gd-orthonormal-equal-l3-d8-r2"
    probes = sorted(search.iterdir())
    assert len(probes) >= 2 and all((p / "sweep.json").is_file() for p in probes)
    import shutil
    shutil.rmtree(probes[-1])  # interrupted during the last probe
    computed = []
    real = _sweep._run_chunk
    monkeypatch.setattr(_sweep, "_run_chunk",
                        lambda *a, **k: computed.append(1) or real(*a, **k))
    again = experiment.run_phase(config, out_dir=tmp_path, resume=True)
    assert len(computed) == 1  # only the missing probe ran
    pd.testing.assert_frame_equal(again.results.rows, first.results.rows)
    pd.testing.assert_frame_equal(again.critical_widths, first.critical_widths)
    computed.clear()
    with pytest.raises(IdentityError, match="steps"):
        experiment.run_phase(_tiny_phase(steps=150), out_dir=tmp_path, resume=True)
    with pytest.raises(ResultsError, match="resume"):
        experiment.run_phase(config, out_dir=tmp_path, resume=False)
    assert computed == []  # refused before any compute
