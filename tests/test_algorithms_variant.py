"""Tests of the variant of GD (docs/algorithms.md), jaxtd/algorithms/_variant.py.

``python -m tests.test_algorithms_variant [seeds]`` prints the full variant-vs-GD comparison.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtd
from jaxtd import models
from jaxtd.algorithms import VariantState, gd, variant
from jaxtd.algorithms._variant import clock, epochs_done, moving_rows, redraw_selected
from jaxtd.algorithms.base import Static, redraw_key
from jaxtd import simulate
from tests import oracles

CI = os.environ.get("JAXTD_CI") == "1"
SEEDS = 6 if CI else 16

# The §D claim: l=3, d=64, orthonormal r=4, width r+1, 30 epochs of 100 amplify + 200 fit steps.
ORDER, DIM, RANK, WIDTH = 3, 64, 4, 5
DELTA, LAM, STEP, EPOCHS, H_AMP, H_FIT = 1e-2, 1e-3, 0.05, 30, 100, 200
CLAIM_STEPS = EPOCHS * (H_AMP + H_FIT)


def claim_errors(algorithm, seeds):
    """Final relative errors of ``seeds`` runs (one jit, vmapped over seeds), target per seed."""

    def one(key):
        k_t, k_r = jax.random.split(key)
        target = jaxtd.targets.orthonormal(k_t, DIM, RANK, ORDER)
        return simulate(algorithm, k_r, target, width=WIDTH, steps=CLAIM_STEPS,
                        record_every=H_AMP + H_FIT).final_relative_error

    keys = jax.random.split(jax.random.PRNGKey(2020), seeds)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def test_variant_succeeds_at_width_r_plus_one(x64):
    errors = claim_errors(variant(STEP, init_scale=DELTA, regularization=LAM, epochs=EPOCHS,
                                  amplify_steps=H_AMP, fit_steps=H_FIT), SEEDS)
    success = errors <= 1e-2
    assert success.mean() >= 0.9, errors
    # With every component found, each fitted weight settles at 1 - λ/2 (the l1 bias of §A.3),
    # so ||T - T*|| / ||T*|| = sqrt(r) (λ/2) / sqrt(r) = λ/2.
    np.testing.assert_allclose(errors[success], LAM / 2, rtol=0.1)


# -- epoch structure, step by step on a small problem ---------------------------------------------

def small_problem(order=3, dim=6, rank=2):
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(1), dim, rank, order)
    return target


def stepper(algorithm):
    return jax.jit(algorithm.step)


def dense_residual(target, weights, factors):
    return oracles.dense(target.weights, target.factors, target.order) - \
        oracles.dense(weights, factors, target.order)


@pytest.mark.parametrize("selection", ["smallest", "round_robin"])
def test_epoch_structure(selection):
    """Re-draw of the selected active row at norm δ with the residual sign, amplify moves that
    row alone (by the two-homogeneous Euler step), fit moves every active row, masked rows never
    move."""
    target = small_problem()
    h_amp, h_fit, width, active, delta, eta, lam = 3, 4, 6, 4, 0.1, 0.05, 1e-3
    alg = variant(eta, amplify_steps=h_amp, fit_steps=h_fit, epochs=None,
                  selection=selection, init_scale=delta, regularization=lam)
    state = alg.init(jax.random.PRNGKey(3), target, width, active=active)
    # make the norms distinct so "smallest" is a real choice
    scale = jnp.asarray([1.0, 0.5, 2.0, 3.0, 0.01, 0.01], state.params.dtype)
    state = state._replace(params=state.params * scale[:, None])
    step = stepper(alg)
    for count in range(3 * (h_amp + h_fit)):
        epoch, phase = divmod(count, h_amp + h_fit)
        old = np.asarray(state.params, np.float64)
        if phase == 0:
            # the same step at zero step size shows the bare re-draw
            frozen = state._replace(hparams={**state.hparams,
                                             "learning_rate": jnp.zeros((), jnp.float32)})
            drawn, m0 = step(frozen, target)
            fresh = np.asarray(drawn.params, np.float64)
            norms = np.linalg.norm(old[:active], axis=1)
            want = int(np.argmin(norms)) if selection == "smallest" else epoch % active
            assert int(m0["selected"]) == want
            changed = np.flatnonzero(np.any(fresh != old, axis=1))
            np.testing.assert_array_equal(changed, [want])
            rho = np.linalg.norm(fresh[want])
            np.testing.assert_allclose(rho, delta, rtol=1e-6)
            v = fresh[want] / rho
            # sign = sign R(v^{⊗3}), R = T* - T(W) without the chosen row (dense oracle)
            t_old = alg.tensor(state)
            c = np.asarray(t_old.weights, np.float64).copy()
            c[want] = 0.0
            r_v = np.einsum("abc,a,b,c->", dense_residual(target, c, t_old.factors), v, v, v)
            s = float(drawn.signs[want])
            assert s == np.sign(r_v)
            # one Euler step of the two-homogeneous flow from the fresh row, R at the fresh state:
            # radial factor 1 + η(2 s R(v^3) - λ), tangential η l ||P⊥ R(v, v, .)||
            t_new = alg.tensor(drawn)
            resid = dense_residual(target, t_new.weights, t_new.factors)
            rv3 = np.einsum("abc,a,b,c->", resid, v, v, v)
            rv2 = np.einsum("abc,b,c->a", resid, v, v)
            want_norm = rho * np.hypot(1 + eta * (2 * s * rv3 - lam),
                                       eta * 3 * np.linalg.norm(rv2 - rv3 * v))
        state, m = step(state, target)
        new = np.asarray(state.params, np.float64)
        moved = np.any(new != old, axis=1)
        assert not moved[active:].any()
        selected = int(m["selected"])
        if phase == 0:
            np.testing.assert_allclose(np.linalg.norm(new[selected]), want_norm, rtol=1e-5)
        if phase < h_amp:
            assert moved[selected] and moved.sum() == 1
        else:
            assert moved[:active].all()


def trajectory(algorithm, key, target, width, steps, active=None):
    """Final state and stacked step metrics of ``steps`` calls of ``algorithm.step`` (one jit;
    cheaper to compile than the full runner)."""

    @jax.jit
    def go(key, target, active):
        state = algorithm.init(key, target, width, active=active)
        return jax.lax.scan(lambda s, _: algorithm.step(s, target), state, None, length=steps)

    return go(key, target, active)


@pytest.mark.parametrize("selection", ["smallest", "round_robin"])
def test_redraw_does_not_depend_on_padded_width(selection):
    """A width-5 run with active=5 inside width 9 is the width-5 run: same rows, same re-draws,
    padded rows untouched."""
    target = small_problem()
    alg = variant(0.05, amplify_steps=5, fit_steps=10, epochs=None, selection=selection,
                  init_scale=0.05)
    key = jax.random.PRNGKey(7)
    alone, m_alone = trajectory(alg, key, target, 5, 90)
    padded, m_padded = trajectory(alg, key, target, 9, 90, active=5)
    np.testing.assert_array_equal(m_padded["selected"], m_alone["selected"])
    assert len(np.unique(m_alone["selected"])) > 1
    np.testing.assert_allclose(m_padded["loss"], m_alone["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded.params[:5], alone.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(padded.signs[:5], alone.signs)
    start = alg.init(key, target, 9, active=5)
    np.testing.assert_allclose(padded.params[5:], start.params[5:], rtol=1e-6)  # eager vs jit


def test_epochs_and_epsilon_stop_the_run(x64):
    target = small_problem()
    key = jax.random.PRNGKey(0)
    alg = variant(0.05, amplify_steps=2, fit_steps=3, epochs=4)
    final, m = trajectory(alg, key, target, 4, 40)
    np.testing.assert_array_equal(m["stopped"], np.arange(40) >= 20)
    loss = np.asarray(m["loss"])
    assert np.all(loss[20:] == loss[20]) and np.all(loss[1:20] != loss[20])
    assert int(final.count) == 40

    # ε stop, λ = 0: the reported loss is 1/2 ||T - T*||^2, so the error is sqrt(2 loss)/||T*||
    alg = variant(0.1, init_scale=0.1, amplify_steps=20, fit_steps=100, epochs=None,
                  epsilon=0.05, regularization=0.0)
    final, m = trajectory(alg, key, target, 4, 1200)
    dense = oracles.dense(target.weights, target.factors, 3)
    err = np.sqrt(2 * np.asarray(m["loss"])) / np.linalg.norm(dense)
    stopped = np.asarray(m["stopped"])
    assert stopped[-1]
    first = int(np.argmax(stopped))
    assert err[first] <= 0.05 and np.all(err[:first] > 0.05)
    assert np.all(err[first:] == err[first])


def test_hparams_live_in_state_and_vmap():
    """One compiled step serves several δ, λ and step sizes (a sweep vmaps over them)."""
    target = small_problem()
    alg = variant(amplify_steps=3, fit_steps=3)
    assert set(alg.hparams) == {"init_scale", "regularization", "learning_rate"}
    hp = {"init_scale": jnp.asarray([1e-2, 1e-1]), "regularization": jnp.asarray([0.0, 1e-2]),
          "learning_rate": jnp.asarray([0.05, 0.0])}
    init = jax.jit(jax.vmap(lambda h: alg.init(jax.random.PRNGKey(0), target, 4, hparams=h)))
    states = init(hp)
    np.testing.assert_allclose(np.linalg.norm(states.params, axis=-1),
                               [[1e-2] * 4, [1e-1] * 4], rtol=1e-5)
    after, _ = jax.jit(jax.vmap(lambda s: alg.step(s, target)))(states)
    # zero step size: only the re-draw changed the state
    moved = np.any(np.asarray(after.params[1]) != np.asarray(states.params[1]), axis=1)
    assert moved.sum() == 1


def test_float64(x64):
    target64 = small_problem()
    assert target64.factors.dtype == jnp.float64
    alg = variant(amplify_steps=2, fit_steps=2)
    final, m = trajectory(alg, jax.random.PRNGKey(0), target64, 3, 8)
    assert final.params.dtype == jnp.float64 and m["loss"].dtype == jnp.float64


def test_float32_step_dtype():
    target = small_problem()
    # a ready transformation with a per-row state (momentum), reset on the re-drawn row
    alg = variant(optax.sgd(0.05, momentum=0.9), amplify_steps=2, fit_steps=2)
    state = alg.init(jax.random.PRNGKey(0), target, 3)
    new, m = jax.jit(alg.step)(state, target)
    assert new.params.dtype == jnp.float32 and m["loss"].dtype == jnp.float32
    assert new.count == 1 and np.all(np.isfinite(new.params))


def test_same_init_as_gd():
    target = small_problem()
    key = jax.random.PRNGKey(5)
    a = variant().init(key, target, 4)
    b = gd(0.05, model="two_homogeneous").init(key, target, 4)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(redraw_key(key), key)


# -- the step's pieces, one by one on hand-built states -------------------------------------------

def test_clock_epochs_done_and_moving_rows():
    for count in range(15):
        epoch, phase = clock(jnp.int32(count), 2, 3)
        assert (int(epoch), int(phase)) == divmod(count, 5)
    stopped, running = jnp.asarray(True), jnp.asarray(False)
    assert bool(epochs_done(stopped, 0, None)) and not bool(epochs_done(running, 99, None))
    assert [bool(epochs_done(running, e, 3)) for e in range(5)] == [False] * 3 + [True] * 2
    assert bool(epochs_done(stopped, 0, 3))
    mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    for phase in range(5):
        got = np.asarray(moving_rows(jnp.int32(1), jnp.int32(phase), 2, mask))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, [0, 1, 0, 0] if phase < 2 else [1, 1, 1, 0])
    # a selected row that is masked never moves, even while amplifying
    np.testing.assert_array_equal(moving_rows(jnp.int32(3), jnp.int32(0), 2, mask), [0, 0, 0, 0])
    # no amplify phase: every active row moves from the first step
    np.testing.assert_array_equal(moving_rows(jnp.int32(1), jnp.int32(0), 0, mask), [1, 1, 1, 0])


def hand_state(target):
    """Width 4, d = 3: active rows of norms 1, 0.2, 0.5 (row 3, norm 0.01, is masked), signs
    (+, +, -, +), momentum traces all 1, last selection row 0."""
    rows = np.asarray([[0.6, 0.8, 0.0], [0.0, 0.12, 0.16], [0.3, 0.0, 0.4], [0.0, 0.0, 0.01]],
                      np.float32)
    params = jnp.asarray(rows)
    trace = jnp.ones_like(params)
    opt_state = optax.sgd(0.1, momentum=0.9).init(params)
    opt_state = (opt_state[0]._replace(trace=trace),) + tuple(opt_state[1:])
    return VariantState(
        params=params, signs=jnp.asarray([1.0, 1.0, -1.0, 1.0]), mask=jnp.asarray([1.0, 1, 1, 0]),
        opt_state=opt_state, hparams={"init_scale": jnp.float32(0.1),
                                      "regularization": jnp.float32(0.0),
                                      "learning_rate": jnp.float32(0.1)},
        count=jnp.int32(0), key=jax.random.PRNGKey(5), selected=jnp.int32(0),
        stopped=jnp.asarray(False), order=Static(3))


@pytest.mark.parametrize("selection, epoch, want", [("smallest", 2, 1), ("round_robin", 5, 2)])
@pytest.mark.parametrize("sign_rule", ["residual", "keep"])
def test_redraw_selected_on_a_hand_built_state(selection, epoch, want, sign_rule):
    """The selected active row becomes δ z/||z|| (z from fold_in(fold_in(key, e), i)), with the
    sign of R(v^{⊗3}) over the other active rows (numpy oracle) and a fresh optimizer state;
    every other row and trace keeps its value. Without ``begin`` nothing changes."""
    target = jaxtd.targets.orthonormal(None, 3, 2, 3, weights=[1.0, 0.5], basis=True)
    state = hand_state(target)
    sgd = optax.sgd(0.1, momentum=0.9)
    kwargs = dict(model_fn=models.two_homogeneous, reset=sgd.init, selection=selection,
                  sign_rule=sign_rule)
    new = redraw_selected(state, target, jnp.int32(epoch), jnp.asarray(True), **kwargs)
    assert int(new.selected) == want
    old, got = np.asarray(state.params), np.asarray(new.params)
    z = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(state.key, epoch),
                                                        want), (3,)))
    np.testing.assert_allclose(got[want], 0.1 * z / np.linalg.norm(z), rtol=1e-6)
    others = np.arange(4) != want
    np.testing.assert_array_equal(got[others], old[others])
    trace = np.asarray(new.opt_state[0].trace)
    np.testing.assert_array_equal(trace[want], 0.0)
    np.testing.assert_array_equal(trace[others], 1.0)
    signs = np.asarray(state.signs).copy()
    if sign_rule == "residual":
        # T(W) of the two-homogeneous model: weights s_i ||w_i||^2 along w_i/||w_i||
        kept = others & (np.asarray(state.mask) > 0)
        norms = np.linalg.norm(old, axis=1)
        weights = np.where(kept, signs * norms ** 2, 0.0)
        resid = (oracles.dense(np.asarray(target.weights), np.asarray(target.factors), 3)
                 - oracles.dense(weights, old / norms[:, None], 3))
        v = got[want] / np.linalg.norm(got[want])
        signs[want] = np.sign(np.einsum("abc,a,b,c->", resid, v, v, v))
        assert signs[want] != float(state.signs[want])   # the rule flips it here
    np.testing.assert_array_equal(new.signs, signs)

    same = redraw_selected(state, target, jnp.int32(epoch), jnp.asarray(False), **kwargs)
    assert int(same.selected) == int(state.selected)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, error", [
    ({"selection": "largest"}, ValueError),
    ({"sign_rule": "random"}, ValueError),
    ({"signs": "negative"}, ValueError),
    ({"amplify_steps": -1}, ValueError),
    ({"fit_steps": 2.5}, TypeError),
    ({"amplify_steps": 0, "fit_steps": 0}, ValueError),
    ({"epochs": 0}, ValueError),
    ({"init_scale": 0.0}, ValueError),
    ({"init_scale": -1e-2}, ValueError),
    ({"regularization": -1e-3}, ValueError),
    ({"epsilon": -0.1}, ValueError),
    ({"model": "cubic"}, ValueError),
    ({"optimizer": "sgd"}, TypeError),
    ({"optimizer": -0.1}, ValueError),
])
def test_bad_input_raises(kwargs, error):
    kwargs = dict(kwargs)
    optimizer = kwargs.pop("optimizer", 0.05)
    name = next(iter(kwargs), "optimizer")
    with pytest.raises(error, match=name):
        variant(optimizer, **kwargs)


def test_bad_init_input_raises():
    target = small_problem()
    alg = variant()
    with pytest.raises(ValueError, match="hparams"):
        alg.init(jax.random.PRNGKey(0), target, 4, hparams={"delta": 0.1})
    with pytest.raises(ValueError, match="width"):
        alg.init(jax.random.PRNGKey(0), target, 0)
    with pytest.raises(TypeError, match="target"):
        alg.init(jax.random.PRNGKey(0), np.ones((3, 3)), 4)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    for alg in (variant(STEP, init_scale=DELTA, regularization=LAM, epochs=EPOCHS,
                        amplify_steps=H_AMP, fit_steps=H_FIT),
                gd(STEP, model="two_homogeneous", init_scale=DELTA, regularization=LAM),
                gd(STEP, model="two_homogeneous", init_scale=DELTA)):
        e = claim_errors(alg, n)
        print(f"{alg.name:>20} λ={alg.hparams['regularization']:g}: rel. error <= 1e-2 in "
              f"{int((e <= 1e-2).sum())}/{n} seeds ({CLAIM_STEPS} steps, m={WIDTH}); "
              f"errors {np.round(e, 4).tolist()}")
