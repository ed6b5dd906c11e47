"""Property-based bad-input tests of the core API: every call either raises a ``ValueError`` or
``TypeError`` whose message names the offending argument, or returns a finite result that agrees
with an independent numpy float64 oracle. Never another exception, never a silently wrong value.

Shapes, dtypes (int, bool, complex, float16/32/64), non-finite and out-of-range values are drawn
by hypothesis; half the examples draw only valid arguments (they must be accepted, and the
oracle comparisons then run), the other half draw each argument from everything. Examples are
few (``max_examples=30``) so the file runs in well under a minute.
"""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import jaxtd
from jaxtd import algorithms, targets
from tests import oracles

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(max_examples=30, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = [np.int8, np.int32, np.uint32, np.int64, np.bool_, np.complex64, np.float16,
          np.float32, np.float64]
SPECIALS = [np.nan, np.inf, -np.inf]


def _names(err: Exception, names) -> bool:
    msg = str(err)
    return any(n in msg for n in names)


def _assert_names(err: Exception, names):
    event(f"refused: {type(err).__name__}")
    assert isinstance(err, (TypeError, ValueError)), repr(err)
    assert _names(err, names), f"{type(err).__name__} does not name any of {names}: {err}"


@st.composite
def arrays(draw, shape, dtype, specials=True):
    """An array of ``shape``/``dtype`` with mostly moderate values, sometimes a special one
    (non-finite for floats, the extremes of the range for ints)."""
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        vals = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        vals = draw(st.lists(st.one_of(st.integers(-3, 3).map(lambda v: v if dt.kind == "i"
                                                               else abs(v)),
                                       st.sampled_from([int(info.min), int(info.max)])),
                             min_size=n, max_size=n))
    else:
        moderate = st.floats(-3, 3, width=16)
        vals = draw(st.lists(st.one_of(moderate, st.sampled_from(SPECIALS)) if specials
                             else moderate, min_size=n, max_size=n))
        if dt.kind == "c":
            vals = [v + 0.5j for v in vals]
    with np.errstate(all="ignore"):
        return np.asarray(vals, dt).reshape(shape)


ORDERS = st.one_of(st.integers(-1, 5), st.sampled_from([2.0, True, "3", None, np.int64(3)]))


def _scale(w, u, order):
    """``|c|^T |U U^T|^order |c|``: the sum of the magnitudes of the Gram terms."""
    g = np.abs(u @ u.T) ** order
    return float(np.abs(w) @ g @ np.abs(w))


@SETTINGS
@given(data=st.data())
def test_symcp_and_metrics(data):
    valid = data.draw(st.booleans(), "all valid")
    k = data.draw(st.integers(0, 3), "rank")
    d = data.draw(st.integers(1 if valid else 0, 3), "dim")
    order = data.draw(st.integers(2, 5) if valid else ORDERS, "order")
    wshape = (k,) if valid else data.draw(st.sampled_from([(k,), (k + 1,), (k, 1), ()]))
    floats = st.sampled_from([np.float32, np.float64])
    w = data.draw(arrays(wshape, data.draw(floats if valid else st.sampled_from(DTYPES)),
                         specials=not valid), "weights")
    u = data.draw(arrays((k, d), data.draw(floats if valid else st.sampled_from(DTYPES)),
                         specials=not valid), "factors")
    as_jax = data.draw(st.booleans(), "as jax arrays")
    conv = jnp.asarray if as_jax else (lambda x: x)
    try:
        a = jaxtd.SymCP(conv(w), conv(u), order)
    except (TypeError, ValueError) as err:
        assert not valid, f"valid input refused: {err}"
        _assert_names(err, ("weights", "factors", "order"))
        return
    event("accepted")
    # accepted: then it is a valid real tensor
    assert a.weights.dtype in (np.float32, np.float64) and a.factors.dtype in (np.float32,
                                                                               np.float64)
    wv = np.asarray(a.weights, np.float64)
    uv = np.asarray(a.factors, np.float64)
    assert np.isfinite(wv).all() and np.isfinite(uv).all()
    assert wv.shape == (k,) and uv.shape == (k, d) and d >= 1 and a.order == int(order) >= 2
    dense = oracles.dense(wv, uv, a.order)
    tol = 1e-5 * (np.abs(wv) @ np.max(np.abs(uv), axis=1, initial=0) ** a.order) + 1e-30
    np.testing.assert_allclose(np.asarray(jaxtd.to_dense(a), np.float64), dense, rtol=0,
                               atol=tol)

    # metrics against a fixed nonzero target
    b = targets.random_unit(jax.random.key(1), d, 2, a.order, np.array([1.5, -0.5]))
    wb, ub = np.asarray(b.weights, np.float64), np.asarray(b.factors, np.float64)
    dense_b = oracles.dense(wb, ub, a.order)
    s = _scale(np.concatenate([wv, wb]), np.concatenate([uv, ub]), a.order)
    inner = float(jaxtd.inner(a, b))
    loss = float(jaxtd.loss(a, b))
    rel = float(jaxtd.relative_error(a, b))
    for value in (inner, loss, rel):
        assert math.isfinite(value)
    assert abs(inner - np.sum(dense * dense_b)) <= 1e-5 * s + 1e-30
    true_sq = np.sum((dense - dense_b) ** 2)
    assert abs(loss - 0.5 * true_sq) <= 1e-5 * s + 1e-30
    norm_b = math.sqrt(np.sum(dense_b ** 2))
    assert abs(rel - math.sqrt(true_sq) / norm_b) <= math.sqrt(1e-5 * s) / norm_b + 1e-6


def _key(kind):
    return {"typed": lambda: jax.random.key(3), "legacy": lambda: jax.random.PRNGKey(3),
            "int": lambda: 3, "str": lambda: "3", "none": lambda: None,
            "int32 pair": lambda: np.zeros(2, np.int32), "float pair": lambda: np.zeros(2),
            "uint32 triple": lambda: np.zeros(3, np.uint32),
            "typed batch": lambda: jax.random.split(jax.random.key(0), 2),
            "legacy batch": lambda: jax.random.split(jax.random.PRNGKey(0), 2)}[kind]()


GOOD_KEYS = st.sampled_from(["typed", "legacy"])
KEY_KINDS = ["typed", "legacy", "int", "str", "none", "int32 pair", "float pair",
             "uint32 triple", "typed batch", "legacy batch"]
INTS = st.one_of(st.integers(-2, 6), st.sampled_from([2.0, True, "3", None, np.int64(3)]))
DTYPE_ARGS = st.sampled_from([None, jnp.float32, np.float32, "float32", jnp.int32, jnp.float16,
                              jnp.complex64, jnp.bfloat16, "nonsense", bool])


@st.composite
def good_profiles(draw, rank):
    if draw(st.booleans()):
        return draw(st.sampled_from(["equal", "geometric"]))
    nonzero = st.one_of(st.floats(-3, -0.01), st.floats(0.01, 3))
    return np.asarray(draw(st.lists(nonzero, min_size=rank, max_size=rank)))


@st.composite
def profiles(draw, rank):
    n = (draw(st.sampled_from([rank, rank + 1]))
         if type(rank) is int and rank >= 0 else 2)
    kind = draw(st.sampled_from(["name", "floats", "ints", "complex", "strings"]))
    if kind == "name":
        return draw(st.sampled_from(["equal", "geometric", "linear", ""]))
    if kind == "floats":
        return np.asarray(draw(st.lists(st.one_of(st.floats(-3, 3), st.sampled_from(
            SPECIALS + [0.0, 1e39, -1e39])), min_size=n, max_size=n)), np.float64)
    if kind == "ints":
        return np.asarray(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), np.int64)
    if kind == "complex":
        return np.ones(n) + 1j
    return ["a"] * n


