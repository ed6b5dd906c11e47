"""The suite's own safety net: a test stuck in native code ends with its stacks printed instead
of hanging the run (tests/conftest.py's watchdog)."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

STUCK = textwrap.dedent("""
    import jax
    import jax.numpy as jnp
    import pytest


    @pytest.mark.timeout(1)
    def test_stuck_in_native_code():
        # minutes of XLA work: pytest-timeout's signal cannot interrupt it
        def inner(x):
            return jax.lax.fori_loop(0, 1000, lambda j, y: jnp.sin(y) + 1.0, x)
        run = jax.jit(lambda n: jax.lax.fori_loop(0, n, lambda i, x: inner(x), jnp.float32(0.5)))
        run(2**31 - 1).block_until_ready()


    def test_never_reached():
        pass
""")


@pytest.mark.timeout(240)
def test_a_test_stuck_in_native_code_ends_the_run_with_its_stacks(tmp_path):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_stuck.py").write_text(STUCK)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 300\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "JAXTD_TEST_"))}  # the child's session is its own
    # the child's stack dump and session cache folders go under tmp_path, not the machine's /tmp
    (tmp_path / "tmp").mkdir()
    env.update(JAXTD_TEST_GRACE_S="2", JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=200)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    assert "worker 'gw0' crashed while running 'test_stuck.py::test_stuck_in_native_code'" in out
    assert "a test hung in native code" in out
    assert "test_stuck.py::test_stuck_in_native_code ran past its 1 s timeout + 2 s" in out
    assert "in test_stuck_in_native_code" in out  # the test's frame in the stack dump
    assert "1 failed" in out and "passed" not in out.splitlines()[-1]  # the run ended there
    dumps = list((tmp_path / "tmp").glob("jaxtd-test-hangs-*/*.txt"))
    assert len(dumps) == 1 and "test_stuck_in_native_code" in dumps[0].read_text()
