"""Tests of jaxtd/models.py: the plain and two-homogeneous maps, safe norm, signs, L_λ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import models
from tests import oracles


def _problem(order, m=5, d=4, r=2, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    w = jax.random.normal(k[0], (m, d))
    signs = jnp.where(jax.random.bernoulli(k[1], shape=(m,)), -1.0, 1.0)
    mask = (jnp.arange(m) < m - 1).astype(w.dtype)
    target = jaxtd.SymCP(jnp.abs(jax.random.normal(k[2], (r,))) + 0.5,
                         jax.random.normal(k[3], (r, d)), order)
    return w, signs, mask, target


def _dense_model(kind, w, signs, mask, order):
    w, s, msk = (np.asarray(x, np.float64) for x in (w, signs, mask))
    n = np.linalg.norm(w, axis=1)
    if kind == "plain":
        return oracles.dense(s * msk, w, order)
    return oracles.dense(s * msk * n ** 2, w / n[:, None], order)


@pytest.mark.parametrize("kind", models.MODELS)
@pytest.mark.parametrize("order", [2, 3, 4])
def test_models_match_dense_oracle(kind, order, x64):
    w, signs, mask, target = _problem(order)
    t = models.get(kind)(w, order, signs, mask)
    np.testing.assert_allclose(jaxtd.to_dense(t), _dense_model(kind, w, signs, mask, order),
                               rtol=1e-12, atol=1e-12)
    lam = 0.3
    dense_loss = 0.5 * np.sum((_dense_model(kind, w, signs, mask, order)
                               - oracles.dense(target.weights, target.factors, order)) ** 2)
    penalty = 0.5 * lam * np.sum(np.asarray(mask)[:, None] * np.asarray(w) ** 2)
    value = models.regularized_loss(kind, w, target, signs=signs, mask=mask, regularization=lam)
    np.testing.assert_allclose(value, dense_loss + penalty, rtol=1e-12)


def test_two_homogeneous_penalty_is_l1_on_weights(x64):
    w, signs, mask, target = _problem(3)
    t = models.two_homogeneous(w, 3, signs, mask)
    lam = 0.2
    penalty = (models.regularized_loss("two_homogeneous", w, target, signs=signs, mask=mask,
                                       regularization=lam)
               - models.regularized_loss("two_homogeneous", w, target, signs=signs, mask=mask))
    np.testing.assert_allclose(penalty, 0.5 * lam * np.sum(np.abs(np.asarray(t.weights))),
                               rtol=1e-12)


def _residual_contractions(t, target, w_bar, order):
    """Dense ``R(w̄^{⊗l})`` and ``R(w̄^{⊗(l-1)}, ·)`` for ``R = T* - T`` (numpy oracle)."""
    r = (oracles.dense(target.weights, target.factors, order)
         - oracles.dense(t.weights, t.factors, order))
    vec = r
    for _ in range(order - 1):
        vec = vec @ w_bar
    return float(vec @ w_bar), vec


@pytest.mark.parametrize("order", [3, 4])
def test_two_homogeneous_gradient_is_the_documented_flow(order, x64):
    """docs/algorithms.md: d||w||/dt = ||w|| (2 s R(w̄^l) - λ), dw̄/dt = l s P⊥ R(w̄^{l-1}, ·)."""
    w, signs, mask, target = _problem(order, seed=3)
    mask = jnp.ones_like(mask)
    lam = 0.1
    grad = jax.grad(lambda p: models.regularized_loss(
        "two_homogeneous", p, target, signs=signs, mask=mask, regularization=lam))(w)
    t = models.two_homogeneous(w, order, signs, mask)
    for i in range(w.shape[0]):
        wi = np.asarray(w[i])
        n = np.linalg.norm(wi)
        wb = wi / n
        rl, rl1 = _residual_contractions(t, target, wb, order)
        flow = -np.asarray(grad[i])                       # dw/dt under gradient flow
        s = float(signs[i])
        np.testing.assert_allclose(flow @ wb, n * (2 * s * rl - lam), rtol=1e-9, atol=1e-12)
        tangential = (flow - (flow @ wb) * wb) / n        # dw̄/dt = P⊥ (dw/dt) / ||w||
        expected = order * s * (rl1 - (rl1 @ wb) * wb)
        np.testing.assert_allclose(tangential, expected, rtol=1e-9, atol=1e-12)


def test_zero_row_has_finite_zero_gradient():
    w, signs, _, target = _problem(3)
    w = w.at[1].set(0.0)
    for kind in models.MODELS:
        g = jax.grad(lambda p: models.regularized_loss(kind, p, target, signs=signs,
                                                       regularization=0.1))(w)
        assert np.all(np.isfinite(np.asarray(g))), kind
        np.testing.assert_array_equal(np.asarray(g[1]), 0.0)
    assert float(models.safe_norm(jnp.zeros(3))) == 0.0
    assert np.all(np.asarray(jax.grad(lambda x: models.safe_norm(x))(jnp.zeros(3))) == 0.0)
    np.testing.assert_allclose(models.safe_norm(jnp.array([3.0, 4.0])), 5.0)


@pytest.mark.parametrize("kind", models.MODELS)
def test_masked_rows_get_zero_gradient(kind):
    w, signs, mask, target = _problem(3)
    g = jax.grad(lambda p: models.regularized_loss(kind, p, target, signs=signs, mask=mask,
                                                   regularization=0.5))(w)
    np.testing.assert_array_equal(np.asarray(g[-1]), 0.0)
    assert np.all(np.abs(np.asarray(g[:-1])) > 0)


def test_draw_signs_rules_and_prefix_consistency():
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(models.draw_signs(key, 16, 3), 1.0)
    even = np.asarray(models.draw_signs(key, 64, 4))
    assert set(np.unique(even)) == {-1.0, 1.0}
    np.testing.assert_array_equal(np.asarray(models.draw_signs(key, 10, 4)), even[:10])
    np.testing.assert_array_equal(models.draw_signs(key, 8, 4, "positive"), 1.0)
    assert set(np.unique(np.asarray(models.draw_signs(key, 64, 3, "random")))) == {-1.0, 1.0}


def test_float32_default_dtype():
    w, signs, mask, target = _problem(3)
    for kind in models.MODELS:
        t = models.get(kind)(w, 3, signs, mask)
        assert t.weights.dtype == jnp.float32 and t.factors.dtype == jnp.float32
        assert models.regularized_loss(kind, w, target, regularization=0.1).dtype == jnp.float32


def test_bad_input_names_the_argument():
    w, signs, mask, target = _problem(3)
    with pytest.raises(ValueError, match="model must be one of"):
        models.get("cubic")
    with pytest.raises(ValueError, match="params must be a 2-D"):
        models.plain(w[0], 3)
    with pytest.raises(ValueError, match="order must be"):
        models.two_homogeneous(w, 1)
    with pytest.raises(ValueError, match="signs must have shape"):
        models.plain(w, 3, signs=jnp.ones(3))
    with pytest.raises(ValueError, match="mask must have shape"):
        models.two_homogeneous(w, 3, mask=jnp.ones(7))
    with pytest.raises(ValueError, match="signs must be one of"):
        models.draw_signs(jax.random.PRNGKey(0), 4, 4, "alternating")
    with pytest.raises(TypeError, match="target must be a jaxtd.SymCP"):
        models.regularized_loss("plain", w, np.zeros((2, 4)))
