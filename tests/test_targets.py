"""Ground-truth constructors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import targets


@pytest.mark.parametrize("order", [2, 3, 5])
@pytest.mark.parametrize("dim,rank", [(1, 1), (6, 3), (8, 8)])
def test_orthonormal(order, dim, rank):
    t = targets.orthonormal(jax.random.PRNGKey(dim + rank), dim, rank, order)
    assert isinstance(t, jaxtd.SymCP) and t.order == order
    assert t.factors.shape == (rank, dim) and t.factors.dtype == jnp.float32
    np.testing.assert_allclose(t.factors @ t.factors.T, np.eye(rank), atol=2e-6)
    np.testing.assert_array_equal(t.weights, np.ones(rank))
    # orthonormal components: ||T||^2 = sum c_j^2
    np.testing.assert_allclose(jaxtd.norm(t) ** 2, rank, rtol=1e-5)


def test_orthonormal_basis_and_key_dependence():
    t = targets.orthonormal(jax.random.PRNGKey(0), 5, 3, 3, basis=True)
    np.testing.assert_array_equal(t.factors, np.eye(3, 5))
    a = targets.orthonormal(jax.random.PRNGKey(0), 5, 3, 3)
    b = targets.orthonormal(jax.random.PRNGKey(1), 5, 3, 3)
    assert not np.allclose(a.factors, b.factors)
    np.testing.assert_array_equal(a.factors, targets.orthonormal(jax.random.PRNGKey(0), 5, 3, 3).factors)


def test_random_unit():
    t = targets.random_unit(jax.random.PRNGKey(0), 50, 7, 4, "geometric")
    np.testing.assert_allclose(jnp.linalg.norm(t.factors, axis=1), np.ones(7), rtol=1e-6)
    off = np.abs(np.asarray(t.factors @ t.factors.T) - np.eye(7))
    assert 0.0 < off.max() < 0.7  # independent directions: correlated, never aligned
    np.testing.assert_allclose(t.weights, 2.0 ** -np.arange(7))


def test_weight_profiles():
    np.testing.assert_array_equal(targets.weights("equal", 3), np.ones(3))
    np.testing.assert_allclose(targets.weights("geometric", 4), [1, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(targets.weights([3.0, -1.0], 2), [3.0, -1.0])
    t = targets.orthonormal(jax.random.PRNGKey(0), 4, 2, 3, np.array([2.0, 0.5]))
    np.testing.assert_allclose(t.weights, [2.0, 0.5])


def test_float64(x64):
    for t in (targets.orthonormal(jax.random.PRNGKey(0), 6, 2, 3),
              targets.random_unit(jax.random.PRNGKey(0), 6, 2, 3)):
        assert t.factors.dtype == jnp.float64 and t.weights.dtype == jnp.float64
    np.testing.assert_allclose(t.factors @ t.factors.T, np.ones((2, 2)) * 0 + np.asarray(
        t.factors @ t.factors.T), rtol=0)
    o = targets.orthonormal(jax.random.PRNGKey(0), 6, 2, 3)
    np.testing.assert_allclose(o.factors @ o.factors.T, np.eye(2), atol=1e-14)
    assert targets.orthonormal(jax.random.PRNGKey(0), 6, 2, 3, dtype=jnp.float32).factors.dtype \
        == jnp.float32


def test_vmap_and_jit_over_keys():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    batch = jax.jit(jax.vmap(lambda k: targets.orthonormal(k, 5, 2, 3)))(keys)
    assert batch.factors.shape == (4, 2, 5) and batch.order == 3
    for i in range(4):
        np.testing.assert_allclose(batch.factors[i], targets.orthonormal(keys[i], 5, 2, 3).factors,
                                   rtol=1e-5, atol=1e-6)
    batch = jax.vmap(lambda k: targets.random_unit(k, 5, 2, 3))(keys)
    np.testing.assert_allclose(jnp.linalg.norm(batch.factors, axis=-1), np.ones((4, 2)), rtol=1e-6)


@pytest.mark.parametrize("call,err,match", [
    (lambda: targets.orthonormal(jax.random.PRNGKey(0), 3, 4, 3), ValueError, "rank=4 > dim=3"),
    (lambda: targets.orthonormal(jax.random.PRNGKey(0), 3, 0, 3), ValueError, "rank must be >= 1"),
    (lambda: targets.random_unit(jax.random.PRNGKey(0), 0, 2, 3), ValueError, "dim must be >= 1"),
    (lambda: targets.random_unit(jax.random.PRNGKey(0), 3, 2, 1), ValueError, "order must be >= 2"),
    (lambda: targets.random_unit(jax.random.PRNGKey(0), 3.0, 2, 3), TypeError, "dim must be an int"),
    (lambda: targets.weights("linear", 3), ValueError, "weights must be one of"),
    (lambda: targets.weights([1.0, 2.0], 3), ValueError, r"shape \(3,\)"),
    (lambda: targets.weights([1.0, np.nan], 2), ValueError, "finite"),
    (lambda: targets.weights([1.0, np.inf], 2), ValueError, "finite"),
    (lambda: targets.orthonormal(jax.random.PRNGKey(0), 4, 2, 3, [1.0, -np.inf]), ValueError,
     "finite"),
    (lambda: targets.random_unit(jax.random.PRNGKey(0), 4, 2, 3, [np.nan, 1.0]), ValueError,
     "finite"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("make", [
    lambda key: targets.orthonormal(key, 5, 2, 3),
    lambda key: targets.random_unit(key, 5, 2, 3)])
def test_typed_and_legacy_keys_agree(make):
    a = make(jax.random.key(7))
    b = make(jax.random.PRNGKey(7))
    np.testing.assert_array_equal(a.factors, b.factors)


@pytest.mark.parametrize("key,err,match", [
    (0, TypeError, r"key must be a PRNG key, e.g. jax.random.key\(0\), got the int 0"),
    ("seed", TypeError, "key must be a PRNG key"),
    (np.zeros(3, np.uint32), TypeError, r"dtype uint32 and shape \(3,\)"),
    (np.zeros(2, np.int32), TypeError, "key must be a PRNG key"),
    (jax.random.split(jax.random.key(0), 2), ValueError, "single PRNG key"),
])
@pytest.mark.parametrize("fn", [targets.orthonormal, targets.random_unit])
def test_bad_keys(fn, key, err, match):
    with pytest.raises(err, match=match):
        fn(key, 4, 2, 3)


def test_basis_target_ignores_the_key():
    t = targets.orthonormal(None, 4, 2, 3, basis=True)
    np.testing.assert_array_equal(t.factors, np.eye(2, 4))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float16, jnp.complex64, "bool", "nonsense"])
def test_bad_dtypes(dtype):
    for call in (lambda: targets.orthonormal(jax.random.key(0), 4, 2, 3, dtype=dtype),
                 lambda: targets.random_unit(jax.random.key(0), 4, 2, 3, dtype=dtype),
                 lambda: targets.weights("equal", 2, dtype=dtype)):
        with pytest.raises(TypeError, match="dtype must be jnp.float32 or jnp.float64"):
            call()


@pytest.mark.parametrize("profile,err,match", [
    ([0.0, 1.0], ValueError, "weights must be nonzero"),
    ([0.0, 0.0], ValueError, "weights must be nonzero"),
    ([1.0, 1e39], ValueError, "overflow float32"),
    ([1.0 + 1j, 1.0], TypeError, "weights must be real"),
    (["a", "b"], TypeError, "weights must be real"),
])
def test_bad_weight_values(profile, err, match):
    with pytest.raises(err, match=match):
        targets.random_unit(jax.random.key(0), 4, 2, 3, profile)


def test_integer_weights_are_converted_explicitly():
    """An int profile is a list of numbers, converted (exactly) to the float dtype."""
    t = targets.random_unit(jax.random.key(0), 4, 2, 3, np.array([2, -3]))
    assert t.weights.dtype == jnp.float32
    np.testing.assert_array_equal(t.weights, [2.0, -3.0])
