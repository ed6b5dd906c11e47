"""Sweep benchmark: a grid in one call vs a Python loop of standalone runs.

    python benchmarks/sweep.py [--quick]

Rows (ratios from one run; compilation always reported apart from compute):

- ``grid_vs_loop``: 64 seeds × widths {2, 4, 8, 16}, ``d=16, l=3, r=2``, 1000 plain-GD steps.
  ``jaxtd.sweep`` (one compiled computation per width bucket) against a Python loop of standalone
  jitted ``jaxtd.run`` calls (one compilation per width, warmed up first). Goal ≥ 4× on 2 CPU cores.
- ``padding_overhead``: widths {2, 3, 4, 6, 8, 12, 16} (where buckets do share a computation):
  the pow2-bucketed masked grid (and a single bucket padded to 16) against the sum of exact-width
  grids. Goal ≤ 1.3×.
- ``cells_steps_per_s``: the grid of the first row at ``d=64, l=3`` and ``d=32, l=4``.

``--quick`` shrinks seeds and steps for a smoke test; its figures are not the goal's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxtd  # noqa: E402
from jaxtd import algorithms  # noqa: E402
from jaxtd import key_for_seed, sweep  # noqa: E402
from jaxtd import run as standalone_run  # noqa: E402

from _common import block, machine  # noqa: E402

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class _Compiles:
    """Count and time XLA backend compilations (JAX's monitoring event) inside a block."""

    def __enter__(self):
        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, name, secs, **_):
        if name == BACKEND_COMPILE:
            self.count += 1
            self.seconds += secs

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _target(dim, order, rank=2):
    return jaxtd.targets.orthonormal(jax.random.PRNGKey(1), dim, rank, order)


def _grid(algorithm, target, seeds, widths, steps, bucketing="pow2"):
    with _Compiles() as c:
        res = sweep(algorithm, target, seeds=seeds, widths=widths, steps=steps,
                    bucketing=bucketing, progress=False)
    return res, c


def _loop(algorithm, target, seeds, widths, steps):
    """Standalone jitted runs, one per cell; compilation (first call per width) timed apart."""
    compile_s, compute_s = 0.0, 0.0
    with _Compiles() as c:
        for m in widths:
            t0 = time.perf_counter()
            block(standalone_run(algorithm, key_for_seed(0), target, width=m, steps=steps))
            compile_s += time.perf_counter() - t0  # first call: trace + compile + one run
            t0 = time.perf_counter()
            for s in range(seeds):
                block(standalone_run(algorithm, key_for_seed(s), target, width=m, steps=steps))
            compute_s += time.perf_counter() - t0
    return compute_s, compile_s, c


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 seeds, 200 steps (smoke test)")
    args = p.parse_args(argv)
    seeds, steps = (8, 200) if args.quick else (64, 1000)
    widths = [2, 4, 8, 16]
    algorithm = algorithms.gd(0.1)
    out = {}
    print(f"machine: {machine()}")
    print(f"grid: {seeds} seeds x widths {widths}, {steps} GD steps, r=2")

    target = _target(16, 3)
    res, gc = _grid(algorithm, target, seeds, widths, steps)
    loop_s, loop_compile_s, lc = _loop(algorithm, target, seeds, widths, steps)
    grid_s = res.info["run_seconds"]
    out["grid_vs_loop"] = loop_s / grid_s
    out["grid_seconds"] = grid_s
    out["loop_seconds"] = loop_s
    out["grid_compiles"] = res.info["n_compiles"]
    out["grid_backend_compiles"] = gc.count
    out["grid_compile_seconds"] = res.info["compile_seconds"]
    out["loop_backend_compiles"] = lc.count
    out["loop_compile_seconds"] = loop_compile_s
    print(f"grid_vs_loop (d=16, l=3): {out['grid_vs_loop']:.2f}x  (grid {grid_s:.2f} s, loop "
          f"{loop_s:.2f} s; goal >= 4x)")
    print(f"  compiles: grid {out['grid_compiles']} ({gc.count} XLA, "
          f"{out['grid_compile_seconds']:.1f} s), loop {lc.count} XLA ({loop_compile_s:.1f} s)")

    mixed = [2, 3, 4, 6, 8, 12, 16]
    timed = {b: _grid(algorithm, target, seeds, mixed, steps, bucketing=b)[0]
             for b in ("exact", "pow2", "single")}
    exact_s = timed["exact"].info["run_seconds"]  # = the sum of the exact-width grids
    for b in ("pow2", "single"):
        out[f"padding_overhead_{b}"] = timed[b].info["run_seconds"] / exact_s
        print(f"padding_overhead_{b} (widths {mixed}): {out[f'padding_overhead_{b}']:.2f}x  "
              f"({timed[b].info['n_compiles']} compiles vs {timed['exact'].info['n_compiles']}; "
              "goal <= 1.3x)")

    for dim, order in ((64, 3), (32, 4)):
        res, _ = _grid(algorithm, _target(dim, order), seeds, widths, steps)
        rate = len(res) * steps / res.info["run_seconds"]
        out[f"cells_steps_per_s_d{dim}_l{order}"] = rate
        print(f"cells_steps_per_s (d={dim}, l={order}): {rate:.3g}  "
              f"({len(res)} cells in {res.info['run_seconds']:.2f} s, compile "
              f"{res.info['compile_seconds']:.1f} s)")
    return out


if __name__ == "__main__":
    main()