@SETTINGS
@given(data=st.data())
def test_targets(data):
    fn = data.draw(st.sampled_from([targets.orthonormal, targets.random_unit]), "fn")
    if data.draw(st.booleans(), "all valid"):
        key_kind = data.draw(GOOD_KEYS, "key")
        dim = data.draw(st.integers(1, 6), "dim")
        rank = data.draw(st.integers(1, dim), "rank")
        order = data.draw(st.integers(2, 5), "order")
        weights = data.draw(good_profiles(rank), "weights")
        dtype = data.draw(st.sampled_from([None, jnp.float32, "float32"]), "dtype")
        valid = True
    else:
        key_kind = data.draw(st.sampled_from(KEY_KINDS), "key")
        dim, rank = data.draw(INTS, "dim"), data.draw(INTS, "rank")
        order = data.draw(INTS, "order")
        weights = data.draw(profiles(rank), "weights")
        dtype = data.draw(DTYPE_ARGS, "dtype")
        valid = False
    kwargs = {"dtype": dtype}
    basis = fn is targets.orthonormal and data.draw(st.booleans(), "basis")
    if basis:
        kwargs["basis"] = True
    try:
        t = fn(_key(key_kind), dim, rank, order, weights, **kwargs)
    except (TypeError, ValueError) as err:
        assert not valid, f"valid input refused: {err}"
        _assert_names(err, ("key", "dim", "rank", "order", "weights", "dtype"))
        return
    event("accepted")
    assert key_kind in ("typed", "legacy") or basis
    assert isinstance(t, jaxtd.SymCP) and t.order == order and t.factors.shape == (rank, dim)
    assert t.factors.dtype == jnp.float32 and t.weights.dtype == jnp.float32
    u = np.asarray(t.factors, np.float64)
    w = np.asarray(t.weights, np.float64)
    assert np.isfinite(u).all() and np.isfinite(w).all() and (w != 0).all()
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), np.ones(rank), rtol=1e-5)
    if fn is targets.orthonormal:
        np.testing.assert_allclose(u @ u.T, np.eye(rank), atol=1e-5)
    if basis:
        np.testing.assert_array_equal(u, np.eye(rank, dim))
    expected = {"equal": np.ones(rank), "geometric": 2.0 ** -np.arange(rank)}.get(
        weights if isinstance(weights, str) else None, weights)
    np.testing.assert_allclose(w, np.asarray(expected, np.float64), rtol=1e-7)


