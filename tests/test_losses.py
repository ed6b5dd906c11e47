"""Gram-form losses against dense and long-double oracles (tests/oracles.py)."""

import os
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import losses, targets
from tests import oracles

CI = os.environ.get("JAXTD_CI") == "1"
ORDERS = [2, 3, 4, 5]


def _random_symcp(key, rank, dim, order, *, zero_from=None, dtype=None):
    kw, kf = jax.random.split(key)
    w = jax.random.normal(kw, (rank,), dtype)
    if zero_from is not None:  # masked width: rows >= zero_from have weight 0
        w = jnp.where(jnp.arange(rank) < zero_from, w, jnp.zeros_like(w))
    return jaxtd.SymCP(w, jax.random.normal(kf, (rank, dim), dtype), order)


def _dense(t):
    return oracles.dense(t.weights, t.factors, t.order)


# -- identities against the dense tensor ---------------------------------------------------------

@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dim,ka,kb", [(1, 1, 1), (4, 5, 2), (7, 2, 5)])
def test_identities_match_dense(order, dim, ka, kb, x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(100 * order + 10 * dim + ka))
    a = _random_symcp(k1, ka, dim, order)
    b = _random_symcp(k2, kb, dim, order)
    da, db = _dense(a), _dense(b)
    np.testing.assert_allclose(jaxtd.to_dense(a), da, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jaxtd.inner(a, b), np.sum(da * db), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jaxtd.norm(a), np.linalg.norm(da), rtol=1e-10)
    want = 0.5 * np.sum((da - db) ** 2)
    np.testing.assert_allclose(jaxtd.loss(a, b), want, rtol=1e-10)
    np.testing.assert_allclose(losses.loss_autodiff(a, b), want, rtol=1e-10)
    np.testing.assert_allclose(jaxtd.residual_sq(a, b), 2 * want, rtol=1e-10)
    np.testing.assert_allclose(jaxtd.relative_error(a, b),
                               np.linalg.norm(da - db) / np.linalg.norm(db), rtol=1e-10)
    # stack(a, b, sign) is the tensor a + sign * b
    np.testing.assert_allclose(jaxtd.to_dense(losses.stack(a, b, 0.5)), da + 0.5 * db,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
def test_identities_float32(order):
    k1, k2 = jax.random.split(jax.random.PRNGKey(order))
    a = _random_symcp(k1, 5, 4, order)
    b = _random_symcp(k2, 3, 4, order)
    da, db = _dense(a), _dense(b)
    for value in (jaxtd.inner(a, b), jaxtd.loss(a, b), jaxtd.relative_error(a, b)):
        assert value.dtype == jnp.float32
    np.testing.assert_allclose(jaxtd.inner(a, b), np.sum(da * db), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(jaxtd.loss(a, b), 0.5 * np.sum((da - db) ** 2), rtol=2e-5)
    np.testing.assert_allclose(jaxtd.relative_error(a, b),
                               np.linalg.norm(da - db) / np.linalg.norm(db), rtol=1e-6)


def test_symmetry_and_zero_residual(x64):
    a = _random_symcp(jax.random.PRNGKey(0), 4, 6, 3)
    b = _random_symcp(jax.random.PRNGKey(1), 2, 6, 3)
    np.testing.assert_allclose(jaxtd.inner(a, b), jaxtd.inner(b, a), rtol=1e-12)
    assert float(jaxtd.residual_sq(a, a)) == 0.0
    assert float(jaxtd.relative_error(a, a)) == 0.0


def test_gram_inner_forward_mode_matches_dense(x64):
    """gram_inner is the forward-differentiable form: its jvp equals the dense directional
    derivative of <A, B> (as jaxtd.lazy uses it)."""
    order = 3
    a = _random_symcp(jax.random.PRNGKey(2), 3, 4, order)
    b = _random_symcp(jax.random.PRNGKey(3), 2, 4, order)
    du = jax.random.normal(jax.random.PRNGKey(4), a.factors.shape)
    f = lambda u: losses.gram_inner(a.weights, u, b.weights, b.factors, order)  # noqa: E731
    _, tangent = jax.jvp(f, (a.factors,), (du,))
    dense_f = lambda u: jnp.sum(jaxtd.to_dense(jaxtd.SymCP(a.weights, u, order))  # noqa: E731
                                * jaxtd.to_dense(b))
    _, want = jax.jvp(dense_f, (a.factors,), (du,))
    np.testing.assert_allclose(tangent, want, rtol=1e-10)


# -- gradients ------------------------------------------------------------------------------------

def _dense_loss(a, b):
    return 0.5 * jnp.sum((jaxtd.to_dense(a) - jaxtd.to_dense(b)) ** 2)


def _assert_trees_close(got, want, rtol, atol=0.0):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@jax.jit  # oracle and tested gradient in one program per shape
def _dense_and_gram_grads(a, b):
    return (jax.grad(_dense_loss, argnums=(0, 1))(a, b),
            jax.grad(jaxtd.loss, argnums=(0, 1))(a, b))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dim,ka,kb", [(3, 5, 2), (6, 3, 4)])
def test_gradients_match_dense_loss(order, dim, ka, kb, x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(7 * order + dim))
    a = _random_symcp(k1, ka, dim, order, zero_from=ka - 1)
    b = _random_symcp(k2, kb, dim, order)
    want, got = _dense_and_gram_grads(a, b)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(want))
    _assert_trees_close(got, want, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("order", ORDERS)
def test_custom_vjp_matches_plain_autodiff(order, x64):
    """The Gram-reusing VJP against jax.grad of the plain formula (the oracle), masked widths."""
    for seed, (m, r, d, active) in enumerate([(8, 3, 5, 5), (12, 4, 16, 12), (6, 6, 3, 1)]):
        k1, k2 = jax.random.split(jax.random.PRNGKey(100 * order + seed))
        a = _random_symcp(k1, m, d, order, zero_from=active)
        b = _random_symcp(k2, r, d, order)
        value, got = jax.jit(jax.value_and_grad(jaxtd.loss, argnums=(0, 1)))(a, b)
        want_value, want = jax.value_and_grad(losses.loss_autodiff, argnums=(0, 1))(a, b)
        np.testing.assert_allclose(value, want_value, rtol=1e-12)
        scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(want))
        _assert_trees_close(got, want, rtol=1e-10, atol=1e-10 * scale)
        # masked rows: no gradient on their factors
        np.testing.assert_array_equal(got[0].factors[active:], 0.0)


@jax.jit  # one program for every cotangent (it is an argument)
def _pullbacks(a, b, ct):
    _, pull = jax.vjp(jaxtd.loss, a, b)
    _, pull_oracle = jax.vjp(losses.loss_autodiff, a, b)
    squared = jax.grad(lambda x: jaxtd.loss(x, b) ** 2)(a)
    want = jax.grad(lambda x: losses.loss_autodiff(x, b) ** 2)(a)
    return pull(ct), pull_oracle(ct), squared, want


@pytest.mark.parametrize("cotangent", [2.5, -0.75, 0.0])
def test_custom_vjp_scales_by_its_cotangent(cotangent, x64):
    """The backward pass multiplies by the incoming cotangent (every gradient of a bare loss
    passes 1): a pulled-back cotangent ``c`` and the chain rule of ``loss**2`` against the
    plain-autodiff oracle."""
    a = _random_symcp(jax.random.PRNGKey(3), 7, 5, 3, zero_from=5)
    b = _random_symcp(jax.random.PRNGKey(4), 2, 5, 3)
    ct = jnp.asarray(cotangent, a.factors.dtype)
    pulled, pulled_oracle, squared, want = _pullbacks(a, b, ct)
    _assert_trees_close(pulled, pulled_oracle, rtol=1e-10, atol=1e-12)
    _assert_trees_close(squared, want, rtol=1e-10, atol=1e-12)


def test_custom_vjp_float32_close_to_autodiff():
    a = _random_symcp(jax.random.PRNGKey(0), 16, 8, 4, zero_from=12)
    b = _random_symcp(jax.random.PRNGKey(1), 3, 8, 4)
    got, want = jax.jit(lambda a, b: (jax.grad(jaxtd.loss)(a, b),
                                      jax.grad(losses.loss_autodiff)(a, b)))(a, b)
    assert got.factors.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(want.factors)))
    _assert_trees_close(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_gram_loss_vjp_under_jit_and_vmap(x64):
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    models = jax.vmap(lambda k: _random_symcp(k, 6, 4, 3))(keys)
    target = _random_symcp(jax.random.PRNGKey(6), 2, 4, 3)
    grads = jax.jit(jax.vmap(jax.grad(jaxtd.loss), in_axes=(0, None)))(models, target)
    oracle = jax.jit(jax.grad(losses.loss_autodiff))
    for i in range(3):
        model = jax.tree_util.tree_map(lambda x: x[i], models)
        _assert_trees_close(jax.tree_util.tree_map(lambda x: x[i], grads),
                            oracle(model, target), rtol=1e-10)


# -- relative error in float32 near a fit ---------------------------------------------------------

@partial(jax.jit, static_argnums=(1, 2, 3, 4))  # one program per shape, not one per op
def _near_fit(key, order, dim, rank, extra, eps):
    """A float32 (estimate, target) pair at relative error ~eps, mixing the cases that stress the
    metric: orthonormal or random components, equal or decaying weights, plain-model style
    factors (weight folded into the factor, c = 1), sign flips, and extra model components with
    tiny weights. Shapes are fixed so one compilation serves a whole batch of keys."""
    ks = jax.random.split(key, 9)
    orth = jaxtd.targets.orthonormal(ks[0], dim, rank, order, "geometric")
    rand = jaxtd.targets.random_unit(ks[1], dim, rank, order)
    use_orth = jax.random.bernoulli(ks[2])
    factors = jnp.where(use_orth, orth.factors, rand.factors)
    tw = jnp.where(use_orth, orth.weights, rand.weights * jnp.exp(jax.random.normal(ks[3], (rank,))))
    a = factors + eps * jax.random.normal(ks[4], factors.shape) / jnp.sqrt(float(dim))
    c = tw * (1 + eps * jax.random.normal(ks[5], (rank,)))
    # plain style: c_i = 1 and the weight in the factor (|c|^(1/l) a, sign on odd orders)
    plain = jax.random.bernoulli(ks[6])
    a = jnp.where(plain, a * (jnp.abs(c) ** (1.0 / order))[:, None], a)
    c = jnp.where(plain, jnp.ones_like(c), c)
    flips = jnp.where(jax.random.bernoulli(ks[7], shape=(rank,)), -1.0, 1.0).astype(a.dtype)
    if order % 2:  # (-a)^{⊗l} = -a^{⊗l}: the same tensor, written differently
        a, c = a * flips[:, None], c * flips
    ke1, ke2 = jax.random.split(ks[8])
    a = jnp.concatenate([a, jax.random.normal(ke1, (extra, dim)) / jnp.sqrt(float(dim))])
    c = jnp.concatenate([c, eps ** 1.5 * jax.random.normal(ke2, (extra,))])
    return jaxtd.SymCP(c, a, order), jaxtd.SymCP(tw, factors, order)


def _oracle_errors(est, tgt):
    n = est.weights.shape[0]
    return np.array([oracles.relative_error_longdouble(est.weights[i], est.factors[i],
                                                       tgt.weights[i], tgt.factors[i], est.order)
                     for i in range(n)])


@pytest.mark.parametrize("order,dim,rank,extra", [(2, 24, 4, 6), (3, 64, 4, 12), (4, 32, 5, 5),
                                                  (5, 16, 3, 9), (3, 300, 8, 4)])
def test_relative_error_float32_accurate_near_fit(order, dim, rank, extra):
    """Accurate to 1e-3 relative at errors ~1e-6 (and 1e-5) over many random cases; the plain
    float32 formula fails the same check, so the check can fail."""
    n = 8 if CI else 16
    keys = jax.random.split(jax.random.PRNGKey(order * 1000 + dim), n)
    eps = jnp.where(jnp.arange(n) % 2 == 0, 1e-6, 1e-5).astype(jnp.float32)
    est, tgt = jax.jit(jax.vmap(lambda k, e: _near_fit(k, order, dim, rank, extra, e)))(keys,
                                                                                          eps)
    assert est.factors.dtype == jnp.float32
    want = _oracle_errors(est, tgt)
    assert np.all((want > 2e-7) & (want < 1e-4))  # the regime we mean to test
    both = lambda e, t: (jaxtd.relative_error(e, t), jaxtd.residual_sq(e, t),  # noqa: E731
                         jaxtd.relative_error(e, t, precise=False))
    got, res, plain = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(both))(est, tgt))
    assert np.all(np.isfinite(got)) and np.all(got >= 0)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert not np.allclose(plain, want, rtol=1e-3)
    # residual_sq agrees with the oracle too (absolute value, not just the ratio)
    want_res = np.array([float(oracles.gram_sums_longdouble(est.weights[i], est.factors[i],
                                                            tgt.weights[i], tgt.factors[i],
                                                            order)[0]) for i in range(n)])
    np.testing.assert_allclose(res, want_res, rtol=2e-3)


