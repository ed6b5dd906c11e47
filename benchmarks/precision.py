"""Float32 vs float64: time ratio and final-error agreement for one grid.

    python benchmarks/precision.py [--quick] [--json out.json]

One sweep (plain GD, orthonormal target, ``l=3, d=32, r=3``, 16 seeds × widths {4, 8, 16, 32}, 3000 steps) runs
first in float32 (the default) and then with ``jax_enable_x64`` on, both from the same keys. Printed:
the float64/float32 time ratio (compilation excluded) and how far apart the final relative errors
are: identical success flags, and for the successful cells the largest difference of final errors
(both runs converge towards the same minimizer; float32 stops at its own noise floor).
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

import jaxtd


def _grid(seeds: int, widths, steps: int):
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(7), 32, 3, 3)
    algorithm = jaxtd.algorithms.gd(0.1, model="plain", init_scale=1e-2)
    res = jaxtd.sweep(algorithm, target, seeds=seeds, widths=widths, steps=steps, progress=False)
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 seeds, widths {4, 16}")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    seeds, steps, widths = (4, 3000, [4, 16]) if args.quick else (16, 3000, [4, 8, 16, 32])
    previous = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        r32 = _grid(seeds, widths, steps)
        jax.config.update("jax_enable_x64", True)
        r64 = _grid(seeds, widths, steps)
    finally:
        jax.config.update("jax_enable_x64", previous)
    t32, t64 = r32.info["run_seconds"], r64.info["run_seconds"]
    e32 = r32.to_pandas()["final_relative_error"].to_numpy()
    e64 = r64.to_pandas()["final_relative_error"].to_numpy()
    s32 = r32.to_pandas()["success"].to_numpy()
    s64 = r64.to_pandas()["success"].to_numpy()
    both = s32 & s64
    out = {
        "float32_seconds": t32, "float64_seconds": t64, "time_ratio_f64_over_f32": t64 / t32,
        "cells": int(e32.size), "success_agreement": float(np.mean(s32 == s64)),
        "max_abs_error_difference_successful": float(np.max(np.abs(e32 - e64)[both])) if both.any() else None,
        "median_error_float32": float(np.median(e32)), "median_error_float64": float(np.median(e64)),
    }
    print(f"grid: {seeds} seeds x widths {widths}, {steps} GD steps, l=3 d=32 r=3")
    print(f"float32 {t32:.3f} s, float64 {t64:.3f} s: float64/float32 time ratio "
          f"{out['time_ratio_f64_over_f32']:.2f}x")
    print(f"success flags agree in {out['success_agreement']:.0%} of {out['cells']} cells; "
          f"max |err32 - err64| over successful cells = {out['max_abs_error_difference_successful']}")
    print(f"median final error: float32 {out['median_error_float32']:.3e}, "
          f"float64 {out['median_error_float64']:.3e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
