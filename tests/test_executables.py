"""Compiled grid programs across processes (jaxtd._executables) and the host-side precise final
error of a grid (the float64 aligned expansion)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtd
from jaxtd import _executables, algorithms, compile_cache
from jaxtd._aligned import aligned_residual_sq, aligned_residual_sq_host
from jaxtd.algorithms.base import Algorithm

pytestmark = pytest.mark.timeout(600)


def _target(dim=5, rank=2, order=3):
    return jaxtd.targets.orthonormal(jax.random.key(0), dim=dim, rank=rank, order=order)


# -- stable identities ---------------------------------------------------------------------------

def test_stable_text_names_constructor_arguments():
    a, b = algorithms.gd(0.1), algorithms.gd(0.1)
    assert _executables.stable_text(a) == _executables.stable_text(b) is not None
    assert _executables.stable_text(algorithms.gd(0.2)) != _executables.stable_text(a)
    adam = _executables.stable_text(algorithms.gd(optax.adam, learning_rate=0.1))
    assert adam is not None and "optax" in adam and "adam" in adam
    assert adam != _executables.stable_text(algorithms.gd(optax.sgd, learning_rate=0.1))
    assert _executables.stable_text(algorithms.gd(0.1, init="antisymmetric")) != \
        _executables.stable_text(a)


@pytest.mark.parametrize("make", [
    lambda: algorithms.gd(optax.sgd(0.1)),             # a ready transformation is a closure
    lambda: algorithms.gd(0.1)._replace(step=lambda s, t: (s, {})),   # hand-modified
    lambda: Algorithm("x", *(lambda *a, **k: None,) * 4, {}),         # hand-assembled
])
def test_stable_text_refuses_what_it_cannot_name(make):
    assert _executables.stable_text(make()) is None


def test_stable_text_of_plain_values():
    assert _executables.stable_text((1, "a", 0.1, None, True)) == \
        _executables.stable_text((1, "a", 0.1, None, True))
    assert _executables.stable_text(0.1) != _executables.stable_text(float(np.nextafter(0.1, 1)))
    assert _executables.stable_text(lambda x: x) is None
    assert _executables.stable_text(np.zeros(2)) is None


# -- across processes -----------------------------------------------------------------------------

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, optax, jaxtd
    import jaxtd.compile_cache
    jaxtd.compile_cache.enable(sys.argv[1])
    target = jaxtd.targets.orthonormal(jax.random.key(0), dim=5, rank=2, order=3)
    out = {}
    for name, alg in [("sgd", jaxtd.algorithms.gd(0.1, init_scale=0.1)),
                      ("ready", jaxtd.algorithms.gd(optax.sgd(0.1), init_scale=0.1))]:
        res = jaxtd.sweep(alg, target, seeds=2, widths=[2, 3], steps=8, record_every=4)
        out[name] = {"compiles": res.info["n_compiles"], "loaded": res.info["n_programs_loaded"],
                     "errors": res.rows["final_relative_error"].tolist()}
    print(json.dumps(out))
""")


def _run_script(cache):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(cache)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_executable_instead_of_compiling(tmp_path):
    cold = _run_script(tmp_path)
    assert cold["sgd"] == {**cold["sgd"], "compiles": 1, "loaded": 0}
    saved = sorted((tmp_path / "jaxtd-programs").glob("*.bin"))
    assert len(saved) == 1  # the ready optax transformation has no stable identity: not saved
    warm = _run_script(tmp_path)
    assert warm["sgd"]["compiles"] == 0 and warm["sgd"]["loaded"] == 1
    assert warm["sgd"]["errors"] == cold["sgd"]["errors"]        # bit-identical
    assert warm["ready"]["compiles"] == 1 and warm["ready"]["loaded"] == 0
    # a damaged file is dropped and the program compiled again, with the same numbers
    saved[0].write_bytes(b"not an executable")
    again = _run_script(tmp_path)
    assert again["sgd"]["compiles"] == 1 and again["sgd"]["errors"] == cold["sgd"]["errors"]


def test_a_program_from_jax_cache_is_not_saved_again(tmp_path):
    """XLA:CPU cannot run a re-serialized copy of an executable that JAX's own persistent cache
    loaded ("Function ... not found"): such a program is left to JAX's cache, and every later
    process still runs it, with the numbers of the first."""
    cold = _run_script(tmp_path)
    for saved in (tmp_path / "jaxtd-programs").glob("*.bin"):
        saved.unlink()                 # jaxtd's copy gone, JAX's own cache entry kept
    hit = _run_script(tmp_path)        # JAX's cache supplies the executable
    later = _run_script(tmp_path)
    assert not list((tmp_path / "jaxtd-programs").glob("*.bin"))
    for run in (hit, later):
        assert run["sgd"]["errors"] == cold["sgd"]["errors"]