def test_relative_error_float32_scale_invariant_and_exact_zero():
    """Tiny factors and huge weights (or the reverse) would under/overflow a naive float32 Gram
    form; the power-of-two rescaling keeps the ratio exact."""
    est, tgt = _near_fit(jax.random.PRNGKey(3), 4, 16, 3, 2, jnp.float32(1e-6))
    want = oracles.relative_error_longdouble(est.weights, est.factors, tgt.weights, tgt.factors, 4)
    for fs, ws in [(2.0 ** -40, 2.0 ** 60), (2.0 ** 20, 2.0 ** -70), (1.0, 1.0)]:
        e = jaxtd.SymCP(est.weights * ws, est.factors * fs, 4)
        t = jaxtd.SymCP(tgt.weights * ws, tgt.factors * fs, 4)
        np.testing.assert_allclose(float(jaxtd.relative_error(e, t)), want, rtol=1e-3)
    np.testing.assert_allclose(float(jaxtd.residual_sq(jaxtd.SymCP(est.weights * 2.0 ** 10,
                                                                   est.factors, 4),
                                                       jaxtd.SymCP(tgt.weights * 2.0 ** 10,
                                                                   tgt.factors, 4))),
                               2.0 ** 20 * want ** 2 * float(jaxtd.norm(tgt)) ** 2, rtol=2e-3)
    assert float(jaxtd.relative_error(tgt, tgt)) == 0.0
    far = jaxtd.SymCP(jnp.zeros_like(est.weights), est.factors, 4)  # estimate 0: error exactly 1
    np.testing.assert_allclose(float(jaxtd.relative_error(far, tgt)), 1.0, rtol=1e-6)


