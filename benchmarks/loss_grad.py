"""Loss + gradient at the floor: ``jit(value_and_grad(loss))`` against one bare ``W @ W.T``.

    python benchmarks/loss_grad.py [--quick] [--repeats N]

For each ``(m, d, l)`` row, with a random-unit target of rank ``r`` (default 8), it prints the
median wall time (after warm-up) of

- ``matmul``: a jitted bare ``W @ W.T`` with ``W`` of shape ``(m, d)`` (the unit of the ratios);
- ``custom``: ``jit(value_and_grad(jaxtd.loss))`` w.r.t. the model (weights and factors), the
  Gram-reusing ``jax.custom_vjp`` (goal: ≤ 2.5x matmul);
- ``autodiff``: the same through plain autodiff of the Gram formula (``losses.loss_autodiff``);
- ``dense``: the same on the materialized ``d^l`` tensors, where they fit in memory (goal:
  factored ≥ 100x faster than dense at (256, 32, 4));
- ``relerr``: ``jit(jaxtd.relative_error)`` in float32 (the accurate metric), for scale, on rows
  with ``m <= 1024``.

``main(argv)`` returns ``{row: {column: value}}`` (rows named ``m{m}_d{d}_l{l}``) for
``benchmarks/run_all.py``. Ratios, not absolute times, are the figures to compare: CPU machines
shared with other jobs are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxtd  # noqa: E402
from jaxtd import losses  # noqa: E402
from _common import machine, median_time  # noqa: E402

SHAPES = ((1024, 256, 4), (4096, 512, 3), (256, 32, 4))
DENSE_MAX_ENTRIES = 2 ** 26  # largest d^l tensor / Khatri-Rao factor the dense baseline builds
RELERR_MAX_WIDTH = 1024  # the precise relative error costs ~20-50 matmuls: skip the widest row


def _khatri_rao_power(w, p):
    """``(m, d^p)`` rows ``vec(w_i^{⊗p})``."""
    out = w
    for _ in range(p - 1):
        out = (out[:, :, None] * w[:, None, :]).reshape(w.shape[0], -1)
    return out


def dense_tensor(t: jaxtd.SymCP):
    """``(d^a, d^b)`` unfolding of the dense tensor, ``a + b = l``: what a user would write."""
    a = t.order // 2
    left = _khatri_rao_power(t.factors, t.order - a) * t.weights[:, None]
    return left.T @ _khatri_rao_power(t.factors, a)


def dense_loss(model, target):
    return 0.5 * jnp.sum((dense_tensor(model) - dense_tensor(target)) ** 2)


def dense_fits(m, d, l):
    return d ** l <= DENSE_MAX_ENTRIES and m * d ** (l - l // 2) <= DENSE_MAX_ENTRIES


def bench_row(m, d, l, rank, repeats):
    kw, kt = jax.random.split(jax.random.PRNGKey(m + d + l))
    w = jaxtd.init_factors(kw, m, d, scale="standard")
    model = jaxtd.SymCP(jnp.ones((m,), w.dtype), w, l)
    target = jaxtd.targets.random_unit(kt, d, rank, l)

    matmul = jax.jit(lambda x: x @ x.T)
    fns = {"custom": jax.jit(jax.value_and_grad(losses.loss)),
           "autodiff": jax.jit(jax.value_and_grad(losses.loss_autodiff))}
    if dense_fits(m, d, l):
        fns["dense"] = jax.jit(jax.value_and_grad(dense_loss))
    row = {"m": m, "d": d, "l": l, "r": rank,
           "matmul_s": median_time(matmul, w, repeats=repeats, warmup=2)}
    for name, fn in fns.items():
        row[f"{name}_s"] = median_time(fn, model, target, repeats=repeats, warmup=2)
    unit = row["matmul_s"]
    row["custom_over_matmul"] = row["custom_s"] / unit
    row["autodiff_over_matmul"] = row["autodiff_s"] / unit
    if "dense_s" in row:
        row["dense_over_custom"] = row["dense_s"] / row["custom_s"]
    if m <= RELERR_MAX_WIDTH:  # the accurate float32 metric, for scale (not a loss+grad figure)
        relerr = jax.jit(jaxtd.relative_error)
        row["relerr_s"] = median_time(relerr, model, target, repeats=max(1, repeats // 2), warmup=1)
        row["relerr_over_matmul"] = row["relerr_s"] / unit
    return row


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (3 instead of 7)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--rank", type=int, default=8, help="target rank r")
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)

    mach = machine()
    print(f"loss+grad vs one W@W.T  (median of {repeats} after warm-up; {mach['nproc']} cpus, "
          f"{mach['cpu']}, jax {mach['jax']}, {mach['device']})")
    head = (f"{'(m, d, l)':>16} {'matmul ms':>10} {'custom/mm':>10} {'autodiff/mm':>12} "
            f"{'dense/custom':>13} {'relerr/mm':>10}")
    print(head)
    print("-" * len(head))
    results = {}
    for m, d, l in SHAPES:
        row = bench_row(m, d, l, args.rank, repeats)
        results[f"m{m}_d{d}_l{l}"] = row
        print(f"{str((m, d, l)):>16} {row['matmul_s'] * 1e3:>10.2f} "
              f"{row['custom_over_matmul']:>10.2f} {row['autodiff_over_matmul']:>12.2f} "
              f"{_fmt(row.get('dense_over_custom'), '13.1f'):>13} "
              f"{_fmt(row.get('relerr_over_matmul'), '10.1f'):>10}", flush=True)
    print("goals: custom/mm <= 2.5 at (1024,256,4) and (4096,512,3); dense/custom >= 100 at "
          "(256,32,4)")
    return results


if __name__ == "__main__":
    main()
