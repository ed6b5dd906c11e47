"""Tests of jaxtd/_run.py: history, divergence, float32 accuracy, compilation count, vmap, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import config as cfg
from jaxtd.algorithms import Algorithm, deflation, gd
from jaxtd import simulate
from tests import oracles


def _target(dim=8, rank=2, order=3, seed=1, weights="equal"):
    return jaxtd.targets.orthonormal(jax.random.PRNGKey(seed), dim, rank, order, weights)


def test_history_layout_and_fit_times_follow_history():
    target = _target(weights=jnp.array([1.0, 0.25]))
    res = jaxtd.run(gd(0.05, model="two_homogeneous"), jax.random.PRNGKey(0), target, width=6,
                    steps=1200, record_every=40)
    h = res.history
    n = 1200 // 40 + 1
    np.testing.assert_array_equal(h["step"], np.arange(n) * 40)
    for name in ("loss", "relative_error", "distance", "active_count", "objective"):
        assert h[name].shape == (n,), name
    assert h["fitted_weight"].shape == (n, 2) and h["best_correlation"].shape == (n, 2)
    np.testing.assert_allclose(h["relative_error"][0], 1.0, atol=1e-4)   # tiny init: T ≈ 0
    np.testing.assert_allclose(h["distance"][0], 0.0)
    # fit_times: the first record whose fitted weight reaches half the true weight.
    hw = np.asarray(h["fitted_weight"]) / np.array([1.0, 0.25])
    for j in range(2):
        first = np.argmax(hw[:, j] >= 0.5)
        assert hw[first, j] >= 0.5 and np.all(hw[:first, j] < 0.5)
        assert int(res.fit_times[j]) == int(h["step"][first])
    # Deflation order: the larger component is fitted first.
    assert 0 < int(res.fit_times[0]) < int(res.fit_times[1])
    assert float(res.final_relative_error) < 1e-2
    assert float(res.final_relative_error) == float(h["relative_error"][-1])
    assert float(res.distance) == float(h["distance"][-1]) and float(res.distance) > 10
    assert int(res.active_count) >= 2 and not bool(res.diverged)
    assert int(res.diverged_step) == -1


def test_measure_is_recorded_for_each_recorded_iterate(x64):
    """An algorithm's optional ``measure`` enters the history at each record, evaluated on the
    recorded iterate (here: the squared norm of the factors, against plain stepping)."""
    target = _target(dim=4)
    base_alg = gd(0.05, init_scale=0.3)
    alg = base_alg._replace(measure=lambda state, t: {
        "params_sq": jnp.sum(base_alg.params(state) ** 2), "order": jnp.asarray(t.order)})
    key, steps, every = jax.random.PRNGKey(3), 6, 2
    h = jaxtd.run(alg, key, target, width=3, steps=steps, record_every=every).history
    state, want = alg.init(key, target, 3), []
    for t in range(steps + 1):
        if t % every == 0:
            want.append(float(jnp.sum(alg.params(state) ** 2)))
        state = alg.step(state, target)[0]
    np.testing.assert_allclose(h["params_sq"], want, rtol=1e-12)
    np.testing.assert_array_equal(h["order"], 3)
    assert alg != base_alg  # another function: another program


def _scripted_loss(alg, first, later):
    """``alg`` whose step reports ``first`` at step 0 and ``later`` afterwards (its iterates are
    plain GD's): the divergence test sees exactly these numbers."""
    def step(state, target):
        new, _ = alg.step(state, target)
        return new, {"loss": jnp.where(state.count == 0, first, later).astype(target.factors.dtype)}
    return alg._replace(step=step)


@pytest.mark.parametrize("later,diverges", [(1.0, False), (2.9e6, False), (3.1e6, True),
                                            (jnp.inf, True)])
def test_divergence_reference_includes_the_target_norm(later, diverges):
    """The rule is ``loss > factor * (loss_0 + ||T*||^2)``: from an almost exact start (loss_0 =
    1e-8) a loss of 1 is not a divergence (a reference of loss_0 alone would call it one), while
    crossing ``factor * ||T*||^2`` (||T*||^2 = 3 here) is."""
    target = _target(rank=3)
    assert float(jaxtd.inner(target, target)) == pytest.approx(3.0, rel=1e-6)
    alg = _scripted_loss(gd(0.01, init_scale=0.1), 1e-8, later)
    res = jaxtd.run(alg, jax.random.PRNGKey(0), target, width=4, steps=20, record_every=5,
                    divergence_factor=1e6)
    assert bool(res.diverged) is diverges
    assert int(res.diverged_step) == (1 if diverges else -1)


def test_divergence_is_flagged_with_its_step_and_freezes_the_state():
    target = _target()
    alg = gd(3.0, init_scale=0.7)
    key = jax.random.PRNGKey(0)
    res = jaxtd.run(alg, key, target, width=4, steps=60, record_every=5)
    # Oracle: step the algorithm in Python and apply the documented rule.
    state, losses = alg.init(key, target, 4), []
    step = jax.jit(alg.step)
    for _ in range(60):
        state, m = step(state, target)
        losses.append(float(m["loss"]))
    losses = np.array(losses)
    limit = 1e6 * (losses[0] + float(jaxtd.inner(target, target)))
    bad = ~np.isfinite(losses) | (losses > limit)
    assert bad.any()
    assert bool(res.diverged) and int(res.diverged_step) == int(np.argmax(bad))
    k = int(res.diverged_step)
    for name in ("relative_error", "loss", "distance", "objective"):
        assert np.all(np.isfinite(np.asarray(res.history[name]))), name
    # Frozen at the last good iterate: later records repeat it, its objective is losses[k-1].
    after = np.asarray(res.history["step"]) > k
    rel = np.asarray(res.history["relative_error"])[after]
    np.testing.assert_array_equal(rel[:-1], rel[0])
    # the last record holds the precise final value of the same frozen iterate
    np.testing.assert_allclose(rel[-1], rel[0], rtol=1e-5)
    assert float(res.final_relative_error) == rel[-1]
    # rtol 1e-5: the scanned and the stepwise-jitted programs round differently, and a
    # learning rate of 3 amplifies the difference over the steps before the blow-up
    np.testing.assert_allclose(np.asarray(res.history["objective"])[after], losses[k - 1],
                               rtol=1e-5)
    # A lower factor flags an earlier, merely exploding step.
    early = jaxtd.run(alg, key, target, width=4, steps=60, record_every=5, divergence_factor=1.0)
    assert bool(early.diverged)
    assert int(early.diverged_step) == int(np.argmax(losses > losses[0] + 2.0))


class _Frozen:
    """An algorithm that sits at a fixed float32 model 3e-7 (relative) from the target."""

    @staticmethod
    def make(noise):
        def init(key, target, width, *, active=None, hparams=None):
            return target.factors[:width] + noise

        def step(state, target):
            return state, {"loss": jaxtd.loss(jaxtd.SymCP(jnp.ones(state.shape[0]), state, 3),
                                              target)}

        return Algorithm("frozen", init, step,
                         lambda s: jaxtd.SymCP(jnp.ones(s.shape[0], s.dtype), s, 3), lambda s: s,
                         {})


def test_float32_runs_report_accurate_small_errors():
    target = _target(dim=16, rank=4)
    noise = 3e-7 * jax.random.normal(jax.random.PRNGKey(3), (4, 16))
    res = jaxtd.run(_Frozen.make(noise), jax.random.PRNGKey(0), target, width=4, steps=4,
                    record_every=2)
    expected = oracles.relative_error_longdouble(np.ones(4), target.factors + noise,
                                                 target.weights, target.factors, 3)
    assert 1e-7 < expected < 1e-5
    np.testing.assert_allclose(res.final_relative_error, expected, rtol=1e-2)
    # A real float32 GD run converging to ~5e-6: finite, non-zero, not below the float64 run of
    # the same problem (whose float64 init draws differ).
    alg = gd(0.1)
    small = _target()
    f32 = jaxtd.run(alg, jax.random.PRNGKey(2), small, width=8, steps=3000, record_every=500)
    err32 = np.asarray(f32.history["relative_error"])
    assert np.all(np.isfinite(err32)) and 0 < err32[-1] < 1e-5, err32
    jax.config.update("jax_enable_x64", True)
    try:
        f64 = jaxtd.run(alg, jax.random.PRNGKey(2), _target(), width=8, steps=3000,
                        record_every=500)
    finally:
        jax.config.update("jax_enable_x64", False)
    err64 = np.asarray(f64.history["relative_error"])
    assert 1e-8 < err64[-1] < 1e-5, err64
    # float32 GD stalls at its own gradient-rounding floor (measured 5e-6 vs 2e-6 in float64):
    # the reported error must sit at or above the float64 trajectory, never at a spurious 0.
    assert 0.5 * err64[-1] < err32[-1] < 1e-5


def test_one_compilation_per_algorithm_and_shapes(x64):  # x64: the cheaper metric to compile
    target = _target()
    alg = gd(0.1, model="two_homogeneous")
    traces = []

    def counting_init(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return alg.init(*args, **kwargs)

    counted = alg._replace(init=counting_init)
    kw = dict(width=5, steps=20, record_every=10)
    jaxtd.run(counted, jax.random.PRNGKey(0), target, active=5, hparams={"learning_rate": 0.1}, **kw)
    n = len(traces)
    jaxtd.run(counted, jax.random.PRNGKey(1), target, active=3,
              hparams={"learning_rate": 0.3}, **kw)
    jaxtd.run(counted, jax.random.PRNGKey(2), _target(seed=5), active=4,
              hparams={"learning_rate": 0.2}, **kw)
    assert len(traces) == n
    jaxtd.run(counted, jax.random.PRNGKey(0), target, active=5, hparams={"learning_rate": 0.1},
              width=6, steps=20, record_every=10)
    assert len(traces) > n  # a new width is a new shape


def test_vmap_over_keys_and_masks_equals_separate_runs(x64):
    target = _target()
    alg = gd(0.1, model="two_homogeneous", regularization=1e-3)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    actives = jnp.array([7, 3, 5])
    kw = dict(steps=200, record_every=50)
    batched = jax.jit(jax.vmap(lambda k, a: simulate(alg, k, target, width=7, active=a, **kw)))(
        keys, actives)
    for i in range(3):
        alone = jaxtd.run(alg, keys[i], target, width=int(actives[i]), **kw)
        got = jax.tree_util.tree_map(lambda x: x[i], batched)
        for name in ("relative_error", "loss", "distance", "fitted_weight", "best_correlation"):
            np.testing.assert_allclose(got.history[name], alone.history[name], rtol=1e-9,
                                       atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(got.history["active_count"], alone.history["active_count"])
        np.testing.assert_array_equal(got.fit_times, alone.fit_times)
        assert float(got.final_relative_error) == pytest.approx(float(alone.final_relative_error),
                                                                rel=1e-9)


def test_run_bad_input_names_the_argument():
    target, alg, key = _target(), gd(0.1), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="steps=10 must be a multiple of record_every=3"):
        jaxtd.run(alg, key, target, width=3, steps=10, record_every=3)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        jaxtd.run(alg, key, target, width=3, steps=0)
    with pytest.raises(ValueError, match="width must be >= 1"):
        jaxtd.run(alg, key, target, width=0, steps=10)
    with pytest.raises(TypeError, match="width must be an int"):
        jaxtd.run(alg, key, target, width=3.0, steps=10)
    with pytest.raises(TypeError, match="algorithm must be a jaxtd.algorithms.Algorithm"):
        jaxtd.run(lambda s: s, key, target, width=3, steps=10)
    with pytest.raises(TypeError, match="target must be a jaxtd.SymCP"):
        jaxtd.run(alg, key, target.factors, width=3, steps=10)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        jaxtd.run(alg, jax.random.split(key, 3), target, width=3, steps=10)
    with pytest.raises(ValueError, match="active must be in"):
        jaxtd.run(alg, key, target, width=3, steps=10, active=5)
    with pytest.raises(ValueError, match="divergence_factor"):
        jaxtd.run(alg, key, target, width=3, steps=10, divergence_factor=0.0)


def test_traced_and_constant_hparams_give_identical_runs(x64):
    """run() passes every hparam traced; inside a caller's jit (a sweep's non-swept hparams) the
    defaults are constants. Both give the same bits, even where the run has exact ties: every
    initial row has norm exactly δ, and the variant's first "smallest" re-draw picks by rounding
    (without the runner's barrier this very case selected rows 2, 0, 1 against 1, 2, 0)."""
    alg = jaxtd.algorithms.variant(0.1, init_scale=0.1, amplify_steps=5, fit_steps=15,
                                   epochs=None)
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(7), 6, 2, 3)
    key = jaxtd.key_for_seed(4)
    kw = dict(width=3, steps=240, record_every=40)
    traced = jaxtd.run(alg, key, target, hparams={"learning_rate": 0.2}, **kw)
    constant = jax.jit(lambda k, t: simulate(alg, k, t, hparams={"learning_rate": 0.2}, **kw))(
        key, target)
    np.testing.assert_array_equal(traced.history["selected"], constant.history["selected"])
    np.testing.assert_array_equal(traced.history["relative_error"],
                                  constant.history["relative_error"])


@pytest.mark.parametrize("active,err", [(2.5, TypeError), (2.0, TypeError), (True, TypeError),
                                        (np.float32(2), TypeError), (jnp.array(2.5), TypeError),
                                        (0, ValueError), (4, ValueError)])
def test_active_must_be_an_int_in_run_and_simulate(active, err):
    """``active=2.5`` was read as ``int(2.5) = 2`` by the check while the mask trained 3 rows."""
    target, alg, key = _target(dim=3, rank=1), gd(0.1), jax.random.PRNGKey(0)
    for fn in (jaxtd.run, simulate):
        with pytest.raises(err, match="active"):
            fn(alg, key, target, width=3, steps=4, record_every=2, active=active)
    for ok in (2, np.int32(2), jnp.array(2)):  # ints of every kind are accepted
        out = jaxtd.run(alg, key, target, width=3, steps=4, record_every=2, active=ok)
        assert int(out.active_count) <= 2


def test_simulate_refuses_what_run_refuses_with_the_same_message():
    """simulate silently ran fewer steps for a record_every that does not divide steps, and
    accepted a negative learning rate that run refuses."""
    target, alg, key = _target(dim=3, rank=1), gd(0.1), jax.random.PRNGKey(0)
    cases = [dict(record_every=3), dict(hparams={"learning_rate": -0.1}),
             dict(hparams={"init_scale": float("nan")}), dict(hparams={"momentum": 0.5}),
             dict(divergence_factor=0.0), dict(steps=0), dict(width=0)]
    for extra in cases:
        kw = {"width": 2, "steps": 4, "record_every": 2, **extra}
        with pytest.raises((ValueError, TypeError)) as from_run:
            jaxtd.run(alg, key, target, **kw)
        with pytest.raises(type(from_run.value)) as from_simulate:
            simulate(alg, key, target, **kw)
        assert str(from_simulate.value) == str(from_run.value)


def test_traced_values_pass_simulate_validation():
    """Validation only looks at concrete values: vmapped actives and hparams still work."""
    target, alg, key = _target(dim=3, rank=1), gd(0.1), jax.random.PRNGKey(0)
    f = jax.jit(jax.vmap(lambda a, lr: simulate(alg, key, target, width=3, steps=4,
                                                record_every=2, active=a,
                                                hparams={"learning_rate": lr}).final_loss))
    out = f(jnp.array([1, 3]), jnp.array([0.1, 0.05], jnp.float32))
    assert out.shape == (2,) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.timeout(60)
def test_default_record_every_is_bounded_for_huge_steps():
    """It was a Python loop over ~steps/100 candidates: steps = 10**12 hung."""
    from jaxtd._checks import largest_divisor_at_most
    assert jaxtd.default_record_every(10 ** 12) == 10 ** 10
    assert jaxtd.default_record_every(2 ** 31 - 1) == 1            # a prime
    assert jaxtd.default_record_every(1000) == 10
    for n in range(1, 200):
        for bound in range(1, n + 2):
            want = max(k for k in range(1, min(bound, n) + 1) if n % k == 0)
            assert largest_divisor_at_most(n, bound) == want
    target, alg, key = _target(dim=3, rank=1), gd(0.1), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="steps must be <= 2147483647"):
        jaxtd.run(alg, key, target, width=2, steps=10 ** 12)
    with pytest.raises(ValueError, match="steps must be <= 2147483647"):
        jaxtd.sweep(alg, target, seeds=1, widths=[2], steps=10 ** 12, progress=False)