def test_relative_error_float64_direct(x64):
    est, tgt = _near_fit(jax.random.PRNGKey(4), 3, 12, 3, 2, 1e-5)
    assert est.factors.dtype == jnp.float64
    want = np.linalg.norm(_dense(est) - _dense(tgt)) / np.linalg.norm(_dense(tgt))
    np.testing.assert_allclose(float(jaxtd.relative_error(est, tgt)), want, rtol=1e-3)


def test_relative_error_has_no_gradient():
    est, tgt = _near_fit(jax.random.PRNGKey(5), 3, 8, 2, 1, jnp.float32(1e-2))
    g = jax.jit(jax.grad(jaxtd.relative_error, argnums=(0, 1)))(est, tgt)
    for leaf in jax.tree_util.tree_leaves(g):
        np.testing.assert_array_equal(leaf, 0.0)


# -- jit / vmap variants ---------------------------------------------------------------------------

class VariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_losses_under_variants(self):
        a = _random_symcp(jax.random.PRNGKey(0), 5, 4, 3)
        b = _random_symcp(jax.random.PRNGKey(1), 2, 4, 3)
        want = 0.5 * np.sum((_dense(a) - _dense(b)) ** 2)
        np.testing.assert_allclose(self.variant(jaxtd.loss)(a, b), want, rtol=1e-5)
        np.testing.assert_allclose(self.variant(jaxtd.inner)(a, b),
                                   np.sum(_dense(a) * _dense(b)), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(self.variant(partial(jaxtd.relative_error, precise=False))(a, b),
                                   np.sqrt(2 * want) / np.linalg.norm(_dense(b)), rtol=1e-4)
        grad = self.variant(jax.grad(jaxtd.loss))(a, b)
        chex.assert_trees_all_close(grad, jax.grad(losses.loss_autodiff)(a, b), rtol=1e-4,
                                    atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_stacked_symcps(self):
        keys = jax.random.split(jax.random.PRNGKey(2), 4)
        models = jax.vmap(lambda k: _random_symcp(k, 5, 4, 3))(keys)
        target = _random_symcp(jax.random.PRNGKey(3), 2, 4, 3)
        targets = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 4), target)
        values = self.variant(jax.vmap(jaxtd.loss))(models, targets)
        grads = self.variant(jax.vmap(jax.grad(jaxtd.loss), in_axes=(0, None)))(models, target)
        errs = self.variant(jax.vmap(partial(jaxtd.relative_error, precise=False)))(models,
                                                                                     targets)
        for i in range(4):
            model = jax.tree_util.tree_map(lambda x: x[i], models)
            want = 0.5 * np.sum((_dense(model) - _dense(target)) ** 2)
            np.testing.assert_allclose(values[i], want, rtol=1e-5)
            np.testing.assert_allclose(errs[i], np.sqrt(2 * want) / np.linalg.norm(_dense(target)),
                                       rtol=1e-5)
            chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], grads),
                                        jax.grad(losses.loss_autodiff)(model, target),
                                        rtol=1e-4, atol=1e-4)


