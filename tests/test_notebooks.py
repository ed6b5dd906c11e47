"""Every notebook in notebooks/ executes top to bottom in small mode (JAXTD_SMALL=1).

Why the kernel is set up the way it is (each point once made this test hang):

- ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``. On a 2-core machine XLA's CPU intra-op pool
  has two workers. A batched ``eigh`` (the lazy least-squares solve of ``jaxtd.lazy``, mapped
  over widths) splits its batch onto that same pool and blocks until the pieces finish; when
  the two independent ``eigh`` of one solve run at once, both workers block waiting for pieces
  that no free worker can run. The kernel then sits idle forever inside ``np.asarray`` of the
  result (seen in gdb: two ``tf_XLAEigen`` threads in ``lapack_dsyevd_ffi`` ->
  ``ParallelBatchMap`` -> ``BlockingCounter::Wait``). It depends on timing, so it showed up
  under load (the full suite) and not alone. Without the multi-threaded Eigen pool the batch
  runs inline and the deadlock cannot happen.
- One BLAS/OpenMP thread: the kernel shares two cores with pytest.
- The kernel is this interpreter (a kernel spec written for ``sys.executable``), never whatever
  ``python3`` spec happens to be installed.
- Every cell has a timeout, and it can fire: the kernel manager is asynchronous (a blocking one
  gives nbclient a blocking client whose ``get_msg`` stalls the event loop that runs the
  timeout; a stuck cell then took 10 minutes to fail). The kernel is killed and its channels
  closed in a ``finally``, and pytest-timeout bounds the whole notebook.
  ``test_a_stuck_cell_fails_fast_and_leaves_no_kernel`` checks all of it.

The notebooks are committed executed in full mode, so what a repository browser shows is the
run their text describes; the suite executes them in small mode. ``python tests/test_notebooks.py
[notebook ...]`` re-executes them (full mode) and writes the outputs back (``--small``: small).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 180      # one cell; small mode needs well under a minute per notebook
NOTEBOOK_TIMEOUT_S = 420  # the whole notebook, kernel start and shutdown included
KERNEL = "jaxtd-test-python"


def kernel_env(small: bool = True) -> dict[str, str]:
    """The kernel's environment: small mode (or full), headless matplotlib, no nested XLA
    thread pool."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_cpu_multi_thread_eigen")]
    env.update(JAXTD_SMALL="1" if small else "0", MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
               XLA_FLAGS=" ".join(flags + ["--xla_cpu_multi_thread_eigen=false"]),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


def _kernel_manager(spec_root: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernel spec runs this interpreter (the venv's).

    Asynchronous, as nbclient expects: a blocking manager hands nbclient a blocking client whose
    ``get_msg`` blocks its event loop, so the cell timeout could never fire."""
    from ipykernel.kernelspec import write_kernel_spec
    write_kernel_spec(spec_root / KERNEL, overrides={"display_name": KERNEL})
    return AsyncKernelManager(kernel_name=KERNEL,
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_root)]))


def execute(nb: nbformat.NotebookNode, cwd: Path, spec_root: Path,
            cell_timeout: int = CELL_TIMEOUT_S, small: bool = True) -> nbformat.NotebookNode:
    """Run ``nb`` (a copy) top to bottom in a fresh kernel; the kernel is always killed and its
    channels closed, whatever happens (a stuck kernel is killed, never waited for)."""
    nb = copy.deepcopy(nb)
    km = _kernel_manager(spec_root)
    client = NotebookClient(nb, km=km, timeout=cell_timeout, startup_timeout=120,
                            shutdown_kernel="immediate", kernel_name=KERNEL,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(env=kernel_env(small), cwd=str(cwd))
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        if proc is not None and proc.poll() is None:  # SIGKILL first: a deadlocked kernel
            proc.kill()                               # would not answer a shutdown request
            proc.wait(timeout=30)
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        run_sync(km.cleanup_resources)()
    return nb


def test_a_stuck_cell_fails_fast_and_leaves_no_kernel(tmp_path):
    from nbclient.exceptions import CellTimeoutError
    import time
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os; open('pid', 'w').write(str(os.getpid()))"),
        nbformat.v4.new_code_cell("import time; time.sleep(600)")])
    start = time.monotonic()
    with pytest.raises(CellTimeoutError):
        execute(nb, tmp_path, tmp_path, cell_timeout=3)
    assert time.monotonic() - start < 90
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", "the kernel survived"


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_lazy_threshold.ipynb", "03_beyond_lazy.ipynb",
            "04_deflation.ipynb", "05_init_scale.ipynb", "06_network.ipynb"} <= names, names


def test_kernel_env_disables_the_nested_pool(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/tmp/x")
    env = kernel_env()
    assert env["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x",
                                        "--xla_cpu_multi_thread_eigen=false"]
    assert env["JAXTD_SMALL"] == "1" and env["MPLBACKEND"] == "Agg"


def _figure_outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]


def _bare_figure_reprs(nb):
    """Outputs that print a figure's repr (``<Figure size ...>``) instead of drawing it."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "<Figure size" in str(o.get("data", {}).get("text/plain", ""))
            and "image/png" not in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed(path):
    """Committed with outputs from one clean top-to-bottom full-mode run (the run its text
    describes; its first code cell prints ``mode: full``), figures as PNG, and no warning that
    shows a local path."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: re-run it top to bottom (python tests/test_notebooks.py {path})"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _figure_outputs(nb), f"{path.name}: no figure rendered inline"
    assert not _bare_figure_reprs(nb), f"{path.name}: a figure printed as text; display() it"
    assert "PRNGKey" not in "".join(c.source for c in code), "use typed keys (jax.random.key)"
    assert path.stat().st_size < 1_500_000, f"{path.name}: outputs too large to commit"
    streams = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "mode: full" in streams, f"{path.name}: commit the full run (its text describes it)"
    assert "Warning" not in streams and "site-packages" not in streams, \
        f"{path.name}: a warning in the committed outputs"


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_in_small_mode(path, tmp_path):
    nb = execute(nbformat.read(path, as_version=4), path.parent, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert _figure_outputs(nb) and not _bare_figure_reprs(nb)


if __name__ == "__main__":  # re-execute notebooks (full mode) and write the outputs back
    import tempfile
    small = "--small" in sys.argv
    names = [a for a in sys.argv[1:] if a != "--small"]
    for path in (Path(p) for p in names) if names else NOTEBOOKS:
        with tempfile.TemporaryDirectory() as tmp:
            out = execute(nbformat.read(path, as_version=4), path.parent, Path(tmp),
                          cell_timeout=CELL_TIMEOUT_S if small else 3600, small=small)
        nbformat.write(out, path)
        print("executed", path)
