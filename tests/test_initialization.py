"""Prefix-consistent initialization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import initialization


@pytest.mark.parametrize("scale", ["small", "standard"])
def test_prefix_consistency(scale):
    key = jax.random.PRNGKey(3)
    wide = jaxtd.init_factors(key, 40, 7, scale=scale)
    for m in (1, 5, 39):
        np.testing.assert_array_equal(jaxtd.init_factors(key, m, 7, scale=scale), wide[:m])
    # rows depend on the key: another key gives other rows
    assert not np.allclose(jaxtd.init_factors(jax.random.PRNGKey(4), 5, 7, scale=scale), wide[:5])


def test_gaussian_rows_offset_and_prefix():
    key = jax.random.PRNGKey(0)
    full = initialization.gaussian_rows(key, 10, 4)
    np.testing.assert_array_equal(initialization.gaussian_rows(key, 4, 4, offset=6), full[6:])
    # row i is the standard normal draw of fold_in(key, i)
    np.testing.assert_array_equal(full[3], jax.random.normal(jax.random.fold_in(key, 3), (4,)))


def test_small_scale_rows_have_norm_delta():
    w = jaxtd.init_factors(jax.random.PRNGKey(0), 64, 9, scale="small", delta=1e-3)
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=1), np.full(64, 1e-3), rtol=1e-5)


def test_standard_scale_statistics():
    d = 50
    w = np.asarray(jaxtd.init_factors(jax.random.PRNGKey(0), 400, d, scale="standard"))
    assert abs(w.mean()) < 0.01
    np.testing.assert_allclose(w.var(), 1.0 / d, rtol=0.05)  # N(0, I/d): 20000 draws
    np.testing.assert_allclose(np.mean(np.sum(w ** 2, axis=1)), 1.0, rtol=0.05)


def test_traced_delta_and_vmap_over_keys():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    deltas = jnp.array([1e-3, 1e-2, 1e-1])
    f = jax.jit(jax.vmap(lambda k, dl: jaxtd.init_factors(k, 6, 5, delta=dl)))
    out = f(keys, deltas)
    assert out.shape == (3, 6, 5)
    for i in range(3):
        np.testing.assert_allclose(jnp.linalg.norm(out[i], axis=1), np.full(6, deltas[i]),
                                   rtol=1e-5)
        np.testing.assert_allclose(out[i], jaxtd.init_factors(keys[i], 6, 5, delta=float(deltas[i])),
                                   rtol=1e-5)


def test_dtypes(x64):
    assert jaxtd.init_factors(jax.random.PRNGKey(0), 3, 4).dtype == jnp.float64
    assert jaxtd.init_factors(jax.random.PRNGKey(0), 3, 4, dtype=jnp.float32).dtype == jnp.float32


def test_default_float32():
    assert jaxtd.init_factors(jax.random.PRNGKey(0), 3, 4, scale="standard").dtype == jnp.float32


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(width=0, dim=3), ValueError, "width must be >= 1"),
    (dict(width=-2, dim=3), ValueError, "width must be >= 1"),
    (dict(width=10 ** 20, dim=3), ValueError, "width must be <= 2"),
    (dict(width=2.0, dim=3), TypeError, "width must be an int"),
    (dict(width=True, dim=3), TypeError, "width must be an int"),
    (dict(width=2, dim=0), ValueError, "dim must be >= 1"),
    (dict(width=2, dim=3, scale="large"), ValueError, "scale must be one of"),
    (dict(width=2, dim=3, delta=0.0), ValueError, "delta must be > 0"),
    (dict(width=2, dim=3, delta=-1e-2), ValueError, "delta must be > 0"),
])
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        jaxtd.init_factors(jax.random.PRNGKey(0), **kwargs)


def test_typed_keys_equal_legacy_keys():
    for scale in ("small", "standard"):
        np.testing.assert_array_equal(
            jaxtd.init_factors(jax.random.key(5), 4, 3, scale=scale),
            jaxtd.init_factors(jax.random.PRNGKey(5), 4, 3, scale=scale))
    keys = jax.random.split(jax.random.key(1), 2)
    out = jax.vmap(lambda k: jaxtd.init_factors(k, 3, 2))(keys)
    np.testing.assert_array_equal(out[1], jaxtd.init_factors(keys[1], 3, 2))


@pytest.mark.parametrize("key,err,match", [
    (0, TypeError, "key must be a PRNG key"), ("0", TypeError, "key must be a PRNG key"),
    (None, TypeError, "key must be a PRNG key"),
    (jax.random.split(jax.random.key(0), 3), ValueError, "single PRNG key")])
def test_bad_keys(key, err, match):
    with pytest.raises(err, match=match):
        jaxtd.init_factors(key, 2, 3)
    with pytest.raises(err, match=match):
        initialization.gaussian_rows(key, 2, 3)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(delta=float("nan")), ValueError, "delta must be > 0 and finite, got nan"),
    (dict(delta=float("inf")), ValueError, "delta must be > 0 and finite"),
    (dict(delta=np.float32(-1)), ValueError, "delta must be > 0"),
    (dict(delta=jnp.asarray(np.nan)), ValueError, "delta must be > 0 and finite"),
    (dict(delta=True), TypeError, "delta must be a finite real"),
    (dict(delta="0.1"), TypeError, "delta must be a finite real"),
    (dict(delta=np.ones(2)), TypeError, "a scalar"),
    (dict(dtype=jnp.int32), TypeError, "dtype must be jnp.float32 or jnp.float64"),
    (dict(dtype=jnp.float16), TypeError, "dtype must be jnp.float32 or jnp.float64"),
    (dict(dtype=jnp.complex64), TypeError, "dtype must be jnp.float32 or jnp.float64"),
])
def test_bad_delta_and_dtype(kwargs, err, match):
    with pytest.raises(err, match=match):
        jaxtd.init_factors(jax.random.key(0), 2, 3, **kwargs)


def test_concrete_array_delta_is_accepted():
    w = jaxtd.init_factors(jax.random.key(0), 3, 4, delta=jnp.asarray(0.5))
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=1), np.full(3, 0.5), rtol=1e-6)


@pytest.mark.parametrize("delta", [1e-30, 1e30])
def test_delta_whose_square_leaves_float32_is_refused(delta):
    with pytest.raises(ValueError, match="would under- or overflow float32"):
        jaxtd.init_factors(jax.random.key(0), 2, 3, delta=delta)


def test_delta_range_follows_the_dtype(x64):
    w = jaxtd.init_factors(jax.random.key(0), 2, 3, delta=1e30)  # float64 under x64
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=1), [1e30, 1e30], rtol=1e-12)