def test_vmap_over_keys_of_targets_and_models():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    make = lambda k: (jaxtd.targets.orthonormal(k, 6, 2, 3),  # noqa: E731
                      jaxtd.SymCP(jnp.ones((4,)), jaxtd.init_factors(k, 4, 6, scale="standard"), 3))
    targets, models = jax.vmap(make)(keys)
    errs = jax.jit(jax.vmap(jaxtd.relative_error))(models, targets)
    for i in range(3):
        t, m = make(keys[i])
        want = np.linalg.norm(_dense(m) - _dense(t)) / np.linalg.norm(_dense(t))
        np.testing.assert_allclose(errs[i], want, rtol=1e-5)


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [jaxtd.inner, jaxtd.loss, losses.loss_autodiff, jaxtd.residual_sq,
                                jaxtd.relative_error])
def test_mismatched_tensors_rejected(fn):
    a = _random_symcp(jax.random.PRNGKey(0), 3, 4, 3)
    with pytest.raises(ValueError, match="order"):
        fn(a, _random_symcp(jax.random.PRNGKey(1), 3, 4, 4))
    with pytest.raises(ValueError, match="dim"):
        fn(a, _random_symcp(jax.random.PRNGKey(1), 3, 5, 3))
    with pytest.raises(TypeError, match="SymCP"):
        fn(a, (a.weights, a.factors))


