"""The matrix-free lazy optimum (jaxtd.lazy.cg) against the dense normal equations."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import lazy
from jaxtd.lazy import cg as lazy_cg
from jaxtd.algorithms import lazy_gd
from tests import oracles

pytestmark = pytest.mark.timeout(600)

# The solvers and the error jitted once for the module: a program per shape, shared by the tests
# that meet the shape again (called eagerly, each solve ran dozens of small programs, each
# compiled per shape). All three are jit-able by contract; only lstsq has a path of its own for
# concrete inputs, for float32 ones, and _lstsq is only given float64. The eager calls are kept
# where a test is about them (argument checks, method routing).
_cg_lstsq = jax.jit(lazy.cg_lstsq, static_argnames=("tol", "max_iter"))
_lstsq = jax.jit(lazy.lstsq)
_lazy_relative_error = jax.jit(lazy.lazy_relative_error)


def _model(d, l, m, seed=0, dtype=jnp.float64, signs=None):
    w = jax.random.normal(jax.random.key(seed), (m, d), dtype) / np.sqrt(d)
    c = jnp.ones((m,), dtype) if signs is None else signs
    return jaxtd.SymCP(c, w, l)


def _target(d, l, r=4, seed=1, dtype=jnp.float64):
    return jaxtd.targets.random_unit(jax.random.key(seed), d, r, l, dtype=dtype)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_matvec_rhs_and_preconditioner_match_the_dense_blocks(order, x64):
    d, m = 4, 5
    signs = jnp.array([1.0, -1.0, 0.0, 2.0, 1.0])       # a masked row and a non-unit weight
    model, target = _model(d, order, m, signs=signs), _target(d, order)
    jtj, jty = lazy.normal_equations(model, target)
    jac = oracles.dense_jacobian(model.weights, model.factors, order)   # independent oracle
    np.testing.assert_allclose(jtj, jac.T @ jac, rtol=1e-10, atol=1e-12)
    x = jax.random.normal(jax.random.key(7), (m, d), jnp.float64)
    np.testing.assert_allclose(lazy.normal_matvec(model, x).ravel(), jac.T @ (jac @ x.ravel()),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lazy.normal_rhs(model, target).ravel(), jty, rtol=1e-10,
                               atol=1e-12)
    # block Jacobi: the inverse of each d x d diagonal block (identity where the block is 0)
    got = lazy.block_jacobi(model)(x)
    for i in range(m):
        block = np.asarray(jtj)[i * d:(i + 1) * d, i * d:(i + 1) * d]
        want = np.asarray(x[i]) if signs[i] == 0 else np.linalg.solve(block, np.asarray(x[i]))
        np.testing.assert_allclose(got[i], want, rtol=1e-10, atol=1e-12)


def _gd_model(d, l, m, seed, target32):
    """The float64 W0 of a lazy GD cell (standard init), as the CLI's lazy column uses."""
    t = _gd_init(jaxtd.key_for_seed(seed), target32, m)
    return jaxtd.SymCP(t.weights.astype(jnp.float64), t.factors.astype(jnp.float64), l)


@functools.partial(jax.jit, static_argnums=2)
def _gd_init(key, target32, m):  # one program per width (the grid's init is jitted too)
    return lazy_gd(0.01, init="standard").init(key, target32, m).model


# (d, l, widths): the rule at and just below the threshold, Alexander–Hirschowitz exceptions
# (d, l, m) = (3, 4, 5), (4, 4, 9), (5, 3, 7) where m d >= C(d+l-1, l) yet the residual stays
# positive, and order 2 (m* = d although m d reaches C(d+1, 2) earlier).
AGREE = [(4, 3, (4, 5)), (8, 3, (14, 15, 16)), (3, 4, (5, 6)), (4, 4, (9, 10)), (5, 3, (7, 8)),
         (5, 2, (4, 5))]


