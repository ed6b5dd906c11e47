"""Derivatives through a whole run: reverse-mode memory and time with and without checkpointing,
and forward mode.

    python benchmarks/grad.py [--quick] [--steps N] [--repeats R]

Problem: plain GD (``jaxtd.algorithms.gd(0.05, init_scale=0.1)``), orthonormal rank-3 target,
``(m, d, l) = (8, 16, 3)``, float32, ``N = 10000`` steps recorded every 100. Rows:

- ``forward`` / ``forward_plain``: ``jit(simulate(...).final_loss)`` of the learning rate (no
  derivative), with ``checkpoint=True`` (default) / ``False``: checkpointing costs nothing here;
- ``reverse_checkpoint`` / ``reverse_plain``: ``jit(grad(final_loss))`` with ``checkpoint=True``
  (each block of ``record_every`` steps rematerialized, the default) and ``checkpoint=False``;
- ``forward_mode``: ``jit(jvp(final_loss))`` (``jax.jvp``, one tangent).

Columns: ``compile_s`` (lower + compile), ``run_s`` (median wall time of a call after a warm-up,
compilation excluded), ``temp_mib`` (XLA's temporary buffers of the compiled program,
``compiled.memory_analysis().temp_size_in_bytes``: the residuals reverse mode keeps, the part
that grows with the number of steps without checkpointing) and ``x_forward`` (run time over the
forward run's). ``main(argv)`` returns ``{row: {column: value}}`` for ``benchmarks/run_all.py``.
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
from jaxtd import simulate  # noqa: E402
from _common import machine, median_time  # noqa: E402

M, D, ORDER, RANK = 8, 16, 3, 3


def _programs(steps: int, record_every: int):
    alg = jaxtd.algorithms.gd(0.05, init_scale=0.1)
    target = jaxtd.targets.orthonormal(jax.random.key(0), D, RANK, ORDER)
    key = jax.random.key(1)

    def final_loss(lr, checkpoint=True):
        return simulate(alg, key, target, width=M, steps=steps, record_every=record_every,
                        hparams={"learning_rate": lr}, checkpoint=checkpoint).final_loss

    return {
        "forward": final_loss,
        "forward_plain": lambda lr: final_loss(lr, checkpoint=False),
        "reverse_checkpoint": jax.grad(final_loss),
        "reverse_plain": jax.grad(lambda lr: final_loss(lr, checkpoint=False)),
        "forward_mode": lambda lr: jax.jvp(final_loss, (lr,), (jnp.ones_like(lr),)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1000 steps, one repeat")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--record-every", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    steps, repeats = (1000, 1) if args.quick else (args.steps, args.repeats)
    print(f"machine: {machine()}")
    print(f"gd plain, (m, d, l, r) = ({M}, {D}, {ORDER}, {RANK}), float32, {steps} steps, "
          f"a record every {args.record_every}")
    lr = jnp.float32(0.05)
    out = {}
    for name, fn in _programs(steps, args.record_every).items():
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(lr).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
        run_s = median_time(compiled, lr, repeats=repeats)
        out[name] = {"compile_s": compile_s, "run_s": run_s, "temp_mib": temp / 2 ** 20}
    base = out["forward"]["run_s"]
    print(f"{'':20s} {'compile_s':>10s} {'run_s':>10s} {'x_forward':>10s} {'temp_MiB':>10s}")
    for name, row in out.items():
        row["x_forward"] = row["run_s"] / base
        print(f"{name:20s} {row['compile_s']:10.2f} {row['run_s']:10.3f} {row['x_forward']:10.2f} "
              f"{row['temp_mib']:10.3f}")
    return out


if __name__ == "__main__":
    main()
