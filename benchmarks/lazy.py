"""Lazy loss + gradient: the exact factored form against the ``jax.linearize`` reference.

    python benchmarks/lazy.py [--quick] [--repeats N] [--width M]

For each ``(d, l)`` in ``d = 16, 32`` and ``l = 3, 4``, with a standard initialization of width
``m`` (default 64; 16 with ``--quick``) and a random-unit target of rank 8, it prints the median
wall time (after warm-up) of one ``jit(value_and_grad)`` in ``Δ`` of

- ``factored``: :func:`jaxtd.lazy.lazy_loss` (Gram closed form, ``O((m + r)^2 d)``);
- ``linearize``: ``1/2 ||lin(Δ) - T*||^2`` with ``lin = jaxtd.lazy.linearize(model)`` (built once,
  outside the timing; every call pushes ``m d^l`` entries through the linear map and its
  transpose),

their ratio ``linearize / factored``, the one-off cost of building the linearization, and the
relative difference of the two gradients (a sanity check that both compute the same thing).

``main(argv)`` returns ``{row: {column: value}}`` (rows named ``d{d}_l{l}``) for
``benchmarks/run_all.py``. Compare ratios, not absolute times: CPU machines are shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxtd  # noqa: E402
from jaxtd import lazy  # noqa: E402
from _common import block, machine, median_time  # noqa: E402

CASES = ((16, 3), (16, 4), (32, 3), (32, 4))


def bench_row(d, l, m, rank, repeats):
    kw, kt, kd = jax.random.split(jax.random.PRNGKey(d + l), 3)
    w = jaxtd.init_factors(kw, m, d, scale="standard")
    model = jaxtd.SymCP(jnp.ones((m,), w.dtype), w, l)
    target = jaxtd.targets.random_unit(kt, d, rank, l)
    delta = 0.1 * jax.random.normal(kd, (m, d), w.dtype)

    factored = jax.jit(jax.value_and_grad(lambda dl: lazy.lazy_loss(model, dl, target)))
    t0 = time.perf_counter()
    lin = lazy.linearize(model)
    t_dense = block(jaxtd.to_dense(target))
    setup = time.perf_counter() - t0
    dense = jax.jit(jax.value_and_grad(lambda dl: 0.5 * jnp.sum((lin(dl) - t_dense) ** 2)))

    row = {"m": m, "d": d, "l": l, "r": rank, "linearize_setup_s": setup,
           "factored_s": median_time(factored, delta, repeats=repeats, warmup=2),
           "linearize_s": median_time(dense, delta, repeats=repeats, warmup=2)}
    row["ratio"] = row["linearize_s"] / row["factored_s"]
    g_f, g_d = factored(delta)[1], dense(delta)[1]
    row["grad_rel_diff"] = float(jnp.linalg.norm(g_f - g_d) / jnp.linalg.norm(g_d))
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="width 16 and 3 repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="model width m (default 64)")
    p.add_argument("--rank", type=int, default=8, help="target rank r")
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    m = args.width or (16 if args.quick else 64)

    mach = machine()
    print(f"lazy loss+grad, factored vs jax.linearize  (m={m}, median of {repeats} after warm-up; "
          f"{mach['nproc']} cpus, {mach['cpu']}, jax {mach['jax']}, {mach['device']})")
    head = (f"{'(d, l)':>8} {'factored ms':>12} {'linearize ms':>13} {'ratio':>8} "
            f"{'setup s':>8} {'grad diff':>10}")
    print(head)
    print("-" * len(head))
    results = {}
    for d, l in CASES:
        row = bench_row(d, l, m, args.rank, repeats)
        results[f"d{d}_l{l}"] = row
        print(f"{str((d, l)):>8} {row['factored_s'] * 1e3:>12.3f} {row['linearize_s'] * 1e3:>13.3f} "
              f"{row['ratio']:>8.1f} {row['linearize_setup_s']:>8.2f} {row['grad_rel_diff']:>10.1e}",
              flush=True)
    print("ratio = linearize / factored (higher: the factored form wins by more)")
    return results


if __name__ == "__main__":
    main()
