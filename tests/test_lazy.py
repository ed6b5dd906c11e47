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
    value_and_grad = jax.jit(jax.value_and_grad(lazy.lazy_loss, argnums=1))
    value, g = value_and_grad(masked, noisy, target)
    small_value, small_g = value_and_grad(small, delta[:4], target)
    np.testing.assert_allclose(value, small_value, rtol=1e-12)
    np.testing.assert_array_equal(g[4:], 0.0)
    np.testing.assert_allclose(g[:4], small_g, rtol=1e-10)


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
    with pytest.raises(ValueError, match="delta"):
        lazy.linearize(model)(delta[:, :2])
    with pytest.raises(ValueError, match="target"):
        lazy.best_residual(model, jaxtd.SymCP(target.weights, target.factors, 2))
    with pytest.raises(TypeError, match="model"):
        lazy.linearize(model.factors)


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


# -- agreement of the two linearizations ----------------------------------------------------------

@jax.jit  # the factored and the dense form and their gradients in one program
def _linearized(model, delta, target):
    lin = lazy.linearize(model)
    t_dense = jaxtd.to_dense(target)
    dense_loss = lambda dl: 0.5 * jnp.sum((lin(dl) - t_dense) ** 2)  # noqa: E731
    loss, grad = jax.value_and_grad(lazy.lazy_loss, argnums=1)(model, delta, target)
    dense, dense_grad = jax.value_and_grad(dense_loss)(delta)
    return lin(delta), loss, dense, grad, dense_grad


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_linearize_agrees_with_factored_form(order, x64):
    model, delta, target = _case(order, d=3 if order == 5 else 4, seed=1)
    linear, loss, dense, grad, dense_grad = _linearized(model, delta, target)
    np.testing.assert_allclose(linear, oracles.dense_lazy(model.weights, model.factors, delta,
                                                          order), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, dense, rtol=1e-10)
    np.testing.assert_allclose(grad, dense_grad, rtol=1e-10, atol=1e-12)


def _gram(c, u, b, v, order):
    return c @ ((u @ v.T) ** order) @ b


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_factored_form_matches_nested_jvp_of_gram_form(order, x64):
    """<JΔ, JΔ'> = ∂s∂t g(W0+sΔ, W0+tΔ'), <JΔ, T*> = ∂s <T(W0+sΔ), T*>, g the plain Gram form."""
    model, delta, target = _case(order, d=5, m=4, seed=2)
    c, w0 = model.weights, model.factors
    g = lambda u, v: _gram(c, u, c, v, order)
    d_t = lambda v: jax.jvp(lambda u: g(u, v), (w0,), (delta,))[1]
    jj = jax.jvp(d_t, (w0,), (delta,))[1]                     # ||JΔ||^2
    j0 = jax.jvp(lambda u: g(u, w0), (w0,), (delta,))[1]      # <JΔ, T(W0)>
    jt = jax.jvp(lambda u: _gram(c, u, target.weights, target.factors, order), (w0,), (delta,))[1]
    base = 2.0 * jaxtd.loss(model, target)                     # ||T(W0) - T*||^2
    want = base + 2.0 * (j0 - jt) + jj
    np.testing.assert_allclose(lazy.lazy_residual_sq(model, delta, target), want, rtol=1e-10)


# -- the exact optimum ----------------------------------------------------------------------------

