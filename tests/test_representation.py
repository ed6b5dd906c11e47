"""jaxtd.representation: the explicit (dense d^l) form of the training loss equals the Gram
form (value, gradient, a GD trajectory, a real algorithm's run) in float32 and float64, and the
cost model picks it where the counts say it is cheaper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd import models, representation


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Each test in float32 and in float64 (x64 on for the latter)."""
    if request.param == "float64":
        request.getfixturevalue("x64")
    return jnp.dtype(request.param)


def _problem(dtype, m=6, d=4, order=3):
    k1, k2 = jax.random.split(jax.random.key(1))
    target = jaxtd.targets.random_unit(k1, dim=d, rank=2, order=order, weights=[1.0, 0.5])
    target = jaxtd.SymCP(target.weights.astype(dtype), target.factors.astype(dtype), order)
    params = 0.7 * jax.random.normal(k2, (m, d), dtype)
    return target, params


def test_dense_is_the_oracle_tensor_and_the_losses_agree(dtype):
    rtol = 1e-12 if dtype == jnp.float64 else 2e-5
    for order in (2, 4):  # (order 3: the tests below)
        target, params = _problem(dtype, order=order)
        model = jaxtd.SymCP(jnp.linspace(-1.0, 1.0, 6, dtype=dtype), params, order)
        np.testing.assert_allclose(representation.dense(model), jaxtd.to_dense(model),
                                   rtol=rtol, atol=rtol)
        # one jitted program per form: eager dispatch of the small ops costs more than compiling
        (v_exp, g_exp), (v_gram, g_gram) = (
            jax.jit(jax.value_and_grad(f))(model, target)
            for f in (representation.explicit_loss, jaxtd.loss))
        assert v_exp.dtype == dtype
        np.testing.assert_allclose(v_exp, v_gram, rtol=rtol)
        np.testing.assert_allclose(g_exp.weights, g_gram.weights, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(g_exp.factors, g_gram.factors, rtol=rtol, atol=rtol)
        # the dense target may be passed built once
        np.testing.assert_allclose(
            representation.explicit_loss(model, jaxtd.to_dense(target)), v_gram, rtol=rtol)


def test_regularized_loss_and_a_gd_trajectory_agree_between_the_forms(dtype):
    """Both models, a mask and weight decay; then 25 plain GD steps in each form."""
    rtol = 1e-11 if dtype == jnp.float64 else 5e-5
    target, params = _problem(dtype)
    mask = jnp.array([1, 1, 1, 1, 0, 0], dtype)
    signs = jnp.array([1, -1, 1, 1, -1, 1], dtype)

    def fit(form, model="plain"):
        return jax.jit(jax.value_and_grad(lambda w: models.regularized_loss(
            model, w, target, signs=signs, mask=mask, regularization=0.1,
            representation=form)))

    for model in models.MODELS:
        (v_exp, g_exp), (v_gram, g_gram) = (fit(f, model)(params) for f in ("explicit", "gram"))
        np.testing.assert_allclose(v_exp, v_gram, rtol=rtol)
        np.testing.assert_allclose(g_exp, g_gram, rtol=rtol, atol=rtol)
        assert np.all(np.asarray(g_exp)[4:] == 0)  # masked rows stay inert

    def trajectory(form):
        step = fit(form)
        w, losses = params, []
        for _ in range(25):
            value, grad = step(w)
            w, losses = w - 0.02 * grad, losses + [float(value)]
        return w, np.array(losses)

    (w_exp, l_exp), (w_gram, l_gram) = trajectory("explicit"), trajectory("gram")
    assert l_gram[-1] < 0.9 * l_gram[0]  # the steps do move
    np.testing.assert_allclose(l_exp, l_gram, rtol=10 * rtol)
    np.testing.assert_allclose(w_exp, w_gram, rtol=10 * rtol, atol=10 * rtol)


def test_a_real_algorithm_switches_form_by_width_with_the_same_run(monkeypatch, x64):
    """gd at d = 4, width 200 (l = 3): the cost model picks the explicit form; forcing the Gram
    form (an infinite penalty) reruns the same trajectory to rounding."""
    target, _ = _problem(jnp.float64)
    platform = jax.default_backend()
    assert representation.choose(200, 4, 2, 3) == "explicit"
    gd = jaxtd.algorithms.gd(0.05, init_scale=0.3)

    def run():
        jax.clear_caches()  # the choice is made when tracing: retrace
        return jaxtd.run(gd, jax.random.key(3), target, width=200, steps=20, record_every=10)

    explicit = run()
    monkeypatch.setitem(representation.EXPLICIT_PENALTY, platform, float("inf"))
    assert representation.choose(200, 4, 2, 3) == "gram"
    gram = run()
    assert gram.history["loss"][-1] < 0.99 * gram.history["loss"][0]
    np.testing.assert_allclose(explicit.history["loss"], gram.history["loss"], rtol=1e-10)
    np.testing.assert_allclose(explicit.final_params, gram.final_params, rtol=1e-9, atol=1e-12)


def _counts(m, d, r, order, penalty):
    gram = 2 * (m + r) ** 2 * d
    return gram, penalty * (3 * m + r) * d ** order


@pytest.mark.parametrize("m, d, r, order, platform, want", [
    (715, 16, 2, 3, "gpu", "explicit"),   # lazy-side bucket at d = 16: flop counts favour dense
    (715, 16, 2, 3, "cpu", "gram"),       # ... but XLA:CPU's dense form is 5x slower per flop
    (3000, 16, 2, 3, "cpu", "explicit"),  # far above d^(l-1) = 256
    (200, 16, 2, 3, "gpu", "gram"),       # below (2/3) d^(l-1)
    (715, 64, 2, 3, "gpu", "gram"),       # d = 64: the lazy threshold is far below d^(l-1)
    (20000, 128, 2, 3, "gpu", "gram"),    # d^l = 2^21 entries: over the memory cap
    (60, 4, 2, 3, "gpu", "gram"),         # dispatch-bound: under the flop floor
    (512, 8, 1, 4, "gpu", "gram"),        # l = 4: m below (2/3) d^(l-1)
    (2048, 8, 1, 4, "gpu", "explicit"),
])
def test_choose_picks_explicit_where_the_counts_say(m, d, r, order, platform, want):
    assert representation.choose(m, d, r, order, platform=platform) == want
    gram, explicit = _counts(m, d, r, order, representation.EXPLICIT_PENALTY.get(platform, 1.0))
    in_range = d ** order <= representation.MAX_DENSE_ENTRIES and \
        gram >= representation.MIN_STEP_FLOPS
    assert want == ("explicit" if in_range and explicit < gram else "gram")


def test_bad_arguments_are_refused_naming_them():
    target, params = _problem(jnp.float32)
    with pytest.raises(ValueError, match="representation must be one of"):
        models.regularized_loss("plain", params, target, representation="dense")
    with pytest.raises(ValueError, match="order must be >= 2"):
        representation.choose(4, 4, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(4, 4, 4\)"):
        representation.explicit_loss(jaxtd.SymCP(jnp.ones(6), params, 3), jnp.ones((4, 4)))
