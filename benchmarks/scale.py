"""Scale without ``d^l``: gradient descent where the dense tensor could never exist.

Each case runs in a fresh subprocess and reports its peak resident memory (``VmHWM``) and how much
of it the run added over the process after importing JAX (``rss_growth_mb``); memory must stay
``O(m^2 + m d)``, printed beside for comparison, never the ``d^l`` of the dense tensor.

    python benchmarks/scale.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {"d1024_l4_m256": (1024, 4, 256), "d4096_l3_m512": (4096, 3, 512)}
QUICK = {"d1024_l4_m256": (1024, 4, 256)}


def _hwm_kb() -> int:
    """Peak resident set of this process in KiB. ``VmHWM`` rather than ``ru_maxrss``: Linux carries
    ``ru_maxrss`` across ``fork``/``exec``, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(dim: int, order: int, width: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxtd

    base = _hwm_kb()
    key_t, key_w = jax.random.split(jax.random.PRNGKey(0))
    target = jaxtd.targets.orthonormal(key_t, dim, 4, order)
    w0 = jaxtd.init_factors(key_w, width, dim, scale="small", delta=1e-2)
    ones = jnp.ones((width,), w0.dtype)

    def loss(w):
        return jaxtd.loss(jaxtd.SymCP(ones, w, order), target)

    @jax.jit
    def fit(w):
        def step(w, _):
            return w - 0.1 * jax.grad(loss)(w), None
        w = jax.lax.scan(step, w, None, length=steps)[0]
        return w, jaxtd.relative_error(jaxtd.SymCP(ones, w, order), target)

    t0 = time.perf_counter()
    w, err = fit(w0)
    err = float(err)
    seconds = time.perf_counter() - t0
    peak_kb = _hwm_kb()
    return {"seconds": seconds, "relative_error": err, "peak_rss_mb": peak_kb / 1024,
            "rss_growth_mb": (peak_kb - base) / 1024,
            "dense_tb": dim ** order * 4 / 1e12}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one case, fewer steps")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return {}
    steps = args.steps or (20 if args.quick else 100)
    results = {}
    print(f"{'case':<16} {'dense size':>12} {'steps':>6} {'time s':>8} {'peak RSS MB':>12} "
          f"{'run added MB':>13} {'O(m^2+md) MB':>13}")
    for name, (d, l, m) in (QUICK if args.quick else CASES).items():
        out = subprocess.run([sys.executable, __file__, "--child", str(d), str(l), str(m), str(steps)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["gram_plus_factors_mb"] = 4 * (m * m + m * d) / 2**20
        results[name] = row
        print(f"{name:<16} {row['dense_tb']:>10.3g}TB {steps:>6} {row['seconds']:>8.2f} "
              f"{row['peak_rss_mb']:>12.0f} {row['rss_growth_mb']:>13.0f} {row['gram_plus_factors_mb']:>13.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
