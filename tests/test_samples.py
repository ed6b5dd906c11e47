"""The [network] config table, the samples axis from a config, and the samples preset's outputs.

Oracles: the constructor called by hand (the table builds the same algorithm, at the largest
``n``), ``phase.critical_width``
on the pivoted success table (the CSV's sample counts), ``math.comb`` (the kernel dimension) and
the PNG file itself (the figure is drawn and written).
"""

import math

import numpy as np
import pandas as pd
import pytest

from jaxtd import algorithms, cli, experiment, phase, plots
from jaxtd import config as cfg

TINY = """
name = "tiny-samples"
plot = "samples"
[target]
order = 2
dim = 3
rank = 1
[sweep]
algorithms = ["network"]
widths = [4]
seeds = 2
steps = 30
record_every = 10
success_threshold = 0.3
[network]
regime = "rf"
optimizer = "adam"
learning_rate = 0.05
samples = [3, 12]
"""


def test_network_table_builds_the_constructor_at_the_largest_samples():
    c = cfg.loads(TINY)
    assert c.params["network"]["samples"] == (3, 12)
    built = experiment.make_algorithm(c, "network")
    import optax
    assert built.hparams["active_samples"] == 12.0
    assert built.static_key == algorithms.network(
        optax.adam, learning_rate=0.05, regime="rf", samples=12, name="network").static_key
    # the list is the vmapped axis active_samples; the column keeps the regime, not samples
    (sub,) = experiment.plan(c)
    assert sub.hparams == (("active_samples", (3, 12)),)
    columns = experiment.hyperparameters(c, "network", built)
    assert columns["regime"] == "rf" and "samples" not in columns
    assert "active_samples" not in columns
    assert cfg.loads(cfg.dumps(c)) == c


def test_network_table_errors_name_the_key():
    cases = [
        (TINY.replace("samples = [3, 12]", "samples = [3, 0]"), r"^\[network\] samples: must be >= 1"),
        (TINY.replace("samples = [3, 12]", "samples = [3, 3]"), r"^\[network\] samples: duplicate"),
        # no data set and no batch size: the constructor's own check, as one config line
        (TINY.replace("samples = [3, 12]", ""), r"^\[network\] samples: samples=None"),
        (TINY.replace('regime = "rf"', 'regime = "ntk"'), r"^\[network\] regime: unknown value"),
        (TINY.replace('regime = "rf"', 'regime = "rf"\ntrain_output = true'),
         r"^\[network\] train_output"),
    ]
    for text, message in cases:
        with pytest.raises(cfg.ConfigError, match=message):
            cfg.loads(text)
    # an unused [network] table left empty is never built (its defaults need a batch size)
    other = TINY.replace('algorithms = ["network"]', 'algorithms = ["gd"]').replace(
        'plot = "samples"', "")
    other = other[:other.index("[network]")]
    assert cfg.loads(other).params["network"]["samples"] is None


