"""Tests of jaxtd/metrics.py against numpy/dense oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import metrics
from tests import oracles


def _pair(order=3, m=6, d=5, r=3, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    model = jaxtd.SymCP(jax.random.normal(k[0], (m,)).at[2].set(0.0),
                        jax.random.normal(k[1], (m, d)), order)
    target = jaxtd.SymCP(jnp.array([1.0, -0.5, 2.0]), 1.7 * jax.random.normal(k[3], (r, d)), order)
    return model, target


@pytest.mark.parametrize("order", [3, 4])
def test_fitted_weights_are_dense_contractions(order, x64):
    model, target = _pair(order)
    dense = oracles.dense(model.weights, model.factors, order)
    a = np.asarray(target.factors)
    for j, aj in enumerate(a / np.linalg.norm(a, axis=1, keepdims=True)):
        v = dense
        for _ in range(order):
            v = v @ aj
        np.testing.assert_allclose(metrics.fitted_weights(model, target)[j], v, rtol=1e-10)
    np.testing.assert_allclose(metrics.true_weights(target),
                               np.asarray(target.weights) * np.linalg.norm(a, axis=1) ** order,
                               rtol=1e-12)


def test_best_correlation_and_active_count(x64):
    model, target = _pair()
    u = np.asarray(model.factors)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    a = np.asarray(target.factors)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    corr = np.abs(u @ a.T)
    live = np.asarray(model.weights) != 0
    np.testing.assert_allclose(metrics.best_correlation(model, target),
                               corr[live].max(axis=0), rtol=1e-12)
    size = np.abs(np.asarray(model.weights)) * np.linalg.norm(np.asarray(model.factors),
                                                              axis=1) ** 3
    smallest = np.min(np.abs(np.asarray(metrics.true_weights(target))))
    for frac in (0.01, 0.1, 1.0):
        assert int(metrics.active_count(model, target, frac)) == int(np.sum(size >= frac * smallest))


def test_distance_over_active_rows():
    w0 = jnp.array([[3.0, 4.0], [1.0, 0.0], [7.0, 7.0]])
    w = w0 + jnp.array([[0.0, 5.0], [0.0, 0.0], [100.0, 0.0]])
    np.testing.assert_allclose(metrics.distance(w, w0, jnp.array([1.0, 1.0, 0.0])),
                               5.0 / np.sqrt(26.0), rtol=1e-6)
    np.testing.assert_allclose(metrics.distance(w, w0), np.sqrt(25 + 1e4) / np.sqrt(124.0),
                               rtol=1e-6)
    assert float(metrics.distance(w0, jnp.zeros_like(w0))) == pytest.approx(np.sqrt(124.0))


def test_fit_times():
    steps = jnp.array([0, 10, 20, 30])
    fitted = jnp.array([[0.0, 0.0, 0.0], [0.6, 0.0, -0.1], [0.6, 0.3, -0.3], [1.0, 0.49, -0.9]])
    true = jnp.array([1.0, 1.0, -0.5])
    np.testing.assert_array_equal(metrics.fit_times(fitted, true, steps), [10, -1, 20])
    np.testing.assert_array_equal(metrics.fit_times(fitted, true, steps, 0.25), [10, 20, 20])


def test_record_relative_error_is_accurate_in_float32():
    """A float32 model 1e-6 away from the target: the reported error matches a long-double
    oracle (not NaN, not 0), while the plain float32 Gram form cannot resolve it."""
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(0), 16, 4, 3)
    noise = jax.random.normal(jax.random.PRNGKey(1), target.factors.shape)
    model = jaxtd.SymCP(target.weights, target.factors + 3e-7 * noise, 3)
    rec = jax.jit(lambda m, t: metrics.record(m, t, m.factors, t.factors))(model, target)
    expected = oracles.relative_error_longdouble(model.weights, model.factors, target.weights,
                                                 target.factors, 3)
    assert 1e-7 < expected < 1e-5
    assert np.isfinite(float(rec["relative_error"]))
    np.testing.assert_allclose(rec["relative_error"], expected, rtol=1e-2)
    np.testing.assert_allclose(rec["loss"], 0.5 * expected ** 2 * 4.0, rtol=2e-2)
    assert rec["active_count"].dtype == jnp.int32 and int(rec["active_count"]) == 4
    np.testing.assert_allclose(rec["best_correlation"], 1.0, atol=1e-5)
