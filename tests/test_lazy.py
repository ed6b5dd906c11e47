import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import lazy
from tests import oracles


def _case(order, d=4, m=5, r=3, seed=0, dtype=jnp.float64):
    k = jax.random.split(jax.random.PRNGKey(seed + 10 * order), 5)
    model = jaxtd.SymCP(jax.random.normal(k[0], (m,), dtype), jax.random.normal(k[1], (m, d), dtype)
                        / np.sqrt(d), order)
    target = jaxtd.SymCP(jax.random.normal(k[2], (r,), dtype), jax.random.normal(k[3], (r, d), dtype),
                         order)
    delta = 0.3 * jax.random.normal(k[4], (m, d), dtype)
    return model, delta, target


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_lazy_loss_matches_dense_oracle(order, x64):
    model, delta, target = _case(order)
    lin = oracles.dense_lazy(model.weights, model.factors, delta, order)
    want = 0.5 * np.sum((lin - oracles.dense(target.weights, target.factors, order)) ** 2)
    np.testing.assert_allclose(lazy.lazy_loss(model, delta, target), want, rtol=1e-10)
    np.testing.assert_allclose(lazy.lazy_residual_sq(model, delta, target), 2 * want, rtol=1e-10)


def test_masked_rows_contribute_nothing(x64):
    model, delta, target = _case(3, m=6)
    mask = (jnp.arange(6) < 4).astype(jnp.float64)
    masked = jaxtd.SymCP(model.weights * mask, model.factors, 3)
    small = jaxtd.SymCP(model.weights[:4], model.factors[:4], 3)
    # garbage in the masked rows' perturbation must not matter either
    noisy = delta.at[4:].set(1e3)
    np.testing.assert_allclose(lazy.lazy_loss(masked, noisy, target),
                               lazy.lazy_loss(small, delta[:4], target), rtol=1e-12)
    g = jax.grad(lazy.lazy_loss, argnums=1)(masked, noisy, target)
    np.testing.assert_array_equal(g[4:], 0.0)
    np.testing.assert_allclose(g[:4], jax.grad(lazy.lazy_loss, argnums=1)(small, delta[:4], target),
                               rtol=1e-10)


def test_lazy_loss_jit_vmap_grad():
    model, delta, target = _case(3, dtype=jnp.float32)
    deltas = jnp.stack([delta, 2 * delta, 0 * delta])
    vals = jax.jit(jax.vmap(lazy.lazy_loss, in_axes=(None, 0, None)))(model, deltas, target)
    for v, dl in zip(vals, deltas):
        np.testing.assert_allclose(v, lazy.lazy_loss(model, dl, target), rtol=1e-5)
    assert vals.dtype == jnp.float32
    g = jax.jit(jax.grad(lazy.lazy_loss, argnums=1))(model, delta, target)
    assert g.shape == delta.shape and g.dtype == jnp.float32


def test_residual_sq_float32_accurate_near_fit():
    # target = the lazy model itself (as a CP tensor: order 2, J Δ = sum c (δ w^T + w δ^T) written
    # via polarization) -> residual exactly tiny; build target = T(W0) + JΔ0 + small perturbation.
    d, m = 6, 4
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    w0 = jax.random.normal(k[0], (m, d)) / np.sqrt(d)
    dl = jax.random.normal(k[1], (m, d)) * 0.1
    model = jaxtd.SymCP(jnp.ones((m,)), w0, 2)
    # c (w + δ)^{⊗2} - c (w - δ)^{⊗2} = 2 c (wδ^T + δw^T) = 2 JΔ,  so T(W0)+JΔ is a CP tensor:
    tf = jnp.concatenate([w0, w0 + dl, w0 - dl])
    tw = jnp.concatenate([jnp.ones((m,)), 0.5 * jnp.ones((m,)), -0.5 * jnp.ones((m,))])
    eps = 1e-6
    extra = jax.random.normal(k[2], (1, d))
    target = jaxtd.SymCP(jnp.concatenate([tw, jnp.array([eps])]), jnp.concatenate([tf, extra]), 2)
    got = lazy.lazy_residual_sq(model, dl, target)
    want = oracles.dense(target.weights, target.factors, 2) - oracles.dense_lazy(
        model.weights, w0, dl, 2)
    want = np.sum(want ** 2)
    np.testing.assert_allclose(got, want, rtol=2e-2)
    plain = lazy.lazy_residual_sq(model, dl, target, precise=False)
    assert abs(float(plain) - want) > abs(float(got) - want)


def test_bad_inputs():
    model, delta, target = _case(3, dtype=jnp.float32)
    with pytest.raises(ValueError, match="delta"):
        lazy.lazy_loss(model, delta[:-1], target)
    with pytest.raises(ValueError, match="target"):
        lazy.lazy_loss(model, delta, jaxtd.SymCP(target.weights, target.factors, 4))
    with pytest.raises(ValueError, match="target"):
        lazy.lazy_loss(model, delta, jaxtd.SymCP(target.weights, target.factors[:, :3], 3))
    with pytest.raises(TypeError, match="delta"):
        lazy.lazy_loss(model, [[0.0]], target)


@pytest.mark.parametrize("width", [6, 7])
def test_antisymmetric_init(width, x64):
    key = jax.random.PRNGKey(0)
    for order in (2, 3, 4):
        t = lazy.antisymmetric(key, width, 5, order)
        assert t.factors.shape == (width, 5) and t.order == order
        dense = oracles.dense(t.weights, t.factors, order)
        if width % 2 == 0:
            np.testing.assert_allclose(dense, 0.0, atol=1e-14)
        else:  # documented: the last row is unpaired with weight +1
            np.testing.assert_allclose(dense, oracles.dense(t.weights[-1:], t.factors[-1:], order),
                                       atol=1e-14)
    wide = lazy.antisymmetric(key, 12, 5, 3)
    np.testing.assert_array_equal(wide.factors[:width], t.factors)
    np.testing.assert_array_equal(wide.weights[:width], t.weights)
    np.testing.assert_array_equal(t.factors[0], t.factors[1])
    np.testing.assert_array_equal(t.weights[:2], [1.0, -1.0])
    # same rows as the prefix-consistent standard init, one per pair
    np.testing.assert_array_equal(t.factors[::2], jaxtd.init_factors(key, (width + 1) // 2, 5,
                                                                     scale="standard"))
    with pytest.raises(ValueError, match="width"):
        lazy.antisymmetric(key, 0, 5, 3)
