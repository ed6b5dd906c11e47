"""Tables of lazy optima at the lazy GD initializations, and the threshold experiment at scale."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd
from jaxtd.lazy import _optimum as _lazy_optimum
from jaxtd import lazy
from jaxtd.algorithms import lazy_gd

pytestmark = pytest.mark.timeout(600)


def _to64(t):
    return jaxtd.SymCP(t.weights.astype(jnp.float64), t.factors.astype(jnp.float64), t.order)


@pytest.mark.parametrize("init", ["standard", "antisymmetric"])
def test_table_is_the_lazy_optimum_at_each_lazy_gd_cell(init):
    d, l = 4, 4                                     # even order: random signs in the standard init
    target = jaxtd.targets.random_unit(jax.random.key(5), d, 6, l)        # float32, as the CLI
    keys = jnp.stack([jaxtd.key_for_seed(s) for s in range(2)])
    widths = [9, 3, 12]                             # unsorted; 9 -> 10 is an AH exception at l=4
    got = lazy.best_residual_table(keys, target, widths, init=init, method="dense")
    assert got.shape == (2, 3) and got.dtype == np.float64
    algorithm = lazy_gd(0.01, init=init)
    with jax.enable_x64(True):
        for s in range(2):
            for j, m in enumerate(widths):
                w0 = algorithm.init(keys[s], target, m).model     # drawn outside any x64 scope
                want = lazy.lstsq(_to64(w0), _to64(target)).residual
                np.testing.assert_allclose(got[s, j], want, rtol=1e-9, atol=1e-12)
    assert got[:, 1].min() > 0.1                    # width 3 is far below the threshold
    iterative = lazy.best_residual_table(keys, target, widths, init=init, method="iterative")
    np.testing.assert_allclose(iterative, got, atol=1e-6)


@pytest.mark.parametrize("init,signs", [("standard", "random"), ("standard", "auto"),
                                        ("antisymmetric", "auto")])
def test_the_drawn_initialization_is_bit_identical_to_lazy_gd(init, signs):
    target = jaxtd.targets.random_unit(jax.random.key(1), 5, 3, 4)
    key = jax.random.key(3)
    wide = _lazy_optimum._lazy_gd_init(key, target, 9, init, signs, jnp.asarray(0.5, jnp.float32))
    for m in (1, 4, 9):
        state = lazy_gd(0.01, init=init, signs=signs, init_scale=0.5).init(key, target, m)
        np.testing.assert_array_equal(wide.factors[:m], state.model.factors)
        np.testing.assert_array_equal(wide.weights[:m], state.model.weights)


def test_one_compilation_per_call_shape(monkeypatch):
    traces = []
    original = _lazy_optimum._lazy_gd_init

    def counting(*args, **kwargs):       # runs only while the table program is traced
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_lazy_optimum, "_lazy_gd_init", counting)
    target = jaxtd.targets.random_unit(jax.random.key(2), 3, 2, 3)   # a shape no other test uses
    keys = jax.random.split(jax.random.key(0), 3)                    # typed keys
    a = lazy.best_residual_table(keys, target, [2, 4, 7])
    b = lazy.best_residual_table(keys, target, [7, 1, 3])            # same length and maximum
    assert len(traces) == 1
    lazy.best_residual_table(list(keys), target, [3, 7])             # fewer widths: a new shape
    assert len(traces) == 2
    assert a.shape == b.shape == (3, 3)
    # legacy uint32 keys work too
    legacy = jnp.stack([jaxtd.key_for_seed(s) for s in range(3)])
    assert lazy.best_residual_table(legacy, target, [2, 4, 7]).shape == (3, 3)


def test_table_bad_input():
    target = jaxtd.targets.random_unit(jax.random.key(2), 3, 2, 3)
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(TypeError, match="keys"):
        lazy.best_residual_table(jnp.zeros((2, 3)), target, [2])
    with pytest.raises(ValueError, match="keys"):
        lazy.best_residual_table([], target, [2])
    with pytest.raises(ValueError, match="widths"):
        lazy.best_residual_table(keys, target, [0, 2])
    with pytest.raises(ValueError, match="init"):
        lazy.best_residual_table(keys, target, [2], init="orthogonal")
    with pytest.raises(ValueError, match="signs"):
        lazy.best_residual_table(keys, target, [2], signs="negative")
    with pytest.raises(ValueError, match="method"):
        lazy.best_residual_table(keys, target, [2], method="qr")
    with pytest.raises(TypeError, match="target"):
        lazy.best_residual_table(keys, target.factors, [2])


# -- the threshold experiment with the iterative solver ----------------------------------------

def test_iterative_threshold_experiment_matches_dense_and_the_rule():
    cases = [(4, 3), (5, 3), (3, 4), (6, 3)]        # (5, 3) and (3, 4): AH exceptions
    near = lazy.near_threshold_widths(2, 1)
    dense = lazy.threshold_experiment(cases, widths=near, seeds=2, method="dense")
    cg = lazy.threshold_experiment(cases, widths=near, seeds=2, method="iterative")
    assert cg.critical == dense.critical == dense.predicted
    assert set(cg.table.solver) == {"iterative"} and set(dense.table.solver) == {"dense"}
    np.testing.assert_allclose(cg.table.residual, dense.table.residual, atol=1e-6)
    assert cg.table.converged.all() and (cg.table.iterations > 0).all()
    assert cg.table["rank"].isna().all() and not dense.table["rank"].isna().any()
    assert dense.table["iterations"].isna().all()


def test_antisymmetric_prediction_counts_distinct_factors():
    # width 2k - 1 holds k distinct factors (the last one unpaired): m* = 5 -> width 9
    out = lazy.threshold_experiment([(4, 3)], widths=[8, 9, 10], init="antisymmetric")
    assert out.predicted == {(4, 3): 9} == out.critical
    assert lazy.near_threshold_widths(1, 1, "antisymmetric")(4, 3) == [8, 9, 10]


def test_local_exponents_and_threshold_slopes():
    dims = [4, 8, 16, 32]
    np.testing.assert_allclose(lazy.local_exponents(dims, [3 * d ** 2 for d in dims]), 2.0)
    rule = lazy.local_exponents(dims, [lazy.predicted_critical_width(d, 3) for d in dims])
    assert np.all(np.diff(rule) > 0) and rule[-1] < 2.0      # rising towards l - 1 = 2
    critical = {(d, 3): lazy.predicted_critical_width(d, 3) for d in dims}
    critical[(8, 3)] = 16
    critical[(4, 4)] = None                                  # not found: skipped
    out = lazy.Threshold(None, critical, {k: lazy.predicted_critical_width(*k) for k in critical})
    table = lazy.threshold_slopes(out)
    assert list(table.order) == [3, 3, 3] and list(table.dim_hi) == [8, 16, 32]
    np.testing.assert_allclose(table.rule, rule)
    np.testing.assert_allclose(table.measured[0], np.log(16 / 5) / np.log(2))
    assert (table.asymptote == 2).all()
    with pytest.raises(ValueError, match="increasing"):
        lazy.local_exponents([8, 4], [1, 2])
    with pytest.raises(TypeError, match="Threshold"):
        lazy.threshold_slopes(critical)


@pytest.mark.timeout(900)
def test_iterative_threshold_at_d16():
    """l = 3, d = 16 (m d = 816 at the threshold; the dense path needs ~(md)^3): the rule holds."""
    out = lazy.threshold_experiment([(16, 3)], widths=lazy.near_threshold_widths(1, 1))
    assert out.critical == out.predicted == {(16, 3): 51}
    res = out.table.set_index("width").residual
    assert res[50] > 1e-2 and res[51] == 0.0 and res[52] == 0.0


@pytest.mark.timeout(60)
def test_huge_windows_are_refused_before_any_work():
    """A window of 10**12 widths (or a default 1 .. m*+2 at a huge d) used to build the whole
    list in Python first."""
    from jaxtd import lazy
    with pytest.raises(ValueError, match="above must be <= 1000"):
        lazy.near_threshold_widths(above=10 ** 12)
    with pytest.raises(ValueError, match="widths=None"):
        lazy.threshold_experiment([(10 ** 4, 4)], widths=None)


def test_the_table_solves_one_matrix_per_eigh_call():
    """No batched eigh in the table's program: XLA:CPU runs a batched eigh on its thread pool
    and waits there for pieces queued on the same pool, which hung the suite on 2 cores; each
    matrix goes through eigh on its own (a loop), with the same LAPACK routine and results."""
    keys = jax.numpy.stack([jaxtd.key_for_seed(s) for s in range(3)])
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(0), 4, 2, 3)
    call = jaxtd.lazy.table_call(keys, target, [2, 3], method="dense")
    text = jaxtd.lazy.lower_table(call).as_text()
    calls = [ln for ln in text.splitlines() if re.search(r"custom_call @lapack_\w*syevd", ln)]
    assert calls, "no eigh in the table's program: the test checks nothing"
    assert all('num_batch_dims = "0"' in ln for ln in calls), calls
