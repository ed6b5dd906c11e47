import contextlib
import faulthandler
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

_IMPORTED = time.time()  # the suite's wall time counts this file's JAX import and probe


def _unset(flag: str) -> bool:
    """Whether the user's ``XLA_FLAGS`` leaves the option of ``--name=value`` unset."""
    return flag.split("=")[0].lstrip("-") not in os.environ.get("XLA_FLAGS", "")


def _add_xla_flags(*flags: str, probe: bool = False) -> None:
    """Append each ``--name=value`` to ``XLA_FLAGS`` (before JAX starts) unless the user set that
    option already; with ``probe``, only the flags a child process accepts (an XLA that does not
    know a flag aborts the process). All flags are probed in one child (a Python start-up costs
    seconds per pytest process); only if that fails, each flag in a child of its own."""
    flags = [f for f in flags if _unset(f)]
    if probe and flags and not _flags_accepted(_joined(flags)):
        flags = [f for f in flags if _flags_accepted(_joined([f]))]
    if flags:
        os.environ["XLA_FLAGS"] = _joined(flags)


def _joined(flags) -> str:
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def _flags_accepted(flags: str) -> bool:
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    code = "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=120).returncode == 0


# A batched eigh (dense lazy optima over seeds) can deadlock XLA's multi-threaded Eigen pool on
# a 2-core machine (both workers wait on work queued behind them). The flag alone did not prevent
# it (the suite hung with it, both pool threads in lapack_dsyevd_ffi); jaxtd now calls eigh one
# matrix at a time (jaxtd/lazy/_optimum.py), and the flag stays as a second guard.
_add_xla_flags("--xla_cpu_multi_thread_eigen=false")

# XLA:CPU's fusion emitters are much of its compile time, and the suite compiles hundreds of
# small programs: the suite compiles without them, as jaxtd's own grid programs do by default
# (jaxtd._executables.COMPILER_OPTIONS), so standalone programs match the grids. Optimization
# level 0 would save more but changes the rounding of the extended-precision metrics that the
# near-zero tests check; the suite's level is 1 (below). An XLA that does not know a flag aborts
# the process, so both flags are tried in a child process first (one child for the two).
#
# LLVM's optimization level 1 instead of XLA's default: the suite's programs are compiled many
# times and run briefly, and level 1 halves their LLVM time (the headline GD grid compiled in
# 1.6 s instead of 3.0 s, with bit-identical results and equal run time; the variant's grid in
# 3.2 s instead of 6.1 s, at twice the run time and different last bits of rounding). The heavy
# test files took 19% less time with it, every test passing (tests/test_losses, test_grad,
# test_sweep, test_lazy_cg: 720 s instead of 885 s of test time on 2 cores). Level 0 would save
# more but runs 4x slower and changes the rounding the near-zero tests check. The product's
# default level is what the CI smoke run, the benchmarks and the notebooks' committed outputs use.
_add_xla_flags("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1",
               probe=True)

import jax  # noqa: E402
import jax.monitoring  # noqa: E402
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

# `jaxtd run` enables JAX's persistent compilation cache in $XDG_CACHE_HOME. Point it at one
# folder per test session, made by the controlling process before pytest-xdist starts its
# workers (they inherit it): no test writes into the user's home, and CLI, notebook and doc
# subprocesses started by either worker reuse each other's compiled programs. The controlling
# process removes it at the end.
if "JAXTD_TEST_CACHE" not in os.environ:
    os.environ["JAXTD_TEST_CACHE"] = tempfile.mkdtemp(prefix="jaxtd-test-cache-")
os.environ["XDG_CACHE_HOME"] = os.environ["JAXTD_TEST_CACHE"]


# A test stuck inside native code (an XLA deadlock, say) never returns to the interpreter, so
# pytest-timeout's signal never fires and the whole run would hang until CI's limit. A C-level
# watchdog (faulthandler) backs it up: GRACE_S after the test's own timeout it writes every
# thread's stack to a file in JAXTD_TEST_HANGS and ends the worker. pytest-xdist reports the
# test as crashed and ends the run there (`--max-worker-restart=0` unless given: a restarted
# worker would run the same test again); the terminal summary prints the stacks.
GRACE_S = float(os.environ.get("JAXTD_TEST_GRACE_S", 60))  # tests/test_suite.py sets it lower


# Set in the controlling process before pytest-xdist starts its workers, which inherit it.
if "JAXTD_TEST_HANGS" not in os.environ:
    os.environ["JAXTD_TEST_HANGS"] = tempfile.mkdtemp(prefix="jaxtd-test-hangs-")


def _hang_dir() -> str:
    return os.environ["JAXTD_TEST_HANGS"]