DELTAS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([True, "0.1", None, np.ones(2), np.float32(0.5), 0,
                                    np.int32(2), 1e-30, 1e30]),
                   st.floats(1e-6, 10).map(jnp.asarray))


@SETTINGS
@given(data=st.data())
def test_init_factors(data):
    valid = data.draw(st.booleans(), "all valid")
    if valid:
        key_kind = data.draw(GOOD_KEYS, "key")
        width, dim = data.draw(st.integers(1, 6), "width"), data.draw(st.integers(1, 6), "dim")
        scale = data.draw(st.sampled_from(["small", "standard"]), "scale")
        delta = data.draw(st.one_of(st.floats(1e-15, 1e15), st.floats(1e-6, 10).map(jnp.asarray)),
                          "delta")
        dtype = data.draw(st.sampled_from([None, jnp.float32]), "dtype")
    else:
        key_kind = data.draw(st.sampled_from(KEY_KINDS), "key")
        width, dim = data.draw(INTS, "width"), data.draw(INTS, "dim")
        scale = data.draw(st.sampled_from(["small", "standard", "huge", None]), "scale")
        delta = data.draw(DELTAS, "delta")
        dtype = data.draw(DTYPE_ARGS, "dtype")
    try:
        w = jaxtd.init_factors(_key(key_kind), width, dim, scale=scale, delta=delta, dtype=dtype)
    except (TypeError, ValueError) as err:
        assert not valid, f"valid input refused: {err}"
        _assert_names(err, ("key", "width", "dim", "scale", "delta", "dtype"))
        return
    event("accepted")
    assert key_kind in ("typed", "legacy")
    assert w.shape == (width, dim) and w.dtype == jnp.float32
    w = np.asarray(w, np.float64)
    assert np.isfinite(w).all()
    if scale == "small":
        np.testing.assert_allclose(np.linalg.norm(w, axis=1), np.full(width, float(delta)),
                                   rtol=1e-5)


