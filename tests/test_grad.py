"""Derivatives through whole runs (jaxtd/_run.py) against central finite differences.

Every test is float64 (the ``x64`` fixture) except the float32 one, tiny (d <= 8, m <= 6,
<= 200 steps), and differentiates a jitted function so that each program compiles once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd.algorithms import deflation, gd, lazy_gd, variant
from jaxtd import simulate

pytestmark = pytest.mark.timeout(600)

RTOL = 1e-4


def _target(dtype="float64", dim=6, rank=2):
    return jaxtd.targets.orthonormal(jax.random.key(1), dim, rank, 3, dtype=dtype)


def _central(f, x, h):
    """Central finite difference of the scalar function ``f`` at the scalar ``x``."""
    return (float(f(x + h)) - float(f(x - h))) / (2 * h)


def _assert_fd(got, f, x, h, name):
    want = _central(f, x, h)
    assert abs(want) > 1e-8, f"{name}: the derivative is ~0, the test would prove nothing"
    np.testing.assert_allclose(float(got), want, rtol=RTOL, err_msg=name)


# The two algorithms of the brief, in a regime where every input visibly moves the final loss.
CASES = {
    "gd": dict(make=lambda: gd(0.1, init_scale=0.3), lr=0.1, scale=0.3, steps=120),
    "lazy_gd": dict(make=lambda: lazy_gd(0.01, init="standard"), lr=0.01, scale=1.0, steps=100),
}
WIDTH = 5


def _problem(case):
    """The case's run, its jitted forward ``f`` and jitted gradient ``grad`` in (lr, scale, w0)."""
    c = CASES[case]
    alg = c["make"]()
    target = _target()
    key = jax.random.key(0)

    def run(lr, scale, w0, init_params=None, output="final_loss"):
        t = jaxtd.SymCP(target.weights.at[0].set(w0), target.factors, target.order)
        res = simulate(alg, key, t, width=WIDTH, steps=c["steps"], record_every=20,
                       hparams={"learning_rate": lr, "init_scale": scale},
                       init_params=init_params)
        return getattr(res, output)

    return c, alg, target, key, run, jax.jit(run), jax.jit(jax.grad(run, argnums=(0, 1, 2)))


@pytest.fixture(scope="module")
def problem():
    """``problem(case)``, built once per module (called inside a test, under ``x64``): the tests
    of a case share its compiled forward and gradient programs (each costs seconds to compile)."""
    return functools.cache(_problem)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hparam_and_target_derivatives_match_finite_differences(case, x64, problem):
    c, alg, target, key, run, f, grad = problem(case)
    x = (c["lr"], c["scale"], 1.0)
    grads = grad(*x)
    _assert_fd(grads[0], lambda v: f(v, x[1], x[2]), x[0], 1e-6 * x[0], "learning_rate")
    _assert_fd(grads[1], lambda v: f(x[0], v, x[2]), x[1], 1e-6 * x[1], "init_scale")
    _assert_fd(grads[2], lambda v: f(x[0], x[1], v), x[2], 1e-6, "target weight")
    # forward mode: the same numbers from jacfwd (jvp through the scans and the remat)
    fwd = jax.jit(jax.jacfwd(run, argnums=(0, 1, 2)))(*x)
    np.testing.assert_allclose(np.array(fwd), np.array(grads), rtol=1e-9)


