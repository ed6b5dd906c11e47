"""SymCP: validation, pytree behaviour and the dense oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd.symcp import check_compatible
from tests import oracles


@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("rank,dim", [(1, 1), (3, 2), (2, 5)])
def test_to_dense_matches_numpy(order, rank, dim, x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(10 * order + rank))
    t = jaxtd.SymCP(jax.random.normal(k1, (rank,)), jax.random.normal(k2, (rank, dim)), order)
    dense = jaxtd.to_dense(t)
    assert dense.shape == (dim,) * order
    np.testing.assert_allclose(dense, oracles.dense(t.weights, t.factors, order), rtol=1e-12,
                               atol=1e-14)
    # symmetric: invariant under swapping two modes
    np.testing.assert_allclose(dense, jnp.swapaxes(dense, 0, order - 1), rtol=1e-12, atol=1e-14)


def test_pytree_roundtrip_and_properties():
    t = jaxtd.SymCP(jnp.ones((3,)), jnp.zeros((3, 4)), 3)
    leaves, treedef = jax.tree_util.tree_flatten(t)
    assert len(leaves) == 2
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back.order == 3 and back.rank == 3 and back.dim == 4 and back.dtype == jnp.float32
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, t)
    assert isinstance(doubled, jaxtd.SymCP) and doubled.order == 3
    assert "order=3" in repr(t) and "rank=3" in repr(t)
    assert "order=3" in repr(jax.tree_util.tree_map(lambda x: None, t))  # repr never crashes


def test_order_is_static_under_jit_and_vmap():
    t = jaxtd.SymCP(jnp.ones((2,)), jnp.eye(2, 3), 4)
    out = jax.jit(lambda s: jaxtd.SymCP(s.weights * 2, s.factors, s.order))(t)
    assert out.order == 4
    stacked = jax.vmap(lambda w: jaxtd.SymCP(w, jnp.eye(2, 3), 4))(jnp.ones((5, 2)))
    assert stacked.weights.shape == (5, 2) and stacked.factors.shape == (5, 2, 3)
    dense = jax.vmap(jaxtd.to_dense)(stacked)
    assert dense.shape == (5, 3, 3, 3, 3)
    np.testing.assert_allclose(dense[2], oracles.dense(np.ones(2), np.eye(2, 3), 4))


def test_float64_inputs_keep_dtype(x64):
    t = jaxtd.SymCP(jnp.ones((2,), jnp.float64), jnp.ones((2, 3), jnp.float64), 2)
    assert jaxtd.to_dense(t).dtype == jnp.float64 and t.dtype == jnp.float64


@pytest.mark.parametrize("order,err,match", [
    (1, ValueError, "order must be >= 2"), (0, ValueError, "order must be >= 2"),
    (2.0, TypeError, "order"), (True, TypeError, "order"), ("3", TypeError, "order")])
def test_bad_order(order, err, match):
    with pytest.raises(err, match=match):
        jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 3)), order)


def test_bad_shapes():
    with pytest.raises(ValueError, match="factors must be 2-D"):
        jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 3, 1)), 3)
    with pytest.raises(ValueError, match="factors must be 2-D"):
        jaxtd.SymCP(jnp.ones((3,)), jnp.ones((3,)), 3)
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        jaxtd.SymCP(jnp.ones((3,)), jnp.ones((2, 3)), 3)
    with pytest.raises(ValueError, match=r"weights must have shape"):
        jaxtd.SymCP(jnp.ones((2, 1)), jnp.ones((2, 3)), 3)
    with pytest.raises(ValueError, match="dim >= 1"):
        jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 0)), 3)
    with pytest.raises(TypeError, match="arrays"):
        jaxtd.SymCP([1.0, 2.0], jnp.ones((2, 3)), 3)


def test_validation_happens_at_trace_time():
    """Bad shapes raise while tracing (a ValueError), not as an XLA error after compiling."""
    with pytest.raises(ValueError, match="weights must have shape"):
        jax.jit(lambda w, u: jaxtd.to_dense(jaxtd.SymCP(w, u, 3)))(jnp.ones((3,)), jnp.ones((2, 3)))


def test_check_compatible_names_arguments():
    a = jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 3)), 3)
    with pytest.raises(ValueError, match="target has order 4 but estimate has order 3"):
        check_compatible(a, jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 3)), 4),
                         ("estimate", "target"))
    with pytest.raises(ValueError, match="b has dim 5 but a has dim 3"):
        check_compatible(a, jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 5)), 3))
    with pytest.raises(TypeError, match="t must be a jaxtd.SymCP"):
        jaxtd.to_dense((jnp.ones((2,)), jnp.ones((2, 3))))