# the runner's private module, on purpose: its compiled runner is stubbed out below (imported,
# not looked up in sys.modules, so the file also collects alone)
from jaxtd import _run as _run_module  # noqa: E402
_TARGET = targets.orthonormal(jax.random.key(0), 3, 1, 3)
_GD = algorithms.gd(0.1)


@SETTINGS
@given(data=st.data())
def test_run_argument_checks(data):
    """``jaxtd.run`` validates before compiling; the compiled runner is stubbed out, so an
    accepted call is checked for valid arguments without compiling anything."""
    valid = data.draw(st.booleans(), "all valid")
    if valid:
        key_kind = data.draw(GOOD_KEYS, "key")
        width = data.draw(st.integers(1, 4), "width")
        steps = data.draw(st.integers(1, 12), "steps")
        record_every = data.draw(st.one_of(st.none(), st.sampled_from(
            [r for r in range(1, steps + 1) if steps % r == 0])), "record_every")
        active = data.draw(st.one_of(st.none(), st.integers(1, width)), "active")
        factor = data.draw(st.floats(1.0, 1e30), "divergence_factor")
    else:
        key_kind = data.draw(st.sampled_from(["typed", "legacy", "int", "str", "none",
                                              "uint32 triple"]), "key")
        width = data.draw(INTS, "width")
        steps = data.draw(INTS, "steps")
        record_every = data.draw(st.one_of(INTS, st.just(None)), "record_every")
        active = data.draw(st.one_of(st.none(), st.integers(-1, 7), st.sampled_from([2.0])),
                           "active")
        factor = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.just(1e6)), "divergence_factor")
    stub = mock.Mock(return_value="ran")
    with mock.patch.object(_run_module, "_simulate_jit", stub):
        try:
            out = jaxtd.run(_GD, _key(key_kind), _TARGET, width=width, steps=steps,
                            record_every=record_every, active=active, divergence_factor=factor)
        except (TypeError, ValueError) as err:
            assert not valid, f"valid input refused: {err}"
            _assert_names(err, ("key", "width", "steps", "record_every", "active",
                                "divergence_factor"))
            stub.assert_not_called()
            return
    event("accepted")
    assert out == "ran" and stub.call_count == 1
    kw = stub.call_args.kwargs
    assert key_kind in ("typed", "legacy")
    assert isinstance(kw["width"], int) and kw["width"] >= 1
    assert isinstance(kw["steps"], int) and kw["steps"] >= 1
    assert kw["steps"] % kw["record_every"] == 0
    assert active is None or 1 <= int(active) <= kw["width"]
    assert math.isfinite(factor) and factor > 0


# -- the runner's own checks: keys, hyper-parameter overrides, options -----------------------------

@pytest.mark.parametrize("kind", ["int32 pair", "float pair", "typed batch"])
def test_run_validates_key_dtype_and_batch(kind):
    with pytest.raises((TypeError, ValueError), match="key must be"):
        _run_module.validate(_GD, _key(kind), _TARGET, width=2, steps=2, record_every=1)


@pytest.mark.parametrize("hparams", [{"learning_rate": float("nan")}, {"learning_rate": -0.1},
                                     {"init_scale": float("nan")}, {"learning_rate": "abc"}])
def test_run_validates_hparam_values(hparams):
    with mock.patch.object(_run_module, "_simulate_jit", mock.Mock(return_value="ran")):
        with pytest.raises((TypeError, ValueError), match=next(iter(hparams))):
            jaxtd.run(_GD, jax.random.key(0), _TARGET, width=2, steps=2, record_every=1,
                      hparams=hparams)


