"""The lazy-to-rich transition: gd's centred init and scale-normalized step, the distance
metric, d(final error)/d(log init_scale) through runs, its location and its figure.

Oracles: dense tensors and gradients in numpy (tests/oracles.py), central finite differences,
and the exact vertex of a parabola.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxtd
from jaxtd import config as cfg
from jaxtd import _executables, compile_cache, plots, transition
from jaxtd.algorithms import gd, lazy_gd
from tests.oracles import dense

pytestmark = pytest.mark.timeout(600)


def _target(dim=5, rank=2, order=3, dtype=None):
    return jaxtd.targets.orthonormal(jax.random.key(1), dim, rank, order, dtype=dtype)


# -- gd: init = "antisymmetric" ------------------------------------------------------------------

@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("model", ["plain", "two_homogeneous"])
def test_antisymmetric_init_is_centred_with_rows_of_norm_scale(order, model):
    target = _target(order=order)
    alg = gd(0.1, model=model, init="antisymmetric", init_scale=2.5)
    state = alg.init(jax.random.key(0), target, 6)
    w, s = np.asarray(state.params, np.float64), np.asarray(state.signs)
    np.testing.assert_array_equal(s, [1, -1, 1, -1, 1, -1])
    np.testing.assert_array_equal(w[0::2], w[1::2])           # one factor per pair
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 2.5, rtol=1e-6)
    assert len({tuple(r) for r in w.round(6)}) == 3           # three distinct pairs
    t = alg.tensor(state)
    # T(W0) = 0 exactly: the numpy dense tensor of the model's components, and jaxtd's norm
    np.testing.assert_array_equal(dense(np.asarray(t.weights, np.float64),
                                        np.asarray(t.factors, np.float64), order), 0.0)
    # jaxtd's Gram-form norm: zero up to the rounding of terms of size ||w||^(2k)
    k = order if model == "plain" else 2
    assert float(jaxtd.losses.norm(t)) <= 1e-5 * 2.5 ** k


def test_antisymmetric_rows_have_the_directions_of_lazy_gd():
    """The lazy optimum at lazy_gd(init="antisymmetric")'s W0 is the one of gd's init: the same
    directions (the tangent space does not depend on the rows' norms)."""
    target, key = _target(), jax.random.key(7)
    w = gd(0.1, init="antisymmetric", init_scale=0.3).init(key, target, 6).params
    w0 = lazy_gd(0.01, init="antisymmetric").init(key, target, 6).model.factors
    unit = lambda a: np.asarray(a) / np.linalg.norm(np.asarray(a), axis=1, keepdims=True)
    np.testing.assert_allclose(unit(w), unit(w0), atol=1e-6)
    # prefix-consistent: a narrower init is the first rows of a wider one
    narrow = gd(0.1, init="antisymmetric", init_scale=0.3).init(key, target, 4).params
    np.testing.assert_array_equal(narrow, w[:4])


def test_bad_options_are_named_before_compiling():
    with pytest.raises(ValueError, match="init must be one of"):
        gd(0.1, init="big")
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        gd(0.1, lr_scaling="sqrt")
    with pytest.raises(ValueError, match="signs='random' with init='antisymmetric'"):
        gd(0.1, init="antisymmetric", signs="random")
    with pytest.raises(ValueError, match="lr_scaling='ntk' needs the model's degree"):
        gd(0.1, model=jaxtd.models.plain, lr_scaling="ntk")


def test_config_accepts_the_new_keys_and_names_a_bad_one():
    config = cfg.preset("init-scale")
    assert config.plot == "init-scale"
    assert config.params["gd"]["init"] == "antisymmetric"
    assert config.params["gd"]["lr_scaling"] == "ntk"
    raw = cfg.preset_raw("init-scale")
    raw["gd"]["lr_scaling"] = "linear"
    with pytest.raises(cfg.ConfigError, match=r"\[gd\] lr_scaling"):
        cfg.parse(raw)


# -- gd: lr_scaling = "ntk" ----------------------------------------------------------------------

def _plain_grad(w, s, a, b, order):
    """numpy gradient of 1/2 ||sum_i s_i w_i^l - sum_k a_k b_k^l||^2 with respect to W."""
    g_ww = (w @ w.T) ** (order - 1) * s[None, :]               # s_j <w_i, w_j>^(l-1)
    g_wb = (w @ b.T) ** (order - 1) * a[None, :]               # a_k <w_i, b_k>^(l-1)
    return order * s[:, None] * (g_ww @ w - g_wb @ b)


@pytest.mark.parametrize("scaling", ["none", "ntk"])
def test_one_step_is_the_scaled_gradient_step(scaling, x64):
    order, lr, delta = 3, 0.05, 3.0
    target = _target(dtype="float64")
    alg = gd(lr, init="antisymmetric", lr_scaling=scaling, init_scale=delta)
    state = alg.init(jax.random.key(0), target, 4)
    new, _ = alg.step(state, target)
    w, s = np.asarray(state.params), np.asarray(state.signs)
    grad = _plain_grad(w, s, np.asarray(target.weights), np.asarray(target.factors), order)
    factor = 1.0 / (1.0 + delta ** (2 * (order - 1))) if scaling == "ntk" else 1.0
    np.testing.assert_allclose(np.asarray(new.params), w - lr * factor * grad, rtol=1e-12)


def test_two_homogeneous_step_factor_uses_degree_two(x64):
    target = _target(dtype="float64")
    alg = gd(0.05, model="two_homogeneous", init="antisymmetric", lr_scaling="ntk",
             init_scale=3.0)
    state = alg.init(jax.random.key(0), target, 4)
    grad = jax.grad(lambda w: jaxtd.models.regularized_loss(
        "two_homogeneous", w, target, signs=state.signs))(state.params)
    new, _ = alg.step(state, target)
    np.testing.assert_allclose(new.params, state.params - 0.05 / (1 + 3.0 ** 2) * grad,
                               rtol=1e-12)


def test_ntk_step_makes_the_function_space_step_scale_free(x64):
    """At a centred init, the first step changes T by ~ lr δ^(2(l-1)) J J^T T*: with
    lr_scaling="ntk" the change is the same at δ = 10 and 20 (to O(1/δ^4)); without it, it
    grows 2^4 = 16 fold."""
    target = _target(dtype="float64")

    def change(scaling, delta, lr=0.01):
        alg = gd(lr, init="antisymmetric", lr_scaling=scaling, init_scale=delta)
        state = alg.init(jax.random.key(3), target, 6)
        new, _ = alg.step(state, target)
        return float(jaxtd.losses.norm(alg.tensor(new)))       # ||T(W1) - T(W0)||, T(W0) = 0

    ntk = change("ntk", 20.0) / change("ntk", 10.0)
    # (a step small enough to stay linear: unscaled, 0.01 would be a huge step at δ = 20)
    plain = change("none", 20.0, 1e-8) / change("none", 10.0, 1e-8)
    assert abs(ntk - 1) < 1e-2, ntk
    assert abs(plain / 16 - 1) < 1e-3, plain
    assert 0.05 < change("ntk", 10.0) < 10                      # a visible, finite step


def test_ntk_step_hparams_stay_traced():
    """The scale enters the step as a traced hparam: two scales, one compilation."""
    target = _target()
    alg = gd(0.02, init="antisymmetric", lr_scaling="ntk")
    traces = []
    f = jax.jit(lambda d: (traces.append(1), jaxtd.simulate(
        alg, jax.random.key(0), target, width=4, steps=10, record_every=5,
        hparams={"init_scale": d}).final_loss)[1])
    f(0.5), f(2.0)
    assert len(traces) == 1


# -- the distance metric -------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [0.05, 3.0])
def test_distance_is_the_relative_movement_of_the_active_rows(delta):
    target = _target()
    alg = gd(0.02, init="antisymmetric", lr_scaling="ntk", init_scale=delta)
    key = jaxtd.key_for_seed(2)
    res = jaxtd.run(alg, key, target, width=6, active=4, steps=200, record_every=50)
    w0 = np.asarray(alg.init(key, target, 6).params, np.float64)[:4]
    w = np.asarray(res.final_params, np.float64)[:4]
    want = np.linalg.norm(w - w0) / np.linalg.norm(w0)
    assert want > 1e-4
    np.testing.assert_allclose(float(res.distance), want, rtol=2e-4)
    # masked rows never move (up to the rounding of the init, jitted here and eager there)
    np.testing.assert_allclose(np.asarray(res.final_params)[4:],
                               np.asarray(alg.init(key, target, 6).params)[4:], rtol=1e-6)


# -- d(final error) / d(log init_scale) ----------------------------------------------------------

def test_slopes_match_central_finite_differences(x64):
    target = _target(dtype="float64")
    alg = gd(0.05, init="antisymmetric", lr_scaling="ntk")
    seeds, widths, scales = [0, 1], [2, 4], [0.7, 1.5]
    errors, slopes = transition.scale_slopes(alg, target, seeds=seeds, widths=widths,
                                             scales=scales, steps=120, record_every=40)
    assert errors.shape == slopes.shape == (2, 2, 2)

    @jax.jit
    def error(log_scale, key, active):
        return jaxtd.simulate(alg, key, target, width=4, steps=120, record_every=40,
                              active=active, hparams={"init_scale": jnp.exp(log_scale)}
                              ).final_relative_error

    h = 1e-5
    for i, s in enumerate(seeds):
        for j, w in enumerate(widths):
            for k, d in enumerate(scales):
                key = jaxtd.key_for_seed(s)
                np.testing.assert_allclose(errors[i, j, k], error(np.log(d), key, w),
                                           rtol=1e-10)
                fd = (float(error(np.log(d) + h, key, w))
                      - float(error(np.log(d) - h, key, w))) / (2 * h)
                assert abs(fd) > 1e-4, "a flat cell proves nothing"
                np.testing.assert_allclose(slopes[i, j, k], fd, rtol=1e-4)


def test_slope_column_lands_on_its_rows_and_is_cached(tmp_path):
    target = _target()
    alg = gd(0.05, init="antisymmetric", lr_scaling="ntk")
    scales = [0.3, 1.0, 3.0]
    res = jaxtd.sweep(alg, target, seeds=2, widths=[2, 4], steps=60, record_every=20,
                      hparams={"init_scale": scales}, progress=False)
    out = transition.add_slope_column(res, alg, target, steps=60, record_every=20,
                                      cache=tmp_path / "slopes")
    errors, slopes = transition.scale_slopes(alg, target, seeds=[0, 1], widths=[2, 4],
                                             scales=scales, steps=60, record_every=20)
    rows = out.rows
    for r in rows.itertuples(index=False):
        i, j, k = r.seed, [2, 4].index(r.width), scales.index(r.init_scale)
        assert getattr(r, transition.COLUMN) == slopes[i, j, k]
        # the jvp's primal run is the sweep's cell
        np.testing.assert_allclose(r.final_relative_error, errors[i, j, k], rtol=1e-5)
    assert (tmp_path / "slopes-0.npz").is_file()
    # a second call reads the cache (computing again would raise)
    def no_recompute(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    real = transition.scale_slopes
    transition.scale_slopes = no_recompute
    try:
        again = transition.add_slope_column(res, alg, target, steps=60, record_every=20,
                                            cache=tmp_path / "slopes")
    finally:
        transition.scale_slopes = real
    np.testing.assert_array_equal(again.rows[transition.COLUMN], rows[transition.COLUMN])
    # an edited value fails the cache's checksum: recomputed, never trusted
    with np.load(tmp_path / "slopes-0.npz") as saved:
        data = dict(saved)
    data["slopes"] = data["slopes"] + 1.0
    np.savez(tmp_path / "slopes-0.npz", **data)
    again = transition.add_slope_column(res, alg, target, steps=60, record_every=20,
                                        cache=tmp_path / "slopes")
    np.testing.assert_array_equal(again.rows[transition.COLUMN], rows[transition.COLUMN])
    # the cache of another algorithm (same grid) is not reused either
    with pytest.raises(AssertionError, match="recomputed"):
        transition.scale_slopes = no_recompute
        try:
            transition.add_slope_column(res, gd(0.06, init="antisymmetric", lr_scaling="ntk"),
                                        target, steps=60, record_every=20,
                                        cache=tmp_path / "slopes")
        finally:
            transition.scale_slopes = real
    # nor the cache of another platform, which rounds differently
    with pytest.raises(AssertionError, match="recomputed"), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(jax, "default_backend", lambda: "gpu")
        patch.setattr(transition, "scale_slopes", no_recompute)
        transition.add_slope_column(res, alg, target, steps=60, record_every=20,
                                    cache=tmp_path / "slopes")


def test_the_slope_program_is_loaded_by_a_warm_run(tmp_path):
    """The derivative pass's program is kept like the grids': with the persistent cache on, a
    later process (here: an emptied in-memory store) loads it instead of tracing, lowering and
    compiling it again, and gets the same numbers."""
    target = _target()
    alg = gd(0.05, init="antisymmetric", lr_scaling="ntk")
    kw = dict(seeds=[0, 1], widths=[2, 3], scales=[0.5, 2.0], steps=20, record_every=10)
    compile_cache.enable(tmp_path / "cache")
    _executables.clear()
    cold, warm = [], []
    first = transition.scale_slopes(alg, target, **kw, on_program=lambda *a: cold.append(a))
    _executables.clear()
    second = transition.scale_slopes(alg, target, **kw, on_program=lambda *a: warm.append(a))
    assert [how for how, _ in cold] == ["compiled"]
    assert [how for how, _ in warm] == ["disk"]
    np.testing.assert_array_equal(second[0], first[0])
    np.testing.assert_array_equal(second[1], first[1])
    _executables.clear()


def test_scale_slopes_bad_input_is_named():
    target, alg = _target(), gd(0.05)
    kw = dict(seeds=[0], widths=[2], steps=10, record_every=5)
    with pytest.raises(ValueError, match="scales must hold finite numbers > 0"):
        transition.scale_slopes(alg, target, scales=[0.1, 0.0], **kw)
    with pytest.raises(ValueError, match="scales must be a non-empty"):
        transition.scale_slopes(alg, target, scales=[], **kw)
    with pytest.raises(ValueError, match="widths must be a non-empty list of ints >= 1"):
        transition.scale_slopes(alg, target, scales=[0.1], seeds=[0], widths=[0], steps=10,
                                record_every=5)
    with pytest.raises(ValueError, match="must not set init_scale"):
        transition.scale_slopes(alg, target, scales=[0.1], hparams={"init_scale": 1.0}, **kw)
    with pytest.raises(ValueError, match="no init_scale hyper-parameter"):
        transition.scale_slopes(alg._replace(hparams={"learning_rate": 0.1,
                                                      "regularization": 0.0}),
                                target, scales=[0.1], **kw)
    with pytest.raises(ValueError, match="multiple of record_every"):
        transition.scale_slopes(alg, target, scales=[0.1], seeds=[0], widths=[2], steps=10,
                                record_every=3)


# -- locating the transition ---------------------------------------------------------------------

def _synthetic(peak=1.7, widths=(4, 8), seeds=3, rise=0.8):
    """Rows whose median slope is the parabola 1 - (log δ - log peak)^2 and whose error rises
    from 1e-4 to ``rise`` around it."""
    scales = np.geomspace(0.1, 10, 9)
    rows = []
    for w in widths:
        for s in range(seeds):
            for d in scales:
                u = np.log(d) - np.log(peak)
                rows.append(dict(algorithm="gd", order=3, dim=6, rank=2, seed=s, width=w,
                                 init_scale=d, success=False, diverged=False, distance=1 / d,
                                 final_relative_error=1e-4 + rise / (1 + np.exp(-4 * u)),
                                 **{transition.COLUMN: 1.0 - u * u + 0.01 * (s - 1)}))
    return pd.DataFrame(rows)


def test_locate_finds_the_vertex_of_the_median_slope():
    table = transition.locate(_synthetic(peak=1.7), success_threshold=1e-2)
    assert list(table["width"]) == [4, 8]
    np.testing.assert_allclose(table["transition_scale"], 1.7, rtol=1e-10)
    np.testing.assert_allclose(table["peak_slope"], 1.0, rtol=1e-10)
    assert not table["at_edge"].any()
    # the peak outside the grid: the edge, flagged
    edge = transition.locate(_synthetic(peak=50.0))
    np.testing.assert_allclose(edge["transition_scale"], 10.0)
    assert edge["at_edge"].all()


def test_locate_skips_widths_whose_error_never_crosses_the_threshold():
    df = _synthetic(rise=1e-3)             # fits at every scale: no transition
    table = transition.locate(df, success_threshold=1e-2)
    assert table["transition_scale"].isna().all()
    assert (table["max_error"] < 1e-2).all()
    with pytest.raises(ValueError, match="no column"):
        transition.locate(df.drop(columns=[transition.COLUMN]))
    with pytest.raises(ValueError, match="success_threshold must be a number > 0"):
        transition.locate(df, success_threshold=-1)


# -- the figure ----------------------------------------------------------------------------------

def _with_lazy(df, residual=(0.8, 0.0)):
    lazy = pd.DataFrame([dict(algorithm="lazy", order=3, dim=6, rank=2, seed=s, width=w,
                              final_relative_error=np.nan, success=False, diverged=False,
                              lazy_best_residual=r)
                         for s in range(3) for w, r in zip((4, 8), residual)])
    return pd.concat([df, lazy], ignore_index=True)


def test_init_scale_figure_is_written(tmp_path):
    df = _with_lazy(_synthetic())
    paths = plots.save_figures(df, tmp_path, plot="init-scale", success_threshold=1e-2)
    assert [p.name for p in paths] == ["success_vs_width.png", "init_scale.png"]
    assert (tmp_path / "init_scale.png").stat().st_size > 20_000
    fig = plots.init_scale_figure(df, 1e-2)
    ax_s, ax_d, ax_e, ax_g = fig.axes[:4]
    # the lazy optimum of width 4 (0.8) is drawn as a line in the error panel; width 8's is 0
    levels = [line.get_ydata()[0] for line in ax_e.get_lines() if line.get_linestyle() == "--"]
    assert levels == [0.8]
    # the located transition is named in the legend (under the panels, not over the data)
    legend = [t.get_text() for sub in fig.subfigs for leg in sub.legends
              for t in leg.get_texts()]
    assert any("δ* = 1.7" in t for t in legend) and not ax_g.texts
    # without the derivative column the other panels are still drawn
    plots.init_scale_figure(df.drop(columns=[transition.COLUMN]), 1e-2)
    with pytest.raises(ValueError, match="sweeps init_scale"):
        plots.init_scale_figure(df.assign(init_scale=1.0), 1e-2)


def test_experiment_adds_the_column_and_the_cli_writes_transition_csv(tmp_path):
    from jaxtd import cli, experiment
    raw = cfg.preset_raw("init-scale")
    raw["sweep"].update(widths=[4, 24], seeds=1, steps=60, record_every=20)
    raw["gd"]["init_scale"] = [0.1, 1.0, 4.64]
    config = cfg.parse(raw)
    assert experiment.total_cells(config) == 1 * 2 + 1 * 2 * 3  # rows: lazy, gd
    counted = []
    import jax

    import jaxtd
    jaxtd.clear_cache()
    jax.clear_caches()  # every program compiles in this run: the count is the announced one
    outcome = experiment.run(config, tmp_path, on_cells=counted.append)
    rows = outcome.results.rows
    assert sum(counted) == len(rows) == experiment.total_cells(config)
    # the lazy optimum, the gd grid and its derivative pass: 3 programs, no eager extras
    assert outcome.n_compiles == experiment.count_programs(config) == 3
    gd_rows = rows[rows["algorithm"] == "gd"]
    assert np.isfinite(gd_rows[transition.COLUMN]).all() and len(gd_rows) == 6
    assert rows[rows["algorithm"] == "lazy"][transition.COLUMN].isna().all()
    paths = cli.write_outputs(outcome.results, config, tmp_path)
    assert tmp_path / "transition.csv" in paths and tmp_path / "init_scale.png" in paths
    table = pd.read_csv(tmp_path / "transition.csv")
    assert list(table["width"]) == [4, 24]
