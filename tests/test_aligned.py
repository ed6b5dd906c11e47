"""The cancellation-free residual of jaxtd._aligned against exact rational arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd._aligned import aligned_residual_sq
from tests import oracles

pytestmark = pytest.mark.timeout(300)


def _near_fit(order, eps, seed=0, dim=6, rank=3):
    """A float64 estimate within ``eps`` of the target: every component split in two (weights
    0.3 and 0.7 of the true one, the second with a flipped factor), plus two tiny spurious
    components and a masked (zero-weight) row."""
    rng = np.random.default_rng(seed)
    t = jaxtd.targets.random_unit(jax.random.key(seed), dim, rank, order, dtype="float64")
    tw, tu = np.asarray(t.weights), np.asarray(t.factors)
    eu = np.concatenate([tu + eps * rng.normal(size=tu.shape),
                         -(tu + eps * rng.normal(size=tu.shape)),
                         eps * rng.normal(size=(2, dim)), rng.normal(size=(1, dim))])
    ew = np.concatenate([0.3 * tw, 0.7 * tw * (-1.0) ** order, np.ones(2), np.zeros(1)])
    return jaxtd.SymCP(jnp.asarray(ew), jnp.asarray(eu), order), t


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("eps", [1.0, 1e-4, 1e-8, 1e-12])
def test_matches_exact_arithmetic_down_to_1e12(order, eps, x64):
    est, tgt = _near_fit(order, eps)
    res, tsq = oracles.gram_sums_exact(est.weights, est.factors, tgt.weights, tgt.factors, order)
    true = np.sqrt(res / tsq)
    got = np.sqrt(float(jax.jit(aligned_residual_sq)(est, tgt)) / tsq)
    assert got == pytest.approx(true, rel=1e-3)
    if eps <= 1e-8:  # the plain Gram form cannot: it is the reason this module exists
        plain = np.sqrt(max(float(jaxtd.losses.loss_autodiff(est, tgt)) * 2, 0.0) / tsq)
        assert abs(plain / true - 1) > 1e-2


def test_exact_fit_is_zero_and_far_fits_match_plain(x64):
    tgt = jaxtd.targets.random_unit(jax.random.key(3), 5, 2, 3, dtype="float64")
    assert float(aligned_residual_sq(tgt, tgt)) == 0.0
    est = jaxtd.SymCP(jnp.ones(4, jnp.float64),
                      jax.random.normal(jax.random.key(4), (4, 5), jnp.float64), 3)
    plain = 2 * float(jaxtd.losses.loss_autodiff(est, tgt))
    assert float(aligned_residual_sq(est, tgt)) == pytest.approx(plain, rel=1e-12)


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("eps", [1e-6, 1e-9, 1e-12])
def test_float64_relative_error_accurate_to_1e3_down_to_1e12(order, eps, x64):
    """``jaxtd.relative_error`` with x64 on, against exact arithmetic of the same inputs."""
    est, tgt = _near_fit(order, eps, seed=order)
    true = oracles.relative_error_exact(est.weights, est.factors, tgt.weights, tgt.factors, order)
    assert true < 100 * eps
    assert float(jaxtd.relative_error(est, tgt)) == pytest.approx(true, rel=1e-3)
    res, tsq = oracles.gram_sums_exact(est.weights, est.factors, tgt.weights, tgt.factors, order)
    assert float(jaxtd.residual_sq(est, tgt)) == pytest.approx(res, rel=2e-3)