@pytest.mark.parametrize("order,d,m", [(2, 4, 3), (3, 4, 3), (3, 4, 6), (4, 3, 4), (5, 3, 2)])
def test_best_residual_matches_dense_lstsq(order, d, m, x64):
    model, _, target = _case(order, d=d, m=m, r=3, seed=4)
    got = lazy.lstsq(model, target)
    want = oracles.lstsq_relative_residual(model.weights, model.factors, target.weights,
                                           target.factors, order)
    np.testing.assert_allclose(got.residual, want, rtol=1e-8, atol=1e-9)
    jac = oracles.dense_jacobian(model.weights, model.factors, order)
    assert int(got.rank) == np.linalg.matrix_rank(jac)
    # the minimizer is the minimum-norm one and attains the residual
    y = (oracles.dense(target.weights, target.factors, order)
         - oracles.dense(model.weights, model.factors, order)).ravel()
    np.testing.assert_allclose(np.asarray(got.delta).ravel(), np.linalg.pinv(jac) @ y,
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(lazy.lazy_relative_error(model, got.delta, target), got.residual,
                               rtol=1e-6, atol=1e-7)


def test_best_residual_masks_and_normal_equations(x64):
    model, _, target = _case(3, d=4, m=6, seed=5)
    mask = (jnp.arange(6) < 3).astype(jnp.float64)
    masked = lazy.lstsq(jaxtd.SymCP(model.weights * mask, model.factors, 3), target)
    alone = lazy.lstsq(jaxtd.SymCP(model.weights[:3], model.factors[:3], 3), target)
    np.testing.assert_allclose(masked.residual, alone.residual, rtol=1e-9)
    assert int(masked.rank) == int(alone.rank) == 12
    np.testing.assert_allclose(masked.delta[:3], alone.delta, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(masked.delta[3:], 0.0)
    jtj, jty = lazy.normal_equations(model, target)
    jac = oracles.dense_jacobian(model.weights, model.factors, 3)
    y = (oracles.dense(target.weights, target.factors, 3)
         - oracles.dense(model.weights, model.factors, 3)).ravel()
    np.testing.assert_allclose(jtj, jac.T @ jac, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jty, jac.T @ y, rtol=1e-10, atol=1e-12)


def test_antisymmetric_halves_the_tangent_space(x64):
    # a pair spans one factor's tangent directions: width 2k antisymmetric ~ width k standard
    anti = lazy.antisymmetric(jax.random.PRNGKey(0), 6, 4, 3, dtype=jnp.float64)
    _, _, target = _case(3, d=4, seed=6)
    assert int(lazy.lstsq(anti, target).rank) == 12


_GRID = {(8, 3): [12, 13, 15, 16, 20], (6, 4): [18, 21], (4, 3): [4, 5], (3, 4): [4, 5, 6, 9],
         (5, 2): [4, 5]}


@pytest.fixture(scope="module")
def threshold():
    """One threshold experiment shared by the tests below (one compile per case)."""
    before = jax.config.jax_enable_x64
    out = lazy.threshold_experiment(list(_GRID), widths=lambda d, l: _GRID[(d, l)])
    assert jax.config.jax_enable_x64 == before  # the float64 scope does not leak
    return out


def test_threshold_experiment_rule_exceptions_and_references(threshold):
    out = threshold
    assert out.table.residual.dtype == np.float64
    res = out.table.set_index(["dim", "order", "width"])["residual"]
    # measured references: d=8, l=3: 13 -> ~0.28, 15 -> 0;  d=6, l=4: 18 -> ~0.32, 21 -> 0
    assert 0.15 < res[(8, 3, 13)] < 0.45 and res[(8, 3, 15)] <= 1e-6
    assert 0.15 < res[(6, 4, 18)] < 0.5 and res[(6, 4, 21)] <= 1e-6
    # rule ⌈C(d+l-1,l)/d⌉ (d=4, l=3: 20/4 = 5)
    assert res[(4, 3, 4)] > 1e-2 and res[(4, 3, 5)] <= 1e-6
    # Alexander–Hirschowitz (4, 3, 5): 5 * 3 = 15 = C(6, 4) unknowns, yet one dimension short
    assert res[(3, 4, 5)] > 1e-2 and res[(3, 4, 6)] <= 1e-6
    ranks = out.table.set_index(["dim", "order", "width"])["rank"]
    assert ranks[(3, 4, 5)] == 14 and ranks[(3, 4, 6)] == 15
    # order 2: m d = 20 >= 15 at m = 4, but the tangent space has md - m(m-1)/2 = 14 dims
    assert res[(5, 2, 4)] > 1e-2 and res[(5, 2, 5)] <= 1e-6 and ranks[(5, 2, 4)] == 14
    assert out.critical == {(8, 3): 15, (6, 4): 21, (4, 3): 5, (3, 4): 6, (5, 2): 5}
    assert out.critical == out.predicted
    # residuals never increase with the width (nested tangent spaces)
    for (d, l), t in out.table.groupby(["dim", "order"]):
        assert np.all(np.diff(t.sort_values("width").residual.to_numpy()) <= 1e-9)


def test_distance_of_the_lazy_optimum_blows_up_at_the_threshold(threshold):
    dist = threshold.table.set_index(["dim", "order", "width"])["distance"]
    # d=8, l=3: m* = 15 (m d = C(10, 3) = 120, J square): the minimizer is far larger there
    near = dist[(8, 3, 15)]
    assert near > 3 * max(dist[(8, 3, w)] for w in (12, 13, 16, 20))
    assert near > 30.0                  # ||Δ*|| >> ||W0||: not lazy at all
    assert dist[(3, 4, 6)] > 3 * max(dist[(3, 4, 4)], dist[(3, 4, 9)])


def test_predicted_width_and_exponent_fit():
    assert [lazy.predicted_critical_width(d, 3) for d in (4, 5, 6, 8)] == [5, 8, 10, 15]
    assert [lazy.predicted_critical_width(d, 4) for d in (3, 4, 5, 6)] == [6, 10, 15, 21]
    assert lazy.predicted_critical_width(7, 2) == 7
    dims = np.array([4.0, 8.0, 16.0])
    assert lazy.fit_exponent(dims, 3 * dims ** 2.5) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="dims"):
        lazy.fit_exponent([4], [5])


def test_threshold_experiment_bad_input():
    with pytest.raises(TypeError, match="cases"):
        lazy.threshold_experiment([(8, 3.0)])
    with pytest.raises(ValueError, match="init"):
        lazy.threshold_experiment([(4, 3)], init="orthogonal")
    with pytest.raises(ValueError, match="widths"):
        lazy.threshold_experiment([(4, 3)], widths=[0, 2])


# -- lazy training --------------------------------------------------------------------------------

def _standard(d, l, m, seed=0, dtype=None):
    w0 = jaxtd.init_factors(jax.random.PRNGKey(seed), m, d, scale="standard", dtype=dtype)
    return jaxtd.SymCP(jnp.ones((m,), w0.dtype), w0, l)


def test_lazy_gd_converges_to_best_residual_not_below(x64):
    import optax
    d, l, m = 4, 3, 3                      # m d = 12 < C(6, 3) = 20: below the threshold
    model = _standard(d, l, m)
    target = jaxtd.targets.random_unit(jax.random.PRNGKey(1), d, 3, l)
    best = lazy.lstsq(model, target)
    assert float(best.residual) > 0.3
    lmax = float(jnp.linalg.eigvalsh(lazy.normal_equations(model, target)[0])[-1])
    for opt in (optax.sgd(1.0 / lmax), optax.adam(1e-2)):
        _, hist = jax.jit(lambda mo, t: lazy.train(mo, t, opt, 1500, record_every=50))(model, target)
        err = np.asarray(hist["relative_error"])
        assert np.all(err >= float(best.residual) - 1e-12)        # never below the optimum
        np.testing.assert_allclose(err[-1], best.residual, rtol=1e-6)
        np.testing.assert_allclose(hist["loss"], 0.5 * (err * jaxtd.norm(target)) ** 2, rtol=1e-8)
        assert hist["step"][-1] == 1500 and err[0] > err[-1]
    # plain GD from Δ = 0 stays in the row space of J: it lands on the minimum-norm optimum
    np.testing.assert_allclose(hist["distance"][-1], best.distance, rtol=1e-3)


def test_lazy_train_float32_and_validation():
    import optax
    model = _standard(4, 3, 8)
    target = jaxtd.targets.random_unit(jax.random.PRNGKey(1), 4, 2, 3)
    state, hist = jax.jit(lambda mo, t: lazy.train(mo, t, optax.adam(2e-2), 400,
                                                   record_every=100))(model, target)
    assert state.delta.dtype == jnp.float32 and hist["relative_error"].dtype == jnp.float32
    assert hist["relative_error"].shape == (4,)
    assert float(hist["relative_error"][-1]) < 0.1 * float(hist["relative_error"][0])
    with pytest.raises(ValueError, match="record_every"):
        lazy.train(model, target, optax.sgd(0.1), 10, record_every=3)
    with pytest.raises(TypeError, match="optimizer"):
        lazy.train(model, target, "sgd", 10)
    with pytest.raises(ValueError, match="delta"):
        lazy.train_init(model, optax.sgd(0.1), jnp.zeros((3, 4)))


def test_best_residual_float32_is_approximate_but_sane():
    model = _standard(4, 3, 3)
    target = jaxtd.targets.random_unit(jax.random.PRNGKey(1), 4, 3, 3)
    got = lazy.best_residual(model, target)
    assert got.dtype == jnp.float32
    want = oracles.lstsq_relative_residual(model.weights, model.factors, target.weights,
                                           target.factors, 3)
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("d,l,m", [(8, 3, 16), (6, 4, 21)])
def test_best_residual_float32_dense_matches_the_float64_answer(d, l, m):
    """Past the threshold the answer is exactly 0; a float32 eigendecomposition used to miss the
    rank and report 0.26 / 0.14. Concrete float32 inputs are now solved in float64 (and a traced
    float32 dense solve goes to the iterative solver)."""
    target = jaxtd.targets.orthonormal(jax.random.key(1), d, 3, l)
    w0 = jaxtd.init_factors(jax.random.key(2), m, d, scale="standard")
    signs = jnp.where(jnp.arange(m) % 2 == 0, 1.0, -1.0).astype(jnp.float32)
    model = jaxtd.SymCP(signs, w0, l)
    want = oracles.lstsq_relative_residual(model.weights, model.factors, target.weights,
                                           target.factors, l)
    assert want < 1e-6
    got = lazy.best_residual(model, target, method="dense")
    assert got.dtype == jnp.float32 and float(got) <= 1e-6
    out = lazy.lstsq(model, target)
    assert out.delta.dtype == jnp.float32 and int(out.rank) == lazy.sym_dim(d, l)
    traced = jax.jit(lambda a, b: lazy.best_residual(a, b, method="dense"))(model, target)
    assert traced.dtype == jnp.float32 and float(traced) <= 1e-3
