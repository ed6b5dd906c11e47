"""jaxtd.sweep over two processes (JAX's multi-controller runtime on localhost) equals the same
sweep in one process; only process 0 writes; a resumed two-process run reuses the saved chunks.

The oracle is a single-process sweep run in the test process (itself checked cell by cell against
standalone runs in test_sweep.py). Each process of the two-process run is a fresh Python
subprocess, since ``jax.distributed.initialize`` must come before JAX starts its backends.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest

import jaxtd
from jaxtd import algorithms, distributed
from jaxtd.results import Results
from jaxtd import sweep

from tests.children import without_device_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, ORDER, RANK = 4, 3, 2
KWARGS = dict(seeds=4, widths=[2, 3], steps=40, record_every=10, chunk_size=2)

# One process of the two. argv: process id, port, out_dir ("-": none), result folder, mode.
# `jaxtd.distributed` is loaded from its file before the package: `import jaxtd` must not start
# JAX's backends before `initialize` (the module itself imports only jax and numpy).
WORKER = textwrap.dedent("""
    import importlib.util, json, sys, time
    pid, port, out_dir, result_dir, mode = sys.argv[1:6]
    pid = int(pid)
    spec = importlib.util.spec_from_file_location("_jaxtd_distributed", sys.argv[6])
    distributed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(distributed)
    distributed.initialize(f"127.0.0.1:{port}", 2, pid, initialization_timeout=120)

    import jax
    import jaxtd
    from jaxtd import algorithms
    from jaxtd import sweep

    kwargs = json.loads(sys.argv[7])
    if mode == "mismatch" and pid == 1:
        kwargs["steps"] = 2 * kwargs["steps"]
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(7), DIM, RANK, ORDER)
    summary = {"main": distributed.is_main_process(), "devices": len(jax.devices())}
    try:
        res = sweep(algorithms.gd(0.2, init_scale=0.3), target,
                    out_dir=None if out_dir == "-" else out_dir, **kwargs)
    except ValueError as err:
        summary["error"] = str(err)
    else:
        res.save(f"{result_dir}/p{pid}")
        summary.update({k: res.info[k] for k in ("chunks_resumed", "n_devices", "n_processes",
                                                 "seed_shards")})
    try:
        distributed.initialize(f"127.0.0.1:{port}", 2, pid)
    except RuntimeError as err:
        summary["twice"] = str(err)
    print("SUMMARY " + json.dumps(summary), flush=True)