def test_run_validates_divergence_factor_type():
    with mock.patch.object(_run_module, "_simulate_jit", mock.Mock(return_value="ran")):
        with pytest.raises(TypeError, match="divergence_factor"):
            jaxtd.run(_GD, jax.random.key(0), _TARGET, width=2, steps=2, record_every=1,
                      divergence_factor="x")


def test_relative_error_of_zero_target_raises():
    zero = jaxtd.SymCP(jnp.zeros(1), jnp.ones((1, 3)), 3)
    with pytest.raises(ValueError, match="target"):
        jaxtd.relative_error(_TARGET, zero)


# -- found by benchmarks/robustness.py ------------------------------------------------------------

def _small():
    t = targets.orthonormal(jax.random.key(1), 6, 2, 3)
    w0 = jaxtd.init_factors(jax.random.key(2), 4, 6, scale="standard")
    return t, jaxtd.SymCP(jnp.ones(4), w0, 3)


def test_non_finite_init_params_and_lazy_delta_are_refused():
    t, m = _small()
    with pytest.raises(ValueError, match="init_params has a non-finite entry"):
        jaxtd.run(algorithms.gd(0.1), jax.random.key(0), t, width=4, steps=10, record_every=5,
                  init_params=np.full((4, 6), np.nan, np.float32))
    from jaxtd import lazy
    with pytest.raises(ValueError, match="delta has a non-finite entry"):
        lazy.lazy_loss(m, jnp.full((4, 6), jnp.inf), t)
    # traced values pass (no host sync inside jit): the check is on concrete arrays only
    assert np.isfinite(jax.jit(lazy.lazy_loss)(m, jnp.zeros((4, 6)), t))


@pytest.mark.parametrize("rcond,err", [(-1.0, ValueError), (1.0, ValueError), ("0", TypeError)])
def test_best_residual_rcond_and_model_type(rcond, err):
    from jaxtd import lazy
    t, m = _small()
    with pytest.raises(err, match="rcond"):
        lazy.best_residual(m, t, rcond=rcond, method="dense")
    with pytest.raises(TypeError, match="model"):
        lazy.best_residual(np.asarray(m.factors), t)


def test_sizes_beyond_32_bit_and_dense_tensors_are_refused():
    t, _ = _small()
    with pytest.raises(ValueError, match="widths=.* exceeds"):
        jaxtd.sweep(algorithms.gd(0.1), t, seeds=1, widths=[2, 10 ** 20], steps=10,
                    progress=False)
    with pytest.raises(ValueError, match="to_dense.*entries"):
        jaxtd.to_dense(jaxtd.SymCP(jnp.ones(2), jnp.ones((2, 1000)), 3))


# -- one validation for simulate, run and sweep ---------------------------------------------------

_NAN, _INF = float("nan"), float("inf")
# (argument, bad value): each must be refused by simulate, run and sweep alike. Hyper-parameters
# are overrides (a scalar for simulate/run, a one-value list for sweep); the tiny problem runs
# steps in {4, 8}, so record_every = 3 never divides them.
_SHARED_BAD = [("steps", 0), ("steps", -3), ("steps", 2.5), ("steps", "4"), ("steps", True),
               ("steps", 10 ** 12), ("record_every", 3), ("record_every", 0),
               ("record_every", 2.0), ("record_every", True), ("width", 0), ("width", 2.5),
               ("width", True), ("width", "2"), ("width", 2 ** 40),
               ("learning_rate", -0.1), ("learning_rate", 0.0), ("learning_rate", _NAN),
               ("learning_rate", _INF), ("learning_rate", "0.1"), ("learning_rate", True),
               ("init_scale", -1.0), ("init_scale", _NAN), ("init_scale", "0.05"),
               ("regularization", -1.0), ("regularization", _INF), ("momentum", 0.5),
               ("target", "t"), ("target", np.ones((1, 3), np.float32)), ("algorithm", "gd")]
_HPARAMS = ("learning_rate", "init_scale", "regularization", "momentum")


