"""jaxtd.phase: critical widths with intervals, exponent fits, adaptive search."""

import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import jaxtd
from jaxtd import phase


def _critical_oracle(widths, rates, rate=0.5):
    """The glossary's words, independently: the smallest width from which every larger width
    of the grid has success rate >= rate (NaN when none)."""
    for j, w in enumerate(widths):
        if all(r >= rate for r in rates[j:]):
            return float(w)
    return math.nan


def _logistic_table(widths, center, n_seeds, seed, sharpness=1.0):
    """Per-seed success drawn with probability sigmoid(sharpness * (w - center))."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-sharpness * (np.asarray(widths, float) - center)))
    return rng.random((n_seeds, len(widths))) < p


# -- one cell ---------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.95, 0.8])
def test_clopper_pearson_matches_the_beta_quantiles(level):
    k = np.array([0, 1, 3, 7, 8, 15, 16])
    n = np.array([8, 8, 8, 8, 8, 16, 16])
    low, high = phase.clopper_pearson(k, n, level)
    tail = (1 - level) / 2
    want_low = np.where(k == 0, 0.0, stats.beta.ppf(tail, np.maximum(k, 1), n - k + 1))
    want_high = np.where(k == n, 1.0, stats.beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)))
    np.testing.assert_allclose(low, want_low, atol=1e-9)
    np.testing.assert_allclose(high, want_high, atol=1e-9)


def test_critical_width_follows_the_glossary_on_random_tables():
    rng = np.random.default_rng(3)
    widths = np.array([2, 3, 5, 8, 13, 21])
    for _ in range(40):
        success = rng.random((int(rng.integers(1, 9)), widths.size)) < rng.random(widths.size)
        got = phase.critical_width(widths, success, n_boot=20).critical_width
        want = _critical_oracle(widths, success.mean(axis=0))
        assert got == want or (math.isnan(got) and math.isnan(want))


def test_non_monotone_table_ignores_a_lucky_small_width():
    widths = np.array([1, 2, 3, 4, 5, 6])
    success = np.array([[0, 1, 0, 0, 1, 1],
                        [0, 1, 0, 1, 1, 1],
                        [0, 1, 0, 0, 0, 1],
                        [0, 0, 1, 0, 1, 1]], bool)  # rates 0, .75, .25, .25, .75, 1
    for method in phase.INTERVAL_METHODS:
        cw = phase.critical_width(widths, success, method=method)
        assert cw.critical_width == 5.0 and cw.seeds == 4
        assert cw.ci_low <= 5.0 <= cw.ci_high


def test_never_and_always_succeeding_tables():
    widths = np.array([4, 8, 16])
    never = np.zeros((6, 3), bool)
    always = np.ones((6, 3), bool)
    for method in phase.INTERVAL_METHODS:
        cw = phase.critical_width(widths, never, method=method)
        assert math.isnan(cw.critical_width) and cw.ci_high == math.inf
        cw = phase.critical_width(widths, always, method=method)
        assert cw.critical_width == 4.0 and cw.ci_low == 4.0
    assert phase.critical_width(widths, always).ci_high == 4.0  # no seed varies: no spread
    # 6 of 6 bound the rate above 0.5 (0.025^(1/6) = 0.54); 4 of 4 cannot (0.40): open above
    assert phase.critical_width(widths, always, method="binomial").ci_high == 4.0
    assert phase.critical_width(widths, always[:4], method="binomial").ci_high == math.inf
    assert np.all(phase.bootstrap_critical_widths(widths, never, n_boot=7) == math.inf)


def test_bootstrap_draws_resample_seeds_reproducibly():
    widths = np.arange(1, 13)
    success = _logistic_table(widths, 6.0, 10, seed=0)
    draws = phase.bootstrap_critical_widths(widths, success, n_boot=50, seed=5)
    again = phase.bootstrap_critical_widths(widths, success, n_boot=50, seed=5)
    np.testing.assert_array_equal(draws, again)
    assert not np.array_equal(draws, phase.bootstrap_critical_widths(widths, success,
                                                                      n_boot=50, seed=6))
    # oracle: the same Generator's resamples, critical widths by the glossary's words
    idx = np.random.default_rng(5).integers(0, 10, size=(50, 10))
    want = [_critical_oracle(widths, success[i].mean(axis=0)) for i in idx]
    np.testing.assert_array_equal(draws, np.nan_to_num(want, nan=np.inf))


def test_bootstrap_interval_is_a_percentile_interval_that_narrows_with_seeds():
    widths = np.arange(1, 41)
    few = phase.critical_width(widths, _logistic_table(widths, 20.0, 8, 1, 0.4), n_boot=400)
    many = phase.critical_width(widths, _logistic_table(widths, 20.0, 128, 1, 0.4), n_boot=400)
    for cw in (few, many):
        assert cw.ci_low in widths and cw.ci_high in widths
        inside = np.mean((cw.draws >= cw.ci_low) & (cw.draws <= cw.ci_high))
        assert inside >= 0.95
    assert many.ci_high - many.ci_low < few.ci_high - few.ci_low
    assert many.ci_low <= 20 <= many.ci_high


def test_binomial_interval_from_the_per_width_intervals():
    widths = np.array([1, 2, 3, 4, 5])
    success = np.zeros((8, 5), bool)
    for j, k in enumerate([0, 2, 4, 7, 8]):
        success[:k, j] = True
    lo, hi = stats.beta.ppf(0.025, [1e-12, 2, 4, 7, 8], [9, 7, 5, 2, 1]), \
        stats.beta.ppf(0.975, [1, 3, 5, 8, 9], [8, 6, 4, 1, 1e-12])
    lo[0], hi[-1] = 0.0, 1.0
    cw = phase.critical_width(widths, success, method="binomial")
    assert cw.critical_width == 3.0
    assert cw.ci_low == _critical_oracle(widths, hi) == 2.0
    assert cw.ci_high == _critical_oracle(widths, lo) == 5.0  # 7 of 8 do not bound it (0.47)


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=[3, 2], success=np.ones((2, 2))), "strictly increasing"),
    (dict(widths=[1, 2], success=np.ones((2, 3))), "n_widths = 2"),
    (dict(widths=[1, 2], success=np.full((2, 2), 0.5)), "booleans"),
    (dict(widths=[1, 2], success=np.ones((2, 2)), level=95), "level"),
    (dict(widths=[1, 2], success=np.ones((2, 2)), method="exact"), "method"),
    (dict(widths=[1, 2], success=np.ones((2, 2)), rate=0), "rate"),
])
def test_bad_tables_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        phase.critical_width(**kwargs)


def test_success_table_pivots_one_cell_and_refuses_holes():
    rows = pd.DataFrame(dict(seed=[1, 0, 1, 0], width=[4, 4, 2, 2],
                             success=[True, False, False, False]))
    widths, seeds, table = phase.success_table(rows)
    assert widths.tolist() == [2, 4] and seeds.tolist() == [0, 1]
    np.testing.assert_array_equal(table, [[False, False], [False, True]])
    with pytest.raises(ValueError, match="missing"):
        phase.success_table(rows.iloc[:3])
    with pytest.raises(ValueError, match="more than once"):
        phase.success_table(pd.concat([rows, rows]))


# -- many cells: critical_widths.csv and exponents.csv ----------------------------------------

def _synthetic_rows(dims=(4, 8, 16, 32), rank=2, exponent=1.5, n_seeds=16, seed=0):
    """Results-like rows where seed s succeeds at width w iff w >= 2 d^exponent * jitter_s
    (log-normal jitter): the critical width grows like d^exponent."""
    rng = np.random.default_rng(seed)
    out = []
    for d in dims:
        widths = np.unique(np.round(np.geomspace(1, 8 * d ** exponent, 40)).astype(int))
        jitter = np.exp(0.2 * rng.standard_normal(n_seeds))
        for s in range(n_seeds):
            for w in widths:
                out.append(dict(algorithm="gd", order=3, dim=d, rank=rank, kind="orthonormal",
                                weights="equal", seed=s, width=w,
                                success=bool(w >= 2 * d ** exponent * jitter[s])))
    return pd.DataFrame(out)


def test_fit_exponent_recovers_a_power_law_with_an_interval():
    x = np.array([4.0, 8.0, 16.0, 32.0])
    crit = 3 * x ** 1.5
    rng = np.random.default_rng(0)
    draws = crit[:, None] * np.exp(0.05 * rng.standard_normal((4, 300)))
    fit = phase.fit_exponent(x, crit, draws)
    assert fit.exponent == pytest.approx(1.5) and fit.intercept == pytest.approx(math.log(3))
    assert fit.ci_low < 1.5 < fit.ci_high and fit.ci_high - fit.ci_low < 0.2
    want = [np.polyfit(np.log(x), np.log(draws[:, k]), 1)[0] for k in range(300)]
    assert fit.ci_low == pytest.approx(np.quantile(want, 0.025))
    # a cell not found in its grid is left out; too many unbounded draws: no interval
    crit[0], draws[1, :20] = math.nan, math.inf
    fit = phase.fit_exponent(x, crit, draws)
    assert fit.x.tolist() == [8.0, 16.0, 32.0] and fit.exponent == pytest.approx(1.5)
    assert math.isnan(fit.ci_low) and math.isnan(fit.ci_high)
    assert math.isnan(phase.fit_exponent(x[:1], crit[:1]).exponent)


def test_critical_widths_and_exponents_tables_on_synthetic_rows():
    rows = _synthetic_rows()
    table = phase.critical_widths(rows, n_boot=200)
    assert tuple(table.columns) == phase.CRITICAL_WIDTH_COLUMNS
    assert table["dim"].tolist() == [4, 8, 16, 32] and (table["seeds"] == 16).all()
    for _, row in table.iterrows():
        part = rows[rows["dim"] == row["dim"]]
        rates = part.groupby("width")["success"].mean()
        assert row["critical_width"] == _critical_oracle(rates.index, rates.to_numpy())
        assert row["ci_low"] <= row["critical_width"] <= row["ci_high"]
    again = phase.critical_widths(rows, n_boot=200)
    pd.testing.assert_frame_equal(table, again)  # a fixed Generator: reproducible

    exps = phase.exponents(rows, "dim", n_boot=200)
    assert tuple(exps.columns) == phase.EXPONENT_COLUMNS and len(exps) == 1
    row = exps.iloc[0]
    assert (row["algorithm"], row["order"], row["variable"]) == ("gd", 3, "dim")
    assert row["ci_low"] <= row["exponent"] <= row["ci_high"]
    assert row["ci_low"] < 1.5 < row["ci_high"] and abs(row["exponent"] - 1.5) < 0.1
    assert row["fitted_range"] == "4..32 (rank=2, kind=orthonormal, weights=equal)"
    # an exponent in r at each fixed d needs two ranks per d: one rank gives no row
    assert phase.exponents(rows, "rank", n_boot=20).empty
    # a missing cell value is a value of its own, not a reason to drop the cell's rows
    unnamed = phase.critical_widths(rows.assign(weights=np.nan), n_boot=200)
    np.testing.assert_array_equal(unnamed["critical_width"], table["critical_width"])


def test_tables_refuse_rows_without_the_cell_columns():
    rows = _synthetic_rows(dims=(4,)).drop(columns=["kind"])
    with pytest.raises(ValueError, match=r"\['kind'\].*with_columns"):
        phase.critical_widths(rows)
    with pytest.raises(ValueError, match="variable"):
        phase.exponents(_synthetic_rows(dims=(4,)), "order")


# -- adaptive search --------------------------------------------------------------------------

class _Counting:
    """evaluate() over a fixed (n_seeds, hi) table of widths 1..hi, counting what it is asked."""

    def __init__(self, table):
        self.table, self.asked, self.calls = np.asarray(table, bool), [], 0

    def __call__(self, widths):
        self.calls += 1
        self.asked += list(widths)
        return self.table[:, np.asarray(widths) - 1]


def test_coarse_widths_are_geometric_and_end_at_hi():
    assert phase.coarse_widths(1, 100).tolist() == [1, 2, 4, 8, 16, 32, 64, 100]
    assert phase.coarse_widths(3, 3).tolist() == [3]
    assert phase.coarse_widths(5, 50, 3).tolist() == [5, 15, 45, 50]
    with pytest.raises(ValueError, match="lo <= hi"):
        phase.coarse_widths(9, 3)


@pytest.mark.parametrize("batch", [1, 3])
def test_search_matches_exhaustive_on_monotone_thresholds_with_few_probes(batch):
    hi = 300
    widths = np.arange(1, hi + 1)
    for threshold in [1, 2, 7, 37, 64, 65, 199, 300]:
        # seeds with thresholds around `threshold`: the rate is monotone in the width
        table = widths[None, :] >= threshold + np.array([-3, 0, 0, 2, 5])[:, None]
        ev = _Counting(table)
        found = phase.search_critical_width(ev, 1, hi, batch=batch)
        exhaustive = phase.critical_width(widths, table, n_boot=1).critical_width
        assert found.critical_width == exhaustive
        assert len(ev.asked) == len(set(ev.asked)) == found.widths.size  # each width once
        assert len(ev.asked) <= 30 and len(ev.asked) < hi / 10
        np.testing.assert_array_equal(found.success, table[:, found.widths - 1])


def test_search_on_a_noisy_non_monotone_table_brackets_its_answer():
    hi = 200
    widths = np.arange(1, hi + 1)
    for seed in range(5):
        ev = _Counting(_logistic_table(widths, 80.0, 9, seed, sharpness=0.08))
        found = phase.search_critical_width(ev, 1, hi, batch=2)
        rates = found.success.mean(axis=0)
        j = int(np.searchsorted(found.widths, found.critical_width))
        assert np.all(rates[j:] >= 0.5) and rates[j - 1] < 0.5  # every probe above succeeds
        assert found.widths[j - 1] == found.critical_width - 1  # the bracket closed
        assert len(ev.asked) < 60


def test_search_never_and_always():
    never = _Counting(np.zeros((3, 50), bool))
    found = phase.search_critical_width(never, 1, 50)
    assert math.isnan(found.critical_width) and never.calls == 1
    always = _Counting(np.ones((3, 50), bool))
    found = phase.search_critical_width(always, 4, 50)
    assert found.critical_width == 4 and always.calls == 1


def test_search_refuses_a_bad_evaluate():
    with pytest.raises(ValueError, match=r"returned shape \(3, 2\)"):
        phase.search_critical_width(lambda ws: np.ones((3, 2), bool), 1, 8)
    seeds = iter([3, 4])
    with pytest.raises(ValueError, match="same seeds"):
        phase.search_critical_width(
            lambda ws: np.tile(np.array(ws) >= 5, (next(seeds), 1)), 1, 8)
    with pytest.raises(RuntimeError, match="max_calls"):
        phase.search_critical_width(_Counting(np.arange(1, 65)[None] >= 33), 1, 64,
                                    batch=1, max_calls=2)


def test_search_with_a_real_sweep_agrees_with_the_exhaustive_sweep():
    # gd at d = 4, r = 1 with 4 seeds: success rates 0.25, 0.25, 0.5, 0.75, ... over widths 1..8
    target = jaxtd.targets.orthonormal(jax.random.key(0), dim=4, rank=1, order=3)
    gd = jaxtd.algorithms.gd(0.05, init_scale=0.1)
    evaluate = phase.sweep_evaluator(gd, target, seeds=4, steps=300, record_every=300,
                                     bucketing="single")
    found = phase.search_critical_width(evaluate, 1, 8, batch=1)
    full = evaluate(list(range(1, 9)))
    np.testing.assert_array_equal(found.success, full[:, found.widths - 1])
    exhaustive = phase.critical_width(np.arange(1, 9), full, n_boot=1).critical_width
    assert 1 < exhaustive < 8 and found.critical_width == exhaustive
    assert found.widths.size < 8
    with pytest.raises(ValueError, match="hparams"):
        phase.sweep_evaluator(gd, target, seeds=3, steps=4, hparams={"learning_rate": [0.1]})
