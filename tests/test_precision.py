"""Every float32 contraction jaxtd traces carries ``Precision.HIGHEST``.

Accelerators run float32 matmuls at reduced precision by default; jaxtd pins full precision on
its own operations. These tests lower each public program in float32 and read the StableHLO: a
``dot_general`` at ``DEFAULT`` precision anywhere (forward or backward) fails them, whatever the
global ``jax_default_matmul_precision`` says.
"""

import re

import jax
import jax.numpy as jnp
import pytest

import jaxtd
from jaxtd import lazy, metrics
from jaxtd.algorithms import deflation, gd, lazy_gd, variant
from jaxtd import simulate

pytestmark = pytest.mark.timeout(300)

DOT = re.compile(r"stablehlo\.dot(_general)?\b")


def _dots(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    lines = [line for line in text.splitlines() if DOT.search(line)]
    assert lines, "the program has no contraction: the test would prove nothing"
    return lines


def _assert_highest(fn, *args):
    for line in _dots(fn, *args):
        assert "precision = [HIGHEST, HIGHEST]" in line, line


@pytest.fixture(scope="module")
def problem():
    target = jaxtd.targets.orthonormal(jax.random.key(0), 6, 2, 3)
    w0 = jaxtd.init_factors(jax.random.key(1), 5, 6, scale="small", delta=1e-1)
    model = jaxtd.SymCP(jnp.ones(5), w0, 3)
    assert w0.dtype == jnp.float32
    return target, model


def test_a_default_precision_matmul_is_caught():
    """The check itself can fail: a bare ``@`` lowers at DEFAULT precision."""
    x = jnp.ones((3, 4), jnp.float32)
    with pytest.raises(AssertionError):
        _assert_highest(lambda a: a @ a.T, x)


@pytest.mark.parametrize("global_precision", [None, "bfloat16"])
def test_loss_and_grad(problem, global_precision):
    target, model = problem
    fn = jax.value_and_grad(jaxtd.loss, argnums=(0, 1))
    if global_precision is None:
        _assert_highest(fn, model, target)
    else:  # a user's reduced global default does not leak into jaxtd's contractions
        with jax.default_matmul_precision(global_precision):
            _assert_highest(fn, model, target)


def test_loss_autodiff_forward_and_reverse(problem):
    target, model = problem
    _assert_highest(jax.grad(jaxtd.losses.loss_autodiff), model, target)
    tangent = jax.tree_util.tree_map(jnp.ones_like, model)
    _assert_highest(lambda m: jax.jvp(lambda x: jaxtd.losses.loss_autodiff(x, target),
                                      (m,), (tangent,)), model)


def test_metrics(problem):
    target, model = problem
    _assert_highest(jaxtd.relative_error, model, target)
    _assert_highest(lambda m, t: metrics.record(m, t, m.factors, m.factors * 2), model, target)


def test_lazy(problem):
    target, model = problem
    delta = jnp.full(model.factors.shape, 1e-2, jnp.float32)
    _assert_highest(jax.value_and_grad(lazy.lazy_loss, argnums=1), model, delta, target)
    _assert_highest(lazy.lazy_relative_error, model, delta, target)
    _assert_highest(lambda m, t: lazy.lstsq(m, t).residual, model, target)


@pytest.mark.parametrize("make", [
    lambda: gd(0.1),
    lambda: gd(0.1, model="two_homogeneous", regularization=1e-3),
    lambda: variant(0.05, amplify_steps=3, fit_steps=4, epochs=2),
    lambda: deflation(),
    lambda: lazy_gd(0.01, init="standard"),
], ids=["gd", "gd-2hom", "variant", "deflation", "lazy_gd"])
def test_each_algorithm_step_and_the_runner(problem, make):
    target, _ = problem
    algorithm = make()
    state = algorithm.init(jax.random.key(2), target, 5)
    _assert_highest(lambda s, t: algorithm.step(s, t), state, target)
    _assert_highest(lambda k, t: simulate(algorithm, k, t, width=5, steps=4, record_every=2),
                    jax.random.key(3), target)