def test_mismatch_rejected_before_tracing():
    a = _random_symcp(jax.random.PRNGKey(0), 3, 4, 3)
    b = _random_symcp(jax.random.PRNGKey(1), 3, 5, 3)
    with pytest.raises(ValueError, match="dim"):
        jax.jit(jax.grad(jaxtd.loss))(a, b)


def test_float32_inputs_stay_precise_with_x64_enabled(x64):
    est, tgt = _near_fit(jax.random.PRNGKey(6), 3, 16, 3, 2, 1e-6)
    f32 = lambda t: jaxtd.SymCP(t.weights.astype(jnp.float32),  # noqa: E731
                                t.factors.astype(jnp.float32), t.order)
    est, tgt = f32(est), f32(tgt)
    want = oracles.relative_error_longdouble(est.weights, est.factors, tgt.weights, tgt.factors, 3)
    got = jaxtd.relative_error(est, tgt)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-3)


@pytest.mark.parametrize("scale", [1e16, 1e19, 1e30])
@pytest.mark.parametrize("precise", [True, False])
def test_relative_error_compensating_scales_match_exact_oracle(scale, precise):
    """Huge weights times tiny factors (``c u^{⊗3}`` with ``c = 1e16``, ``u ~ c^{-1/3}``) are an
    ordinary tensor; the metric folds each weight's magnitude into its factor (an exact power of
    two) before the Gram sums, so it neither returns 0 nor NaN (it did: 0.0 at 1e16, NaN at
    1e19). Checked against exact rational arithmetic on the very float32 inputs."""
    t = targets.orthonormal(jax.random.key(1), 6, 2, 3)
    noise = 7e-4 * np.asarray(jax.random.normal(jax.random.key(5), (2, 6)))
    factors = ((np.asarray(t.factors, np.float64) + noise) * scale ** (-1 / 3)).astype(np.float32)
    est = jaxtd.SymCP(np.full(2, scale, np.float32), factors, 3)
    want = oracles.relative_error_exact(est.weights, est.factors, t.weights, t.factors, 3)
    assert 1e-4 < want < 1e-2
    got = float(jaxtd.relative_error(est, t, precise=precise))
    np.testing.assert_allclose(got, want, rtol=1e-3 if precise else 2e-2)
    res = float(jaxtd.residual_sq(est, t, precise=precise))
    np.testing.assert_allclose(res, want ** 2 * float(jaxtd.inner(t, t)),
                               rtol=2e-3 if precise else 4e-2)


