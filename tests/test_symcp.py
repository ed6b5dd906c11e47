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


# -- dtype and value policy -------------------------------------------------------------------

@pytest.mark.parametrize("field", ["weights", "factors"])
@pytest.mark.parametrize("dtype,match", [
    (jnp.int32, "integer Gram powers overflow"), (jnp.uint8, "integer Gram powers overflow"),
    (jnp.bool_, "integer Gram powers overflow"), (jnp.complex64, "complex"),
    (jnp.float16, "float32 or float64"), (jnp.bfloat16, "float32 or float64")])
def test_non_float_leaves_raise_naming_the_field(field, dtype, match):
    leaves = {"weights": jnp.ones((2,)), "factors": jnp.ones((2, 3))}
    leaves[field] = leaves[field].astype(dtype)
    with pytest.raises(TypeError, match=match) as info:
        jaxtd.SymCP(leaves["weights"], leaves["factors"], 3)
    assert str(info.value).startswith(field)
    if match.startswith("integer"):
        assert f"{field}.astype(jnp.float32)" in str(info.value)


def test_integer_factors_no_longer_overflow_silently():
    """int32 factors used to give a wrapped-around loss (3.9e9 instead of 1.3e18)."""
    u = np.full((2, 3), 1000, np.int32)
    with pytest.raises(TypeError, match="factors has dtype int32"):
        jaxtd.loss(jaxtd.SymCP(jnp.ones(2), u, 6), jaxtd.SymCP(jnp.ones(2), jnp.ones((2, 3)), 6))
    with pytest.raises(TypeError, match="complex"):
        jaxtd.SymCP(jnp.ones(2), jnp.ones((2, 3), jnp.complex64), 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_non_finite_concrete_values_raise(bad, kind):
    w = np.ones((2,), np.float32)
    u = np.ones((2, 3), np.float32)
    u[1, 2] = bad
    conv = jnp.asarray if kind == "jax" else np.asarray
    with pytest.raises(ValueError, match=r"factors has a non-finite entry .* at index \(1, 2\)"):
        jaxtd.SymCP(conv(w), conv(u), 3)
    w[0] = bad
    with pytest.raises(ValueError, match=r"weights has a non-finite entry"):
        jaxtd.SymCP(conv(w), conv(np.ones((2, 3), np.float32)), 3)


def test_traced_values_are_not_checked():
    """Under jit the value check is skipped (no host sync): a NaN flows through as data."""
    out = jax.jit(lambda w: jaxtd.to_dense(jaxtd.SymCP(w, jnp.ones((2, 3)), 2)))(
        jnp.array([1.0, jnp.nan]))
    assert np.isnan(np.asarray(out)).all()
    # the dtype check still applies while tracing
    with pytest.raises(TypeError, match="weights has dtype int32"):
        jax.jit(lambda w: jaxtd.SymCP(w, jnp.ones((2, 3)), 2))(jnp.ones(2, jnp.int32))


def test_float64_leaves_are_accepted(x64):
    t = jaxtd.SymCP(np.ones(2), np.ones((2, 3)), 3)  # numpy float64 inputs
    assert t.dtype == jnp.float64


# -- TensorLy interop ---------------------------------------------------------------------------

def test_tensorly_round_trip_matches_dense(x64):
    tl = pytest.importorskip("tensorly")
    k1, k2 = jax.random.split(jax.random.key(4))
    t = jaxtd.SymCP(jax.random.normal(k1, (3,), jnp.float64),
                    jax.random.normal(k2, (3, 4), jnp.float64), 3)
    cp = t.to_tensorly()
    assert np.shape(cp.weights) == (3,) and len(cp.factors) == 3
    assert all(np.shape(f) == (4, 3) for f in cp.factors)
    dense = oracles.dense(np.asarray(t.weights), np.asarray(t.factors), 3)
    np.testing.assert_allclose(tl.cp_to_tensor(cp), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jaxtd.to_dense(t), dense, rtol=1e-12, atol=1e-12)
    back = jaxtd.SymCP.from_tensorly(cp)
    assert back.order == 3 and back.dtype == jnp.float64
    np.testing.assert_array_equal(back.weights, t.weights)
    np.testing.assert_array_equal(back.factors, t.factors)
    # a tensorly-built symmetric tensor (weights None = ones) and an explicit float32 dtype
    u = np.random.default_rng(0).normal(size=(5, 2))
    t32 = jaxtd.SymCP.from_tensorly((None, [u, u, u, u]), dtype=jnp.float32)
    assert t32.order == 4 and t32.dtype == jnp.float32
    np.testing.assert_allclose(jaxtd.to_dense(t32), tl.cp_to_tensor((np.ones(2), [u] * 4)),
                               rtol=1e-5, atol=1e-5)


def test_from_tensorly_refuses_non_symmetric():
    pytest.importorskip("tensorly")
    u = np.random.default_rng(1).normal(size=(4, 2))
    v = u.copy()
    v[0, 0] += 1e-3
    with pytest.raises(ValueError,
                       match=r"not symmetric: cp.factors\[2\] differs.*symmetrize=True"):
        jaxtd.SymCP.from_tensorly((np.ones(2), [u, u, v]))
    assert jaxtd.SymCP.from_tensorly((np.ones(2), [u, u, v]), rtol=1e-2).order == 3
    with pytest.raises(ValueError, match=r"cp.factors\[1\] has shape \(4, 3\)"):
        jaxtd.SymCP.from_tensorly((np.ones(2), [u, np.ones((4, 3))]))
    with pytest.raises(ValueError, match=r"cp.weights must have shape \(2,\)"):
        jaxtd.SymCP.from_tensorly((np.ones(3), [u, u]))
    with pytest.raises(ValueError, match="at least 2"):
        jaxtd.SymCP.from_tensorly((np.ones(2), [u]))
    with pytest.raises(TypeError, match="complex"):
        jaxtd.SymCP.from_tensorly((np.ones(2), [u * 1j, u * 1j]))
    with pytest.raises(TypeError, match="CPTensor or a"):
        jaxtd.SymCP.from_tensorly(u)


def test_tensorly_missing_gives_install_hint(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorly", None)  # `import tensorly` now raises ImportError
    monkeypatch.setitem(sys.modules, "tensorly.cp_tensor", None)
    t = jaxtd.SymCP(jnp.ones((2,)), jnp.ones((2, 3)), 3)
    with pytest.raises(ImportError, match="pip install tensorly"):
        t.to_tensorly()
    with pytest.raises(ImportError, match="pip install tensorly"):
        jaxtd.SymCP.from_tensorly((None, [np.ones((3, 2))] * 3))


# -- symmetrizing a near-symmetric CP fit -------------------------------------------------------

def _dense_cp(weights, mats):
    """numpy oracle of a (possibly non-symmetric) CP tensor: sum_i w_i a_1i ⊗ ... ⊗ a_li."""
    out = 0.0
    for i, w in enumerate(weights):
        term = np.asarray(w, np.float64)
        for m in mats:
            term = np.multiply.outer(term, m[:, i])
        out = out + term
    return out


def test_symmetrize_exact_symmetric_input_round_trips(x64):
    rng = np.random.default_rng(3)
    for order, weights in ((3, [1.5, 0.7]), (4, [2.0, -0.5])):
        u = rng.normal(size=(4, 2))
        t, asym = jaxtd.symcp.symmetrize_cp(np.asarray(weights), [u] * order)
        assert t.order == order and t.dtype == jnp.float64
        np.testing.assert_allclose(jaxtd.to_dense(t), _dense_cp(weights, [u] * order),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(t.factors), axis=1), 1.0)
        assert asym.cosine_gap < 1e-12 and asym.relative_distance < 1e-6
        np.testing.assert_array_less(asym.component_gaps, 1e-12)


@pytest.mark.parametrize("order", [3, 4])
def test_symmetrize_sign_flipped_and_rescaled_modes(order, x64):
    """Per-mode signs and scales whose product is 1 (or -1) leave the tensor as it is (or
    negate it); the symmetrized tensor is the same dense tensor, with the documented sign
    convention: odd order puts a negative sign into the vector, even order into the weight."""
    rng = np.random.default_rng(5)
    u = rng.normal(size=(5, 2))
    w = np.array([1.0, 2.0])
    scales = np.ones((order, 2))
    scales[:, 0] = [-2.0, -0.5] + [1.0] * (order - 2)   # product +1: the same component
    scales[:, 1] = [-3.0, 1 / 3] + [1.0] * (order - 2)  # product -1: the component negated
    mats = [u * scales[m] for m in range(order)]
    dense = _dense_cp(w, mats)
    t, asym = jaxtd.symcp.symmetrize_cp(w, mats)  # from_tensorly's logic, without TensorLy
    np.testing.assert_allclose(jaxtd.to_dense(t), dense, rtol=1e-12, atol=1e-12)
    assert asym.cosine_gap < 1e-12 and asym.relative_distance < 1e-6
    if order % 2:
        assert np.all(np.asarray(t.weights) > 0)
    else:
        assert np.asarray(t.weights)[1] < 0 < np.asarray(t.weights)[0]


def test_symmetrize_parafac_fit_of_a_symmetric_tensor(x64):
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 2)))[0]
    target = jaxtd.SymCP(jnp.asarray([1.0, 0.6]), jnp.asarray(basis.T), 3)
    dense = np.asarray(jaxtd.to_dense(target))
    cp = parafac(tl.tensor(dense), rank=2, n_iter_max=500, tol=1e-12, random_state=0)
    fitted = tl.cp_to_tensor(cp)
    assert np.linalg.norm(fitted - dense) < 1e-6 * np.linalg.norm(dense)  # parafac converged
    with pytest.raises(ValueError, match="not symmetric"):
        jaxtd.SymCP.from_tensorly(cp)  # each mode's columns differ in sign and scale
    t, asym = jaxtd.SymCP.from_tensorly(cp, symmetrize=True)
    np.testing.assert_allclose(jaxtd.to_dense(t), dense, atol=1e-6 * np.abs(dense).max())
    # the reported distance is the dense one (oracle: the CP fit expanded by TensorLy)
    expected = np.linalg.norm(fitted - np.asarray(jaxtd.to_dense(t))) / np.linalg.norm(fitted)
    assert asym.relative_distance == pytest.approx(expected, abs=1e-7)
    assert asym.cosine_gap < 1e-6


