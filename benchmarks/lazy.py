"""Lazy loss + gradient: the exact factored form against the ``jax.linearize`` reference; and
(``--solve``) the lazy optimum, dense normal equations against matrix-free CG.

    python benchmarks/lazy.py [--quick] [--repeats N] [--width M]
    python benchmarks/lazy.py --solve [--cases d,l,m ...] [--dense-max MD]
    python benchmarks/lazy.py --reach [--budget SECONDS]

For each ``(d, l)`` in ``d = 16, 32`` and ``l = 3, 4``, with a standard initialization of width
``m`` (default 64; 16 with ``--quick``) and a random-unit target of rank 8, it prints the median
wall time (after warm-up) of one ``jit(value_and_grad)`` in ``Δ`` of

- ``factored``: :func:`jaxtd.lazy.lazy_loss` (Gram closed form, ``O((m + r)^2 d)``);
- ``linearize``: ``1/2 ||lin(Δ) - T*||^2`` with ``lin = jaxtd.lazy.linearize(model)`` (built once,
  outside the timing; every call pushes ``m d^l`` entries through the linear map and its
  transpose),

their ratio ``linearize / factored``, the one-off cost of building the linearization, and the
relative difference of the two gradients (a sanity check that both compute the same thing).

``--solve``: for each case ``(d, l, m)`` (default: ``l = 3, d = 32`` at ``m = 64`` and ``m = 187``,
i.e. ``m d = 2048`` and ``5984``, the second exactly at the threshold where ``J`` is square and CG
is slowest; then ``d = 40, m = 287``, ``m d = 11480``, square again) it prints, for
:func:`jaxtd.lazy.lstsq` (dense, only up to ``--dense-max`` unknowns) and
:func:`jaxtd.lazy.cg_lstsq` (float64, standard init, random-unit rank-20 target), the compile and
the run seconds apart, XLA's memory estimate of the compiled program (arguments + outputs +
temporaries), CG's iterations and the two residuals.

``--reach``: for each solver, square threshold cases ``l = 3`` (``m = C(d+2, 3)/d``, so
``m d = C(d+2, 3)``: ``J`` square, the hardest case for CG) of growing size, ``m d = 2024``
(``d = 22``), ``5984`` (``d = 32``), then up to ~22,000 (``d = 50``): each solve timed (compile and
run apart) with XLA's memory estimate, until the next one is predicted (power law through the last
two) to run longer than ``--budget`` seconds (default 120). It prints the largest ``m d`` solved
within the budget and the power-law size at which a solve takes the budget. About 5 minutes on 2
cores (the dense solve at ``m d = 5984`` alone is ~70 s).

``main(argv)`` returns ``{row: {column: value}}`` (rows named ``d{d}_l{l}``, or ``d{d}_l{l}_m{m}``
with ``--solve``) for ``benchmarks/run_all.py``. Compare ratios, not absolute times: CPU machines
are shared.
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


SOLVE_CASES = ((32, 3, 64), (32, 3, 187), (40, 3, 287))


def _memory_mb(compiled) -> float:
    mem = compiled.memory_analysis()
    if mem is None:
        return float("nan")
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - getattr(mem, "alias_size_in_bytes", 0))
    return total / 2 ** 20


def _timed(fn, *args):
    """``(compile_s, run_s, memory_mb, output)``: AOT compile, then one blocked run."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = block(compiled(*args))
    return compile_s, time.perf_counter() - t0, _memory_mb(compiled), out


def solve_row(d, l, m, dense_max):
    with jax.enable_x64(True):
        kw, kt = jax.random.split(jax.random.key(d + l))
        w = jaxtd.init_factors(kw, m, d, scale="standard", dtype=jnp.float64)
        model = jaxtd.SymCP(jnp.ones((m,), jnp.float64), w, l)
        target = jaxtd.targets.random_unit(kt, d, 20, l, dtype=jnp.float64)
        row = {"d": d, "l": l, "m": m, "md": m * d, "sym_dim": lazy.sym_dim(d, l)}
        c, r, mem, out = _timed(lambda mo, t: lazy.cg_lstsq(mo, t), model, target)
        row.update(cg_compile_s=c, cg_run_s=r, cg_mb=mem, cg_iterations=int(out.iterations),
                   cg_converged=bool(out.converged), cg_residual=float(out.residual),
                   cg_floor=float(out.floor))
        if m * d <= dense_max:
            c, r, mem, res = _timed(lambda mo, t: lazy.lstsq(mo, t).residual, model, target)
            row.update(dense_compile_s=c, dense_run_s=r, dense_mb=mem, dense_residual=float(res))
        return row