""").replace("DIM, RANK, ORDER", f"{DIM}, {RANK}, {ORDER}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, out_dirs, result_dir, mode="run", timeout=240):
    """Run the worker as processes 0 and 1; their parsed summaries (killed in any case)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env["XLA_FLAGS"] = without_device_count(env.get("XLA_FLAGS", ""))
    port = _free_port()
    procs = []
    try:
        for pid in (0, 1):
            procs.append(subprocess.Popen(
                [sys.executable, str(script), str(pid), str(port), str(out_dirs[pid]),
                 str(result_dir), mode, os.path.join(ROOT, "jaxtd", "distributed.py"),
                 json.dumps(KWARGS)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    summaries = []
    for pid, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {pid}:\n{err[-4000:]}"
        line = [ln for ln in out.splitlines() if ln.startswith("SUMMARY ")]
        assert line, f"process {pid} printed no summary:\n{out[-2000:]}\n{err[-2000:]}"
        summaries.append(json.loads(line[-1][len("SUMMARY "):]))
    return summaries


@pytest.fixture(scope="module")
def reference():
    """The same sweep in this single process (one device)."""
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(7), DIM, RANK, ORDER)
    return sweep(algorithms.gd(0.2, init_scale=0.3), target, **KWARGS)


def _assert_same_results(got: Results, want: Results):
    assert list(got.rows.columns) == list(want.rows.columns)
    floats = [c for c in want.rows.columns if want.rows[c].dtype.kind == "f"]
    others = [c for c in want.rows.columns if c not in floats]
    pd.testing.assert_frame_equal(got.rows[others], want.rows[others])  # incl. success flags
    np.testing.assert_allclose(got.rows[floats].to_numpy(), want.rows[floats].to_numpy(),
                               rtol=1e-6, atol=1e-6)
    assert sorted(got.histories) == sorted(want.histories)
    for k, v in want.histories.items():
        # float32 lanes may round differently with fewer seeds per device (an ulp or so)
        np.testing.assert_allclose(got.histories[k], v, rtol=1e-6, atol=1e-6, err_msg=k)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


@pytest.mark.timeout(600)
def test_two_processes_equal_one_and_resume(tmp_path, reference):
    out0, out1 = tmp_path / "out0", tmp_path / "out1"
    summaries = _two_processes(tmp_path, (out0, out1), tmp_path / "first")
    for pid, s in enumerate(summaries):
        assert s["main"] == (pid == 0) and s["devices"] == 2
        assert s["n_processes"] == 2 and s["n_devices"] == 2 and s["seed_shards"] == 2
        assert s["chunks_resumed"] == 0
        assert "already called" in s["twice"]
        _assert_same_results(Results.load(tmp_path / "first" / f"p{pid}"), reference)
    # only process 0 wrote: its out_dir holds the sweep, process 1's was never created
    assert not out1.exists()
    written = _files(out0)
    assert "chunks/chunk_00000.npz" in written and "chunks/chunk_00001.npz" in written
    _assert_same_results(Results.load(out0), reference)
    # the sweep is not trivially constant: cells differ, some succeed and some do not
    err = reference.rows["final_relative_error"].to_numpy()
    assert np.ptp(err) > 1e-2 and 0 < reference.rows["success"].sum() < len(err)

    # resume: chunk 0 is reused (process 0 reads it and sends it), chunk 1 is recomputed
    os.remove(out0 / "chunks" / "chunk_00001.npz")
    kept = (out0 / "chunks" / "chunk_00000.npz").stat().st_mtime_ns
    summaries = _two_processes(tmp_path, (out0, out1), tmp_path / "second")
    for pid, s in enumerate(summaries):
        assert s["chunks_resumed"] == 1
        _assert_same_results(Results.load(tmp_path / "second" / f"p{pid}"), reference)
    assert (out0 / "chunks" / "chunk_00000.npz").stat().st_mtime_ns == kept
    assert (out0 / "chunks" / "chunk_00001.npz").exists() and not out1.exists()

    # everything saved: a third run reuses both chunks
    summaries = _two_processes(tmp_path, (out0, out1), tmp_path / "third")
    assert [s["chunks_resumed"] for s in summaries] == [2, 2]
    for pid in (0, 1):
        _assert_same_results(Results.load(tmp_path / "third" / f"p{pid}"), reference)


@pytest.mark.timeout(300)
def test_different_arguments_raise_in_every_process(tmp_path):
    summaries = _two_processes(tmp_path, (tmp_path / "out0", "-"), tmp_path / "res",
                               mode="mismatch")
    for s in summaries:
        assert "processes [1] were given a different sweep configuration" in s["error"]
    assert not (tmp_path / "out0").exists()  # refused before process 0 opened its out_dir


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), ValueError,
     "is not HOST:PORT"),
    (dict(coordinator_address="localhost:99999", num_processes=2, process_id=0), ValueError,
     "give a port number in 1..65535"),
    (dict(coordinator_address=":1234", num_processes=2, process_id=0), ValueError,
     "is not HOST:PORT"),
    (dict(coordinator_address=1234, num_processes=2, process_id=0), TypeError, "HOST:PORT"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), ValueError,
     r"process_id=2 is out of range for num_processes=2; use 0..1"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=-1), ValueError,
     "process_id must be >= 0"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0), ValueError,
     "num_processes must be >= 1"),
    (dict(coordinator_address="localhost:1234", num_processes=2.0, process_id=0), TypeError,
     "num_processes must be an int"),
    (dict(coordinator_address="localhost:1234", num_processes=2), ValueError,
     r"missing \['process_id'\]"),
    (dict(num_processes=2, process_id=0, auto=True), ValueError, "auto=True reads the cluster"),
    (dict(auto=True, cpu_collectives="nccl"), ValueError, "cpu_collectives must be one of"),
])
def test_initialize_rejects_bad_arguments_before_connecting(kwargs, error, match):
    with pytest.raises(error, match=match):
        distributed.initialize(**kwargs)
    assert not jax.distributed.is_initialized()