def test_user_modules_are_never_named_on_disk(tmp_path, monkeypatch):
    """A factory in the user's own project may import helpers from other files: its programs
    stay in memory; an installed package's function (optax.adam) is named with its version."""
    (tmp_path / "my_factory.py").write_text(textwrap.dedent("""
        import jaxtd
        from jaxtd.algorithms import base

        @base.constructor
        def mine(lr: float = 0.1):
            return jaxtd.algorithms.gd(lr)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_factory
    compile_cache.enable(tmp_path / "cache")
    try:
        assert _executables.stable_text(my_factory.mine()) is not None
        assert _executables._path(("program", my_factory.mine())) is None
        assert _executables._path(("program", algorithms.gd(optax.adam, learning_rate=0.1))) \
            is not None
        assert _executables._path(("program", algorithms.gd(0.1))) is not None
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_compiler_flags_name_a_different_file(tmp_path, monkeypatch):
    """An executable compiled under other XLA flags or JAX settings is another file."""
    compile_cache.enable(tmp_path)
    key = ("program", algorithms.gd(0.1))
    try:
        monkeypatch.setenv("XLA_FLAGS", "")
        plain = _executables._path(key)
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
        fast = _executables._path(key)
        monkeypatch.setenv("XLA_FLAGS", "")
        with jax.default_matmul_precision("bfloat16"):
            low = _executables._path(key)
        assert len({plain, fast, low}) == 3 and plain == _executables._path(key)
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_source_digest_sees_every_file_of_the_package_subpackages_included(tmp_path):
    """A saved program is keyed by the package source: editing a module of a subpackage
    (the lazy CG solver, an algorithm) or moving a file gives another key."""
    import shutil
    root = tmp_path / "jaxtd"
    shutil.copytree(os.path.dirname(jaxtd.__file__), root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    seen = {_executables._tree_digest(root)}
    for name in ("lazy/cg.py", "algorithms/_gd.py", "symcp.py"):
        path = root / name
        path.write_text(path.read_text() + "\n# edited\n")
        seen.add(_executables._tree_digest(root))
    (root / "lazy" / "cg.py").rename(root / "lazy" / "cg2.py")
    seen.add(_executables._tree_digest(root))
    assert len(seen) == 5


def test_disk_cache_off_unless_persistent_cache_enabled(tmp_path):
    assert jax.config.jax_compilation_cache_dir is None
    assert _executables.disk_dir() is None
    compile_cache.enable(tmp_path)
    try:
        assert _executables.disk_dir() == tmp_path / "jaxtd-programs"
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


# -- the precise final error on the host ----------------------------------------------------------

def test_host_expansion_equals_jax_expansion_float64(x64):
    target = _target(dim=6, rank=3, order=3)
    key = jax.random.key(3)
    weights = jax.random.normal(key, (7,), jnp.float64)
    factors = jax.random.normal(jax.random.fold_in(key, 1), (7, 6), jnp.float64)
    model = jaxtd.SymCP(weights, factors, 3)
    want = float(aligned_residual_sq(model, target))
    got = aligned_residual_sq_host(np.asarray(weights)[None], np.asarray(factors)[None],
                                   target.weights, target.factors, 3)
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], want, rtol=1e-12)


def test_grid_final_error_is_precise_near_a_fit():
    """A float32 cell's final error agrees with jaxtd.relative_error (extended precision) at an
    small error, where the plain float32 Gram form would be off by orders of magnitude."""
    target = _target(dim=8, rank=2, order=3)
    gd = algorithms.gd(0.1, init_scale=5e-2)
    res = jaxtd.sweep(gd, target, seeds=1, widths=[5], steps=1200, record_every=100)
    alone = jaxtd.run(gd, jaxtd.key_for_seed(0), target, width=5, steps=1200, record_every=100)
    err = float(res.rows["final_relative_error"][0])
    assert err < 1e-3
    np.testing.assert_allclose(err, float(alone.final_relative_error), rtol=1e-4)
    np.testing.assert_allclose(res.histories["relative_error"][0, -1], err, rtol=0)


# -- compiler options ------------------------------------------------------------------------------

def test_compiler_options_keep_the_numbers_and_unknown_options_fall_back(monkeypatch):
    """jaxtd's compile options change compile time, not results; an XLA that does not know an
    option compiles with its defaults instead of failing."""
    fn = jax.jit(lambda w: jnp.sum(jnp.tanh(w @ w.T) ** 3, axis=1))
    w = jax.random.normal(jax.random.key(0), (6, 4))
    lowered = fn.lower(w)
    plain = np.asarray(lowered.compile()(w))
    np.testing.assert_allclose(np.asarray(_executables.compile_lowered(lowered)(w)), plain,
                               rtol=1e-6)
    monkeypatch.setitem(_executables.COMPILER_OPTIONS, jax.devices()[0].platform,
                        {"xla_no_such_option_in_any_xla": True})
    np.testing.assert_array_equal(np.asarray(_executables.compile_lowered(lowered)(w)), plain)


def test_fast_compile_names_the_measured_programs_only():
    """GD's, lazy GD's and deflation's grids and the lazy-optimum table compile at LLVM level 1
    on CPU; the variant, a hand-assembled algorithm and other platforms keep the defaults."""
    name = _executables.program_name
    assert name(algorithms.gd(0.1)) == "jaxtd.algorithms._gd.gd"
    level = {"xla_backend_optimization_level": 1}
    for program in (name(algorithms.gd(0.1)), name(algorithms.lazy_gd(0.01)),
                    name(algorithms.deflation()), "jaxtd.lazy.best_residual_table"):
        assert _executables.compiler_options("cpu", program) == {
            **_executables.COMPILER_OPTIONS["cpu"], **level}
    for program in (name(algorithms.variant(0.1)), None):
        assert _executables.compiler_options("cpu", program) == _executables.COMPILER_OPTIONS["cpu"]
    assert _executables.compiler_options("gpu", name(algorithms.gd(0.1))) == {}
    bare = algorithms.gd(0.1)._replace(static_key=None)
    assert name(bare) is None
    # the option compiles and keeps a GD-like program's numbers
    fn = jax.jit(lambda w: jnp.sum(jnp.tanh(w @ w.T) ** 3, axis=1))
    w = jax.random.normal(jax.random.key(0), (6, 4))
    lowered = fn.lower(w)
    np.testing.assert_allclose(
        np.asarray(_executables.compile_lowered(lowered, "jaxtd.algorithms._gd.gd")(w)),
        np.asarray(lowered.compile()(w)), rtol=1e-6)