@pytest.mark.parametrize("case", sorted(CASES))
def test_initial_factor_derivative_matches_finite_differences(case, x64, problem):
    c, alg, target, key, run, f, _ = problem(case)
    # the init the algorithm draws, then replaced through init_params: same run, same loss
    p0 = alg.params(alg.init(key, target, WIDTH, hparams={"init_scale": c["scale"]}))
    drawn = f(c["lr"], c["scale"], 1.0)
    replaced = f(c["lr"], c["scale"], 1.0, p0)
    np.testing.assert_allclose(replaced, drawn, rtol=1e-12)

    def entry(e):  # the program of `replaced`, with one entry of the init moved
        p = np.array(p0)
        p[1, 2] = e
        return f(c["lr"], c["scale"], 1.0, jnp.asarray(p))

    e0 = float(p0[1, 2])
    g = jax.jit(jax.grad(run, argnums=3))(c["lr"], c["scale"], 1.0, p0)
    _assert_fd(g[1, 2], entry, e0, 1e-6, "init_params[1, 2]")
    assert np.all(np.isfinite(np.asarray(g))) and np.count_nonzero(np.asarray(g)) > WIDTH
    # forward mode along a direction of the whole init equals <grad, direction> (a numpy
    # direction: jax.random would compile a program for the draw)
    direction = jnp.asarray(np.random.default_rng(5).normal(size=p0.shape))
    _, tangent = jax.jit(lambda p, v: jax.jvp(lambda q: run(c["lr"], c["scale"], 1.0, q),
                                              (p,), (v,)))(p0, direction)
    np.testing.assert_allclose(tangent, jnp.vdot(g, direction), rtol=1e-9)


def test_other_outputs_are_differentiable_and_checkpoint_is_exact(x64):
    """final_relative_error, distance, final_params and history entries against finite
    differences; checkpoint=False gives the same gradient."""
    alg, target, key = gd(0.1, init_scale=0.3), _target(), jax.random.key(0)

    def outputs(lr, checkpoint=True):
        res = simulate(alg, key, target, width=WIDTH, steps=100, record_every=20,
                       hparams={"learning_rate": lr}, checkpoint=checkpoint)
        return jnp.stack([res.final_relative_error, res.distance, res.final_params[0, 1],
                          res.history["objective"][2], res.history["fitted_weight"][-1, 0],
                          res.history["best_correlation"][-1, 0]])

    f = jax.jit(outputs)
    jac = jax.jit(jax.jacrev(outputs))(0.1)
    h = 1e-6
    want = (np.asarray(f(0.1 + h)) - np.asarray(f(0.1 - h))) / (2 * h)
    assert np.all(np.abs(want) > 1e-3), want
    np.testing.assert_allclose(jac, want, rtol=RTOL)
    plain = jax.jit(jax.jacrev(lambda lr: outputs(lr, checkpoint=False)))(0.1)
    np.testing.assert_allclose(plain, jac, rtol=1e-12)


def test_vmapped_gradients_over_seeds_equal_per_seed_gradients(x64):
    alg, target = gd(0.1, init_scale=0.3), _target()
    keys = jax.random.split(jax.random.key(3), 3)

    def loss(key, lr):
        return simulate(alg, key, target, width=4, steps=60, record_every=20,
                        hparams={"learning_rate": lr}).final_loss

    grad = jax.grad(loss, argnums=1)
    batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))(keys, 0.1)
    single = jax.jit(grad)
    alone = np.array([float(single(k, 0.1)) for k in keys])
    assert len(set(alone.round(12))) == 3  # the seeds differ
    np.testing.assert_allclose(batched, alone, rtol=1e-10)


