"""Steps per second of every algorithm through the runner, and the runner's overhead.

    python benchmarks/algorithms.py [--quick] [--steps N] [--repeats R]

For ``(m, d, l) = (64, 64, 3)`` and ``(256, 128, 4)`` (orthonormal rank-4 target, float32) it
prints, per algorithm (``gd-plain``, ``gd-two_homogeneous``, ``lazy_gd``, and ``variant`` /
``deflation`` when their modules exist), the steps/s of a jitted :func:`jaxtd.simulate` of ``N``
steps recording every ``N/10`` (median wall time after a warm-up call, compilation excluded), and
the ratio

    overhead = time per step of jaxtd.simulate (gd-plain, SGD) / time per step of a bare
               lax.scan of ``W <- W - η ∇L(W)`` (jit(value_and_grad) of the Gram-form loss)

i.e. what the Algorithm/optax plumbing, divergence watch, masking and the per-record metrics cost
on top of the loss+gradient itself (goal: <= 1.3x).

``main(argv)`` returns ``{row: {column: value}}`` with rows ``{alg}_m{m}_d{d}_l{l}`` and
``overhead_m{m}_d{d}_l{l}``, for ``benchmarks/run_all.py``. Compare ratios, not absolute times:
CPU machines are shared.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxtd  # noqa: E402
from jaxtd import algorithms  # noqa: E402
from _common import machine, median_time  # noqa: E402

CASES = ((64, 64, 3), (256, 128, 4))
RANK = 4


def _algorithms(steps: int) -> dict:
    out = {"gd-plain": algorithms.gd(0.1, model="plain"),
           "gd-two_homogeneous": algorithms.gd(0.05, model="two_homogeneous"),
           "lazy_gd": algorithms.lazy_gd(0.01)}
    # Optional: written by another module owner; benchmark them when present.
    for name, make in (("variant", lambda: algorithms.variant(
                            0.05, amplify_steps=max(1, steps // 30), fit_steps=max(1, steps // 15))),
                       ("deflation", lambda: algorithms.deflation())):
        try:
            out[name] = make()
        except AttributeError:
            pass
    return out


def _bare(target, m: int, steps: int, lr: float = 0.1):
    """jit of a lax.scan of plain SGD on the Gram-form loss: loss+grad and the update, nothing
    else."""
    ones = jnp.ones((m,), target.factors.dtype)

    def loss(w):
        return jaxtd.loss(jaxtd.SymCP(ones, w, target.order), target)

    @jax.jit
    def f(w):
        def body(w, _):
            v, g = jax.value_and_grad(loss)(w)
            return w - lr * g, v
        return jax.lax.scan(body, w, None, length=steps)

    return f


def bench_case(m, d, l, steps, repeats, verbose=True):
    k_t, k_w = jax.random.split(jax.random.PRNGKey(m + d + l))
    target = jaxtd.targets.orthonormal(k_t, d, RANK, l)
    record_every = max(1, steps // 10)
    rows = {}
    for name, alg in _algorithms(steps).items():
        f = jax.jit(lambda key, alg=alg: jaxtd.simulate(alg, key, target, width=m, steps=steps,
                                                        record_every=record_every))
        t = median_time(f, k_w, repeats=repeats)
        rows[f"{name}_m{m}_d{d}_l{l}"] = {"steps_per_s": steps / t, "seconds": t}
        if verbose:
            print(f"  {name:20s} m={m:4d} d={d:4d} l={l}: {steps / t:10.0f} steps/s", flush=True)
    w0 = jaxtd.init_factors(k_w, m, d, delta=1e-2)
    t_bare = median_time(_bare(target, m, steps), w0, repeats=repeats)
    t_run = rows[f"gd-plain_m{m}_d{d}_l{l}"]["seconds"]
    rows[f"overhead_m{m}_d{d}_l{l}"] = {"bare_steps_per_s": steps / t_bare,
                                        "ratio": t_run / t_bare}
    if verbose:
        print(f"  bare loss+grad scan  m={m:4d} d={d:4d} l={l}: {steps / t_bare:10.0f} steps/s;"
              f" run/bare = {t_run / t_bare:.2f}x (goal <= 1.3x)", flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    steps = args.steps or (300 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 5)
    print(f"machine: {machine()}; steps={steps}, record every {max(1, steps // 10)}")
    results = {}
    for m, d, l in CASES:
        results.update(bench_case(m, d, l, steps, repeats))
    return results


if __name__ == "__main__":
    main()
