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


def test_fit_times_counts_reaching_the_fraction_exactly():
    """``fitted / true >= fraction``: a record exactly at the fraction is fitted (binary-exact
    values, so no rounding decides it), for both signs of the true weight."""
    steps = jnp.array([0, 5, 10])
    fitted = jnp.array([[0.25, -0.25], [0.5, -0.5], [0.75, -0.75]])
    true = jnp.array([1.0, -1.0])
    np.testing.assert_array_equal(metrics.fit_times(fitted, true, steps), [5, 5])
    np.testing.assert_array_equal(metrics.fit_times(fitted, true, steps, 0.75), [10, 10])
    np.testing.assert_array_equal(metrics.fit_times(fitted, true, steps, 0.875), [-1, -1])


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


# -- derivatives -------------------------------------------------------------------------------

def _record_fn(model, target, params, params0):
    rec = metrics.record(model, target, params, params0, mask=jnp.array([1.0] * 5 + [0.0]))
    return jnp.concatenate([jnp.stack([rec["loss"], rec["relative_error"], rec["distance"]]),
                            rec["fitted_weight"], rec["best_correlation"]])


@jax.jit  # both modes in one program (op by op, the x64 metrics compile hundreds)
def _forward_and_reverse(primal, direction):
    """The derivative of ``_record_fn`` along ``direction`` by ``jvp`` and by full reverse-mode
    Jacobian rows contracted with it."""
    out, fwd = jax.jvp(_record_fn, primal, direction)
    _, pullback = jax.vjp(_record_fn, *primal)
    jac_rows = jax.vmap(pullback)(jnp.eye(out.shape[0], dtype=out.dtype))
    rev = sum(jnp.tensordot(g, v, axes=v.ndim) for g, v in
              zip(jax.tree_util.tree_leaves(jac_rows), jax.tree_util.tree_leaves(direction)))
    return fwd, rev


def test_record_derivatives_match_finite_differences(x64):
    """Forward and reverse derivatives of every float metric along a random direction of
    (model, target, params) against central finite differences."""
    model, target = _pair()
    params0 = model.factors * 0.9
    primal = (model, target, model.factors, params0)
    keys = iter(jax.random.split(jax.random.PRNGKey(7), 8))
    direction = jax.tree_util.tree_map(lambda x: jax.random.normal(next(keys), x.shape, x.dtype),
                                       primal)
    # keep the zero weight at zero: which components are live is a discrete choice
    m_dir = direction[0]
    direction = (jaxtd.SymCP(m_dir.weights.at[2].set(0.0), m_dir.factors, 3),
                 ) + direction[1:]
    f = jax.jit(_record_fn)
    h = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda x, v: x + s * v, primal, direction)
    want = (np.asarray(f(*shift(h))) - np.asarray(f(*shift(-h)))) / (2 * h)
    assert np.all(np.abs(want) > 1e-6), want
    fwd, rev = _forward_and_reverse(primal, direction)
    np.testing.assert_allclose(fwd, want, rtol=1e-5)
    np.testing.assert_allclose(rev, want, rtol=1e-5)


def test_float32_accurate_value_with_the_plain_derivative():
    """In float32 the loss and relative error keep the accurate (extended-precision) values of
    jaxtd.residual_sq/relative_error, and their gradients are those of the plain Gram form."""
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(0), 16, 4, 3)
    noise = jax.random.normal(jax.random.PRNGKey(1), target.factors.shape)
    model = jaxtd.SymCP(target.weights, target.factors + 1e-2 * noise, 3)
    half, g = jax.jit(jax.value_and_grad(metrics.half_residual_sq, argnums=(0, 1)))(model, target)
    assert float(half) == float(0.5 * jaxtd.residual_sq(model, target))
    want = jax.jit(jax.grad(jaxtd.losses.loss_autodiff, argnums=(0, 1)))(model, target)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    rel, g_rel = jax.jit(jax.value_and_grad(metrics.relative_error))(model, target)
    assert float(rel) == float(jaxtd.relative_error(model, target))
    # d sqrt(2 L)/||T*|| = dL / (sqrt(2 L) ||T*||)
    scale = 1.0 / (float(rel) * float(jaxtd.norm(target)) ** 2)
    np.testing.assert_allclose(g_rel.factors, scale * want[0].factors, rtol=1e-3, atol=1e-6)
    # the accurate value itself is not what a plain float32 formula gives: a real test
    assert np.all(np.isfinite(np.asarray(g_rel.factors)))


def test_derivatives_at_zero_distance_and_exact_fit_are_finite(x64):
    """sqrt at 0 (distance at the initial iterate, relative error at an exact fit) has derivative
    0, so a reverse pass through unused metrics never turns into 0 * inf = NaN."""
    model, target = _pair()
    exact = jaxtd.SymCP(target.weights, target.factors, 3)

    def total(m, t, p):
        rec = metrics.record(m, t, p, p)  # distance 0
        return rec["loss"] + 0.0 * rec["distance"] + 0.0 * rec["relative_error"]

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(exact, target, model.factors)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    g = jax.grad(lambda p: metrics.distance(p, model.factors))(model.factors)
    np.testing.assert_array_equal(g, 0.0)