def test_relative_error_compensating_scales_float64(x64):
    t = targets.orthonormal(jax.random.key(1), 6, 2, 3, dtype=jnp.float64)
    noise = 1e-6 * np.asarray(jax.random.normal(jax.random.key(5), (2, 6), jnp.float64))
    for scale in (1e16, 1e100):
        est = jaxtd.SymCP(np.full(2, scale), (np.asarray(t.factors) + noise) * scale ** (-1 / 3), 3)
        want = oracles.relative_error_exact(est.weights, est.factors, t.weights, t.factors, 3)
        np.testing.assert_allclose(float(jaxtd.relative_error(est, t)), want, rtol=1e-3)


@pytest.mark.parametrize("value", ["no", 0, 1, None, "False"])
def test_precise_must_be_a_bool(value):
    t = targets.orthonormal(jax.random.key(1), 4, 2, 3)
    for fn in (jaxtd.relative_error, jaxtd.residual_sq):
        with pytest.raises(TypeError, match="precise"):
            fn(t, t, precise=value)


def test_order_above_the_maximum_is_refused_at_once():
    """A huge order used to hang the accurate metric (Python loops over the order while
    tracing); SymCP refuses orders above MAX_ORDER before any work."""
    from jaxtd.symcp import MAX_ORDER
    f = np.ones((2, 3), np.float32)
    jaxtd.SymCP(np.ones(2, np.float32), f, MAX_ORDER)
    for order in (MAX_ORDER + 1, 10 ** 6, 10 ** 30):
        with pytest.raises(ValueError, match="order must be <= 64"):
            jaxtd.SymCP(np.ones(2, np.float32), f, order)
        with pytest.raises(ValueError, match="order"):
            targets.orthonormal(jax.random.key(0), 3, 1, order)


@jax.jit  # every mode and its oracle in one program
def _forward_modes(a, b, da):
    got = jax.jvp(lambda x: jaxtd.loss(x, b), (a,), (da,))
    want = jax.jvp(lambda x: losses.loss_autodiff(x, b), (a,), (da,))
    hess = jax.hessian(lambda f: jaxtd.loss(jaxtd.SymCP(a.weights, f, 3), b))(a.factors)
    oracle = jax.hessian(lambda f: losses.loss_autodiff(jaxtd.SymCP(a.weights, f, 3), b))(
        a.factors)
    _, lin = jax.linearize(lambda x: jaxtd.loss(x, b), a)
    return got, want, hess, oracle, lin(da)


def test_loss_supports_forward_mode_and_hessians(x64):
    """``jax.jvp`` of ``jaxtd.loss`` used to fail inside JAX's custom-VJP machinery ("can't apply
    forward-mode autodiff (jvp) to a custom_vjp function"); its rule is now a custom JVP, so
    forward mode, linearize and Hessians agree with the plain formula."""
    a = _random_symcp(jax.random.PRNGKey(11), 5, 4, 3, zero_from=4)
    b = _random_symcp(jax.random.PRNGKey(12), 2, 4, 3)
    da = _random_symcp(jax.random.PRNGKey(13), 5, 4, 3)
    got, want, hess, oracle, linear = _forward_modes(a, b, da)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(hess, oracle, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(linear, want[1], rtol=1e-12)


def test_loss_gradient_is_the_gram_formula_float32():
    """Reverse mode transposes the custom JVP into the Gram-reusing formulas ``(P ∘ G) w`` and
    ``l (w w^T ∘ P) U`` (the ones the replaced custom VJP computed; checked bit for bit against
    it when it was replaced)."""
    w = jax.random.normal(jax.random.PRNGKey(0), (12,))
    u = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (12, 7))
    for order in (3, 4):
        g = jax.jit(jax.grad(losses.gram_loss, argnums=(0, 1)), static_argnums=2)(w, u, order)
        gram = u @ u.T
        p = gram ** (order - 1)
        want_w = jnp.matmul(p * gram, w, precision="highest")
        want_u = jnp.matmul(order * (w[:, None] * p * w[None, :]), u, precision="highest")
        np.testing.assert_allclose(g[0], want_w, rtol=1e-6)
        np.testing.assert_allclose(g[1], want_u, rtol=1e-6)