def test_symmetrize_reports_asymmetry_against_dense_oracle(x64):
    """Two modes at angle θ: the gap is 1 - |cos θ|, the distance the dense one."""
    theta = 0.6
    a = np.array([[1.0], [0.0]])
    b = np.array([[np.cos(theta)], [np.sin(theta)]])
    w = np.array([2.0])
    t, asym = jaxtd.symcp.symmetrize_cp(w, [a, b])
    assert asym.cosine_gap == pytest.approx(1 - np.cos(theta), rel=1e-12)
    dense = _dense_cp(w, [a, b])
    expected = np.linalg.norm(dense - np.asarray(jaxtd.to_dense(t))) / np.linalg.norm(dense)
    assert asym.relative_distance == pytest.approx(expected, rel=1e-6)
    # the averaged direction bisects the two modes
    np.testing.assert_allclose(np.asarray(t.factors)[0],
                               [np.cos(theta / 2), np.sin(theta / 2)], rtol=1e-12)
    # the default dtype follows x64, not the input's
    assert jaxtd.symcp.symmetrize_cp(w.astype(np.float32), [a, a])[0].dtype == jnp.float64


def test_symmetrize_zero_component_and_bad_arguments():
    u = np.random.default_rng(2).normal(size=(3, 2))
    v = u.copy()
    v[:, 1] = 0.0
    t, asym = jaxtd.symcp.symmetrize_cp(np.ones(2), [u, v, u])
    assert t.dtype == jnp.float32
    assert float(t.weights[1]) == 0.0 and not np.any(np.asarray(t.factors[1]))
    assert asym.component_gaps[1] == 0.0
    pytest.importorskip("tensorly")
    with pytest.raises(TypeError, match="symmetrize must be True or False"):
        jaxtd.SymCP.from_tensorly((None, [u, u]), symmetrize="yes")
    with pytest.raises(ValueError, match="rtol"):
        jaxtd.SymCP.from_tensorly((None, [u, u]), symmetrize=True, rtol=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        jaxtd.SymCP.from_tensorly((None, [u, u * np.nan]), symmetrize=True)
