"""A sweep killed with SIGKILL mid-run resumes to exactly the uninterrupted result, and a chunk
copied in from another sub-sweep is recomputed instead of silently mixed in."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pandas as pd
import pytest

import jaxtd
from jaxtd import algorithms, targets
from jaxtd.results import ChunkWarning, Results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_SEEDS = 6


def problem(seeds=N_SEEDS):
    """The tiny sweep shared by the child process and the test (same arguments → same cells)."""
    target = targets.orthonormal(jax.random.key(0), 4, 2, 3)
    return dict(algorithm=algorithms.gd(0.1), target=target, seeds=seeds, widths=[2, 3],
                steps=20, record_every=10, chunk_size=1, progress=False)


# The child slows every chunk write down inside the atomic write (after the temporary file is
# written, before it is renamed), so the kill lands between chunks or in the middle of one.
_CHILD = """
import contextlib, sys, time
import jaxtd
from jaxtd import store
from tests.test_kill_resume import problem

original = store.atomic_write

@contextlib.contextmanager
def slow(path, mode="wb"):
    with original(path, mode) as f:
        yield f
        f.flush()
        if "chunk_" in str(path):
            time.sleep(0.4)

store.atomic_write = slow
p = problem()
jaxtd.sweep(p.pop("algorithm"), p.pop("target"), out_dir=sys.argv[1], **p)
print("finished", flush=True)
"""


def _chunks(out):
    folder = out / "chunks"
    if not folder.is_dir():
        return []
    return sorted(n for n in os.listdir(folder) if n.startswith("chunk_") and n.endswith(".npz"))


def _assert_same(res, ref):
    pd.testing.assert_frame_equal(res.rows, ref.rows, check_exact=True)
    assert sorted(res.histories) == sorted(ref.histories)
    for k, v in ref.histories.items():
        np.testing.assert_array_equal(res.histories[k], v, err_msg=k)


def _sweep(**kwargs):
    p = problem()
    return jaxtd.sweep(p.pop("algorithm"), p.pop("target"), **{**p, **kwargs})


@pytest.fixture(scope="module")
def reference():
    return _sweep()


@pytest.mark.timeout(420)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference):
    seed = random.randrange(10**6)
    kill_after = random.Random(seed).randint(1, N_SEEDS - 2)  # chunks written before the kill
    why = f"(random seed {seed}: kill after {kill_after} chunks)"
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while len(_chunks(out)) < kill_after:
            assert proc.poll() is None, f"child exited early {why}: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"no chunk {kill_after} within 300 s {why}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, why
    written = _chunks(out)
    stray = list(out.rglob(".tmp-*"))  # usually one: the chunk being written when killed
    assert kill_after <= len(written) < N_SEEDS, (written, why)
    assert not (out / "config.json").exists(), why
    with pytest.raises(FileNotFoundError, match="unfinished sweep"):
        Results.load(out)

    # resume in this process: the dead child's lock is gone, its temporaries are swept away,
    # its chunks are verified and reused, the rest is computed
    resumed = _sweep(out_dir=out)
    assert resumed.info["chunks_resumed"] == len(written), why
    assert not list(out.rglob(".tmp-*")), (stray, why)
    assert not (out / "rejected").exists(), why
    _assert_same(resumed, reference)
    _assert_same(Results.load(out), reference)


@pytest.mark.timeout(300)
def test_chunk_from_another_sub_sweep_is_recomputed(tmp_path, reference):
    """Two sub-sweeps (seeds 0-5 and 6-11) share chunk file names; a chunk copied from one into
    the other is refused on resume, set aside and recomputed, so every row stays right."""
    ours, theirs = tmp_path / "a", tmp_path / "b"
    _sweep(out_dir=ours)
    _sweep(out_dir=theirs, seeds=list(range(N_SEEDS, 2 * N_SEEDS)))
    for name in ("chunk_00001.npz", "chunk_00004.npz"):
        shutil.copy(theirs / "chunks" / name, ours / "chunks" / name)
    with pytest.warns(ChunkWarning, match="belongs to another sweep") as record:
        resumed = _sweep(out_dir=ours)
    assert len(record) == 2
    assert resumed.info["chunks_resumed"] == N_SEEDS - 2
    _assert_same(resumed, reference)
    _assert_same(Results.load(ours), reference)
    assert sorted(os.listdir(ours / "rejected")) == ["chunk_00001.npz", "chunk_00004.npz"]