def solve_main(args) -> dict:
    mach = machine()
    print(f"lazy optimum, dense normal equations vs matrix-free CG  (float64; "
          f"{mach['nproc']} cpus, {mach['cpu']}, jax {mach['jax']}, {mach['device']})")
    head = (f"{'(d, l, m)':>12} {'m d':>6} {'C(d+l-1,l)':>10} | {'dense cmp s':>11} {'run s':>7} "
            f"{'MiB':>7} {'residual':>9} | {'cg cmp s':>8} {'run s':>7} {'MiB':>6} {'iters':>6} "
            f"{'residual':>9} {'floor':>8}")
    print(head)
    print("-" * len(head))
    cases = [tuple(int(v) for v in c.split(",")) for c in args.cases] if args.cases else SOLVE_CASES
    results = {}
    for d, l, m in cases:
        row = solve_row(d, l, m, args.dense_max)
        results[f"d{d}_l{l}_m{m}"] = row
        dense = (f"{row['dense_compile_s']:>11.2f} {row['dense_run_s']:>7.2f} "
                 f"{row['dense_mb']:>7.1f} {row['dense_residual']:>9.2e}" if "dense_run_s" in row
                 else f"{'(skipped: m d > --dense-max)':>37}")
        print(f"{str((d, l, m)):>12} {row['md']:>6} {row['sym_dim']:>10} | {dense} | "
              f"{row['cg_compile_s']:>8.2f} {row['cg_run_s']:>7.2f} {row['cg_mb']:>6.1f} "
              f"{row['cg_iterations']:>6} {row['cg_residual']:>9.2e} {row['cg_floor']:>8.1e}",
              flush=True)
    print("MiB: XLA's estimate for the compiled program (arguments + outputs + temporaries; "
          "LAPACK's eigh workspace is allocated outside it)")
    return results


# square threshold cases of l = 3: m = C(d+2, 3) / d = (d+1)(d+2)/6, m d = C(d+2, 3)
REACH_DIMS = (22, 32, 35, 40, 44, 47, 50)


def _reach_case(d: int) -> tuple[int, int, int]:
    m, rem = divmod((d + 1) * (d + 2), 6)
    assert rem == 0, d
    return d, 3, m


def _solve_once(solver: str, d: int, l: int, m: int) -> dict:
    """One timed solve (compile and run apart) of a standard init against a rank-20 target."""
    with jax.enable_x64(True):
        kw, kt = jax.random.split(jax.random.key(d + l))
        w = jaxtd.init_factors(kw, m, d, scale="standard", dtype=jnp.float64)
        model = jaxtd.SymCP(jnp.ones((m,), jnp.float64), w, l)
        target = jaxtd.targets.random_unit(kt, d, 20, l, dtype=jnp.float64)
        if solver == "dense":
            fn = lambda mo, t: (lazy.lstsq(mo, t).residual, jnp.zeros((), jnp.int32))
        else:
            fn = lambda mo, t: (lambda o: (o.residual, o.iterations))(lazy.cg_lstsq(mo, t))
        c, r, mem, (res, iters) = _timed(fn, model, target)
        return {"solver": solver, "d": d, "l": l, "m": m, "md": m * d, "compile_s": c,
                "run_s": r, "mb": mem, "residual": float(res), "iterations": int(iters)}


