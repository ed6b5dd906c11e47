import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from tests import oracles


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_inner_and_loss_match_dense(order, x64):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(order), 4)
    d = 5
    a = jaxtd.SymCP(jax.random.normal(k1, (4,)), jax.random.normal(k2, (4, d)), order)
    b = jaxtd.SymCP(jax.random.normal(k3, (3,)), jax.random.normal(k4, (3, d)), order)
    da = oracles.dense(a.weights, a.factors, order)
    db = oracles.dense(b.weights, b.factors, order)
    np.testing.assert_allclose(jaxtd.inner(a, b), np.sum(da * db), rtol=1e-10)
    np.testing.assert_allclose(jaxtd.loss(a, b), 0.5 * np.sum((da - db) ** 2), rtol=1e-10)
    np.testing.assert_allclose(jaxtd.to_dense(a), da, rtol=1e-10, atol=1e-12)