def pytest_configure(config):
    if getattr(config.option, "maxworkerrestart", "unset") is None:  # pytest-xdist's default
        config.option.maxworkerrestart = "0"
    # `--dist loadfile` hands out files in collection order (LONG_FIRST below), not reordered by
    # their number of tests; set here, not in addopts, so that `-p no:xdist` still runs
    if getattr(config.option, "loadscopereorder", None) and \
            "--loadscope-reorder" not in config.invocation_params.args:
        config.option.loadscopereorder = False


def _timeout_s(item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = _timeout_s(item)
    if limit <= 0:
        yield
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(_hang_dir(), f"{worker}-{os.getpid()}.txt"), "w") as dump:
        dump.write(f"{item.nodeid} ran past its {limit:g} s timeout + {GRACE_S:g} s; stacks:\n")
        dump.flush()
        faulthandler.dump_traceback_later(limit + GRACE_S, exit=True, file=dump)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
    os.remove(dump.name)


@pytest.fixture
def x64():
    """Enable float64 for one test, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@contextlib.contextmanager
def _count_backend_compiles():
    """The XLA backend compilations (JAX's own monitoring event) inside the block, as a list
    that grows while the block runs (clear it to count afresh)."""
    events = []

    def listener(name, *_args, **_kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="session")
def backend_compiles():
    """``with backend_compiles() as compiles: ...``: count the XLA compilations of a block (the
    one counter of the suite; module fixtures may hold one open over several tests)."""
    return _count_backend_compiles


@pytest.fixture(autouse=True)
def _no_persistent_cache_leak():
    """A test that enables the persistent compilation cache (an in-process `jaxtd run`) turns it
    off again afterwards: later tests count XLA compilations, and a program loaded from disk is
    not counted as one."""
    yield
    if jax.config.jax_compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", None)
        from jax._src import compilation_cache
        compilation_cache.reset_cache()


# Files that take longest, longest first (the "seconds per test file" summary that every run
# prints measures them). pytest-xdist (`--dist loadfile`) hands whole files to idle workers in
# collection order; starting the long ones first keeps a long file from being the last one
# running while the other worker idles.
LONG_FIRST = ("test_notebooks.py", "test_losses.py", "test_sweep.py", "test_grad.py",
              "test_distributed.py", "test_run.py", "test_phase_preset.py",
              "test_algorithms_gd.py", "test_lazy_cg.py", "test_cli.py", "test_transition.py",
              "test_lazy.py", "test_executables.py", "test_network.py", "test_lazy_table.py",
              "test_docs.py", "test_algorithms_deflation.py", "test_representation.py",
              "test_algorithms_variant.py", "test_shapes.py", "test_metrics.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    # stable: tests keep their order inside a file; every worker computes the same order
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_terminal_summary(terminalreporter):
    """Seconds per test file (setup, call and teardown summed), longest first: the measure that
    orders LONG_FIRST and shows where the suite's time goes. The run's wall time, outcome counts
    and per-file seconds are kept in pytest's cache (``jaxtd/suite``), where
    ``benchmarks/goals.py`` reads the suite's row."""
    per_file: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if hasattr(report, "duration") and hasattr(report, "nodeid"):
                name = report.nodeid.split("::")[0]
                per_file[name] = per_file.get(name, 0.0) + report.duration
    for path in sorted(glob.glob(os.path.join(_hang_dir(), "*.txt"))):
        with open(path) as f:
            terminalreporter.write_sep("!", "a test hung in native code")
            terminalreporter.write_line(f.read())
    if not per_file:
        return
    ranked = sorted(per_file.items(), key=lambda kv: -kv[1])
    terminalreporter.write_sep("=", f"seconds per test file ({sum(per_file.values()):.0f} s)")
    for name, seconds in ranked[:20]:
        terminalreporter.write_line(f"{seconds:8.1f}s  {name}")
    _record_suite(terminalreporter, per_file)


def _record_suite(terminalreporter, per_file: dict[str, float]) -> None:
    config = terminalreporter.config
    if getattr(config, "cache", None) is None or hasattr(config, "workerinput"):
        return
    counts = {k: len(terminalreporter.stats.get(k, ())) for k in ("passed", "failed", "error",
                                                                   "skipped")}
    config.cache.set("jaxtd/suite", {
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.time() - _IMPORTED,
        "args": [str(a) for a in config.args],
        "keyword": config.getoption("keyword", ""), "markexpr": config.getoption("markexpr", ""),
        "workers": str(config.getoption("numprocesses", None) or 0),
        "cpus": os.cpu_count(), "load_after": os.getloadavg()[0], "counts": counts,
        "per_file_s": dict(sorted(per_file.items(), key=lambda kv: -kv[1]))})


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    shutil.rmtree(os.environ["JAXTD_TEST_CACHE"], ignore_errors=True)
    if not os.listdir(_hang_dir()):
        os.rmdir(_hang_dir())