def reach_main(args) -> dict:
    """Per solver: timed solves of growing square threshold cases until the next is predicted
    to exceed the budget; the largest ``m d`` within it (measured, and by the power law)."""
    import math
    mach = machine()
    budget = args.budget
    print(f"lazy optimum at the threshold (square J, l = 3), largest m d within {budget:g} s  "
          f"(float64; {mach['nproc']} cpus, {mach['cpu']}, jax {mach['jax']}, {mach['device']})")
    head = (f"{'solver':>9} {'(d, l, m)':>13} {'m d':>6} {'compile s':>9} {'run s':>8} "
            f"{'MiB':>7} {'iters':>6} {'residual':>9}")
    print(head)
    print("-" * len(head))
    results = {}
    for solver in ("dense", "iterative"):
        done, note = [], ""
        for d in REACH_DIMS[:2] if args.quick else REACH_DIMS:
            d, l, m = _reach_case(d)
            if len(done) >= 2:
                (x0, t0), (x1, t1) = [(r["md"], r["run_s"]) for r in done[-2:]]
                expo = math.log(t1 / t0) / math.log(x1 / x0)
                guess = t1 * (m * d / x1) ** expo
                if guess > budget:
                    note = f"next: m d = {m * d} predicted {guess:.0f} s (not run)"
                    break
            row = _solve_once(solver, d, l, m)
            done.append(row)
            results[f"{solver}_d{d}_l{l}_m{m}"] = row
            print(f"{solver:>9} {str((d, l, m)):>13} {row['md']:>6} {row['compile_s']:>9.2f} "
                  f"{row['run_s']:>8.2f} {row['mb']:>7.1f} "
                  f"{row['iterations'] if solver != 'dense' else '':>6} {row['residual']:>9.2e}",
                  flush=True)
            if row["run_s"] > budget:
                break
        within = [r for r in done if r["run_s"] <= budget]
        largest = max((r["md"] for r in within), default=0)
        reach = expo = float("nan")
        if len(done) >= 2:  # power law through the last two solves, solved for t = budget
            (x0, t0), (x1, t1) = [(r["md"], r["run_s"]) for r in done[-2:]]
            expo = math.log(t1 / t0) / math.log(x1 / x0)
            reach = x1 * (budget / t1) ** (1 / expo)
            results[f"{solver}_reach"] = {"largest_md_measured": largest, "md_at_budget": reach,
                                          "exponent": expo, "budget_s": budget}
        print(f"  {solver}: largest m d solved within {budget:g} s: {largest}; power law "
              f"(exponent {expo:.2f}) reaches m d ~ {reach:.0f} in {budget:g} s"
              + (f"; {note}" if note else ""), flush=True)
    both = [k for k in results if k.startswith("dense_d")]
    for k in both:
        it = "iterative" + k[len("dense"):]
        if it in results:
            results[f"ratio{k[len('dense'):]}"] = {
                "dense_over_iterative_run": results[k]["run_s"] / results[it]["run_s"],
                "dense_over_iterative_mb": results[k]["mb"] / results[it]["mb"]}
            print(f"  m d = {results[k]['md']}: dense / iterative run "
                  f"{results[k]['run_s'] / results[it]['run_s']:.1f}x, memory (XLA estimate) "
                  f"{results[k]['mb'] / results[it]['mb']:.0f}x")
    print("MiB: XLA's estimate for the compiled program (arguments + outputs + temporaries; "
          "LAPACK's eigh workspace is allocated outside it)")
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="width 16 and 3 repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="model width m (default 64)")
    p.add_argument("--rank", type=int, default=8, help="target rank r")
    p.add_argument("--solve", action="store_true", help="benchmark the lazy optimum instead")
    p.add_argument("--cases", nargs="*", default=None, metavar="d,l,m",
                   help="--solve cases (default: 32,3,64 32,3,187 40,3,287)")
    p.add_argument("--dense-max", type=int, default=2100,
                   help="--solve: run the dense solve up to this many unknowns m d (default 2100; "
                        "6000 takes minutes on 2 cores)")
    p.add_argument("--reach", action="store_true",
                   help="largest m d each solver reaches within --budget seconds")
    p.add_argument("--budget", type=float, default=120.0, help="--reach: seconds per solve")
    args = p.parse_args(argv)
    if args.reach:
        return reach_main(args)
    if args.solve:
        return solve_main(args)
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
