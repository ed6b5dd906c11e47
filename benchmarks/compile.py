"""Compile time is the user's time: every program a preset compiles, beside a hand-written floor.

For the headline (``jaxtd run``'s default) and each preset, every program ``jaxtd run`` compiles
is rebuilt from the preset's real config (``jaxtd.experiment.plan`` -> sub-sweeps, their
algorithm, target, width buckets and chunk shapes; the exact lazy optimum's table; the
init-scale derivative pass) and timed in three parts: trace + lower (``jit(...).lower``), XLA
compile (``lowered.compile()``) and one run of the compiled program (times the number of chunks
of that shape), with the size of its StableHLO (lines of ``lowered.as_text()``). The floor
(``benchmarks/floor.py``: plain JAX, Gram-form loss, ``jax.grad``, ``scan`` over records) is
timed the same way on the headline's GD grid.

Then the headline ratios: ``jaxtd.sweep`` (defaults) on the headline GD grid against the floor,
first call / first call and warm / warm, each in a fresh subprocess with no persistent
compilation cache.

    python benchmarks/compile.py                 # every preset, full size (~15 min on 2 cores)
    python benchmarks/compile.py --quick         # the headline's quick config, quick ratios
    python benchmarks/compile.py --tiny          # a tiny grid only (the test's smoke run)
    python benchmarks/compile.py --presets headline,deflation --no-ratio
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # run as a script from anywhere: the sibling modules and the repo
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

COLUMNS = ("preset", "program", "HLO lines", "trace+lower s", "compile s", "run s", "calls")

TINY = """
name = "tiny"
[target]
order = 3
dim = 4
rank = 2
[sweep]
algorithms = ["gd"]
widths = [2, 4]
seeds = 2
steps = 20
record_every = 10
success_threshold = 1e-2
bucketing = "single"
"""


# -- one program --------------------------------------------------------------------------------

def _time_program(lower, run_args, calls: int = 1, program=None, plain: bool = False) -> dict:
    """Trace+lower, compile and run seconds of ``lower()`` (a ``Lowered``) and its HLO lines,
    compiled with the options ``jaxtd run`` gives ``program`` (a constructor's name; ``None``:
    jaxtd's defaults), or with XLA's own defaults (``plain``, the floor)."""
    import jax

    from jaxtd import _executables
    t0 = time.perf_counter()
    lowered = lower()
    t1 = time.perf_counter()
    compiled = lowered.compile() if plain else _executables.compile_lowered(lowered, program)
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(*run_args))
    t3 = time.perf_counter()
    return {"hlo_lines": len(lowered.as_text().splitlines()), "lower_s": t1 - t0,
            "compile_s": t2 - t1, "run_s": (t3 - t2) * calls, "calls": calls}


def _sweep_programs(config, sub, algorithm, target) -> list[tuple[str, dict]]:
    """The grid programs ``jaxtd.sweep`` compiles for sub-sweep ``sub``: one per width bucket
    and distinct chunk length, exactly as ``_sweep._execute`` builds them."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxtd import _executables, _sweep, experiment
    from jaxtd.targets import default_dtype
    s = config.sweep
    devices = jax.devices()
    n_dev = len(devices)
    mesh = _sweep._mesh(devices)
    seed_sh = NamedSharding(mesh, PartitionSpec(_sweep._SEED_AXIS))
    repl = NamedSharding(mesh, PartitionSpec())
    dtype = np.dtype(default_dtype())
    names = [k for k, _ in sub.hparams]
    import itertools
    combos = list(itertools.product(*[v for _, v in sub.hparams]))
    grid = {name: np.asarray([c[names.index(name)] if name in names else float(default)
                              for c in combos] if combos else [float(default)], dtype)
            for name, default in dict(algorithm.hparams).items()}
    buckets = experiment._buckets(config, sub.algorithm, sub.dim, sub.rank, sub.chunk_size,
                                  sub.widths)
    lengths: dict[int, int] = {}
    for chunk in sub.chunks():
        n = math.ceil(len(chunk) / n_dev) * n_dev
        lengths[n] = lengths.get(n, 0) + 1
    base_key = jax.random.PRNGKey(0)
    out = []
    for bucket in buckets:
        for length, calls in lengths.items():
            seeds = jax.device_put(np.arange(length, dtype=np.int32), seed_sh)
            actives = jax.device_put(np.asarray(bucket, np.dtype(jax.numpy.result_type(int))),
                                     repl)
            rest = jax.device_put((grid, base_key, target), repl)
            args = (seeds, actives) + tuple(rest)
            fn = _sweep._grid_fn(algorithm, max(bucket), sub.steps, s.record_every, tuple(grid))
            jitted = jax.jit(fn, in_shardings=(seed_sh, repl, repl, repl, repl),
                             out_shardings=seed_sh)
            label = f"{sub.folder} width {max(bucket)} x{length} seeds"
            out.append((label, _time_program(lambda: jitted.lower(*args), args, calls,
                                             _executables.program_name(algorithm))))
    return out


def _lazy_program(config, sub, target) -> tuple[str, dict]:
    """The exact lazy optimum's table program (``lazy.best_residual_table``) of ``sub``."""
    import jax
    import numpy as np

    from jaxtd.lazy import _optimum as lo
    from jaxtd import key_for_seed
    p = config.params["lazy"]
    scale = p["init_scale"][0] if isinstance(p["init_scale"], tuple) else p["init_scale"]
    keys = jax.numpy.stack([key_for_seed(s) for s in range(sub.seeds)])
    widths = list(sub.widths)
    top = max(widths)
    solver = lo.solver_for(p["method"], top, sub.dim)
    statics = dict(top=top, init=p["init"], signs=p["signs"], solver=solver, rcond=None,
                   tol=None, max_iter=None, batch_size=1)
    with jax.enable_x64(True):
        args = (keys, target, np.asarray(widths, np.int32),
                np.asarray(scale, target.factors.dtype))
        result = _time_program(lambda: lo._table_program.lower(*args, **statics), args,
                               program="jaxtd.lazy.best_residual_table")
    return f"{sub.folder} lazy optimum {sub.seeds}x{len(widths)} ({solver})", result


def _slope_program(config, sub, algorithm, target) -> tuple[str, dict]:
    """The init-scale derivative pass (``transition.scale_slopes``) of ``sub``."""
    import jax.numpy as jnp

    from jaxtd import transition
    from jaxtd._sweep import base_key_of
    hp = transition.full_hparams(algorithm, {})
    hp.pop("init_scale")
    scales = list(dict(sub.hparams)["init_scale"])
    base = base_key_of(None)
    padded, steps, record_every = transition.validate(algorithm, base, target,
                                                      width=max(sub.widths), steps=sub.steps,
                                                      record_every=config.sweep.record_every)
    dtype = target.factors.dtype
    hp = {k: jnp.asarray(v, dtype) for k, v in hp.items()}
    dyn = (jnp.asarray(list(range(sub.seeds)), jnp.uint32),
           jnp.asarray(list(sub.widths), jnp.result_type(int)), jnp.asarray(scales, dtype), hp,
           base, target)
    statics = (algorithm, padded, steps, record_every)
    return (f"{sub.folder} d error/d log init_scale",
            _time_program(lambda: transition._table_jit.lower(*statics, *dyn), dyn))


def preset_programs(config) -> list[tuple[str, dict]]:
    """Every program a ``jaxtd run`` of ``config`` compiles, timed."""
    from jaxtd import experiment
    out = []
    for sub in experiment.plan(config):
        target = experiment.make_target(config.target, sub.order, sub.dim, sub.rank)
        algorithm = experiment.make_algorithm(config, sub.algorithm)
        if sub.train:
            out += _sweep_programs(config, sub, algorithm, target)
        if experiment._slope_pass(config, sub):
            out.append(_slope_program(config, sub, algorithm, target))
        if sub.lazy_best:
            out.append(_lazy_program(config, sub, target))
    return out


def floor_program(grid: dict) -> tuple[str, dict]:
    """The floor's program on ``grid``, timed like the others."""
    import jax
    import jax.numpy as jnp

    import floor
    c, a = floor.orthonormal_target(jax.random.PRNGKey(0), grid["dim"], grid["rank"])
    args = (jnp.arange(grid["seeds"], dtype=jnp.int32), jnp.asarray(grid["widths"], jnp.int32),
            c, a)
    fn = jax.jit(floor.make_grid(grid["order"], grid["steps"], grid["record_every"],
                                 grid["learning_rate"], grid["init_scale"], max(grid["widths"])))
    return "floor (hand-written GD grid)", _time_program(lambda: fn.lower(*args), args,
                                                         plain=True)


# -- fresh-process ratios -------------------------------------------------------------------------

def _child(kind: str, quick: bool) -> dict:
    """In a fresh process: first call and best warm call (of ``floor.WARM_CALLS``) of
    ``jaxtd.sweep`` or of the floor."""
    import floor
    grid = floor.headline_grid(quick)
    if kind == "floor":
        return floor.time_floor(grid)
    import jax

    import jaxtd
    target = jaxtd.targets.orthonormal(jax.random.key(0), dim=grid["dim"], rank=grid["rank"],
                                       order=grid["order"])
    algorithm = jaxtd.algorithms.gd(grid["learning_rate"], model="plain",
                                    init_scale=grid["init_scale"])
    kwargs = dict(seeds=grid["seeds"], widths=grid["widths"], steps=grid["steps"],
                  record_every=grid["record_every"], progress=False)
    jax.block_until_ready(target)
    t0 = time.perf_counter()
    res = jaxtd.sweep(algorithm, target, **kwargs)
    first = time.perf_counter() - t0
    warm = []
    for _ in range(floor.WARM_CALLS):
        t0 = time.perf_counter()
        jaxtd.sweep(algorithm, target, **kwargs)
        warm.append(time.perf_counter() - t0)
    return {"first": first, "warm": min(warm), "n_compiles": res.info["n_compiles"],
            "compile_seconds": res.info["compile_seconds"]}


def fresh(kind: str, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # no persistent cache: a cold start
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    with tempfile.TemporaryDirectory() as home:
        env["XDG_CACHE_HOME"] = home
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind]
                              + (["--quick"] if quick else []), capture_output=True, text=True,
                              env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the report -----------------------------------------------------------------------------------

def _row(preset: str, program: str, r: dict) -> str:
    return (f"| {preset} | {program} | {r['hlo_lines']} | {r['lower_s']:.2f} | "
            f"{r['compile_s']:.2f} | {r['run_s']:.2f} | {r['calls']} |")


def configs(args) -> list[tuple[str, object]]:
    from jaxtd import config as cfg
    if args.tiny:
        return [("tiny", cfg.loads(TINY))]
    names = (args.presets.split(",") if args.presets
             else ["headline"] if args.quick else ["headline", *[n for n in cfg.preset_names()
                                                                 if n != "headline"]])
    out = []
    for name in names:
        c = cfg.preset(name)
        out.append((name + (" (quick)" if args.quick else ""), cfg.quick(c) if args.quick else c))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the headline's quick config and the quick ratio grid")
    parser.add_argument("--tiny", action="store_true", help="a tiny grid only, no ratios")
    parser.add_argument("--presets", help="comma-separated preset names (default: all)")
    parser.add_argument("--no-ratio", action="store_true", help="skip the fresh-process ratios")
    parser.add_argument("--child", choices=["sweep", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        out = _child(args.child, args.quick)
        print(json.dumps(out))
        return out

    import jax

    import floor
    from _common import machine
    m = machine()
    print(f"# benchmarks/compile.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {m['nproc']} cores "
          f"({m['cpu']}), jax {m['jax']}, device {m['device']}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\n" + "| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    report: dict = {"machine": m, "programs": [], "totals": {}}
    for name, config in configs(args):
        totals = {"programs": 0, "lower_s": 0.0, "compile_s": 0.0, "run_s": 0.0}
        for label, r in preset_programs(config):
            print(_row(name, label, r), flush=True)
            report["programs"].append({"preset": name, "program": label, **r})
            totals["programs"] += 1
            for k in ("lower_s", "compile_s", "run_s"):
                totals[k] += r[k]
        report["totals"][name] = totals
        print(f"| {name} | **total: {totals['programs']} programs** | | "
              f"{totals['lower_s']:.2f} | {totals['compile_s']:.2f} | {totals['run_s']:.2f} | |",
              flush=True)
        jax.clear_caches()
    grid = floor.headline_grid(args.quick or args.tiny)
    if args.tiny:
        from jaxtd import config as cfg
        c = cfg.loads(TINY)
        grid = dict(order=3, dim=4, rank=2, seeds=c.sweep.seeds, widths=list(c.sweep.widths),
                    steps=c.sweep.steps, record_every=c.sweep.record_every, learning_rate=0.1,
                    init_scale=5e-2)
    label, r = floor_program(grid)
    print(_row("floor", label, r), flush=True)
    report["programs"].append({"preset": "floor", "program": label, **r})
    if not (args.no_ratio or args.tiny):
        sweep_r, floor_r = fresh("sweep", args.quick), fresh("floor", args.quick)
        report["ratio"] = {"sweep": sweep_r, "floor": floor_r,
                           "first": sweep_r["first"] / floor_r["first"],
                           "warm": sweep_r["warm"] / floor_r["warm"]}
        size = "quick grid" if args.quick else "headline GD grid"
        print(f"\n{size}, fresh processes, no persistent compilation cache:")
        print("| call | jaxtd.sweep s | floor s | ratio |\n|---|---|---|---|")
        print(f"| first (trace + compile + run) | {sweep_r['first']:.2f} | "
              f"{floor_r['first']:.2f} | **{report['ratio']['first']:.2f}x** |")
        print(f"| warm (run) | {sweep_r['warm']:.2f} | {floor_r['warm']:.2f} | "
              f"**{report['ratio']['warm']:.2f}x** |")
        print(f"jaxtd.sweep compiled {sweep_r['n_compiles']} program(s) in "
              f"{sweep_r['compile_seconds']:.2f} s (its info)")
    return report


if __name__ == "__main__":
    main()
