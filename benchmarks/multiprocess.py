"""Two processes vs one on the same machine: a small ``jaxtd.sweep`` under JAX's multi-controller
runtime (``jaxtd.distributed``, CPU collectives over gloo on localhost) against the same sweep in
one process.

    python benchmarks/multiprocess.py [--quick] [--processes 2]

Each process runs the same sweep (gd, ``l = 3, d = 16, r = 2``, 64 seeds x widths ``{4, 8, 16}``,
6000 steps; ``--quick``: 16 seeds, 600 steps); with 2 processes the seed axis is sharded over
both (one CPU device each) and the results are gathered, so every process returns the whole
table. It prints, for 1 and for N processes, the sweep's compile and run seconds apart
(``Results.info``: compile from the first of 3 calls, run the fastest of them; the slower
process bounds the wall time, so the maximum over the processes is shown) and the ratio ``N-process run / 1-process run``.

On one machine with 2 cores the two processes share the cores that one process already uses
(XLA's CPU backend runs one process's work on every core), so the expected ratio is about 1x:
multi-process sweeps pay off across machines (or one process per GPU), not within one CPU. A third
row runs one process with as many CPU devices (``--xla_force_host_platform_device_count``): the
seed axis sharded inside one process, without collectives between processes. On a machine that
other jobs share, the OS scheduler's share per process blurs these ratios (compare runs made
under the same load).
``main(argv)`` returns ``{row: {column: value}}`` for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = dict(order=3, dim=16, rank=2)
REPEATS = 3  # sweep calls per process: compile seconds from the first, run seconds the fastest


def _worker(pid: int, nproc: int, port: int, seeds: int, steps: int) -> None:
    """One process: connect (``nproc > 1``), run the sweep, print a JSON line of timings."""
    sys.path.insert(0, ROOT)
    from jaxtd import distributed
    if nproc > 1:
        distributed.initialize(f"127.0.0.1:{port}", nproc, pid, initialization_timeout=120)
    import jax

    import jaxtd
    from jaxtd import algorithms
    from jaxtd import sweep
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(0), SIZE["dim"], SIZE["rank"],
                                       SIZE["order"])
    runs = []
    for _ in range(REPEATS):  # the first call compiles, the later ones reuse its programs
        t0 = time.perf_counter()
        res = sweep(algorithms.gd(0.2, init_scale=0.3), target, seeds=seeds, widths=[4, 8, 16],
                    steps=steps, record_every=steps // 10, progress=False)
        runs.append((time.perf_counter() - t0, res.info))
    print("TIMING " + json.dumps({
        "pid": pid, "wall_s": runs[0][0], "compile_s": float(runs[0][1]["compile_seconds"]),
        # the fastest call: other jobs on a shared machine only ever slow a run down
        "run_s": min(float(info["run_seconds"]) for _, info in runs),
        "n_compiles": int(runs[0][1]["n_compiles"]), "cells": len(res),
        "devices": len(jax.devices()), "success": float(res.rows["success"].mean())}),
        flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc: int, seeds: int, steps: int, devices: int = 1) -> list[dict]:
    """Run ``nproc`` worker processes at once, each with ``devices`` CPU devices; their timing
    dicts."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)  # one CPU device per process, as a plain `python` has
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    port = _free_port()
    cmd = lambda pid: [sys.executable, os.path.abspath(__file__), "--worker", str(pid),
                       str(nproc), str(port), str(seeds), str(steps)]
    procs = [subprocess.Popen(cmd(pid), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for pid in range(nproc)]
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed ({p.returncode}): {stderr[-1500:]}")
            out += [json.loads(line[7:]) for line in stdout.splitlines()
                    if line.startswith("TIMING ")]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 seeds, 600 steps")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--worker", nargs=5, type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return {}
    seeds = args.seeds or (16 if args.quick else 64)
    steps = args.steps or (600 if args.quick else 6000)
    print(f"{args.processes} processes vs 1 on this machine ({os.cpu_count()} cpus): gd sweep "
          f"l={SIZE['order']} d={SIZE['dim']} r={SIZE['rank']}, {seeds} seeds x widths "
          f"{{4, 8, 16}} x {steps} steps")
    head = f"{'proc x dev':>9} {'compile s':>10} {'run s':>8} {'wall s':>8} {'cells':>6} {'success':>8}"
    print(head)
    print("-" * len(head))
    results = {}
    for n, dev in ((1, 1), (args.processes, 1), (1, args.processes)):
        rows = _launch(n, seeds, steps, dev)
        row = {"processes": n, "compile_s": max(r["compile_s"] for r in rows),
               "run_s": max(r["run_s"] for r in rows), "wall_s": max(r["wall_s"] for r in rows),
               "cells": rows[0]["cells"], "success": rows[0]["success"],
               "devices": rows[0]["devices"]}
        results[f"processes_{n}" + (f"_devices_{dev}" if dev > 1 else "")] = row
        print(f"{f'{n} x {dev}dev':>9} {row['compile_s']:>10.2f} {row['run_s']:>8.2f} {row['wall_s']:>8.2f} "
              f"{row['cells']:>6} {row['success']:>8.2f}", flush=True)
    one, many = results["processes_1"], results[f"processes_{args.processes}"]
    ratio = many["run_s"] / one["run_s"]
    results["ratio"] = {"run": ratio, "compile": many["compile_s"] / one["compile_s"]}
    dev = results[f"processes_1_devices_{args.processes}"]
    results["ratio"]["run_one_process_devices"] = dev["run_s"] / one["run_s"]
    print(f"run ratio {args.processes} processes / 1: {ratio:.2f}x (compile "
          f"{results['ratio']['compile']:.2f}x); expected ~1x on one shared CPU")
    print(f"run ratio 1 process with {args.processes} CPU devices / 1 device: "
          f"{dev['run_s'] / one['run_s']:.2f}x")
    return results


if __name__ == "__main__":
    main()