@pytest.mark.parametrize("d,l,widths", AGREE, ids=[f"d{d}-l{l}" for d, l, _ in AGREE])
def test_cg_agrees_with_dense_below_at_and_above_the_threshold(d, l, widths, x64):
    target32 = jaxtd.targets.random_unit(jax.random.key(3), d, 20, l)
    target = jaxtd.SymCP(target32.weights.astype(jnp.float64),
                         target32.factors.astype(jnp.float64), l)
    p = lazy.predicted_critical_width(d, l)
    for seed in (0, 1):
        for m in widths:
            model = _gd_model(d, l, m, seed, target32)
            dense, cg = _lstsq(model, target), _cg_lstsq(model, target)
            assert bool(cg.converged) and float(cg.normal_residual) <= 1e-10
            assert abs(float(cg.residual) - float(dense.residual)) <= 1e-6, (m, cg, dense)
            if m < p:       # a genuine gap: far above the rounding floor
                assert float(dense.residual) > 1e-2 and float(cg.floor) < 1e-4
            else:
                assert float(cg.residual) == float(dense.residual) == 0.0
            if int(dense.rank) == m * d:   # full column rank: a unique optimum, both find it
                np.testing.assert_allclose(cg.delta, dense.delta, rtol=1e-5,
                                           atol=1e-6 * float(jnp.linalg.norm(dense.delta)))
            # the certificate: the residual is that of the returned delta, to the floor
            raw = float(_lazy_relative_error(model, cg.delta, target))
            assert abs(raw - float(cg.residual)) <= float(cg.floor) + 1e-9


def test_masked_rows_are_excluded_like_the_dense_path(x64):
    d, l = 4, 3
    model, target = _model(d, l, 7, seed=2), _target(d, l)
    mask = (jnp.arange(7) < 4).astype(jnp.float64)
    # garbage factors on masked rows must not matter
    noisy = jaxtd.SymCP(model.weights * mask, model.factors.at[4:].set(1e3), l)
    small = jaxtd.SymCP(model.weights[:4], model.factors[:4], l)
    got, alone = _cg_lstsq(noisy, target), _cg_lstsq(small, target)
    np.testing.assert_array_equal(got.delta[4:], 0.0)
    np.testing.assert_allclose(got.residual, alone.residual, atol=1e-8)
    np.testing.assert_allclose(got.delta[:4], alone.delta, rtol=1e-5)
    dense = _lstsq(noisy, target)
    np.testing.assert_allclose(got.residual, dense.residual, atol=1e-9)
    np.testing.assert_allclose(got.distance, dense.distance, rtol=1e-5)


def test_vmap_over_seeds_equals_per_seed(x64):
    d, l, m = 4, 3, 5          # at the threshold: the seeds need different iteration counts
    target = _target(d, l)
    ws = jnp.stack([_model(d, l, m, seed=s).factors for s in range(3)])
    one = lambda w: lazy.cg_lstsq(jaxtd.SymCP(jnp.ones((m,)), w, l), target)
    batched = jax.jit(jax.vmap(one))(ws)
    iters = []
    for s in range(3):
        alone = jax.jit(one)(ws[s])
        iters.append(int(alone.iterations))
        assert int(batched.iterations[s]) == int(alone.iterations)
        for name in ("residual", "normal_residual", "distance", "floor"):
            np.testing.assert_allclose(getattr(batched, name)[s], getattr(alone, name),
                                       rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batched.delta[s], alone.delta, rtol=1e-8, atol=1e-10)
    assert len(set(iters)) > 1    # the batch really ran lanes of different lengths


def test_iteration_cap_gives_an_upper_bound_and_reports_it(x64):
    d, l, m = 8, 3, 14
    model, target = _model(d, l, m), _target(d, l, r=20)
    best = float(_lstsq(model, target).residual)
    capped = _cg_lstsq(model, target, max_iter=5)
    assert int(capped.iterations) == 5 and not bool(capped.converged)
    assert float(capped.normal_residual) > 1e-10
    assert float(capped.residual) > best + 1e-3      # CG residuals only decrease towards it
    full = _cg_lstsq(model, target)
    assert bool(full.converged) and abs(float(full.residual) - best) < 1e-9


