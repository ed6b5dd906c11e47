"""A validated config (:mod:`jaxtd.config`) as an experiment: targets, algorithms, sweeps.

:func:`plan` lists the sub-sweeps of a config, one per (problem size, algorithm), each split into
seed chunks; :func:`run` executes them with :func:`jaxtd.sweep` (one call per chunk, each written
atomically under ``out_dir/sweeps/<algorithm>-l<order>-d<dim>-r<rank>/chunk-<k>`` so an
interrupted run resumes), adds the exact best lazy residual to the lazy rows and returns an
:class:`Outcome`: the concatenated :class:`~jaxtd.results.Results` (one row per cell, with every
resolved hyper-parameter as a column and ``algorithm`` the config's table name) and the summed
compile/run statistics. :func:`describe` prints a plan without running it (``--dry-run``).

The command line (:mod:`jaxtd.cli`) only parses arguments, calls these, prints and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxtd import _executables
from jaxtd import config as cfg
from jaxtd import distributed, lazy, log, phase, targets, transition
from jaxtd._buckets import plan_buckets
from jaxtd._checks import largest_divisor_at_most
from jaxtd._sweep import key_for_seed, numerics_identity, sweep
from jaxtd.compile_cache import default_dir as default_cache_dir
from jaxtd.lazy import DENSE_MAX_SIZE
from jaxtd.phase import coarse_widths
from jaxtd.results import Results
from jaxtd.units import fmt_bytes, fmt_seconds
from jaxtd.store import (READ_ERRORS, ResultsError, arrays_sha256, jsonable, read_json,
                         remove_stray_temporaries, write_json, atomic_write,
                         config_fingerprint, identity_diff, lock_dir)

__all__ = ["SubSweep", "Outcome", "plan", "describe", "run", "make_target", "make_algorithm",
           "hyperparameters", "lazy_best_residuals", "default_chunk_size", "total_cells",
           "count_programs", "programs_of", "estimate", "estimate_wall", "cache_state",
           "machine_load", "machine_speed", "log_paths", "phase_cells", "phase_weights",
           "describe_phase", "run_phase", "PhaseOutcome"]

# Throughput assumed by the chunk sizes: a rough figure for 2 CPU cores (float32,
# jit-compiled); only the order of magnitude matters. The time estimates use their own,
# measured figures (below), so that re-calibrating them does not change how a run is chunked.
_FLOPS_PER_SECOND = 1e11
_SECONDS_PER_CHUNK = 3.0  # a progress bar that moves every few seconds


@dataclasses.dataclass(frozen=True)
class SubSweep:
    """One :func:`jaxtd.sweep` grid of the experiment: an algorithm at one problem size.

    ``train`` False (``[lazy] train = false``): no lazy GD, only the exact best lazy residual.
    ``hparams``: swept hyper-parameters, ``{algorithm hparam name: values}``.
    """

    algorithm: str
    order: int
    dim: int
    rank: int
    seeds: int
    widths: tuple[int, ...]
    steps: int
    hparams: tuple[tuple[str, tuple[float, ...]], ...]
    chunk_size: int
    train: bool = True

    @property
    def folder(self) -> str:
        return f"{self.algorithm}-l{self.order}-d{self.dim}-r{self.rank}"

    @property
    def n_hparams(self) -> int:
        return math.prod(len(v) for _, v in self.hparams) if self.hparams else 1

    @property
    def cells(self) -> int:
        return self.seeds * len(self.widths) * self.n_hparams

    @property
    def lazy_best(self) -> bool:
        return self.algorithm == "lazy"

    @property
    def n_chunks(self) -> int:
        return -(-self.seeds // self.chunk_size)

    def chunks(self) -> list[tuple[int, ...]]:
        seeds = tuple(range(self.seeds))
        return [seeds[i:i + self.chunk_size] for i in range(0, self.seeds, self.chunk_size)]


@dataclasses.dataclass
class Outcome:
    """What :func:`run` returns: the results and the compile/run statistics of every part."""

    results: Any
    infos: list
    n_compiles: int = 0
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    n_loaded: int = 0
    load_seconds: float = 0.0

    def add(self, info: Mapping[str, Any]) -> None:
        self.infos.append(dict(info))
        self.n_compiles += int(info.get("n_compiles", 0))
        self.compile_seconds += float(info.get("compile_seconds", 0.0))
        self.run_seconds += float(info.get("run_seconds", 0.0))
        self.n_loaded += int(info.get("n_programs_loaded", 0))
        self.load_seconds += float(info.get("load_seconds", 0.0))


# -- building blocks ----------------------------------------------------------------------------

def make_target(target: cfg.Target, order: int, dim: int, rank: int):
    """The ground truth of one problem size (key ``PRNGKey(target.seed)``)."""
    key = jax.random.PRNGKey(target.seed)
    weights = target.weights if isinstance(target.weights, str) else list(target.weights)
    if target.kind == "random":
        return targets.random_unit(key, dim, rank, order, weights)
    return targets.orthonormal(key, dim, rank, order, weights, basis=target.kind == "basis")


def make_algorithm(config: cfg.Config, name: str):
    """The :class:`~jaxtd.algorithms.Algorithm` of table ``[name]``, named ``name`` (so the
    sweep's files, the progress bar and the ``algorithm`` column all say the same); built-in
    and user tables alike, and built once per table: the one :func:`jaxtd.config.parse` built
    to check the table (:func:`jaxtd.config.build_algorithm`)."""
    return cfg.build_algorithm(name, config.params[name])


def _column_value(value: Any) -> Any:
    """A resolved argument as a CSV cell: scalars as they are; a table (``optimizer_args``) or a
    list as compact JSON with sorted keys (``{"b1":0.8}``; ``{}`` when empty), one column that
    groups and round-trips."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hyperparameters(config: cfg.Config, name: str, algorithm) -> dict[str, Any]:
    """The CSV columns of table ``[name]``, built-in or user: each hyper-parameter once, under
    the algorithm's name for it (deflation's ``step_size`` is ``learning_rate``, its ``delta0``
    ``init_scale``), valued from ``algorithm.hparams`` (what the program runs with, e.g.
    deflation's ``regularization`` left to ``epsilon / 10``); every other resolved key of the
    table as it is (``optimizer_args`` and other tables as JSON text; ``None``, the lazy
    experiment keys and ``factory`` left out). Swept hyper-parameters are omitted: the sweep
    adds them as columns of the same name. Which key sets which hyper-parameter comes from the
    table's schema (``Param.hparam``), the one place that knows it."""
    table = config.params[name]
    hparams = dict(algorithm.hparams)
    sets = {p.name: p.hparam for p in cfg.table_schema(name, table)}
    sweeping = {h for h, _ in cfg.swept(config, name)}
    out = {k: _column_value(v) for k, v in cfg.constructor_values(name, table).items()
           if v is not None and not isinstance(v, tuple) and sets.get(k) not in hparams}
    out.update({k: float(v) for k, v in hparams.items() if k not in sweeping})
    return out


def _seeds(config: cfg.Config, name: str) -> int:
    """How many seeds algorithm ``name`` runs (``[lazy] seeds`` may cut the lazy ones)."""
    n = config.sweep.seeds
    limit = config.params[name].get("seeds", 0) if name == "lazy" else 0
    return min(n, limit) if limit else n


def _buckets(config: cfg.Config, name: str, dim: int, rank: int, chunk: int, widths=None):
    """The width buckets :func:`jaxtd.sweep` forms for a chunk of ``chunk`` seeds over ``widths``
    (default ``[sweep] widths``): the sweep's own plan (:func:`jaxtd._buckets.plan_buckets`)."""
    s = config.sweep
    n_h = math.prod(len(v) for _, v in cfg.swept(config, name)) or 1
    return plan_buckets(s.widths if widths is None else widths, s.bucketing,
                        platform=jax.devices()[0].platform, dim=dim, rank=rank, steps=s.steps,
                        n_hparams=n_h, chunk_size=chunk, n_devices=len(jax.devices()))


def _seed_cost(config: cfg.Config, name: str, order: int, dim: int, rank: int) -> float:
    """Rough flops of one seed of a sub-sweep (every width and hparam combination)."""
    s = config.sweep
    n_h = math.prod(len(v) for _, v in cfg.swept(config, name)) or 1
    flops = 0.0
    for bucket in _buckets(config, name, dim, rank, _seeds(config, name),
                           cfg.case_widths(config, order, dim)):
        m = max(bucket)
        # loss + gradient in Gram form, O((m + r)^2 d) per step, ~10 passes (grad, metrics)
        flops += len(bucket) * n_h * s.steps * 10.0 * (m + rank) ** 2 * dim * max(order - 1, 1)
    return flops


def default_chunk_size(config: cfg.Config, name: str, order: int, dim: int, rank: int) -> int:
    """Seeds per chunk so a chunk takes about ``_SECONDS_PER_CHUNK`` on 2 cores: the largest
    divisor of the seed count under that budget (equal chunks share one compiled program)."""
    n = _seeds(config, name)
    per_seed = _seed_cost(config, name, order, dim, rank) / _FLOPS_PER_SECOND
    budget = max(1, int(_SECONDS_PER_CHUNK / max(per_seed, 1e-9)))
    return largest_divisor_at_most(n, budget)  # bounded time, whatever the seed count


def plan(config: cfg.Config) -> list[SubSweep]:
    """The sub-sweeps of ``config``, in run order (problem size, then algorithm)."""
    s = config.sweep
    out = []
    for order, dim, rank in config.target.sizes:
        for name in s.algorithms:
            n = _seeds(config, name)
            chunk = s.chunk_size or default_chunk_size(config, name, order, dim, rank)
            train = bool(config.params[name].get("train", True)) if name == "lazy" else True
            out.append(SubSweep(name, order, dim, rank, n, cfg.case_widths(config, order, dim),
                                s.steps, cfg.swept(config, name), min(chunk, n), train))
    return out


def _chunk_shapes(sub: SubSweep) -> int:
    """Distinct chunk lengths of ``sub`` (each padded to a multiple of the device count): each
    chunk is its own :func:`jaxtd.sweep` call, so a last, shorter chunk is one more program per
    width bucket."""
    n_dev = len(jax.devices())
    full, last = divmod(sub.seeds, sub.chunk_size)  # closed form: seeds may be huge
    lengths = ({sub.chunk_size} if full else set()) | ({last} if last else set())
    return len({-(-n // n_dev) for n in lengths})


def programs_of(config: cfg.Config, sub: SubSweep) -> list[str]:
    """The programs a run of ``sub`` compiles, by kind: ``"grid:<algorithm>"`` per width bucket
    and chunk length, ``"lazy_table"`` (the exact lazy optimum), ``"slope"`` (the init-scale
    derivative pass)."""
    out = []
    if sub.train:
        buckets = _buckets(config, sub.algorithm, sub.dim, sub.rank, sub.chunk_size, sub.widths)
        out += [f"grid:{sub.algorithm}"] * (len(buckets) * _chunk_shapes(sub))
    if _slope_pass(config, sub):
        out.append("slope")
    if sub.lazy_best:
        out.append("lazy_table")
    return out


def count_programs(config: cfg.Config) -> int:
    """Programs a run of ``config`` compiles (or loads from the persistent cache): what the
    progress bar counts and the run reports at the end."""
    return sum(len(programs_of(config, sub)) for sub in plan(config))


# The time estimates' constants were measured on one reference machine (2 cores, AMD EPYC,
# jax 0.10.2, 2026-12-08: `jaxtd run` of every preset, cold and warm, and benchmarks/compile.py;
# benchmarks/results/estimate-2026-12-08.txt). Another CPU scales them by machine_speed().
#
# Seconds to trace, lower and compile one program on the idle reference CPU, by kind. A warm
# run loads the executable an earlier run saved (no tracing): about 5% of a cold compile.
# Other platforms: no measurement yet, the CPU figures are used.
_COMPILE_SECONDS = {
    "cpu": {"grid:gd": 1.0, "grid:variant": 2.5, "grid:deflation": 2.0, "grid:lazy": 1.5,
            "grid": 1.5, "lazy_table": 0.8, "slope": 2.5},
}
_WARM_FRACTION = 0.05
# On a busy CPU compilation slows down more than the share of the cores suggests (measured:
# 8-13x at 5-7x oversubscription): the compile estimate scales with load ** this.
_COMPILE_LOAD_EXPONENT = 1.2
# Fixed seconds of a run besides compiling and computing: starting JAX, building the targets
# (small eager programs), writing results and figures (a warm headline: 8.0 s wall, 4.5 s run).
_FIXED_SECONDS = 3.5
# A grid's run on the reference machine: its flops (_seed_cost) at this rate, plus this many
# seconds per padded row and step (elementwise work and loop overhead, which dominate small
# problems); fitted to the measured run seconds of five presets' grids (within 1.4x, except
# deflation's, under by 3x).
_RUN_FLOPS_PER_SECOND = 2.1e11
_ROW_STEP_SECONDS = 2.6e-8
# The exact lazy optimum's matrix-free CG: ~20 m^2 d flops per width and iteration budget at
# this rate (lazy-threshold's tables: 16 s estimated, 17 s measured; smaller tables converge
# sooner and are overestimated).
_CG_FLOPS_PER_SECOND = 5e9
# The init-scale derivative pass runs every cell again with a forward-mode tangent: measured
# 3x the plain runs' seconds (init-scale preset: 14 s after 4.7 s).
_SLOPE_RUN_FACTOR = 3.0
# machine_speed()'s probe: CPU seconds of _probe() on the reference machine (best of 5).
_PROBE_REFERENCE_S = 0.0085


def _compile_seconds(kind: str, warm: bool, platform: str) -> float:
    table = _COMPILE_SECONDS.get(platform, _COMPILE_SECONDS["cpu"])
    cold = table.get(kind, table["grid"] if kind.startswith("grid:") else table["slope"])
    return cold * (_WARM_FRACTION if warm else 1.0)


def _probe() -> int:
    return sum(i * i % 7 for i in range(200_000))


def machine_speed() -> float:
    """How many times longer than the reference machine this CPU takes to compile and run
    (clipped to [0.25, 8]): the CPU seconds of a fixed pure-Python loop, best of 5, against the
    reference's. CPU time, not wall time, so that a busy machine is not counted twice (its
    load is :func:`machine_load`'s). XLA compiles on one thread and the grids' steps are
    small, so one core's speed is what the estimate scales with."""
    best = math.inf
    for _ in range(5):
        t0 = time.process_time()
        _probe()
        best = min(best, time.process_time() - t0)
    return min(8.0, max(0.25, best / _PROBE_REFERENCE_S))


def cache_state(enabled: bool = True) -> tuple[bool, str]:
    """``(warm, description)`` of the persistent compilation cache ``jaxtd run`` would use: warm
    when its folder exists and holds entries (a proxy: they may be another run's programs)."""
    if not enabled:
        return False, "compile cache off (--no-compile-cache)"
    folder = default_cache_dir()
    try:
        n = sum(1 for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        n = 0
    if n:
        return True, f"compile cache warm ({n} entries in {folder})"
    return False, f"compile cache cold ({folder} empty or absent)"


def machine_load() -> float:
    """How much slower than an idle machine a run is expected to go: other processes' share of
    the cores (1-minute load average / cores, at least 1; 1 where unknown)."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except (OSError, AttributeError):
        return 1.0
    return max(1.0, (load + 1.0) / cores)


_CHUNK_OVERHEAD_SECONDS = 0.02
_STEP_SECONDS = 5e-6


def _sub_estimate(config: cfg.Config, sub: SubSweep) -> tuple[int, int, int, float, float]:
    """``(programs, cells, lazy cells, peak bytes, seconds)`` of one sub-sweep (rough; compute
    only, compilation apart: :func:`programs_of`)."""
    s = config.sweep
    buckets = (_buckets(config, sub.algorithm, sub.dim, sub.rank, sub.chunk_size, sub.widths)
               if sub.train else ())
    programs = len(programs_of(config, sub))
    cells = sub.cells if sub.train else 0
    lazy_cells = sub.seeds * len(sub.widths) if sub.lazy_best else 0
    # per cell: state ~ 8 (m, d) arrays, the loss's Gram form ~ 4 (m + r)^2 matrices (forward
    # and backward), the precise final metric's error-free Gram ~ 18 (m + r)^2 d arrays
    # (measured: 25 GB for one lazy cell at m = 3000, d = 40), histories ~ 8 scalars + r fitted
    # weights per record
    n_rec = s.steps // s.record_every + 1
    mem = sum(len(b) * sub.n_hparams * sub.chunk_size
              * (8 * max(b) * sub.dim + (4 + 18 * sub.dim) * (max(b) + sub.rank) ** 2
                 + n_rec * (8 + sub.rank)) * 4 for b in buckets)
    seconds = (sub.seeds * _seed_cost(config, sub.algorithm, sub.order, sub.dim, sub.rank)
               / _RUN_FLOPS_PER_SECOND if sub.train else 0.0)
    if sub.train:
        # each chunk is a dispatch and an atomic, checksummed file write; each scanned step of a
        # program costs a few microseconds of loop and kernel launches, and each padded row of
        # each cell a little per step, however small the problem
        rows = sum(len(b) * max(b) for b in buckets) * sub.n_hparams * sub.seeds
        seconds += sub.n_chunks * (_CHUNK_OVERHEAD_SECONDS
                                   + len(buckets) * s.steps * _STEP_SECONDS)
        seconds += rows * s.steps * _ROW_STEP_SECONDS
    if sub.lazy_best:
        # every width is solved at the largest size (masked rows), one seed's table at a time
        md = max(sub.widths) * sub.dim
        method = config.params["lazy"].get("method", "auto")
        if method == "dense" or (method == "auto" and md <= DENSE_MAX_SIZE):
            mem = max(mem, sub.seeds * md ** 2 * 8 * 3)  # float64 normal equations
            seconds += sub.seeds * len(sub.widths) * md ** 3 / 3 / 1e9
        else:  # matrix-free CG: Gram matrices and a few (m, d) vectors
            mem = max(mem, sub.seeds * (max(sub.widths) ** 2 + 16 * md) * 8 * 4)
            seconds += (sub.seeds * len(sub.widths) * 20 * md * max(sub.widths) ** 2
                        / _CG_FLOPS_PER_SECOND)
    if _slope_pass(config, sub):  # the runs again with one forward-mode tangent
        seconds *= 1.0 + _SLOPE_RUN_FACTOR
    return programs, cells, lazy_cells, float(mem), float(seconds)


def estimate(config: cfg.Config) -> tuple[float, float]:
    """Rough ``(peak memory in bytes, compute seconds on 2 CPU cores)`` of a run, from the plan
    alone (nothing is traced): what ``--dry-run`` prints and the size guard checks."""
    peak = seconds = 0.0
    for sub in plan(config):
        _, _, _, mem, sec = _sub_estimate(config, sub)
        peak, seconds = max(peak, mem), seconds + sec
    return peak, seconds


def estimate_wall(config: cfg.Config, *, warm: bool = False, load: float = 1.0,
                  speed: float = 1.0) -> dict[str, float]:
    """Rough seconds of a run on this platform: ``compile`` (every program of
    :func:`programs_of`, ``warm``: loaded from the persistent cache), ``compute`` (as
    :func:`estimate`), ``fixed`` (targets, outputs, figures) and their ``total``, each times
    ``speed`` (:func:`machine_speed`) and ``load`` (:func:`machine_load`) on a CPU
    (compilation: ``load ** 1.2``)."""
    platform = jax.devices()[0].platform
    compile_s = compute = 0.0
    for sub in plan(config):
        compile_s += sum(_compile_seconds(k, warm, platform) for k in programs_of(config, sub))
        compute += _sub_estimate(config, sub)[4]
    if platform == "cpu":
        compile_s, compute = compile_s * speed, compute * speed
    factor = load if platform == "cpu" else 1.0
    out = {"compile": compile_s * factor ** _COMPILE_LOAD_EXPONENT, "compute": compute * factor,
           "fixed": _FIXED_SECONDS * factor * speed}
    out["total"] = sum(out.values())
    return out


def describe(config: cfg.Config, *, compile_cache: bool = True,
             load: Optional[float] = None, speed: Optional[float] = None) -> str:
    """The plan of a run as text: sub-sweeps, cells, programs to compile, a rough time (compile
    and compute apart, cold or warm compile cache) and memory estimate. Nothing is run or
    written. ``compile_cache``: whether the run uses the persistent cache (``jaxtd run``
    without ``--no-compile-cache``); ``load``: slowdown of a busy machine (default
    :func:`machine_load`); ``speed``: this CPU's time against the reference machine's (default
    :func:`machine_speed`)."""
    s = config.sweep
    lines = [f"{config.name}: {len(config.target.sizes)} problem size(s) x "
             f"{len(s.algorithms)} algorithm(s), {s.steps} steps, record every "
             f"{s.record_every}, bucketing {s.bucketing}"]
    total_cells = total_programs = 0
    peak = total_seconds = 0.0
    for sub in plan(config):
        programs, cells, lazy_cells, mem, seconds = _sub_estimate(config, sub)
        peak, total_seconds = max(peak, mem), total_seconds + seconds
        hp = "".join(f", {k} x{len(v)}" for k, v in sub.hparams)
        what = "exact best residual only" if not sub.train else (
            f"{cells} cells in {sub.n_chunks} chunk(s) of {sub.chunk_size} "
            "seed(s)")
        extra = f" + best residual of {lazy_cells} cells" if sub.lazy_best and sub.train else ""
        if _slope_pass(config, sub):
            extra += " + d error / d log init_scale (forward mode, the runs again)"
        lines.append(f"  {sub.folder}: {sub.seeds} seeds x {len(sub.widths)} widths{hp}: "
                     f"{what}{extra}; {programs} program(s) to compile; ~{fmt_bytes(mem)}")
        total_cells += cells if sub.train else lazy_cells
        total_programs += programs
    warm, cache = cache_state(compile_cache)
    load = machine_load() if load is None else load
    speed = machine_speed() if speed is None else speed
    wall = estimate_wall(config, warm=warm, load=load, speed=speed)
    busy = f"; machine busy (load x{load:.1f})" if load > 1.05 else ""
    if abs(speed - 1.0) > 0.05:
        busy += f"; this CPU x{speed:.2f} the reference machine's time"
    loaded = (" (or to load: a warm cache holds those an earlier run of the same configuration "
              "saved)") if warm else ""
    lines.append(f"total: {total_cells} runs (cells), {total_programs} programs to compile"
                 f"{loaded}, peak memory ~{fmt_bytes(peak)}")
    def sec(t):  # seconds up to 10 minutes: minutes would round a 2.4-minute run to 2
        return f"{t:.0f} s" if t < 600 else fmt_seconds(t)
    lines.append(f"time: ~{sec(wall['total'])} (compile ~{sec(wall['compile'])}, compute "
                 f"~{sec(wall['compute'])}, start-up and outputs ~{sec(wall['fixed'])}; rough); "
                 f"{cache}{busy}")
    return "\n".join(lines)


# -- the exact lazy optimum -------------------------------------------------------------------

class _CompileCounter:
    """Counts XLA compilations (and their seconds) while active, from JAX's monitoring events.
    The event wraps JAX's compile-or-load, so a program loaded from the persistent cache counts
    too (with its load time), as the sweeps count theirs; a program in a jit's in-memory cache
    does not."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count, self.seconds = 0, 0.0

    def __call__(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1
            self.seconds += float(duration)

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)
        return False


def lazy_best_residuals(algorithm, target, seeds: Sequence[int], widths: Sequence[int],
                        outcome: Optional[Outcome] = None,
                        on_cells: Optional[Callable[[int], None]] = None, *,
                        init: str = "antisymmetric", signs: str = "auto",
                        init_scale: float = 1.0, method: str = "auto",
                        on_event: Optional[Callable[..., None]] = None):
    """``(len(seeds), len(widths))`` exact best lazy residuals, in float64.

    Cell ``(s, m)`` linearizes at the very ``W0`` of the lazy GD cell (``algorithm``, a
    :func:`jaxtd.algorithms.lazy_gd` with ``init``, ``signs``, ``init_scale``; key
    :func:`jaxtd.sweep.key_for_seed` ``(s)``), drawn in the target's dtype and solved in float64:
    the float32 normal equations cannot resolve a zero residual. One compiled program per problem
    size (:func:`jaxtd.lazy.best_residual_table`, ``method`` its solver). Compile and run times
    are added to ``outcome``; ``on_cells`` receives the number of cells done; ``on_event`` gets
    ``("compile_start", what=...)`` just before the table's program is traced and compiled.
    """

    keys = jnp.stack([key_for_seed(int(s)) for s in seeds])
    if on_event is not None:
        on_event("compile_start", what=f"exact lazy optimum {len(seeds)}x{len(widths)}")
    call = lazy.table_call(keys, target, list(widths), init=init, signs=signs,
                           init_scale=float(init_scale), method=method)
    # kept like the grids' programs: a warm run loads it instead of tracing and lowering again
    key = _executables.program_key(
        ("jaxtd.lazy.best_residual_table", tuple(sorted(call.options.items()))), call.args)
    t0 = time.perf_counter()
    with _CompileCounter() as compiles:
        executable, seconds, how = _executables.get(key, lambda: lazy.lower_table(call),
                                                    disk_key=key, program=key[0])
        with jax.enable_x64(True):
            out = np.asarray(executable(*call.args), np.float64).T
    elapsed = time.perf_counter() - t0
    if outcome is not None:
        loaded = seconds if how == "disk" else 0.0
        outcome.add({"n_compiles": compiles.count, "compile_seconds": compiles.seconds,
                     "n_programs_loaded": int(how == "disk"), "load_seconds": loaded,
                     "run_seconds": max(elapsed - compiles.seconds - loaded, 0.0)})
    if on_cells is not None:
        on_cells(len(seeds) * len(widths))
    return out


def _lazy_column(results, algorithm, target, folder: Path, outcome: Outcome, notify,
                 table_params: Mapping[str, Any], identity: str = "", events=None):
    """Add ``lazy_best_residual`` to a lazy sweep's rows (cached in ``folder/lazy_best.npz``,
    which records the sub-sweep's ``identity`` and the sha256 of its arrays: a cache of another
    config, or a damaged one, is recomputed, never trusted). ``notify`` receives the cells
    solved (pass a no-op when the rows were counted already)."""
    widths = sorted(set(int(w) for w in results.rows["width"]))
    seeds = sorted(set(int(s) for s in results.rows["seed"]))
    cache = folder / "lazy_best.npz"
    table = None
    if cache.exists():
        try:
            with np.load(cache) as saved:
                arrays = {k: saved[k] for k in ("residual", "widths", "seeds")}
                if (list(arrays["widths"]) == widths and list(arrays["seeds"]) == seeds
                        and str(saved["identity"]) == identity
                        and str(saved["sha256"]) == arrays_sha256(arrays)):
                    table = arrays["residual"]
                    notify(len(seeds) * len(widths))
        except READ_ERRORS:
            table = None  # a damaged or foreign cache is recomputed, never trusted
    if table is None:
        p = table_params
        scale = p["init_scale"][0] if isinstance(p["init_scale"], tuple) else p["init_scale"]
        if events is not None:
            events.phase("exact lazy optimum")
        table = lazy_best_residuals(algorithm, target, seeds, widths, outcome, notify,
                                    init=p["init"], signs=p["signs"], init_scale=scale,
                                    method=p["method"], on_event=events)
        if events is not None:
            events.phase(None)
        if jax.process_index() == 0:  # several processes: only process 0 writes
            folder.mkdir(parents=True, exist_ok=True)
            arrays = {"residual": np.asarray(table), "widths": np.asarray(widths),
                      "seeds": np.asarray(seeds)}
            with lock_dir(folder), atomic_write(str(cache)) as f:
                np.savez(f, **arrays, identity=np.asarray(identity),
                         sha256=np.asarray(arrays_sha256(arrays)))
    col = [table[seeds.index(int(s)), widths.index(int(w))]
           for s, w in zip(results.rows["seed"], results.rows["width"])]
    rows = results.rows.assign(lazy_best_residual=np.asarray(col, np.float64))
    return dataclasses.replace(results, rows=rows)


def _residual_only(widths: Sequence[int], n_seeds: int):
    """Lazy rows without training (``[lazy] train = false``): no lazy GD error (NaN); success is
    decided by the best residual once it is added."""
    rows = pd.DataFrame([dict(seed=s, width=w, final_relative_error=float("nan"), success=False,
                              diverged=False) for s in range(n_seeds) for w in widths])
    return Results(rows, {})


# -- the derivative in the init scale (plot = "init-scale") -------------------------------------

def _slope_pass(config: cfg.Config, sub: SubSweep) -> bool:
    """Whether ``sub`` gets the column ``d_error_d_log_init_scale``: the init-scale figure asks
    for it, and ``sub`` trains and sweeps ``init_scale``."""
    return (config.plot == "init-scale" and sub.train
            and "init_scale" in dict(sub.hparams))


def _slope_column(results, algorithm, target, sub: SubSweep, config: cfg.Config, folder: Path,
                  outcome: Outcome, events=None):
    """Add ``d final_relative_error / d log init_scale`` (:func:`jaxtd.transition.add_slope_column`,
    forward mode through every run; cached in ``folder/scale_slopes-<k>.npz``)."""
    if events is not None:  # the pass compiles one program, then runs every cell again
        events.phase("d error / d log init_scale")
        events("compile_start", what="d error / d log init_scale")
    t0 = time.perf_counter()
    programs = []
    with _CompileCounter() as compiles:
        out = transition.add_slope_column(results, algorithm, target, steps=sub.steps,
                                          record_every=config.sweep.record_every,
                                          cache=folder / "scale_slopes",
                                          on_program=lambda how, s: programs.append((how, s)))
    elapsed = time.perf_counter() - t0
    loaded = [s for how, s in programs if how == "disk"]
    outcome.add({"n_compiles": compiles.count, "compile_seconds": compiles.seconds,
                 "n_programs_loaded": len(loaded), "load_seconds": sum(loaded),
                 "run_seconds": max(elapsed - compiles.seconds - sum(loaded), 0.0)})
    if events is not None:
        events.phase(None)
    return out


# -- running ----------------------------------------------------------------------------------

class ResumeError(cfg.ConfigError):
    """A saved part of the run does not match the requested one (one line, names the folder)."""


def _one_sweep(algorithm, target, sub: SubSweep, config: cfg.Config, folder: Path,
               seeds: Sequence[int], resume: bool, on_event=None, callback=None):
    """One chunk of a sub-sweep: :func:`jaxtd.sweep` with ``folder`` as its ``out_dir``. A
    saved chunk is reused only through the sweep's store, which checks its full identity
    (algorithm and every argument, target, seeds, widths, steps, dtype, ...) and every file's
    checksum; a mismatch is a :class:`ResumeError` naming the folder and the differing fields.
    Returns ``(results, resumed)``."""
    s = config.sweep
    try:
        res = sweep(algorithm, target, seeds=list(seeds), widths=list(sub.widths),
                    steps=sub.steps, record_every=s.record_every,
                    hparams={k: list(v) for k, v in sub.hparams} or None,
                    success_threshold=s.success_threshold, out_dir=str(folder), resume=resume,
                    progress=False, bucketing=s.bucketing, on_event=on_event,
                    callback=callback)
    except ResultsError as err:
        detail = getattr(err, "problem", None) or (str(err).splitlines()[0] if str(err)
                                                   else type(err).__name__)
        raise ResumeError(str(folder), f"saved results cannot be reused ({detail})",
                          "resume with the same config and dtype (JAX_ENABLE_X64), or delete "
                          "that folder to recompute it, or choose another --out") from None
    return res, bool(res.info.get("chunks_resumed", 0))


def log_paths(config: cfg.Config, out_dir: Path | str, sub: SubSweep) -> dict[str, Path]:
    """Where ``[log]`` writes the history of ``sub``: ``{"jsonl" | "csv" | "tensorboard": path}``
    for the writers it turns on (``out_dir/log/<sub.folder>.jsonl``, ``.csv``, and the folder
    ``out_dir/log/tensorboard/<sub.folder>``)."""
    root = Path(out_dir) / "log"
    paths = {"jsonl": root / f"{sub.folder}.jsonl", "csv": root / f"{sub.folder}.csv",
             "tensorboard": root / "tensorboard" / sub.folder}
    return {k: v for k, v in paths.items() if getattr(config.log, k)}


class _SubLog:
    """The ``[log]`` writers of one sub-sweep (process 0 only): each sweep record with the
    config's algorithm table name and the problem size in front. Appends when resuming, so the
    chunks computed before an interruption keep their records and resumed chunks add none."""

    def __init__(self, config: cfg.Config, out_dir: Path, sub: SubSweep, resume: bool):
        self.head = {"algorithm": sub.algorithm, "order": sub.order, "dim": sub.dim,
                     "rank": sub.rank}
        self.writers = []
        if jax.process_index() != 0:
            return
        try:
            for kind, path in log_paths(config, out_dir, sub).items():
                self.writers.append(log.tensorboard_writer(path) if kind == "tensorboard" else
                                    getattr(log, f"{kind}_writer")(path, append=resume))
        except BaseException:
            self.close()
            raise

    @property
    def callback(self):
        return self if self.writers else None

    def __call__(self, records) -> None:
        records = [{**self.head, **{k: v for k, v in r.items() if k != "algorithm"}}
                   for r in records]
        for writer in self.writers:
            writer(records)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _sub_identity(config: cfg.Config, sub: SubSweep) -> dict:
    """The resolved config of one sub-sweep: what its saved folder was computed from (target,
    sweep keys, the algorithm's table, and :func:`jaxtd._sweep.numerics_identity`: dtype, x64,
    platform, PRNG implementation), as written to ``sweeps/<sub>/sub.json``."""
    t, s = config.target, config.sweep
    return jsonable({
        "target": {"order": sub.order, "dim": sub.dim, "rank": sub.rank, "kind": t.kind,
                   "weights": t.weights if isinstance(t.weights, str) else list(t.weights),
                   "seed": t.seed},
        "sweep": {"seeds": sub.seeds, "widths": list(sub.widths), "steps": sub.steps,
                  "record_every": s.record_every, "success_threshold": s.success_threshold,
                  "bucketing": s.bucketing, "chunk_size": sub.chunk_size,
                  "hparams": {k: list(v) for k, v in sub.hparams}},
        sub.algorithm: dict(config.params[sub.algorithm]),
        # the lazy-optimum cache beside the sweep is reused under this identity too
        "numerics": numerics_identity()})


def _check_sub(config: cfg.Config, sub: SubSweep, folder: Path, resume: bool) -> str:
    """Compare the saved ``sub.json`` of ``folder`` with the requested sub-sweep (a
    :class:`ResumeError` listing the differing keys, e.g. after ``config.toml`` was edited),
    write it when absent (holding the folder's lock, which also clears temporaries a killed
    writer left there); return its fingerprint. Process 0 decides for every process."""
    identity = _sub_identity(config, sub)
    path = folder / "sub.json"
    problem = None
    if jax.process_index() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        with lock_dir(folder):
            remove_stray_temporaries(str(folder))
            if resume and path.is_file():
                try:
                    saved = read_json(str(path), "sub.json", "")
                    saved = saved.get("config") if isinstance(saved, dict) else None
                except ResultsError as err:
                    saved, problem = None, str(err).split("; ")[0]
                if problem is None and saved != identity:
                    diff = "; ".join(identity_diff(saved if isinstance(saved, dict) else {},
                                                   identity))
                    problem = f"was computed with another config (differs in {diff})"
            else:
                write_json(str(path), {"format": "jaxtd.sub/1", "config": identity})
    problem = distributed.broadcast_json(problem)
    if problem is not None:
        raise ResumeError(str(folder), problem, "resume with the config it was run with, or "
                          "delete that folder to recompute it, or choose another --out")
    return config_fingerprint(identity)


def run(config: cfg.Config, out_dir: Path | str, *, resume: bool = False,
        on_cells: Optional[Callable[[int], None]] = None,
        on_start: Optional[Callable[[SubSweep], None]] = None,
        on_event: Optional[Callable[..., None]] = None) -> Outcome:
    """Run every sub-sweep of ``config`` under ``out_dir/sweeps``.

    ``on_cells(n)`` is called after each finished (or resumed) chunk with its number of rows, so
    the counts add up to :func:`total_cells`, the number of rows of the results (the best lazy
    residuals of trained lazy rows and the init-scale derivatives add columns, not rows: they
    are announced through ``on_event``); ``on_start(sub)`` before each sub-sweep.
    ``on_event(kind, **info)``: ``"compile_start"`` (``what``) before a program is traced and
    compiled, ``"compile_end"`` (``seconds``) when that compilation (or load from the persistent
    cache) is over, ``"phase"`` (``what``) when a pass that adds a column starts and
    ``"phase"`` with ``what=None`` when it ends. Returns an :class:`Outcome` whose ``results``
    hold every row: ``algorithm``, ``order``, ``dim``, ``rank``, the hyper-parameters and the
    sweep's columns (lazy rows also ``lazy_best_residual``).
    """
    events = _Events(on_event) if on_event is not None else None
    if events is None:
        return _run(config, Path(out_dir), resume, on_cells, on_start, None)
    with events:
        return _run(config, Path(out_dir), resume, on_cells, on_start, events)


def _run(config, out_dir, resume, on_cells, on_start, events) -> Outcome:
    outcome = Outcome(None, [])
    notify = on_cells or (lambda n: None)
    parts = []
    algorithms: dict[str, Any] = {}
    for sub in plan(config):
        if on_start is not None:
            on_start(sub)
        target = make_target(config.target, sub.order, sub.dim, sub.rank)
        if sub.algorithm not in algorithms:
            algorithms[sub.algorithm] = make_algorithm(config, sub.algorithm)
        algorithm = algorithms[sub.algorithm]
        folder = out_dir / "sweeps" / sub.folder
        identity = _check_sub(config, sub, folder, resume)
        if sub.train:
            chunk_results = []
            sub_log = _SubLog(config, out_dir, sub, resume)
            try:
                for k, seeds in enumerate(sub.chunks()):
                    res, _ = _one_sweep(algorithm, target, sub, config,
                                        folder / f"chunk-{k:04d}", seeds, resume, events,
                                        sub_log.callback)
                    # a chunk finished earlier is read back: it compiles and runs nothing
                    outcome.add({k2: res.info.get(k2, 0) for k2 in
                                 ("n_compiles", "compile_seconds", "run_seconds",
                                  "n_programs_loaded", "load_seconds")})
                    chunk_results.append(res)
                    notify(len(res))
            finally:
                sub_log.close()
            res = Results.concat(chunk_results) if len(chunk_results) > 1 else chunk_results[0]
        else:
            res = _residual_only(sub.widths, sub.seeds)
        if _slope_pass(config, sub):
            res = _slope_column(res, algorithm, target, sub, config, folder, outcome, events)
        if sub.lazy_best:  # trained rows were counted by their chunks; untrained ones here
            res = _lazy_column(res, algorithm, target, folder, outcome,
                               (lambda n: None) if sub.train else notify,
                               config.params["lazy"], identity, events)
            if not sub.train:
                best = res.rows["lazy_best_residual"].to_numpy()
                ok = np.isfinite(best) & (best <= config.sweep.success_threshold)
                res = dataclasses.replace(res, rows=res.rows.assign(success=ok))
        hp = hyperparameters(config, sub.algorithm, algorithm)
        hp = {k: v for k, v in hp.items() if k not in res.rows.columns}
        n = len(res)
        res = res.with_columns(algorithm=sub.algorithm, order=sub.order, dim=sub.dim,
                               rank=sub.rank)
        res = res.with_columns(**{k: np.full(n, v, dtype=object if isinstance(v, str) else None)
                                  for k, v in hp.items()})
        parts.append(res)
    results = Results.concat(parts)
    rows = results.rows
    for c in rows.columns:  # string hyper-parameters absent from some algorithm: "" not NaN
        if rows[c].dtype == object or pd.api.types.is_string_dtype(rows[c]):
            rows[c] = rows[c].fillna("")
    outcome.results = dataclasses.replace(results, rows=rows,
                                          info={"parts": outcome.infos})
    return outcome


def total_cells(config: cfg.Config) -> int:
    """Rows of a run of ``config``: what it reports through ``on_cells`` and the number of runs
    ``jaxtd run`` reports at the end (a lazy sub-sweep without training: one row per seed and
    width, its best residual)."""
    return sum(sub.cells if sub.train else sub.seeds * len(sub.widths) for sub in plan(config))


class _Events:
    """``run``'s ``on_event``: forwards the sweeps' ``compile_start`` and closes each with a
    ``compile_end`` when JAX reports the end of that compilation (its backend-compile event,
    which also marks a load from the persistent cache)."""

    def __init__(self, on_event: Callable[..., None]):
        self.on_event, self.open = on_event, False

    def __call__(self, kind: str, **info) -> None:
        if kind == "compile_start":
            self.close()
            self.open = True
            what = info.get("what") or f"width {info.get('padded_width')}"
            self.on_event("compile_start", what=what)
        elif kind == "chunk_done":
            self.close()

    def phase(self, what: Optional[str]) -> None:
        self.close()
        self.on_event("phase", what=what)

    def close(self, seconds: Optional[float] = None) -> None:
        if self.open:
            self.open = False
            self.on_event("compile_end", seconds=seconds)

    def _listener(self, event, duration, **kwargs) -> None:
        if event == _CompileCounter.EVENT and self.open:
            self.close(float(duration))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
        self.close()
        return False


# -- the phase diagram (plot = "phase-diagram") -------------------------------------------------

def phase_weights(config: cfg.Config) -> tuple:
    """The weight profiles of a phase-diagram config: ``[phase] weights``, else the one of
    ``[target] weights`` (a profile name or an explicit tuple)."""
    p = config.phase
    return p.weights if p is not None and p.weights else (config.target.weights,)


def phase_cells(config: cfg.Config) -> list[tuple]:
    """The ``(kind, weights, order, dim, rank)`` cells of a phase-diagram config:
    ``(d, [phase] rank)`` for ``d`` in ``[target] dim`` and ``([phase] dim, r)`` for ``r`` in
    ``[target] rank``, for each order, each of ``[phase] kinds`` and each weight profile of
    :func:`phase_weights` (a cell in both sweeps once)."""
    t, p = config.target, config.phase
    if p is None:
        raise ValueError("phase_cells needs a config with a [phase] table (plot = "
                         "\"phase-diagram\"), e.g. cfg.preset(\"phase-diagram\")")
    cells = []
    for kind in p.kinds:
        for weights in phase_weights(config):
            for order in t.orders:
                pairs = [(d, p.rank) for d in t.dims_of(order)] + [(p.dim, r) for r in t.ranks]
                cells += [(kind, weights, order, d, r) for d, r in dict.fromkeys(pairs)]
    return cells


def describe_phase(config: cfg.Config) -> str:
    """The plan of a phase-diagram run as text (``--dry-run``): cells, the search's coarse
    grid, seeds, steps, the lazy thresholds and where the exact lazy optimum checks them.
    The number of bisection calls depends on the outcomes, so no time is promised."""
    s, p = config.sweep, config.phase
    init = config.params["lazy"]["init"]
    coarse = coarse_widths(min(s.widths), max(s.widths), p.factor).tolist()
    cells = phase_cells(config)
    searched = [a for a in s.algorithms if a != "lazy"]
    profiles = ", ".join(_weights_label(w) for w in phase_weights(config))
    lines = [f"{config.name}: {len(cells)} cells (kinds {', '.join(p.kinds)}; weights "
             f"{profiles}; d sweep at "
             f"r={p.rank}, r sweep at d={p.dim}) x {len(s.algorithms)} algorithm(s); "
             f"{s.seeds} seeds, {s.steps} steps, success: relative error <= "
             f"{s.success_threshold:g}",
             f"  search ({', '.join(searched) or 'none'}): coarse widths {coarse}, then "
             f"bisection {p.batch} widths a call; {len(cells) * len(searched)} searches, "
             f">= {len(cells) * len(searched) * len(coarse) * s.seeds} runs (the coarse pass)"]
    if "lazy" in s.algorithms:
        sizes = sorted({(c[2], c[3]) for c in cells})
        several = len({o for o, _ in sizes}) > 1
        thr = ", ".join(f"{f'l={o} ' if several else ''}d={d}: {cfg.lazy_threshold(d, o, init)}"
                        for o, d in sizes)
        lines.append(f"  lazy: exact threshold ceil(C(d+l-1,l)/d) ({init} init) {thr}; checked "
                     f"by the exact lazy optimum at m*-1 and m* on {p.lazy_seeds} seeds at r={p.rank}, "
                     f"d in {list(p.lazy_check) or 'none'}")
    lines.append("  writes critical_widths.csv, exponents.csv, results.csv (every probed cell) "
                 "and phase_diagram_<kind>[_<weights>] figures; time: depends on the bisection "
                 "(no estimate)")
    return "\n".join(lines)


@dataclasses.dataclass
class PhaseOutcome:
    """What :func:`run_phase` returns: every probed run (``results``, with the cell columns),
    the rows of ``critical_widths.csv`` and ``exponents.csv``, and the statistics."""

    results: Any
    critical_widths: Any
    exponents: Any
    outcome: Outcome


def _phase_target(config: cfg.Config, cell: tuple):
    kind, weights, order, dim, rank = cell
    return make_target(dataclasses.replace(config.target, kind=kind, weights=weights), order,
                       dim, rank)


def _weights_label(weights) -> str:
    """The ``weights`` column: the profile name, or the explicit weights joined by ``/``."""
    return weights if isinstance(weights, str) else "/".join(f"{v:g}" for v in weights)


def _lazy_rows(config: cfg.Config, cell: tuple, outcome: Outcome) -> list[dict]:
    """The exact lazy optimum at ``m* - 1`` and ``m*`` on ``[phase] lazy_seeds`` seeds: rows
    (``seed``, ``width``, ``success``) checking the threshold ``m*``."""
    p, s = config.phase, config.sweep
    lz = config.params["lazy"]
    _, _, order, dim, _ = cell
    m_star = cfg.lazy_threshold(dim, order, lz["init"])
    widths = sorted({max(1, m_star - 1), m_star})
    algorithm = make_algorithm(config, "lazy")
    target = _phase_target(config, cell)
    scale = lz["init_scale"][0] if isinstance(lz["init_scale"], tuple) else lz["init_scale"]
    table = lazy_best_residuals(algorithm, target, list(range(p.lazy_seeds)), widths, outcome,
                                init=lz["init"], signs=lz["signs"], init_scale=scale,
                                method=lz["method"])
    table = np.asarray(table)
    return [dict(seed=si, width=w, success=bool(np.isfinite(table[si, j])
                                                 and table[si, j] <= s.success_threshold),
                 lazy_best_residual=float(table[si, j]))
            for si in range(p.lazy_seeds) for j, w in enumerate(widths)]


def _fixed_shape(evaluate: Callable, coarse) -> Callable:
    """``evaluate`` called with every request filled up to the coarse grid's widths count and
    largest width (the extra columns, widths of the coarse grid, are dropped): one padded
    shape, so one compiled program per cell instead of one per bisection call. On a CPU a
    compilation costs far more than re-running a few small widths; the same seeds give the same
    outcome at a width run twice (one deterministic program)."""
    coarse = [int(w) for w in coarse]

    def padded(widths) -> np.ndarray:
        widths = [int(w) for w in widths]
        fill = [w for w in reversed(coarse) if w not in widths]
        run = sorted(widths + fill[:max(0, len(coarse) - len(widths))])
        table = np.asarray(evaluate(run))
        return table[:, [run.index(w) for w in sorted(widths)]]

    return padded


def run_phase(config: cfg.Config, *, on_cell: Optional[Callable[[str, tuple], None]] = None,
              out_dir: Path | str | None = None, resume: bool = False) -> PhaseOutcome:
    """Run a phase-diagram config (``plot = "phase-diagram"``, a ``[phase]`` table).

    For each cell of :func:`phase_cells` and each searched algorithm (all but ``lazy``), the
    critical width is found by :func:`jaxtd.phase.search_critical_width` between the smallest
    and the largest ``[sweep] widths`` (coarse factor and batch from ``[phase]``), each probe
    one :func:`jaxtd.sweep` over the same ``[sweep] seeds``. Lazy cells take the exact
    threshold :func:`jaxtd.config.lazy_threshold` (interval of zero width: it is a property of
    the tangent space, not of a seed); at ``d`` in ``[phase] lazy_check`` the exact lazy
    optimum at ``m* - 1`` and ``m*`` measures it instead (its rows join ``results``). A cell
    whose target equals an earlier cell's (at ``r = 1`` every weight profile is the single
    weight 1) takes that search's runs instead of repeating them: same target, seeds and
    program, so the same outcome.

    ``critical_widths`` holds exactly :data:`jaxtd.phase.CRITICAL_WIDTH_COLUMNS` (bootstrap
    95% intervals), ``exponents`` exactly :data:`jaxtd.phase.EXPONENT_COLUMNS` (the exponent in
    ``d`` over the d sweep, in ``r`` over the r sweep). ``on_cell(algorithm, cell)`` (``cell``
    as in :func:`phase_cells`) is called before each search (the caller writes the outputs:
    :func:`jaxtd.cli.write_phase_outputs`).

    With ``out_dir`` every probe of every search is saved as it finishes, in
    ``out_dir/searches/<algorithm>-<kind>-<weights>-l<order>-d<dim>-r<rank>/probe_<k>`` (a
    :func:`jaxtd.sweep` folder, see :func:`jaxtd.phase.sweep_evaluator`); ``resume=True`` reuses
    the saved probes whose configuration is identical (algorithm and its arguments, target
    values, seeds, widths, steps, record cadence, success threshold, dtype, key) and refuses one
    holding another (:class:`jaxtd.store.IdentityError`), so an interrupted run continues from
    its last finished probe. ``resume=False`` refuses a folder that already holds a probe. The
    lazy cells (the exact threshold and its check) are recomputed.
    """
    if config.phase is None:
        raise ValueError("run_phase needs a config with a [phase] table (plot = "
                         "\"phase-diagram\"); use experiment.run for the others")
    s, p = config.sweep, config.phase
    outcome = Outcome(None, [])
    rows: list[dict] = []
    lazy_fixed: list[dict] = []
    searched: dict = {}  # one search per distinct problem (the same target, seeds and program)
    for name in s.algorithms:
        algorithm = make_algorithm(config, name) if name != "lazy" else None
        for cell in phase_cells(config):
            kind, weights, order, dim, rank = cell
            key = dict(algorithm=name, order=order, dim=dim, rank=rank, kind=kind,
                       weights=_weights_label(weights))
            if on_cell is not None:
                on_cell(name, cell)
            if name == "lazy":
                if dim in p.lazy_check and rank == p.rank:  # on the d sweep
                    rows += [dict(key, **r) for r in _lazy_rows(config, cell, outcome)]
                else:
                    m_star = cfg.lazy_threshold(dim, order, config.params["lazy"]["init"])
                    lazy_fixed.append(dict(key, critical_width=float(m_star),
                                           ci_low=float(m_star), ci_high=float(m_star),
                                           seeds=0))
                continue
            target = _phase_target(config, cell)
            problem = (name, kind, order, dim, rank, tuple(np.asarray(target.weights).tolist()))
            found = searched.get(problem)
            if found is None:
                folder = None if out_dir is None else Path(out_dir) / "searches" / (
                    f"{name}-{kind}-{_weights_label(weights).replace('/', '-')}-l{order}-d{dim}"
                    f"-r{rank}")
                evaluate = _fixed_shape(phase.sweep_evaluator(
                    algorithm, target, seeds=s.seeds, steps=s.steps,
                    success_threshold=s.success_threshold, record_every=s.record_every,
                    bucketing="single", out_dir=folder, resume=bool(resume)),
                    phase.coarse_widths(min(s.widths), max(s.widths), p.factor))
                t0 = time.perf_counter()
                found = searched[problem] = phase.search_critical_width(
                    evaluate, min(s.widths), max(s.widths), factor=p.factor, batch=p.batch)
                outcome.add({"run_seconds": time.perf_counter() - t0})
            rows += [dict(key, seed=si, width=int(w), success=bool(found.success[si, j]))
                     for si in range(found.success.shape[0]) for j, w in enumerate(found.widths)]
    probed = pd.DataFrame(rows)
    crit = phase.critical_widths(probed) if len(probed) else pd.DataFrame(
        columns=list(phase.CRITICAL_WIDTH_COLUMNS))
    crit = pd.concat([crit, pd.DataFrame(lazy_fixed, columns=list(phase.CRITICAL_WIDTH_COLUMNS))],
                     ignore_index=True) if lazy_fixed else crit
    crit = crit.sort_values(list(phase.CELL_COLUMNS), kind="stable").reset_index(drop=True)
    exps = _phase_exponents(config, probed, crit, lazy_fixed)
    results = Results(probed, {}, info={"parts": outcome.infos})
    return PhaseOutcome(results, crit, exps, outcome)


def _phase_exponents(config: cfg.Config, probed, crit, lazy_fixed):
    """The rows of ``exponents.csv``: :func:`jaxtd.phase.exponents` over the d sweep and the r
    sweep of the probed cells; the lazy cells (exact thresholds, some measured) by
    :func:`jaxtd.phase.fit_exponent` of their critical widths (no interval: exact)."""
    p = config.phase
    parts = []
    for variable, fixed, value in (("dim", "rank", p.rank), ("rank", "dim", p.dim)):
        searched = probed[(probed["algorithm"] != "lazy") & (probed[fixed] == value)] \
            if len(probed) else probed
        if len(searched):
            parts.append(phase.exponents(searched, variable))
        lazy_rows = crit[(crit["algorithm"] == "lazy") & (crit[fixed] == value)]
        for (order, kind, weights), g in lazy_rows.groupby(["order", "kind", "weights"]):
            fit = phase.fit_exponent(g[variable].to_numpy(), g["critical_width"].to_numpy())
            if np.isnan(fit.exponent):
                continue
            parts.append(pd.DataFrame([dict(
                algorithm="lazy", order=order, variable=variable, exponent=fit.exponent,
                ci_low=fit.exponent, ci_high=fit.exponent,
                fitted_range=f"{fit.x.min():g}..{fit.x.max():g} ({fixed}={value}, kind={kind}, "
                             f"weights={weights}; exact threshold)")]))
    parts = [q for q in parts if len(q)]
    if not parts:
        return pd.DataFrame(columns=list(phase.EXPONENT_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(phase.EXPONENT_COLUMNS)]