def test_single_process_helpers():
    assert distributed.is_main_process() and distributed.process_count() == 1
    assert not distributed.spans_processes(jax.devices())
    x = {"a": np.arange(3, dtype=np.int32), "k": jax.random.key(3)}
    mesh = jax.make_mesh((1,), ("seed",), devices=jax.devices()[:1])
    out = distributed.global_array(x, jax.sharding.NamedSharding(mesh,
                                                                 jax.sharding.PartitionSpec()))
    np.testing.assert_array_equal(distributed.gather(out["a"]), x["a"])
    np.testing.assert_array_equal(jax.random.key_data(out["k"]), jax.random.key_data(x["k"]))
    assert distributed.broadcast_bytes(b"plan") == b"plan"
    assert distributed.broadcast_json({"done": [1]}) == {"done": [1]}
    distributed.agree("same", "configuration")  # one process always agrees


ERRORS = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("_jaxtd_distributed", sys.argv[1])
    distributed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(distributed)
    import jax
    try:  # no SLURM, Open MPI or TPU environment here
        distributed.initialize(auto=True, initialization_timeout=5)
    except ValueError as err:
        print("AUTO", err)
    jax.numpy.zeros(1).block_until_ready()  # JAX has started: too late to connect
    try:
        distributed.initialize("127.0.0.1:1", 1, 0)
    except RuntimeError as err:
        print("LATE", err)
""")


@pytest.mark.timeout(120)
def test_initialize_auto_without_cluster_and_after_jax_started():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for var in [v for v in env if v.startswith(("SLURM_", "OMPI_", "TPU_"))]:
        env.pop(var)
    proc = subprocess.run([sys.executable, "-c", ERRORS,
                           os.path.join(ROOT, "jaxtd", "distributed.py")],
                          env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("AUTO auto=True found no cluster environment") for ln in lines), \
        proc.stdout
    assert any(ln.startswith("LATE jaxtd.distributed.initialize must come before any other JAX")
               for ln in lines), proc.stdout


def test_import_does_not_start_jax():
    """`import jaxtd` (and its CLI) must leave JAX unstarted, or the distributed runtime could
    no longer be initialized by `jaxtd run --coordinator ...`."""
    code = textwrap.dedent(f"""
        import jaxtd, jaxtd.cli
        from jaxtd import distributed
        distributed.initialize("127.0.0.1:{_free_port()}", 1, 0, initialization_timeout=60)
        print("OK", distributed.process_count())
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK 1" in proc.stdout


@pytest.mark.timeout(600)
def test_cli_two_processes_write_the_single_process_table(tmp_path):
    """The contract flags: `jaxtd run --coordinator HOST:PORT --num-processes 2 --process-id I`
    in two processes gives process 0 a results.csv equal to a one-process `jaxtd run`."""
    config = tmp_path / "tiny.toml"
    config.write_text(textwrap.dedent("""
        name = "tiny"
        [target]
        order = 3
        dim = 4
        rank = 2
        [sweep]
        algorithms = ["gd"]
        widths = [2, 3]
        seeds = 4
        steps = 40
        success_threshold = 1e-2
        record_every = 10
        chunk_size = 2
        [gd]
        init_scale = 0.3
        learning_rate = 0.2
    """))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}
    env["XLA_FLAGS"] = without_device_count(env.get("XLA_FLAGS", ""))
    cli = [sys.executable, "-m", "jaxtd", "run", str(config), "--no-compile-cache"]
    single = subprocess.run(cli + ["--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    port = _free_port()
    procs = [subprocess.Popen(cli + ["--out", str(tmp_path / f"two-{i}"), "--coordinator",
                                     f"127.0.0.1:{port}", "--num-processes", "2",
                                     "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert not (tmp_path / "two-1").exists()  # only process 0 writes (into process 0's --out)
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    two = pd.read_csv(tmp_path / "two-0" / "results.csv")
    assert list(one.columns) == list(two.columns) and len(one) == len(two) == 8
    for col in one.columns:
        if pd.api.types.is_float_dtype(one[col]):
            np.testing.assert_allclose(two[col], one[col], rtol=1e-5, atol=1e-7, err_msg=col)
        else:
            assert (two[col] == one[col]).all(), col
