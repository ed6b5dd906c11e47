"""jaxtd.network and jaxtd.algorithms.network: the Hermite network behind a symmetric tensor.

Oracles: numpy's Hermite polynomials; Monte Carlo averages over 10^6 Gaussian samples (the
identity E[φ_w φ_v] = l! (w·v)^l and the population risk, within a few standard errors computed
from the samples); central finite differences; the closed-form least-squares fit of the output
layer; a standalone run against a vmapped sweep cell.
"""

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import hermite_e

import jaxtd
from jaxtd import SymCP, algorithms, network
from jaxtd import key_for_seed

N_MC = 10 ** 6
MAX_SE = 5.0  # a deviation beyond 5 standard errors has probability < 1e-6 under the identity


def _rows(seed, k, d, dtype=jnp.float64):
    return jax.random.normal(jax.random.PRNGKey(seed), (k, d), dtype) / np.sqrt(d)


def _model(seed, k, d, order, dtype=jnp.float64):
    w = jax.random.normal(jax.random.PRNGKey(seed + 100), (k,), dtype)
    return SymCP(w, _rows(seed, k, d, dtype), order)


def _mean_and_se(values):
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


# -- Hermite polynomials ------------------------------------------------------------------------

@pytest.mark.parametrize("order", range(0, 7))
def test_hermite_matches_numpy(order, x64):
    t = np.linspace(-3.0, 3.0, 13)
    expected = hermite_e.hermeval(t, [0.0] * order + [1.0])
    np.testing.assert_allclose(network.hermite(order, jnp.asarray(t)), expected, rtol=1e-12,
                               atol=1e-12)
    # the homogeneous form: r^{l/2} He_l(s / sqrt(r))
    r = 2.5
    np.testing.assert_allclose(network.hermite(order, jnp.asarray(t), r),
                               r ** (order / 2) * hermite_e.hermeval(t / np.sqrt(r),
                                                                     [0.0] * order + [1.0]),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_hermite_derivatives_match_numpy(order, x64):
    """First derivatives in ``s`` and ``r`` against numpy by a complex step (``r^{l/2}
    He_l(s / sqrt(r))`` is analytic in both for ``r > 0``), and the second in ``s`` against
    ``hermite_e.hermeder``, through jax's own differentiation of :func:`hermite`."""
    coef = [0.0] * order + [1.0]

    def numpy_h(s, r):
        return r ** (order / 2) * hermite_e.hermeval(s / np.sqrt(r), coef)

    s, r, eps = np.linspace(-2.0, 2.5, 7), 1.7, 1e-30
    ds, dr = jax.vmap(jax.grad(lambda s, r: network.hermite(order, s, r), argnums=(0, 1)),
                      in_axes=(0, None))(jnp.asarray(s), r)
    np.testing.assert_allclose(ds, np.imag(numpy_h(s + 1j * eps, r)) / eps, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(dr, np.imag(numpy_h(s, r + 1j * eps)) / eps, rtol=1e-12,
                               atol=1e-12)
    d2 = jax.vmap(jax.grad(jax.grad(lambda s: network.hermite(order, s))))(jnp.asarray(s))
    np.testing.assert_allclose(d2, hermite_e.hermeval(s, hermite_e.hermeder(coef, 2)),
                               rtol=1e-12, atol=1e-12)


def test_features_are_hermite_of_the_projection(x64):
    model = _model(0, 3, 4, 3)
    x = _rows(1, 5, 4) * 2.0
    w = np.asarray(model.factors)
    norms = np.linalg.norm(w, axis=1)
    expected = norms ** 3 * hermite_e.hermeval((np.asarray(x) @ w.T) / norms, [0, 0, 0, 1])
    np.testing.assert_allclose(network.features(model, x), expected, rtol=1e-12)
    np.testing.assert_allclose(network.predict(model, x), expected @ np.asarray(model.weights),
                               rtol=1e-12)


# -- the identities, by Monte Carlo -------------------------------------------------------------

@pytest.fixture(scope="module")
def gaussian_inputs():
    with jax.enable_x64(True):
        return jax.random.normal(jax.random.PRNGKey(2024), (N_MC, 3), jnp.float64)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_feature_covariance_monte_carlo(order, gaussian_inputs, x64):
    """E[φ_w(x) φ_v(x)] = l! (w·v)^l, also for w = v (the variance)."""
    w = jnp.array([[0.6, -0.3, 0.5], [0.2, 0.7, -0.4]])
    phi = network.features(SymCP(jnp.ones(2), w, order), gaussian_inputs)
    for i, j in ((0, 1), (0, 0)):
        mean, se = _mean_and_se(phi[:, i] * phi[:, j])
        exact = math.factorial(order) * float(w[i] @ w[j]) ** order
        assert abs(mean - exact) < MAX_SE * se, (order, i, j, mean, exact, se)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_population_loss_monte_carlo(order, x64):
    """½ E[(f(x) - y)^2] = l! jaxtd.loss(model, teacher) + ½ σ^2 on fresh labelled samples."""
    teacher = _model(3, 2, 3, order)
    model = _model(4, 3, 3, order)
    noise = 0.3
    x, y = network.sample(jax.random.PRNGKey(order), teacher, N_MC, noise)
    assert x.shape == (N_MC, 3) and y.shape == (N_MC,)
    # the sample's own moments: x standard normal, y - f*(x) of standard deviation σ
    np.testing.assert_allclose(np.cov(np.asarray(x[:200_000]).T), np.eye(3), atol=0.02)
    np.testing.assert_allclose(np.std(np.asarray(y - network.predict(teacher, x))), noise,
                               rtol=0.01)
    mean, se = _mean_and_se(0.5 * (network.predict(model, x) - y) ** 2)
    exact = float(network.population_loss(model, teacher, noise))
    np.testing.assert_allclose(exact, math.factorial(order) * float(jaxtd.loss(model, teacher))
                               + 0.5 * noise ** 2, rtol=1e-12)
    assert abs(mean - exact) < MAX_SE * se, (order, mean, exact, se)
    # empirical_loss is that same sample mean
    np.testing.assert_allclose(network.empirical_loss(model, x, y), mean, rtol=1e-9)


def test_sample_prefixes_are_smaller_samples():
    teacher = _model(3, 2, 3, 2, jnp.float32)
    key = jax.random.PRNGKey(5)
    x10, y10 = network.sample(key, teacher, 10, 0.2)
    x4, y4 = network.sample(key, teacher, 4, 0.2)
    np.testing.assert_array_equal(x10[:4], x4)
    np.testing.assert_allclose(y10[:4], y4, rtol=1e-6)
    assert x10.dtype == y10.dtype == jnp.float32


# -- gradients -----------------------------------------------------------------------------------

def _directional_fd(f, args, directions, eps=1e-6):
    plus = [a + eps * v for a, v in zip(args, directions)]
    minus = [a - eps * v for a, v in zip(args, directions)]
    return (f(*plus) - f(*minus)) / (2 * eps)


@pytest.mark.parametrize("order", [2, 3])
def test_gradients_match_finite_differences(order, x64):
    teacher = _model(5, 2, 4, order)
    model = _model(6, 3, 4, order)
    x, y = network.sample(jax.random.PRNGKey(1), teacher, 50, 0.1)
    va = jax.random.normal(jax.random.PRNGKey(7), model.weights.shape, jnp.float64)
    vw = jax.random.normal(jax.random.PRNGKey(8), model.factors.shape, jnp.float64)

    def emp(a, w):
        return network.empirical_loss(SymCP(a, w, order), x, y)

    def pop(a, w):
        return network.population_loss(SymCP(a, w, order), teacher, 0.1)

    @jax.jit  # one program for both losses, analytic and numeric
    def both(a, w):
        out = []
        for f in (emp, pop):
            ga, gw = jax.grad(f, argnums=(0, 1))(a, w)
            out.append((jnp.sum(ga * va) + jnp.sum(gw * vw), _directional_fd(f, (a, w), (va, vw))))
        return out

    for analytic, numeric in both(model.weights, model.factors):
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


@pytest.mark.parametrize("order", [2, 3])
def test_smooth_at_zero_row(order, x64):
    """A zero inner-weight row: feature 0, finite gradients equal to finite differences."""
    w = _rows(9, 3, 4).at[1].set(0.0)
    model = SymCP(jnp.array([1.0, -0.7, 0.5]), w, order)
    x, y = network.sample(jax.random.PRNGKey(2), _model(10, 2, 4, order), 30)
    np.testing.assert_array_equal(network.features(model, x)[:, 1], 0.0)
    def emp(w):
        return network.empirical_loss(SymCP(model.weights, w, order), x, y)

    v = jnp.zeros_like(w).at[1].set(jnp.array([0.3, -0.2, 0.5, 0.1]))

    @jax.jit  # gradient, finite difference and Hessian in one program
    def derivatives(w):
        hess = jax.hessian(lambda r: network.features(
            SymCP(model.weights, w.at[1].set(r), order), x[:1])[0, 1])(jnp.zeros(4))
        return jax.grad(emp)(w), _directional_fd(emp, (w,), (v,)), hess

    grad_w, numeric, hess = derivatives(w)
    assert np.all(np.isfinite(grad_w))
    # φ_w is homogeneous of degree l >= 2 in w: zero derivative at w = 0
    np.testing.assert_allclose(grad_w[1], 0.0, atol=1e-14)
    np.testing.assert_allclose(numeric, 0.0, atol=1e-8)
    # second derivatives are finite too (order 2: d²φ/dw² = 2 (x x^T - I) at w = 0)
    assert np.all(np.isfinite(hess))
    if order == 2:
        np.testing.assert_allclose(hess, 2 * (np.outer(x[0], x[0]) - np.eye(4)), atol=1e-12)


# -- bad input -----------------------------------------------------------------------------------

def test_bad_inputs_name_the_argument():
    model = _model(0, 3, 4, 3, jnp.float32)
    teacher = _model(1, 2, 4, 3, jnp.float32)
    x = jnp.zeros((5, 4))
    y = jnp.zeros(5)
    cases = [
        (lambda: network.features("W", x), TypeError, "model must be a jaxtd.SymCP"),
        (lambda: network.features(model, jnp.zeros((5, 3))), ValueError, r"x must have shape \(n, 4\)"),
        (lambda: network.predict(model, jnp.zeros(4)), ValueError, "x must have shape"),
        (lambda: network.predict(model, [[0.0] * 4]), TypeError, "x must be an array"),
        (lambda: network.features(model, jnp.zeros((5, 4), jnp.int32)), TypeError, "x must be a float"),
        (lambda: network.predict(model, x.at[0, 0].set(jnp.nan)), ValueError, "x has a non-finite"),
        (lambda: network.empirical_loss(model, x, jnp.zeros(4)), ValueError, r"y must have shape \(5,\)"),
        (lambda: network.empirical_loss(model, x, y.astype(jnp.int32)), TypeError, "y must be a float"),
        (lambda: network.population_loss(model, _model(1, 2, 4, 2, jnp.float32)), ValueError, "order"),
        (lambda: network.population_loss(model, _model(1, 2, 3, 3, jnp.float32)), ValueError, "dim"),
        (lambda: network.population_loss(model, teacher, -0.1), ValueError, "noise must be a finite number >= 0"),
        (lambda: network.population_loss(model, teacher, float("inf")), ValueError, "noise"),
        (lambda: network.sample(jax.random.PRNGKey(0), teacher, 0), ValueError, "n must be >= 1"),
        (lambda: network.sample(jax.random.PRNGKey(0), teacher, 2.5), TypeError, "n must be an int"),
        (lambda: network.sample(jax.random.PRNGKey(0), teacher, 4, "0.1"), TypeError, "noise"),
        (lambda: network.sample(jax.random.PRNGKey(0), teacher, 4, jnp.ones(2)), ValueError, "noise must be a scalar"),
        (lambda: network.sample(jax.random.PRNGKey(0), x, 4), TypeError, "teacher must be a jaxtd.SymCP"),
        (lambda: algorithms.network(regime="ntk"), ValueError, "regime must be one of"),
        (lambda: algorithms.network(samples=0), ValueError, "samples must be >= 1"),
        (lambda: algorithms.network(), ValueError, "samples=None .* needs a batch_size"),
        (lambda: algorithms.network(samples=10, batch_size=20), ValueError, "batch_size=20 exceeds"),
        (lambda: algorithms.network(samples=10, regime="rf", train_output=True), ValueError,
         "train_output=True with regime='rf'"),
        (lambda: algorithms.network(samples=10, train_output="yes"), TypeError, "train_output"),
        (lambda: algorithms.network(samples=10, noise=-1.0), ValueError, "noise"),
        (lambda: algorithms.network(samples=10, init="zeros"), ValueError, "init must be one of"),
        (lambda: algorithms.network(samples=10).init(jax.random.PRNGKey(0), teacher, 3,
                                                     hparams={"active_samples": 11}),
         ValueError, "active_samples.* must be a whole number in \\[1, samples=10\\]"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# -- the three regimes ---------------------------------------------------------------------------

ORDER, DIM = 2, 4


def _teacher(dtype=jnp.float32):
    t = jaxtd.targets.orthonormal(jax.random.PRNGKey(1), DIM, 2, ORDER)
    return SymCP(t.weights.astype(dtype), t.factors.astype(dtype), ORDER)


class Steps(NamedTuple):
    initial: Any     # the state after init
    state: Any       # after `steps` steps
    history: dict    # their stacked metrics: the step's and `measure`'s of each iterate
    next: tuple      # (state, metrics) of one more step from `state`
    measured: dict   # algorithm.measure of `state`


def _steps(algorithm, target, width, steps, key=0, hparams=None) -> Steps:
    """``steps`` steps by a plain scan, and one more step: one compiled program."""
    def one(state, _):
        new, metrics = algorithm.step(state, target)
        return new, {**metrics, **algorithm.measure(state, target)}

    @jax.jit
    def go(key, hparams):
        initial = algorithm.init(key, target, width, hparams=hparams)
        state, history = jax.lax.scan(one, initial, None, length=steps)
        return Steps(initial, state, history, algorithm.step(state, target),
                     algorithm.measure(state, target))

    return go(jax.random.PRNGKey(key), hparams)


def test_rf_converges_to_least_squares(x64):
    """Full-batch GD on the output layer from a = 0 reaches the min-norm least-squares fit, both
    under-determined (n < m) and over-determined (n > m)."""
    target = _teacher(jnp.float64)
    for samples, width in ((3, 6), (30, 4)):
        algorithm = algorithms.network(1.0, regime="rf", samples=samples)

        @jax.jit
        def go(key):
            # the step 1 / λ_max(Φ^T Φ / n) (condition numbers 177 and 11 here: 4000 steps
            # converge); the data set does not depend on the learning rate
            state = algorithm.init(key, target, width)
            phi = network.features(algorithm.tensor(state), state.x)
            rate = 1.0 / jnp.linalg.eigvalsh(phi.T @ phi / samples)[-1]
            state = algorithm.init(key, target, width, hparams={"learning_rate": rate})
            return jax.lax.scan(lambda s, _: algorithm.step(s, target), state, None, length=4000)

        state, history = go(jax.random.PRNGKey(0))
        fit = network.rf_least_squares(algorithm.tensor(state), state.x, state.y)
        np.testing.assert_allclose(state.weights, fit.weights, atol=1e-6)
        np.testing.assert_array_equal(algorithm.tensor(state).factors, fit.factors)  # W fixed
        np.testing.assert_allclose(history["loss"][-1],
                                   network.empirical_loss(fit, state.x, state.y), atol=1e-10)
        if samples < width:  # interpolation
            assert history["loss"][-1] < 1e-10


def test_nt_converges_to_least_squares(x64):
    """Full-batch GD on the linearized network from Δ = 0 reaches nt_least_squares, the min-norm
    fit (n = 5 < m d = 16: it interpolates), whose tensor is the lazy module's polarization."""
    target = _teacher(jnp.float64)
    samples, width = 5, 4
    algorithm = algorithms.network(1.0, regime="nt", samples=samples, init="antisymmetric")

    @jax.jit
    def go(key):
        # the step 1 / λ_max(J^T J / n), J the Jacobian of the outputs in W at W0
        state = algorithm.init(key, target, width)
        jac = jax.jacfwd(lambda w: network.predict(SymCP(state.weights, w, ORDER), state.x))(
            state.factors).reshape(samples, -1)
        rate = 1.0 / jnp.linalg.eigvalsh(jac @ jac.T / samples)[-1]
        state = algorithm.init(key, target, width, hparams={"learning_rate": rate})
        return jax.lax.scan(lambda s, _: algorithm.step(s, target), state, None, length=4000)

    state, history = go(jax.random.PRNGKey(0))
    model0 = SymCP(state.weights, state.factors, ORDER)
    delta = network.nt_least_squares(model0, state.x, state.y)
    np.testing.assert_allclose(state.delta, delta, atol=1e-6)
    assert history["loss"][-1] < 1e-10
    lin = jaxtd.lazy.polarize(model0, delta)
    np.testing.assert_allclose(network.predict(lin, state.x), state.y, atol=1e-8)
    np.testing.assert_allclose(network.population_loss(lin, target),
                               2.0 * jaxtd.lazy.lazy_loss(model0, delta, target), rtol=1e-9)


def test_nt_is_the_network_of_the_linearized_tensor(x64):
    """The NT regime's outputs are the network of its polarized tensor T(W0) + JΔ, and its
    population loss the lazy module's exact twin."""
    target = _teacher(jnp.float64)
    algorithm = algorithms.network(0.02, regime="nt", samples=30, noise=0.1)
    run = _steps(algorithm, target, 6, 50)
    state, (_, metrics), measured = run.state, run.next, run.measured
    lin = algorithm.tensor(state)
    assert lin.rank == 6 * 3 and float(jnp.linalg.norm(state.delta)) > 1e-2
    np.testing.assert_allclose(metrics["loss"], network.empirical_loss(lin, state.x, state.y),
                               rtol=1e-9)
    np.testing.assert_allclose(measured["empirical_loss"], metrics["loss"], rtol=1e-12)
    np.testing.assert_allclose(measured["population_loss"],
                               network.population_loss(lin, target, 0.1), rtol=1e-9)
    # the linearization by hand (order 2): φ_w + ∇φ_w·δ = (w·x)^2 - |w|^2 + 2(w·x)(δ·x) - 2 w·δ
    w, dlt, a, x = (np.asarray(v) for v in (state.factors, state.delta, state.weights, state.x))
    manual = ((x @ w.T) ** 2 - np.sum(w * w, 1) + 2 * (x @ w.T) * (x @ dlt.T)
              - 2 * np.sum(w * dlt, 1)) @ a
    np.testing.assert_allclose(network.predict(lin, state.x), manual, rtol=1e-9, atol=1e-12)


def test_nn_metrics_and_minibatches(x64):
    """nn with a trained output layer: metrics are the losses of the iterate before the update;
    minibatches are drawn from the data set without replacement."""
    target = _teacher(jnp.float64)
    algorithm = algorithms.network(0.01, regime="nn", samples=40, batch_size=10,
                                   train_output=True, noise=0.05)
    run = _steps(algorithm, target, 5, 0)
    state, (new, metrics), measured = run.state, run.next, run.measured
    model = algorithm.tensor(state)
    assert set(metrics) == {"loss"}  # the step pays for nothing it does not need
    np.testing.assert_allclose(measured["empirical_loss"],
                               network.empirical_loss(model, state.x, state.y), rtol=1e-12)
    np.testing.assert_allclose(measured["population_loss"],
                               network.population_loss(model, target, 0.05), rtol=1e-12)
    # the batch loss is the loss of 10 distinct rows of the data set
    per_row = 0.5 * (network.predict(model, state.x) - state.y) ** 2
    batch_mean = float(metrics["loss"])
    sub = np.sort(np.asarray(per_row))
    assert batch_mean != pytest.approx(float(jnp.mean(per_row)), rel=1e-6)
    assert sub[:10].mean() - 1e-12 <= batch_mean <= sub[-10:].mean() + 1e-12
    # both layers moved
    assert float(jnp.max(jnp.abs(new.factors - state.factors))) > 0
    assert float(jnp.max(jnp.abs(new.weights - state.weights))) > 0


def test_online_sgd_draws_fresh_samples(x64):
    """samples=None: step t trains on batch_size fresh samples from fold_in(state.key, t) (the
    documented stream) and the population risk falls."""
    target = _teacher(jnp.float64)
    noise = 0.05
    algorithm = algorithms.network(0.01, regime="nn", batch_size=64, noise=noise)
    run = _steps(algorithm, target, 4, 300)
    state0, history = run.initial, run.history
    assert state0.x.shape == (0, DIM)
    # the same batch, in two programs (the step's loss under value_and_grad, the record's
    # forward pass): equal to float64 rounding, which XLA may order differently per CPU
    np.testing.assert_allclose(history["empirical_loss"], history["loss"], rtol=1e-13)
    for t in (0, 1):
        x, y = network.sample(jax.random.fold_in(state0.key, t), target, 64, noise)
        if t == 0:
            np.testing.assert_allclose(history["loss"][0],
                                       network.empirical_loss(algorithm.tensor(state0), x, y),
                                       rtol=1e-12)
        else:  # a different batch each step
            assert float(history["loss"][1]) != pytest.approx(
                float(network.empirical_loss(algorithm.tensor(state0), x, y)), rel=1e-3)
    assert history["population_loss"][-1] < 0.5 * history["population_loss"][0]


def test_config_table_builds_the_network():
    """The command line reaches the network through a user table (factory + keyword args)."""
    from jaxtd import config
    cfg = config.loads("""
        [target]
        kind = "orthonormal"
        order = 2
        dim = 4
        rank = 2
        [sweep]
        algorithms = ["net"]
        widths = [3, 4]
        seeds = 2
        steps = 20
        success_threshold = 0.01
        [net]
        factory = "jaxtd.algorithms:network"
        learning_rate = 0.01
        regime = "nt"
        samples = 50
    """)
    # the same keys as a built-in table: the optimizer by name (default sgd), its rate apart
    built = config.build_algorithm("net", cfg.params["net"])
    assert built == algorithms.network(0.01, regime="nt", samples=50, name="net")
    assert built.name == "net"
    assert set(built.hparams) == {"init_scale", "noise", "learning_rate", "active_samples"}


def test_run_and_sweep_cell_equals_run_alone():
    """jaxtd.run and jaxtd.sweep with the network: the histories carry the empirical and the
    exact population loss, and a vmapped, width-padded cell whose data set is masked to its first
    32 of 64 samples (hparam active_samples) is the run with samples=32 alone."""
    target = _teacher()
    steps, record, noise = 60, 20, 0.1
    algorithm = algorithms.network(0.02, regime="nn", samples=64, batch_size=16, noise=noise)
    res = jaxtd.sweep(algorithm, target, seeds=[1, 0], widths=[3, 4], steps=steps,
                      record_every=record, hparams={"active_samples": [32, 64]},
                      bucketing="pow2")
    assert res.info["n_compiles"] == 1
    alone = jaxtd.run(algorithms.network(0.02, regime="nn", samples=32, batch_size=16,
                                         noise=noise),
                      key_for_seed(1), target, width=3, steps=steps, record_every=record)
    hist = alone.history
    for name in ("objective", "empirical_loss", "population_loss", "loss", "relative_error"):
        assert hist[name].shape == (steps // record + 1,)
    # at every record (measure: the recorded iterate's): the population loss is l! times the
    # runner's tensor loss, plus noise^2 / 2
    np.testing.assert_allclose(hist["population_loss"],
                               math.factorial(ORDER) * hist["loss"] + 0.5 * noise ** 2,
                               rtol=1e-4)
    assert hist["population_loss"][-1] < 0.5 * hist["population_loss"][0]  # it learns
    rows = res.rows
    cell = (rows.seed == 1) & (rows.width == 3)
    (index,) = np.flatnonzero((cell & (rows.active_samples == 32)).to_numpy())
    (full,) = np.flatnonzero((cell & (rows.active_samples == 64)).to_numpy())
    assert rows.padded_width.iloc[index] == 4
    np.testing.assert_allclose(rows.final_relative_error.iloc[index],
                               alone.final_relative_error, rtol=1e-4)
    for name, values in hist.items():
        np.testing.assert_allclose(res.histories[name][index], values, rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    # the mask mattered: the full data set gives another run
    assert abs(res.histories["empirical_loss"][full][-1] - hist["empirical_loss"][-1]) > 1e-4


@pytest.mark.parametrize("solve", ["rf", "nt"])
def test_vmapped_least_squares_solve_one_problem_per_lapack_call(solve):
    """Under vmap the closed forms loop over problems instead of calling a batched SVD (which
    XLA:CPU splits onto its thread pool and waits for there: a hang on 2 cores), with the same
    numbers as one problem at a time."""
    model = jaxtd.SymCP(jnp.ones(5), jax.random.normal(jax.random.PRNGKey(1), (5, 4)), 3)
    xs = jax.random.normal(jax.random.PRNGKey(2), (3, 20, 4))
    ys = jax.random.normal(jax.random.PRNGKey(3), (3, 20))
    fit = ((lambda x, y: network.rf_least_squares(model, x, y).weights) if solve == "rf"
           else (lambda x, y: network.nt_least_squares(model, x, y)))
    text = jax.jit(jax.vmap(fit)).lower(xs, ys).as_text()
    calls = [ln for ln in text.splitlines() if re.search(r"custom_call @lapack_\w*gesdd", ln)]
    assert calls, "no SVD in the program: the test checks nothing"
    assert all('num_batch_dims = "0"' in ln for ln in calls), calls
    # float32: the Jacobian is formed batched or not, and least squares amplifies its rounding
    np.testing.assert_allclose(jax.vmap(fit)(xs, ys),
                               np.stack([fit(xs[i], ys[i]) for i in range(3)]), rtol=1e-3,
                               atol=1e-6)
