"""Tests of the modified gradient flow (docs/algorithms.md) and of the deflation
behaviour of plain GD it builds on; jaxtd/algorithms/_deflation.py.

``python -m tests.test_algorithms_deflation [seeds]`` prints the full fit-time figures.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import models
from jaxtd.algorithms import DeflationState, deflation, gd
from jaxtd.algorithms._deflation import (advance_epoch, epoch_start, epochs_done, euler_step,
                                         redraw_small, rows_to_redraw)
from jaxtd.algorithms.base import Static, redraw_key
from jaxtd import simulate
from tests import oracles

CI = os.environ.get("JAXTD_CI") == "1"
SEEDS = 6 if CI else 16

# The §E experiment: l=4, d=10, standard basis e_0..e_4 with weights 2^-j, m=50, δ0=1e-3.
ORDER, DIM, RANK, WIDTH, DELTA0, STEP = 4, 10, 5, 50, 1e-3, 0.05
GD_STEPS, FLOW_STEPS = 1500, 6300   # 6300 = 6 epochs of 5 * 2^s time at step 0.05


def staircase_target():
    return jaxtd.targets.orthonormal(None, DIM, RANK, ORDER, weights="geometric", basis=True)


def results(algorithm, steps, seeds, record_every):
    """``RunResult`` of ``seeds`` runs on the staircase target, one jit vmapped over seeds."""
    target = staircase_target()
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    run = jax.vmap(lambda k: simulate(algorithm, k, target, width=WIDTH, steps=steps,
                                      record_every=record_every))
    return jax.jit(run)(keys)


def plain_gd():
    return gd(STEP, model="two_homogeneous", init_scale=DELTA0)


def test_gd_fits_larger_components_first_at_doubling_times(x64):
    """Fit time along e_j ∝ 1/a_j (docs/algorithms.md): ordered, each about twice the previous."""
    fits = np.asarray(results(plain_gd(), GD_STEPS, SEEDS, 5).fit_times)
    assert np.all(fits[:, :3] > 0), fits
    # in every seed the three largest come first, in order
    assert np.all(np.diff(fits[:, :3], axis=1) > 0), fits
    medians = np.array([np.median(col[col > 0]) for col in fits.T[:4]])
    ratios = medians[1:] / medians[:-1]
    assert np.all((ratios > 1.6) & (ratios < 2.4)), (medians, fits)
    # the fourth component, when found within the run, comes last (after the third)
    found = fits[:, 3] > 0
    assert found.mean() >= 0.5 and np.all(fits[found, 3] > fits[found, 2]), fits


def test_flow_recovers_every_component_in_order(x64):
    res = results(deflation(DELTA0), FLOW_STEPS, SEEDS, 100)
    errors = np.asarray(res.final_relative_error)
    assert np.all(errors <= 1e-2), errors
    # stopped at ε = 1e-3 with the λ = ε/10 bias: about sqrt(5) λ/2 / ||T*|| ≈ 1e-4 remains
    assert np.all(np.asarray(res.history["stopped"][:, -1])) and np.all(errors <= 1e-3)
    fits = np.asarray(res.fit_times)
    assert np.all(fits > 0)
    in_order = np.all(np.diff(fits, axis=1) > 0, axis=1)
    assert in_order.mean() >= 0.75, fits


# -- the epoch clock and the re-draw ---------------------------------------------------------------

def small_target(order=4, dim=5, rank=2):
    return jaxtd.targets.orthonormal(None, dim, rank, order, weights=[1.0, 0.5], basis=True)


def test_epoch_start_matches_the_sum_of_epoch_lengths():
    for tau0, gamma, eta in ((5.0, 2.0, 0.05), (1.0, 3.0, 0.1), (0.3, 1.7, 0.01)):
        lengths = [tau0 * gamma ** s / eta for s in range(8)]
        want = np.round(np.concatenate([[0.0], np.cumsum(lengths)]))
        got = [int(epoch_start(s, jnp.float32(tau0), jnp.float32(gamma), jnp.float32(eta)))
               for s in range(9)]
        np.testing.assert_array_equal(got, want)
    assert [int(epoch_start(s, 5.0, 2.0, 0.05)) for s in range(6)] == [0, 100, 300, 700, 1500,
                                                                      3100]


def trajectory(algorithm, key, target, width, steps, active=None):
    """Final state and stacked step metrics of ``steps`` calls of ``algorithm.step`` (one jit;
    cheaper to compile than the full runner)."""

    @jax.jit
    def go(key, target, active):
        state = algorithm.init(key, target, width, active=active)
        return jax.lax.scan(lambda s, _: algorithm.step(s, target), state, None, length=steps)

    return go(key, target, active)


def test_step_follows_the_clock_and_stops(x64):
    target = small_target()
    alg = deflation(tau0=1.0, gamma=3.0, step_size=0.1, max_epochs=4, epsilon=1e-6,
                    regularization=1e-3)   # λ's bias keeps the error above ε
    final, m = trajectory(alg, jax.random.PRNGKey(1), target, 6, 450)
    starts = np.array([0, 10, 40, 130, 400])          # lengths 10, 30, 90, 270
    t = np.arange(450)
    want = np.minimum(np.searchsorted(starts, t, side="right") - 1, 3)
    np.testing.assert_array_equal(m["epoch"], want)
    np.testing.assert_array_equal(m["stopped"], t >= 400)   # max_epochs=4: frozen at epoch 4
    loss = np.asarray(m["loss"])
    assert np.all(loss[400:] == loss[400]) and loss[399] != loss[400]
    assert int(final.epoch) == 3 and int(final.count) == 450


@pytest.mark.parametrize("sign_rule", ["keep", "residual"])
def test_redraw_rows_below_threshold(sign_rule, x64):
    """At an epoch start, active rows with ||w|| < δ1 are re-drawn at norm δ0 from
    fold_in(fold_in(key, epoch), row); larger and masked rows stay; residual signs match a dense
    oracle."""
    target = small_target()
    alg = deflation(1e-3, 1e-2, sign_rule=sign_rule)
    key = jax.random.PRNGKey(4)
    state = alg.init(key, target, 6, active=5, hparams={"learning_rate": 0.0})
    norms = jnp.asarray([0.5, 5e-3, 2e-2, 1e-3, 9.9e-3, 1e-4])   # row 5 is masked
    params = state.params / jnp.linalg.norm(state.params, axis=1, keepdims=True) * norms[:, None]
    # step size 0 leaves only the re-draw; move the clock to the start of epoch 1
    state = state._replace(params=params, count=state.next_start)
    new, metrics = jax.jit(alg.step)(state, target)
    assert int(metrics["epoch"]) == 1
    old, got = np.asarray(params), np.asarray(new.params)
    redrawn = np.array([False, True, False, True, True, False])
    np.testing.assert_array_equal(got[~redrawn], old[~redrawn])
    k = jax.random.fold_in(redraw_key(key), 1)
    for i in np.flatnonzero(redrawn):
        z = np.asarray(jax.random.normal(jax.random.fold_in(k, i), (5,), jnp.float64))
        np.testing.assert_allclose(got[i], 1e-3 * z / np.linalg.norm(z), rtol=1e-12)
    if sign_rule == "keep":
        np.testing.assert_array_equal(new.signs, state.signs)
    else:
        t = alg.tensor(state)
        c = np.asarray(t.weights) * ~redrawn
        resid = oracles.dense(target.weights, target.factors, 4) - oracles.dense(c, t.factors, 4)
        for i in range(6):
            v = got[i] / np.linalg.norm(got[i])
            r_v = np.einsum("abcd,a,b,c,d->", resid, v, v, v, v)
            assert float(new.signs[i]) == (np.sign(r_v) if redrawn[i] else float(state.signs[i]))
    # off an epoch start nothing is re-drawn
    same, _ = jax.jit(alg.step)(state._replace(count=state.next_start - 1), target)
    np.testing.assert_array_equal(same.params, params)


# -- the step's pieces, one by one on hand-built states -------------------------------------------

HP = {"init_scale": jnp.float32(1e-3), "threshold": jnp.float32(1e-2),
      "regularization": jnp.float32(0.0), "learning_rate": jnp.float32(0.1),
      "gamma": jnp.float32(3.0), "tau0": jnp.float32(1.0)}


def test_advance_epoch_and_epochs_done():
    # τ0 = 1, γ = 3, η = 0.1: epochs start at steps 0, 10, 40, 130, 400
    epoch, start = advance_epoch(jnp.int32(1), jnp.int32(40), jnp.asarray(True), HP)
    assert (int(epoch), int(start)) == (2, 130)
    epoch, start = advance_epoch(jnp.int32(1), jnp.int32(40), jnp.asarray(False), HP)
    assert (int(epoch), int(start)) == (1, 40)
    yes, no = jnp.asarray(True), jnp.asarray(False)
    assert not bool(epochs_done(no, yes, jnp.int32(7), None)) and bool(epochs_done(yes, no, 0, None))
    # max_epochs = 4: the run stops as epoch 4 would start (from epoch 3), not before or between
    assert bool(epochs_done(no, yes, jnp.int32(3), 4))
    assert not bool(epochs_done(no, yes, jnp.int32(2), 4))
    assert not bool(epochs_done(no, no, jnp.int32(3), 4))


def test_rows_to_redraw_and_euler_step():
    norms = np.asarray([0.5, 5e-3, 2e-2, 1e-3, 9.9e-3, 1e-4, 0.0])
    params = jnp.asarray(np.outer(norms, [0.6, 0.0, 0.8]), jnp.float32)
    mask = jnp.asarray([1.0, 1, 1, 1, 1, 0, 1])     # row 5 is masked; row 6 is exactly zero
    got = rows_to_redraw(params, mask, HP["threshold"], jnp.asarray(True))
    np.testing.assert_array_equal(got, [False, True, False, True, True, False, True])
    assert not np.any(rows_to_redraw(params, mask, HP["threshold"], jnp.asarray(False)))
    grads = jnp.asarray(np.arange(21, dtype=np.float32).reshape(7, 3))
    want = np.asarray(params) - 0.1 * np.asarray(mask)[:, None] * np.asarray(grads)
    np.testing.assert_allclose(euler_step(params, grads, mask, HP["learning_rate"]), want,
                               rtol=1e-6)


@pytest.mark.parametrize("sign_rule", ["keep", "residual"])
def test_redraw_small_on_a_hand_built_state(sign_rule):
    """At an epoch start: epoch + 1, the next start from the clock, the active rows below δ1
    re-drawn at δ0 from fold_in(fold_in(key, epoch + 1), i), residual signs from a numpy oracle;
    without ``begin`` nothing changes."""
    target = small_target(dim=3)
    norms = np.asarray([0.5, 5e-3, 2e-2, 1e-4])    # row 3 is masked
    directions = np.asarray([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.8, 0.0, 0.6], [0.0, 1.0, 0.0]])
    old = (directions * norms[:, None]).astype(np.float32)
    state = DeflationState(
        params=jnp.asarray(old), signs=jnp.asarray([1.0, -1.0, 1.0, 1.0]),
        mask=jnp.asarray([1.0, 1, 1, 0]), hparams=HP, count=jnp.int32(40),
        key=jax.random.PRNGKey(6), epoch=jnp.int32(1), next_start=jnp.int32(40),
        stopped=jnp.asarray(False), order=Static(4))
    new = redraw_small(state, target, jnp.asarray(True), model_fn=models.two_homogeneous,
                       sign_rule=sign_rule)
    assert (int(new.epoch), int(new.next_start)) == (2, 130)
    got = np.asarray(new.params)
    redrawn = np.array([False, True, False, False])
    np.testing.assert_array_equal(got[~redrawn], old[~redrawn])
    z = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(state.key, 2), 1),
                                     (3,)))
    np.testing.assert_allclose(got[1], 1e-3 * z / np.linalg.norm(z), rtol=1e-6)
    signs = np.asarray(state.signs).copy()
    if sign_rule == "residual":
        # T(W) of the two-homogeneous model over the kept active rows 0 and 2
        weights = np.where([True, False, True, False], signs * norms ** 2, 0.0)
        resid = (oracles.dense(np.asarray(target.weights), np.asarray(target.factors), 4)
                 - oracles.dense(weights, directions, 4))
        v = got[1] / np.linalg.norm(got[1])
        signs[1] = np.sign(np.einsum("abcd,a,b,c,d->", resid, v, v, v, v))
        assert signs[1] != float(state.signs[1])   # the rule flips it here
    np.testing.assert_array_equal(new.signs, signs)
    same = redraw_small(state, target, jnp.asarray(False), model_fn=models.two_homogeneous,
                        sign_rule=sign_rule)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_redraw_does_not_depend_on_padded_width():
    target = small_target()
    # epochs start at 10, 30, 70, 150; λ's bias keeps the error above ε
    alg = deflation(tau0=1.0, step_size=0.1, epsilon=1e-6, regularization=1e-3)
    key = jax.random.PRNGKey(3)
    alone, m_alone = trajectory(alg, key, target, 6, 200)
    padded, m_padded = trajectory(alg, key, target, 11, 200, active=6)
    np.testing.assert_allclose(m_padded["loss"], m_alone["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded.params[:6], alone.params, rtol=1e-5, atol=1e-7)
    start = alg.init(key, target, 11, active=6)
    np.testing.assert_allclose(padded.params[6:], start.params[6:], rtol=1e-6)  # eager vs jit
    # re-draws happened (some row is not where it started nor where a flow alone takes it)
    assert float(m_alone["loss"][-1]) < 0.5 * float(m_alone["loss"][0])
    assert int(alone.epoch) == 4


def test_hparams_live_in_state_and_vmap():
    target = small_target()
    alg = deflation()
    assert set(alg.hparams) == {"init_scale", "threshold", "regularization", "learning_rate",
                                "gamma", "tau0"}
    np.testing.assert_allclose(alg.hparams["regularization"], 1e-4)   # ε/10
    hp = {"init_scale": jnp.asarray([1e-3, 1e-2]), "learning_rate": jnp.asarray([0.05, 0.1])}
    states = jax.jit(jax.vmap(lambda h: alg.init(jax.random.PRNGKey(0), target, 4,
                                                 hparams=h)))(hp)
    np.testing.assert_allclose(np.linalg.norm(states.params, axis=-1),
                               [[1e-3] * 4, [1e-2] * 4], rtol=1e-5)
    np.testing.assert_array_equal(states.next_start, [100, 50])
    new, m = jax.jit(jax.vmap(lambda s: alg.step(s, target)))(states)
    assert new.params.dtype == jnp.float32 and m["loss"].dtype == jnp.float32


@pytest.mark.parametrize("kwargs, error, name", [
    ({"delta1": 1e-3}, ValueError, "delta1"),
    ({"delta0": 0.1}, ValueError, "delta1"),
    ({"delta0": 0.0}, ValueError, "delta0"),
    ({"delta0": -1e-3}, ValueError, "delta0"),
    ({"gamma": 1.0}, ValueError, "gamma"),
    ({"gamma": 0.5}, ValueError, "gamma"),
    ({"gamma": float("inf")}, ValueError, "gamma"),
    ({"epsilon": 0.0}, ValueError, "epsilon"),
    ({"tau0": -1.0}, ValueError, "tau0"),
    ({"step_size": 0.0}, ValueError, "step_size"),
    ({"regularization": -1e-4}, ValueError, "regularization"),
    ({"max_epochs": 0}, ValueError, "max_epochs"),
    ({"gamma": "2"}, TypeError, "gamma"),
    ({"sign_rule": "flip"}, ValueError, "sign_rule"),
    ({"signs": "mixed"}, ValueError, "signs"),
    ({"model": "cubic"}, ValueError, "model"),
])
def test_bad_input_raises(kwargs, error, name):
    with pytest.raises(error, match=name):
        deflation(**kwargs)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    np.set_printoptions(linewidth=120)
    for alg, steps in ((plain_gd(), 4000), (deflation(DELTA0), FLOW_STEPS)):
        res = results(alg, steps, n, 5)
        fits = np.asarray(res.fit_times)
        err = np.asarray(res.final_relative_error)
        med = [float(np.median(c[c > 0])) if np.any(c > 0) else -1 for c in fits.T]
        print(f"{alg.name} ({steps} steps, {n} seeds): fit times (steps, -1 = never)\n{fits}")
        print(f"  median fit times {med}; all five fitted in {int(np.all(fits > 0, 1).sum())}/{n};"
              f" rel. error <= 1e-2 in {int((err <= 1e-2).sum())}/{n}")