def test_residual_floor_bounds_the_rounding(x64):
    d, l, m = 4, 3, 5          # square J, nearly singular for this seed: ||Δ*|| ~ 6e4 ||W0||
    model, target = _model(d, l, m, seed=2), _target(d, l, r=20)
    out = _cg_lstsq(model, target)
    assert float(out.distance) > 1e3 and float(_lstsq(model, target).residual) == 0.0
    # the Gram form at the computed optimum is visibly off 0, and within the floor
    raw = float(_lazy_relative_error(model, out.delta, target))
    assert 1e-6 < raw <= float(out.floor)
    assert float(out.residual) == 0.0
    # the floor grows like ||Δ||^2 and is tiny at Δ = 0
    small = float(lazy_cg.residual_floor(model, jnp.zeros((m, d)), target))
    assert small < 1e-6
    assert float(lazy_cg.residual_floor(model, 10 * out.delta, target)) > 5 * float(out.floor)


def test_zero_rhs_and_all_masked(x64):
    d, l = 3, 3
    model = _model(d, l, 4)
    target = jaxtd.SymCP(model.weights[:2], model.factors[:2], l)   # T* inside the model
    masked = jaxtd.SymCP(jnp.zeros((4,)), model.factors, l)
    out = _cg_lstsq(masked, target)
    assert int(out.iterations) == 0 and bool(out.converged)
    np.testing.assert_allclose(out.residual, 1.0, rtol=1e-12)      # nothing to fit with
    np.testing.assert_array_equal(out.delta, 0.0)
    assert float(_cg_lstsq(model, target).residual) == 0.0


def test_best_residual_methods(x64):
    d, l = 8, 3
    target = _target(d, l, r=20)
    for m, want_auto in ((14, "dense"), (80, "iterative")):
        assert lazy.solver_for("auto", m, d) == want_auto
    model = _model(d, l, 14)
    dense = lazy.best_residual(model, target, method="dense")
    assert float(lazy.best_residual(model, target)) == float(dense)
    np.testing.assert_allclose(lazy.best_residual(model, target, method="iterative"), dense,
                               atol=1e-9)
    with pytest.raises(ValueError, match="method"):
        lazy.best_residual(model, target, method="lsqr")
    with pytest.raises(ValueError, match="tol"):
        lazy.cg_lstsq(model, target, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        lazy.cg_lstsq(model, target, max_iter=0)
    with pytest.raises(ValueError, match="target"):
        lazy.cg_lstsq(model, _target(d, 4))


def test_float32_is_approximate_but_sane():
    d, l, m = 4, 3, 3
    model, target = _model(d, l, m, dtype=jnp.float32), _target(d, l, dtype=jnp.float32)
    out = _cg_lstsq(model, target)
    assert out.residual.dtype == jnp.float32 and out.delta.dtype == jnp.float32
    want = oracles.lstsq_relative_residual(model.weights, model.factors, target.weights,
                                           target.factors, l)
    np.testing.assert_allclose(out.residual, want, atol=1e-3)


def test_float32_contractions_are_pinned_at_highest():
    d, l, m = 4, 3, 5
    model, target = _model(d, l, m, dtype=jnp.float32), _target(d, l, dtype=jnp.float32)
    text = jax.jit(lambda mo, t: lazy.cg_lstsq(mo, t).residual).lower(model, target).as_text()
    dots = [line for line in text.splitlines()
            if re.search(r"stablehlo\.dot(_general)?\b", line)]
    assert len(dots) >= 6                                     # rhs, Gram, loop body, floor
    for line in dots:
        assert "precision = [HIGHEST, HIGHEST]" in line, line