def test_compile_count_does_not_grow_with_steps_or_values(x64):
    """Tracing a differentiated run traces the step a fixed number of times (the remat and
    the scans do not unroll), and `run` passes every hparam as a traced value: new values, or
    hparams given vs defaulted, never trace again."""
    base_alg, target = gd(0.1, init_scale=0.3), _target()
    traces = []

    def counting_step(state, t):
        traces.append(1)  # runs only while tracing
        return base_alg.step(state, t)

    alg = base_alg._replace(step=counting_step)

    def count(steps):
        del traces[:]
        jax.jit(jax.grad(lambda lr: simulate(alg, jax.random.key(0), target, width=4,
                                             steps=steps, record_every=10,
                                             hparams={"learning_rate": lr}).final_loss)
                ).lower(0.1)
        return len(traces)

    short, long = count(20), count(200)
    # (the first count also includes a trace of the runner's cached shape check)
    assert 0 < long <= short <= 6, (short, long)
    # run(): defaults and overrides share one program
    del traces[:]
    kw = dict(width=4, steps=20, record_every=10)
    jaxtd.run(alg, jax.random.key(0), target, **kw)
    n = len(traces)
    assert n > 0
    jaxtd.run(alg, jax.random.key(1), target, hparams={"learning_rate": 0.05}, **kw)
    jaxtd.run(alg, jax.random.key(1), target, hparams={"learning_rate": 0.07, "init_scale": 0.2},
              **kw)
    assert len(traces) == n
    # and a run is differentiable through jaxtd.run itself
    g = jax.jit(jax.grad(lambda lr: jaxtd.run(alg, jax.random.key(0), target, hparams={
        "learning_rate": lr}, **kw).final_loss))(0.1)
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_integer_outputs_are_not_silently_differentiable(x64):
    """fit_times, flags and counts are integers: jax.grad raises, jvp gives float0 tangents."""
    alg, target = gd(0.1, init_scale=0.3), _target()

    def res(lr):
        return simulate(alg, jax.random.key(0), target, width=4, steps=40, record_every=20,
                        hparams={"learning_rate": lr})

    for name in ("fit_times", "diverged"):
        # under jit the refusal comes while tracing (eagerly, grad ran the forward op by op)
        with pytest.raises(TypeError, match="grad requires real"):
            jax.jit(jax.grad(lambda lr: getattr(res(lr), name).sum()))(0.1)
    _, tangent = jax.jit(lambda lr: jax.jvp(res, (lr,), (jnp.ones_like(lr),)))(0.1)
    for leaf in (tangent.fit_times, tangent.diverged, tangent.diverged_step,
                 tangent.active_count, tangent.history["step"], tangent.history["active_count"]):
        assert leaf.dtype == jax.dtypes.float0
    assert tangent.final_loss.dtype == jnp.float64 and float(tangent.final_loss) != 0.0


def test_float32_accurate_metric_carries_the_float64_derivative():
    """The float32 final_relative_error keeps its accurate value and its derivative agrees with
    the float64 run of the same problem (same target and init passed in explicitly)."""
    rng = np.random.default_rng(0)
    factors = np.linalg.qr(rng.normal(size=(6, 2)))[0].T
    p0 = 0.3 * rng.normal(size=(WIDTH, 6)) / np.sqrt(6)
    alg = gd(0.1)

    def error(lr, dtype):
        t = jaxtd.SymCP(jnp.ones(2, dtype), jnp.asarray(factors, dtype), 3)
        return simulate(alg, jax.random.key(0), t, width=WIDTH, steps=100, record_every=20,
                        hparams={"learning_rate": lr},
                        init_params=jnp.asarray(p0, dtype)).final_relative_error

    value32, g32 = jax.jit(jax.value_and_grad(lambda lr: error(lr, jnp.float32)))(
        jnp.float32(0.1))
    assert value32.dtype == jnp.float32
    jax.config.update("jax_enable_x64", True)
    try:
        value64, g64 = jax.jit(jax.value_and_grad(lambda lr: error(lr, jnp.float64)))(0.1)
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(value32, value64, rtol=1e-4)
    assert abs(float(g64)) > 1e-3
    np.testing.assert_allclose(g32, g64, rtol=1e-3)


