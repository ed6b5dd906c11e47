"""Fixed costs and throughput on whatever backend JAX sees, in one process (< 5 minutes).

    PYTHONPATH=. python3 benchmarks/accelerator.py [--quick] [--reference FILE] [--out DIR]

Runs from a source checkout (no install needed: GPU machines often have JAX preinstalled and no
package index). Prints, and saves under ``benchmarks/results/<device>.{txt,json}``:

1. the backend and device name;
2. the headline ``jaxtd run`` as a subprocess, wall seconds with an empty persistent compilation
   cache (cold) and again with the cache it filled (warm), with the CLI's own compile/run split;
3. grid throughput of plain GD, cells·steps/s with compilation excluded (the second of two
   identical sweeps, which compiles nothing): ``d=64, l=3, r=4``, widths ``{8,16,32,64,128}``,
   256 seeds × 2000 steps on an accelerator (16 × 200 on a CPU, or with ``--quick``);
4. loss+grad / bare matmul at ``(m, d, l) = (16384, 1024, 3)`` on an accelerator (``(4096, 512,
   3)`` on a CPU), both at full float32 precision;
5. whether the headline table agrees with a CPU reference (``--reference``, default
   ``benchmarks/results/headline_reference_cpu.csv``): the same success counts per (algorithm,
   width) and medians of the final error within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jaxtd  # noqa: E402
from jaxtd._precision import matmul  # noqa: E402
from _common import machine, median_time  # noqa: E402

REFERENCE = ROOT / "benchmarks" / "results" / "headline_reference_cpu.csv"
_LAST_LINE = re.compile(r"compiled (\d+) programs? in ([\d.]+) s, ran in ([\d.]+) s")


def _device_name() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}-{getattr(dev, 'device_kind', '') or 'device'}"


def headline(cache: Path, out: Path) -> dict:
    """Wall seconds of ``python -m jaxtd run --out OUT`` with ``XDG_CACHE_HOME=cache``."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jaxtd", "run", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"jaxtd run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    row = {"wall_s": wall}
    match = _LAST_LINE.search(proc.stdout + proc.stderr)
    if match:
        row.update(programs=int(match[1]), compile_s=float(match[2]), run_s=float(match[3]))
    return row


def agreement(results_csv: Path, reference_csv: Path) -> dict:
    """Success counts equal and medians within 10% per (algorithm, width) of the reference."""
    import pandas as pd
    if not reference_csv.is_file():
        return {"agrees": None, "why": f"no reference at {reference_csv}"}
    keys = ["algorithm", "width"]

    def table(path):
        df = pd.read_csv(path)
        df = df[df["final_relative_error"].notna()]
        return df.groupby(keys).agg(success=("success", "sum"),
                                    median=("final_relative_error", "median"))

    new, ref = table(results_csv), table(reference_csv)
    both = new.join(ref, lsuffix="_new", rsuffix="_ref", how="inner")
    counts = (both["success_new"] == both["success_ref"])
    medians = np.isclose(both["median_new"], both["median_ref"], rtol=0.10, atol=0.0)
    bad = both[~(counts & medians)]
    return {"agrees": bool(len(both) and bad.empty), "cells_compared": int(len(both)),
            "disagreeing": [f"{a} m={w}: success {r.success_new}/{r.success_ref}, median "
                            f"{r.median_new:.3g}/{r.median_ref:.3g}"
                            for (a, w), r in bad.iterrows()]}