def _three_calls(name, value, width, steps):
    """``{"simulate": thunk, "run": thunk, "sweep": thunk}`` with ``name`` set to ``value``."""
    kw = {"width": width, "steps": steps, "record_every": 2}
    alg, target, hp, sweep_hp = _GD, _TINY_TARGET, None, None
    if name in _HPARAMS:
        hp, sweep_hp = {name: value}, {name: [value]}
    elif name == "target":
        target = value
    elif name == "algorithm":
        alg = value
    else:
        kw[name] = value
    key = jax.random.key(0)
    widths = [kw.pop("width")]
    return {
        "simulate": lambda: jaxtd.simulate(alg, key, target, width=widths[0], hparams=hp, **kw),
        "run": lambda: jaxtd.run(alg, key, target, width=widths[0], hparams=hp, **kw),
        "sweep": lambda: jaxtd.sweep(alg, target, seeds=1, widths=widths, hparams=sweep_hp,
                                     progress=False, **kw),
    }


@pytest.fixture(scope="module")
def compiles(backend_compiles):
    """The backend compilations that happen while the module's tests run (a list to clear)."""
    with backend_compiles() as events:
        yield events


_TINY_TARGET = targets.orthonormal(jax.random.key(1), 3, 1, 3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(bad=st.sampled_from(_SHARED_BAD), width=st.integers(1, 2), steps=st.sampled_from([4, 8]))
def test_simulate_run_and_sweep_refuse_the_same_input_alike(compiles, bad, width, steps):
    """Same bad input -> the same exception type from simulate, run and sweep, naming the
    argument, raised before anything compiles."""
    name, value = bad
    kinds = {}
    for fn_name, thunk in _three_calls(name, value, width, steps).items():
        compiles.clear()
        with pytest.raises((TypeError, ValueError)) as info:
            thunk()
        assert not compiles, f"{fn_name} compiled before refusing {name}={value!r}"
        label = "widths" if fn_name == "sweep" and name == "width" else name
        assert label in str(info.value) or name in str(info.value), (fn_name, str(info.value))
        kinds[fn_name] = type(info.value)
    assert len(set(kinds.values())) == 1, kinds


@settings(max_examples=20, deadline=None)
@given(active=st.one_of(st.floats(-3, 5), st.booleans(), st.integers(-3, 5),
                        st.sampled_from([np.float32(1.0), np.int64(1), np.bool_(True)])))
def test_simulate_and_run_check_active_alike(active):
    """A fractional active (2.5 was read as 2 but masked 3 rows) or a bool is a TypeError, an
    int out of [1, width] a ValueError, in both simulate and run (validated before compiling:
    the compiled runner is stubbed)."""
    outcomes = []
    for fn in (jaxtd.simulate, jaxtd.run):
        with mock.patch.object(_run_module, "_simulate_jit", mock.Mock(return_value="ran")):
            try:
                if fn is jaxtd.simulate:  # accepted values are checked without running
                    _run_module.validate(_GD, jax.random.key(0), _TINY_TARGET, width=2, steps=4,
                                         record_every=2, active=active)
                    out = "ran"
                else:
                    out = fn(_GD, jax.random.key(0), _TINY_TARGET, width=2, steps=4,
                             record_every=2, active=active)
                outcomes.append(out)
            except (TypeError, ValueError) as err:
                assert "active" in str(err)
                outcomes.append(type(err))
                if fn is jaxtd.simulate:  # and simulate itself refuses it the same way
                    with pytest.raises(type(err), match="active"):
                        fn(_GD, jax.random.key(0), _TINY_TARGET, width=2, steps=4,
                           record_every=2, active=active)
    assert outcomes[0] == outcomes[1]
    is_int = isinstance(active, (int, np.integer)) and not isinstance(active, (bool, np.bool_))
    if not is_int:
        assert outcomes[0] is TypeError
    elif not 1 <= active <= 2:
        assert outcomes[0] is ValueError
    else:
        assert outcomes[0] == "ran"