def test_factory_table_sweeps_samples_too():
    """A user table of the same constructor takes the same keys: one config runs regimes side by
    side, the samples list being the vmapped axis of each."""
    text = TINY.replace('algorithms = ["network"]', 'algorithms = ["network", "nt"]') + """
[nt]
factory = "jaxtd.algorithms:network"
regime = "nt"
init = "antisymmetric"
samples = [4, 8, 16]
"""
    c = cfg.loads(text)
    assert experiment.make_algorithm(c, "nt").hparams["active_samples"] == 16.0
    assert dict(experiment.plan(c)[1].hparams) == {"active_samples": (4, 8, 16)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples") / "run"
    assert cli.main(["run", "--out", str(out), _write(tmp_path_factory, TINY)]) == 0
    return out


def _write(factory, text):
    path = factory.mktemp("cfg") / "tiny.toml"
    path.write_text(text)
    return str(path)


def test_sample_counts_csv_is_the_critical_width_along_n(tiny_run):
    counts = pd.read_csv(tiny_run / "sample_counts.csv")
    assert list(counts.columns) == list(phase.SAMPLE_COUNT_COLUMNS)
    rows = pd.read_csv(tiny_run / "results.csv")
    # one row per seed and n (the n axis is the vmapped active_samples; that such a cell is the
    # run with samples = n alone is tests/test_network.py's sweep test), the regime a column
    assert sorted(zip(rows["seed"], rows["active_samples"])) == [(0, 3), (0, 12), (1, 3), (1, 12)]
    assert set(rows["regime"]) == {"rf"}
    table = rows.pivot(index="seed", columns="active_samples", values="success")
    expected = phase.critical_width(table.columns.to_numpy(), table.to_numpy().astype(bool))
    (row,) = counts.itertuples()
    assert (row.algorithm, row.order, row.dim, row.rank, row.width) == ("network", 2, 3, 1, 4)
    assert row.sym_dim == math.comb(3 + 2 - 1, 2)
    np.testing.assert_equal([row.critical_samples, row.ci_low, row.ci_high],
                            [expected.critical_width, expected.ci_low, expected.ci_high])
    assert (tiny_run / "samples.png").stat().st_size > 10_000


def _synthetic(dims=(4, 8), orders=(2, 3)):
    """A results table of known success: regime nn succeeds from n = 8, rf from n = 32 (every
    seed), with final errors 0.5 below and 1e-3 from there."""
    out = []
    for order in orders:
        for dim in dims:
            for regime, start in (("rf", 32), ("nn", 8)):
                for seed in range(4):
                    for n in (4, 8, 16, 32, 64):
                        err = 1e-3 if n >= start else 0.5
                        out.append(dict(algorithm=regime, regime=regime, order=order, dim=dim,
                                        rank=1, width=16, seed=seed, active_samples=n,
                                        final_relative_error=err, success=err <= 1e-2,
                                        diverged=False))
    return pd.DataFrame(out)


def test_critical_sample_counts_and_risk_curves_on_a_known_table():
    df = _synthetic()
    counts = phase.critical_sample_counts(df)
    assert len(counts) == 8
    for row in counts.itertuples():
        assert row.critical_samples == (32 if row.algorithm == "rf" else 8)
        assert row.ci_low == row.ci_high == row.critical_samples  # every seed agrees
        assert row.sym_dim == math.comb(row.dim + row.order - 1, row.order)
        assert row.ratio == pytest.approx(row.critical_samples / row.sym_dim)
    curves = plots.sample_risk_curves(df)
    rf = curves[(curves["regime"] == "rf") & (curves["order"] == 2) & (curves["dim"] == 4)]
    np.testing.assert_allclose(rf["median_risk"], [0.25, 0.25, 0.25, 1e-6, 1e-6])
    np.testing.assert_allclose(rf["success_rate"], [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="active_samples"):
        plots.sample_risk_curves(df.drop(columns="active_samples"))


def test_samples_figure_has_one_column_per_order_and_the_kernel_dimension_lines():
    fig = plots.samples_figure(_synthetic(), 1e-2)
    axes = fig.get_axes()
    assert len(axes) == 4  # risk and success rate, for l = 2 and l = 3
    top = axes[0]
    assert top.get_title().startswith("l = 2")
    assert top.get_xscale() == top.get_yscale() == "log"
    vertical = sorted({line.get_xdata()[0] for line in top.get_lines()
                       if len(set(line.get_xdata())) == 1})
    assert vertical == [math.comb(5, 2), math.comb(9, 2)]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["RF", "NN", "smaller d (solid)", "larger d (dashed)",
                      "success: risk ≤ 0.0001"]
    assert [ax.get_title() for ax in axes[:2]] == ["l = 2: d = 4 solid, d = 8 dashed",
                                                   "l = 3: d = 4 solid, d = 8 dashed"]


def test_quick_samples_preset_is_one_size_with_every_regime():
    """--quick compiles one program per size and regime: one size, l = 2 at its smallest d (the
    order where the network separates from the kernel regimes within the quick run's steps)."""
    full = cfg.preset("samples")
    quick = cfg.quick(full)
    assert quick.target.sizes == ((2, min(dict(full.target.dims_per_order)[2]), 1),)
    assert quick.sweep.algorithms == ("rf", "nt", "nn") and quick.sweep.steps <= 300
    assert quick.params["nt"]["samples"] == full.params["nt"]["samples"]
    assert len(experiment.plan(quick)) == 3
    # an explicit --set of the orders wins over the reduction
    kept = cfg.quick(full, keep=cfg.set_keys(["target.order=[2, 3]"]))
    assert kept.target.orders == (2, 3)
