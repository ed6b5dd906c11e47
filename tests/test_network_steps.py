"""The pieces of the network algorithm's step, each alone against numpy (Hermite features from
``numpy.polynomial.hermite_e``): the batch a step draws, the loss it differentiates, the
trained variables of each regime and the initial layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import hermite_e

import jaxtd
from jaxtd import algorithms
# the step pieces are private on purpose: they are what this file tests
from jaxtd.algorithms._network import (Batch, Layout, draw_batch, empirical_loss,
                                       initial_layers, outputs, sample_mask, trained,
                                       with_trained)
from jaxtd.algorithms.base import init_context

DIM, ORDER, WIDTH, SAMPLES, BATCH = 3, 3, 5, 12, 4


def _numpy_outputs(a, w, x, order):
    """``f(x_j) = sum_i a_i ||w_i||^l He_l(w_i . x_j / ||w_i||)``, ``(n,)``, in numpy."""
    a, w, x = (np.asarray(v, np.float64) for v in (a, w, x))
    norms = np.linalg.norm(w, axis=1)
    coef = np.zeros(order + 1)
    coef[order] = 1.0
    phi = norms ** order * hermite_e.hermeval(x @ w.T / norms, coef)
    return phi @ a


@pytest.fixture(scope="module")
def state():
    """A minibatch state (12 samples, 8 of them active, batches of 4) of width 5, float64."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        target = jaxtd.targets.orthonormal(jax.random.PRNGKey(1), DIM, 2, ORDER,
                                           dtype=jnp.float64)
        algorithm = algorithms.network(0.01, samples=SAMPLES, batch_size=BATCH, noise=0.1)
        init = jax.jit(lambda key: algorithm.init(key, target, WIDTH, active=4,
                                                  hparams={"active_samples": 8.0}))
        yield init(jax.random.PRNGKey(0)), target  # one program, not op by op
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_draw_batch_takes_distinct_active_rows(state, x64):
    state, target = state
    layout = Layout("nn", False, SAMPLES, BATCH)
    np.testing.assert_array_equal(sample_mask(state, layout), [1.0] * 8 + [0.0] * 4)
    seen, draw = set(), jax.jit(draw_batch, static_argnums=2)
    for count in range(6):
        x, y, weights, _ = draw(state._replace(count=jnp.int32(count)), target, layout)
        rows = [int(np.flatnonzero((np.asarray(state.x) == xi).all(axis=1))[0]) for xi in x]
        assert len(set(rows)) == BATCH and max(rows) < 8, rows
        np.testing.assert_array_equal(y, np.asarray(state.y)[rows])
        np.testing.assert_array_equal(weights, np.ones(BATCH))
        seen.add(tuple(sorted(rows)))
    assert len(seen) > 1  # a new batch per step


def test_empirical_loss_is_the_weighted_mean_square(state, x64):
    state, _ = state
    weights = np.asarray([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0], np.float64)
    for layout in (Layout("nn", False, SAMPLES, None), Layout("nn", True, SAMPLES, None),
                   Layout("rf", False, SAMPLES, None)):
        value = trained(state, layout)
        got = empirical_loss(state, value, Batch(state.x, state.y, jnp.asarray(weights)),
                             layout)
        f = _numpy_outputs(state.weights, state.factors, state.x, ORDER)
        want = 0.5 * np.sum(weights * (f - np.asarray(state.y)) ** 2) / weights.sum()
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_trained_variables_round_trip(state, x64):
    state, _ = state
    w = state.factors + 1.0
    cases = {("nn", False): (w, "factors"), ("nt", False): (w, "delta"),
             ("rf", False): (state.weights + 1.0, "weights")}
    for (regime, out), (value, field) in cases.items():
        layout = Layout(regime, out, SAMPLES, None)
        new = with_trained(state, value, layout)
        np.testing.assert_array_equal(getattr(new, field), value)
        np.testing.assert_array_equal(trained(new, layout), value)
    both = with_trained(state, (w, state.weights * 2), Layout("nn", True, SAMPLES, None))
    np.testing.assert_array_equal(both.factors, w)
    np.testing.assert_array_equal(both.weights, state.weights * 2)


def test_initial_layers(state, x64):
    _, target = state
    ctx = init_context(jax.random.PRNGKey(3), target, WIDTH, {"init_scale": 0.5}, active=3)
    w0, a0 = initial_layers(ctx, target, "small", "auto", "nn")
    np.testing.assert_allclose(np.linalg.norm(w0, axis=1), 0.5, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(a0)[3:], 0.0)       # masked rows carry no weight
    assert np.all(np.abs(np.asarray(a0)[:3]) == 1.0)
    _, a_rf = initial_layers(ctx, target, "standard", "auto", "rf")
    np.testing.assert_array_equal(a_rf, 0.0)                      # rf starts from a = 0
    w_anti, a_anti = initial_layers(ctx, target, "antisymmetric", "auto", "nn")
    np.testing.assert_array_equal(w_anti[0], w_anti[1])           # a pair: one row, signs +-1
    assert float(a_anti[0]) == -float(a_anti[1]) != 0.0


def _numpy_tangent_outputs(a, w, x, delta, order):
    """``f(x; W0) + ∂_t f(x; W0 + tΔ)|_0`` in numpy, the derivative by a complex step (exact to
    rounding: ``f`` is a polynomial in ``W``; ``||w||^l He_l(w·x/||w||)`` with ``||w|| =
    sqrt(w·w)``, analytic)."""
    a, w, x, delta = (np.asarray(v, np.float64) for v in (a, w, x, delta))
    coef = np.zeros(order + 1)
    coef[order] = 1.0

    def f(v):
        norms = np.sqrt(np.sum(v * v, axis=1))
        return (norms ** order * hermite_e.hermeval(x @ v.T / norms, coef)) @ a

    h = 1e-30
    return f(w) + np.imag(f(w + 1j * h * delta)) / h


@pytest.mark.parametrize("batch_size", [None, BATCH])
def test_nt_outputs_from_the_data_sets_tangent_are_the_linearized_network(state, batch_size,
                                                                          x64):
    _, target = state
    algorithm = algorithms.network(0.01, regime="nt", samples=SAMPLES, batch_size=batch_size)
    nt = jax.jit(lambda key: algorithm.init(key, target, WIDTH))(jax.random.PRNGKey(4))
    layout = Layout("nt", False, SAMPLES, batch_size)
    delta = jax.random.normal(jax.random.PRNGKey(5), nt.factors.shape, jnp.float64)
    for s in (nt, nt.with_init_params(1.5 * nt.factors)):  # a new W0: a new tangent
        batch = draw_batch(s, target, layout)
        want = _numpy_tangent_outputs(s.weights, s.factors, batch.x, delta, ORDER)
        np.testing.assert_allclose(outputs(s, delta, batch.x, layout, batch.tangent), want,
                                   rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(outputs(s, delta, batch.x, layout), want,  # jax.linearize
                                   rtol=1e-11, atol=1e-11)