def grid_throughput(seeds: int, steps: int) -> dict:
    target = jaxtd.targets.orthonormal(jax.random.key(0), 64, 4, 3)
    # ten records: the recorded metric costs several steps' worth at these widths, and this row
    # measures the steps
    kwargs = dict(seeds=seeds, widths=[8, 16, 32, 64, 128], steps=steps,
                  record_every=steps // 10)
    first = jaxtd.sweep(jaxtd.algorithms.gd(0.1), target, **kwargs)
    second = jaxtd.sweep(jaxtd.algorithms.gd(0.1), target, **kwargs)
    cells = len(second)
    return {"seeds": seeds, "steps": steps, "cells": cells,
            "compile_s": first.info["compile_seconds"], "programs": first.info["n_compiles"],
            "second_call_compiles": second.info["n_compiles"],
            "run_s": second.info["run_seconds"],
            "cells_steps_per_s": cells * steps / second.info["run_seconds"],
            "success_rate": float(second.rows["success"].mean())}


def loss_grad_ratio(m: int, d: int, order: int) -> dict:
    key = jax.random.key(1)
    w = jax.random.normal(key, (m, d), jnp.float32) / np.sqrt(d)
    model = jaxtd.SymCP(jnp.ones(m, jnp.float32), w, order)
    target = jaxtd.targets.random_unit(jax.random.key(2), d, 8, order)
    bare = jax.jit(lambda x: matmul(x, x.T))
    grad = jax.jit(jax.value_and_grad(jaxtd.loss))
    t_mm = median_time(bare, w, repeats=5)
    t_lg = median_time(grad, model, target, repeats=5)
    return {"shape": [m, d, order], "matmul_s": t_mm, "loss_grad_s": t_lg, "ratio": t_lg / t_mm}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small grid, skip the warm headline")
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    accel = jax.devices()[0].platform != "cpu"
    report = {"machine": machine(), "backend": jax.default_backend(), "device": _device_name()}
    lines = [f"backend {report['backend']}, device {report['device']}, jax {jax.__version__}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = headline(tmp / "cache", tmp / "cold")
        report["headline_cold"] = cold
        lines.append(f"headline jaxtd run, empty compile cache: {cold['wall_s']:.1f} s wall"
                     + (f" (compiled {cold['programs']} programs in {cold['compile_s']:.1f} s, "
                        f"ran in {cold['run_s']:.1f} s)" if "programs" in cold else ""))
        if not args.quick:
            warm = headline(tmp / "cache", tmp / "warm")
            report["headline_warm"] = warm
            lines.append(f"headline jaxtd run, warm compile cache:  {warm['wall_s']:.1f} s wall"
                         + (f" (compile {warm['compile_s']:.1f} s, run {warm['run_s']:.1f} s)"
                            if "programs" in warm else ""))
        agree = agreement(tmp / "cold" / "results.csv", Path(args.reference))
        report["headline_agrees_with_cpu"] = agree
        lines.append(f"headline table agrees with the CPU reference: {agree['agrees']}"
                     + (f" ({agree['cells_compared']} (algorithm, width) cells)"
                        if "cells_compared" in agree else f" ({agree.get('why')})")
                     + "".join(f"\n    {d}" for d in agree.get("disagreeing", [])))
    seeds, steps = (256, 2000) if accel and not args.quick else (16, 200)
    grid = grid_throughput(seeds, steps)
    report["grid"] = grid
    lines.append(f"grid d=64 l=3 r=4, {seeds} seeds x widths 8..128 x {steps} steps: "
                 f"{grid['cells_steps_per_s']:.3g} cells*steps/s (run {grid['run_s']:.2f} s; "
                 f"compile {grid['compile_s']:.1f} s for {grid['programs']} programs, second call "
                 f"compiled {grid['second_call_compiles']}); success {grid['success_rate']:.0%}")
    shape = (16384, 1024, 3) if accel and not args.quick else (4096, 512, 3)
    lg = loss_grad_ratio(*shape)
    report["loss_grad"] = lg
    lines.append(f"loss+grad / matmul at {tuple(shape)}: {lg['ratio']:.2f} "
                 f"({lg['loss_grad_s'] * 1e3:.2f} ms / {lg['matmul_s'] * 1e3:.2f} ms)")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", report["device"]).strip("-").lower()
    (out / f"{stem}.txt").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nsaved {out / (stem + '.txt')} and .json")
    return report


if __name__ == "__main__":
    main()
