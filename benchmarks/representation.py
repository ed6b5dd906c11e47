"""Gram against explicit representation of the training loss: compile and run seconds apart.

    python benchmarks/representation.py [--quick] [--steps N] [--seeds S]

For each ``(l, d, m)`` row it compiles and runs, for each form (``gram``: :func:`jaxtd.loss`;
``explicit``: :func:`jaxtd.representation.explicit_loss`), a width bucket as a sweep runs it:
``S`` seeds vmapped, ``N`` plain gradient-descent steps on
:func:`jaxtd.models.regularized_loss` in one ``lax.scan`` (a random-unit target of rank 2).
It prints the compile seconds and the run seconds (median of 3 after the compiled call) of each,
the run ratio gram / explicit, what :func:`jaxtd.representation.choose` picks, and the largest
difference of the final parameters between the two forms (they run the same iterates up to
rounding).

``main(argv)`` returns ``{row: {column: value}}`` (rows ``l{l}_d{d}_m{m}``). CPU machines
shared with other jobs are noisy: compare the ratios, and the CPU seconds of the process.
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
from jaxtd import models, representation  # noqa: E402
from _common import machine, median_time  # noqa: E402

# (order, dim, width): a phase-diagram bucket around the lazy threshold, and the cost model's
# crossover at d = 8 and at l = 4
ROWS = ((3, 16, 128), (3, 16, 256), (3, 16, 512), (3, 16, 715), (3, 8, 64), (3, 8, 256),
        (4, 8, 512))
QUICK_ROWS = ((3, 16, 128), (3, 16, 512))


def program(form: str, target, width: int, steps: int, seeds: int, lr: float = 0.05):
    """A jitted ``seeds -> final params (S, m, d)``: ``steps`` GD steps per vmapped seed."""
    def one(seed):
        key = jax.random.fold_in(jax.random.key(0), seed)
        w = 0.05 * jax.random.normal(key, (width, target.dim), target.factors.dtype)

        def step(w, _):
            g = jax.grad(models.regularized_loss, argnums=1)(
                "plain", w, target, representation=form)
            return w - lr * g, None
        return jax.lax.scan(step, w, None, length=steps)[0]
    return jax.jit(jax.vmap(one))


def row(order: int, dim: int, width: int, steps: int, seeds: int) -> dict:
    target = jaxtd.targets.random_unit(jax.random.key(1), dim=dim, rank=2, order=order)
    out = {"choose": representation.choose(width, dim, 2, order)}
    finals = {}
    idx = jnp.arange(seeds)
    for form in ("gram", "explicit"):
        t0 = time.perf_counter()
        compiled = program(form, target, width, steps, seeds).lower(idx).compile()
        out[f"{form}_compile_s"] = time.perf_counter() - t0
        out[f"{form}_run_s"] = median_time(compiled, idx, repeats=3)
        finals[form] = compiled(idx)
    out["ratio"] = out["gram_run_s"] / out["explicit_run_s"]
    out["max_diff"] = float(jnp.max(jnp.abs(finals["gram"] - finals["explicit"])))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args(argv)
    print(machine())
    results = {}
    for order, dim, width in (QUICK_ROWS if args.quick else ROWS):
        res = row(order, dim, width, args.steps, args.seeds)
        results[f"l{order}_d{dim}_m{width}"] = res
        print(f"l={order} d={dim:3d} m={width:4d}  choose={res['choose']:8s}  "
              f"gram {res['gram_compile_s']:.2f}+{res['gram_run_s']:.3f}s  "
              f"explicit {res['explicit_compile_s']:.2f}+{res['explicit_run_s']:.3f}s  "
              f"gram/explicit {res['ratio']:.2f}  max|diff| {res['max_diff']:.1e}", flush=True)
    return results


if __name__ == "__main__":
    main()