@pytest.mark.parametrize("name, key, value", [("gamma", "gamma", 0.5),
                                              ("learning_rate", "step_size", -0.1),
                                              ("threshold", "delta1", 0.0)])
def test_hparam_out_of_range_is_refused_by_run_and_sweep_with_the_schema_message(name, key, value):
    """One range per hyper-parameter: an override of deflation's ``name`` (set by its argument
    ``key``) is refused by run and sweep, before anything compiles, with the message the config
    gives for the same value in a TOML table (one declaration: the algorithm's schema)."""
    text = ('[target]\norder = 3\ndim = 3\nrank = 1\n[sweep]\nalgorithms = ["deflation"]\n'
            f'widths = [2]\nseeds = 1\nsteps = 4\nsuccess_threshold = 0.1\n'
            f'[deflation]\n{key} = {value}\n')
    with pytest.raises(cfg.ConfigError) as from_config:
        cfg.loads(text)
    problem = str(from_config.value).split(": ", 1)[1]  # "must be > 1, got 0.5; fix: ..."
    target, alg = _target(dim=3, rank=1), deflation()
    with pytest.raises(ValueError) as from_run:
        jaxtd.run(alg, jax.random.PRNGKey(0), target, width=2, steps=4, record_every=2,
                  hparams={name: value})
    with pytest.raises(ValueError) as from_sweep:
        jaxtd.sweep(alg, target, seeds=1, widths=[2], steps=4, record_every=2,
                    hparams={name: [0.1 if name == "learning_rate" else 3.0, value]},
                    progress=False)
    for err in (from_run.value, from_sweep.value):
        assert str(err) == f"hparams[{name!r}]: {problem}"


def test_hparam_ranges_of_an_algorithm_without_a_schema():
    """A hand-assembled algorithm (no ``ranges``): the learning rate keeps the range every
    optimizer spec declares (schema.LEARNING_RATE), any other hyper-parameter must be finite."""
    alg, target, key = gd(0.1)._replace(ranges=None), _target(dim=3, rank=1), jax.random.PRNGKey(0)
    kw = dict(width=2, steps=4, record_every=2)
    with pytest.raises(ValueError, match=r"^hparams\['learning_rate'\]: must be > 0, got -0.1"):
        jaxtd.run(alg, key, target, hparams={"learning_rate": -0.1}, **kw)
    with pytest.raises(ValueError, match=r"^hparams\['init_scale'\]: must be finite"):
        jaxtd.run(alg, key, target, hparams={"init_scale": float("inf")}, **kw)
    with pytest.raises(TypeError, match=r"^hparams\['init_scale'\] must be a real number"):
        jaxtd.run(alg, key, target, hparams={"init_scale": "big"}, **kw)