@pytest.mark.parametrize("make,steps,events", [
    # re-draws at the start of epochs 0 and 1 (steps 0 and 40), inside the run; round robin,
    # since at init every row has norm exactly δ and "smallest" breaks that tie by rounding
    (lambda: variant(0.05, init_scale=0.2, amplify_steps=15, fit_steps=25, epochs=4,
                     selection="round_robin"), 80,
     lambda h: np.asarray(h["selected"])),
    # epoch 1 starts at step 100 (tau0 / eta = 5 / 0.05): rows below delta1 are re-drawn there
    (lambda: deflation(0.05, 0.2, epsilon=1e-6, regularization=0.0, step_size=0.05), 140,
     lambda h: np.asarray(h["epoch"])),
], ids=["variant", "deflation"])
def test_piecewise_derivative_between_discrete_events(make, steps, events, x64):
    """Algorithms with re-draws: the derivative is the piecewise one, exact when no event
    moves inside the finite-difference perturbation (the re-drawn rows' norm δ is an hparam,
    so the derivative flows through the re-draw itself)."""
    alg, target, key = make(), _target(), jax.random.key(0)

    def run(scale, w0):
        t = jaxtd.SymCP(target.weights.at[0].set(w0), target.factors, target.order)
        return simulate(alg, key, t, width=4, steps=steps, record_every=20,
                        hparams={"init_scale": scale})

    scale = float(alg.hparams["init_scale"])
    whole = jax.jit(run)
    res = whole(scale, 1.0)
    assert len(np.unique(events(res.history))) > 1, "no event in the run: the test proves nothing"
    h = 1e-7
    # the same events on both sides of the perturbation
    for a, b in ((scale + h, 1.0), (scale - h, 1.0), (scale, 1.0 + h), (scale, 1.0 - h)):
        np.testing.assert_array_equal(events(whole(a, b).history), events(res.history))

    def f(s, w):  # the finite differences use the same (already compiled) program
        return whole(s, w).final_loss

    grads = jax.jit(jax.grad(lambda s, w: run(s, w).final_loss, argnums=(0, 1)))(scale, 1.0)
    _assert_fd(grads[0], lambda v: f(v, 1.0), scale, h, "init_scale")
    _assert_fd(grads[1], lambda v: f(scale, v), 1.0, h, "target weight")


def test_bad_init_params_name_the_argument():
    alg, target, key = gd(0.1), _target("float32"), jax.random.key(0)
    with pytest.raises(ValueError, match=r"init_params must have shape \(width, dim\) = \(3, 6\)"):
        jaxtd.run(alg, key, target, width=3, steps=10, init_params=jnp.zeros((4, 6)))
    with pytest.raises(TypeError, match="init_params must be a float array"):
        jaxtd.run(alg, key, target, width=3, steps=10, init_params=jnp.zeros((3, 6), jnp.int32))
    with pytest.raises(TypeError, match="init_params must be an array"):
        jaxtd.run(alg, key, target, width=3, steps=10, init_params=[[0.0] * 6] * 3)
    with pytest.raises(ValueError, match="hparams has unknown names"):
        jaxtd.run(alg, key, target, width=3, steps=10, hparams={"lr": 0.1})


def test_differentiated_float32_run_keeps_every_contraction_at_highest_precision():
    """The backward and tangent programs of a float32 run (transposed matmuls of the step, the
    second-order terms, the metrics' plain-Gram derivatives) all carry Precision.HIGHEST."""
    alg, target = gd(0.1, model="two_homogeneous", regularization=1e-3), _target("float32")

    def loss(lr):
        return simulate(alg, jax.random.key(0), target, width=4, steps=4, record_every=2,
                        hparams={"learning_rate": lr}).final_relative_error

    for fn in (jax.grad(loss), lambda lr: jax.jvp(loss, (lr,), (jnp.ones_like(lr),))):
        text = jax.jit(fn).lower(jnp.float32(0.1)).as_text()
        dots = [line for line in text.splitlines() if "stablehlo.dot" in line]
        assert dots
        for line in dots:
            assert "precision = [HIGHEST, HIGHEST]" in line, line


@pytest.mark.parametrize("case", sorted(CASES))
def test_masked_cell_gradient_equals_the_narrow_run(case, x64, problem):
    """A sweep cell is a padded, masked run: its reverse-mode derivative must be finite and equal
    to that of the same run at its own width (a zero, masked row once made lazy GD's NaN)."""
    c, alg, target, key, _, _, grad = problem(case)

    def final_loss(lr, width, active):
        return simulate(alg, key, target, width=width, steps=c["steps"], record_every=20,
                        active=active, hparams={"learning_rate": lr}).final_loss

    padded = jax.jit(jax.grad(lambda lr: final_loss(lr, WIDTH + 2, WIDTH)))(c["lr"])
    # the run at its own width: the case's shared gradient program (the default init_scale is
    # the case's scale, the target weight w0 = 1 the target's own)
    assert alg.hparams["init_scale"] == c["scale"]
    alone = grad(c["lr"], c["scale"], 1.0)[0]
    assert np.isfinite(float(padded)) and abs(float(alone)) > 1e-8
    np.testing.assert_allclose(float(padded), float(alone), rtol=1e-8)
