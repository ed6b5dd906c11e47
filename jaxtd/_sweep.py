"""Grids of runs in one call: seeds × widths × hyper-parameters (docs/architecture.md).

:func:`sweep` runs every cell ``(seed s, width m, hyper-parameter combination h)`` of a grid with
one jit-compiled, vmapped computation per *width bucket*:

- **Seeds.** Cell ``(s, ·)`` uses the key :func:`key_for_seed` ``(s)``, which depends on the seed
  index only, so a cell equals ``jaxtd.run(algorithm, key_for_seed(s), target, width=m, ...)`` run
  alone (same key, same result).
- **Widths.** Widths are grouped into buckets and each bucket runs at its largest width ``M`` with
  an ``active = m`` mask: masked rows carry zero weight and receive zero gradient, and
  initialization is prefix-consistent, so the first ``m`` rows evolve exactly as the width-``m``
  run. One bucket is one compiled program. The default grouping (``"auto"``) weighs each
  program's compilation against the padded work it runs (:class:`jaxtd.BucketCost`, the cost
  model of ``jaxtd._buckets``): on small problems
  one program for all widths is cheapest, on large ones the widths split. ``"pow2"`` bounds
  padding below 2× in width.
- **Compile once.** Compiled grid programs are kept for the process: a second sweep with an
  equal algorithm (built from the same constructor arguments), the same shapes, steps and record
  cadence compiles nothing (``info["n_compiles"] == 0``); hyper-parameter values are inputs, never
  constants of a program. With JAX's persistent compilation cache enabled
  (:func:`jaxtd.compile_cache.enable`) later processes skip compilation too.
- **Hyper-parameters.** ``hparams={"learning_rate": [0.05, 0.1]}`` adds a vmapped axis (the
  Cartesian product when several names are given); the algorithm keeps them in its state, so one
  compiled step serves every value.
- **Devices.** The seed axis is sharded across ``jax.devices()`` (``NamedSharding`` on a 1-D mesh);
  each chunk of seeds is padded to a multiple of the device count (padding cells are dropped).
- **Long sweeps.** Seeds run in chunks of ``chunk_size``; with ``out_dir`` each finished chunk is
  written atomically and a rerun resumes from the saved chunks (:class:`jaxtd.store.ChunkStore`),
  after checking that the folder holds this very sweep: its identity covers the algorithm's
  full static identity (constructor and every argument, optimizer included), the target's
  values, widths, seeds and chunks, steps, record cadence, dtype, x64 and the base key.
- **Several processes.** After :func:`jaxtd.distributed.initialize`, ``jax.devices()`` spans every
  process and the seed axis is sharded over all of them: every process runs the same call, builds
  its own slices of the inputs (``jax.make_array_from_callback``), and the outputs are gathered so
  every process returns the same :class:`~jaxtd.results.Results`. Only process 0 touches
  ``out_dir`` (its lock, its chunks, the final save; the other processes' ``out_dir`` and
  ``resume`` are ignored): it decides which chunks are done and sends each saved chunk to the
  others, so resuming needs no shared file system. Every process must pass the same arguments
  (checked: a different configuration raises in every process).

Inside the compiled computation numerical trouble is data: a diverging cell is flagged with its step
by the runner and never affects other cells (each cell is an independent vmapped lane).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import math
import numbers
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from jaxtd import _buckets, _executables, distributed
from jaxtd._checks import check_int
from jaxtd.algorithms.base import Algorithm, check_width
from jaxtd.log import check_callback, history_records
from jaxtd.results import Results, progress_enabled, tqdm_class
from jaxtd.store import (SWEEP_FORMAT, ChunkStore, algorithm_identity, check_out_dir,
                         config_fingerprint, versions)
from jaxtd._aligned import aligned_residual_sq_host
from jaxtd._run import check_hparam, check_record_every, check_steps, trajectory
from jaxtd._sizes import BUCKETINGS, DEFAULT_BUCKETING, default_record_every
from jaxtd.symcp import SymCP
from jaxtd.targets import default_dtype

__all__ = ["sweep", "key_for_seed", "base_key_of", "SweepSpec", "clear_cache", "vmap_cells"]

_SEED_AXIS = "seed"


# -- keys ---------------------------------------------------------------------------------

def _default_base_key():
    return jax.random.PRNGKey(0)


def key_for_seed(seed, base_key=None):
    """The PRNG key of seed index ``seed``: ``fold_in(base_key, seed)``.

    Depends on the seed index only (never on the grid, the chunk or the device), so a sweep's cell
    can be reproduced alone. ``base_key`` defaults to ``jax.random.PRNGKey(0)``; an int is read as
    ``PRNGKey(base_key)``. ``seed`` may be a traced int (the sweep computes keys under ``vmap``).
    """
    if isinstance(seed, bool) or (isinstance(seed, numbers.Number)
                                  and not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int >= 0, got {seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return jax.random.fold_in(base_key_of(base_key), seed)


def base_key_of(base_key):
    """The base key a sweep folds seeds into: ``PRNGKey(0)`` for None, ``PRNGKey(n)`` for an int
    ``n``, else ``base_key`` itself (a key)."""
    if base_key is None:
        return _default_base_key()
    if isinstance(base_key, numbers.Integral) and not isinstance(base_key, bool):
        return jax.random.PRNGKey(int(base_key))
    return base_key


# -- validated configuration ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """The static, validated description of a grid (everything but the algorithm and target).

    ``hparam_grid`` lists the combinations (Cartesian product, first name slowest), one tuple of
    floats per combination, in the order of ``hparam_names``.
    """

    seeds: tuple[int, ...]
    widths: tuple[int, ...]
    steps: int
    record_every: int
    hparam_names: tuple[str, ...]
    hparam_values: tuple[tuple[float, ...], ...]
    success_threshold: float
    chunk_size: int
    bucketing: str
    metadata: tuple[tuple[str, Any], ...]

    @property
    def hparam_grid(self) -> tuple[tuple[float, ...], ...]:
        return tuple(itertools.product(*self.hparam_values))

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self.seeds) / self.chunk_size)

    def chunk(self, index: int) -> tuple[int, ...]:
        return self.seeds[index * self.chunk_size:(index + 1) * self.chunk_size]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _int_list(name: str, value, minimum: int, example: str) -> tuple[int, ...]:
    if _is_int(value):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, e.g. {example}; got "
                        f"{type(value).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty; pass at least one value, e.g. {example}")
    for v in items:
        if not _is_int(v):
            raise TypeError(f"{name} must hold ints, got {v!r}; e.g. {example}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
    dup = sorted({int(v) for v in items if items.count(v) > 1})
    if dup:
        raise ValueError(f"{name} has duplicates {dup}; list each value once")
    return tuple(int(v) for v in items)


def _check_hparams(algorithm: Algorithm, hparams) -> tuple[tuple[str, ...], tuple]:
    if hparams is None:
        return (), ()
    if not isinstance(hparams, Mapping):
        raise TypeError("hparams must be a dict name -> list of values, e.g. "
                        f"{{'learning_rate': [0.05, 0.1]}}; got {type(hparams).__name__}")
    known = dict(algorithm.hparams)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ValueError(f"hparams has unknown names {unknown}; algorithm {algorithm.name!r} "
                         f"accepts {sorted(known)}")
    names, values = [], []
    for name, vals in hparams.items():
        if isinstance(vals, numbers.Real) and not isinstance(vals, bool):
            vals = [vals]
        vals = list(vals)
        if not vals:
            raise ValueError(f"hparams[{name!r}] is empty; give at least one value")
        # each a real number in its schema's range (a TypeError or ValueError naming it)
        vals = [check_hparam(algorithm, str(name), v) for v in vals]
        if len(set(vals)) != len(vals):
            raise ValueError(f"hparams[{name!r}] has duplicate values {vals}; list each once")
        names.append(str(name))
        values.append(tuple(vals))
    return tuple(names), tuple(values)


def _check_metadata(metadata, reserved) -> tuple[tuple[str, Any], ...]:
    if metadata is None:
        return ()
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict column -> scalar, got {type(metadata).__name__}")
    out = []
    for k, v in metadata.items():
        if not isinstance(k, str):
            raise TypeError(f"metadata keys must be column names (str), got {k!r}")
        if k in reserved:
            raise ValueError(f"metadata column {k!r} clashes with a result column; rename it")
        if isinstance(v, np.generic):
            v = v.item()
        if not isinstance(v, (str, int, float, bool)):
            raise TypeError(f"metadata[{k!r}] must be a str, int, float or bool, got "
                            f"{type(v).__name__}")
        out.append((k, v))
    return tuple(out)


_RESULT_COLUMNS = ("seed", "width", "padded_width", "final_relative_error", "final_loss",
                   "success", "diverged", "diverged_step", "distance", "active_count")


def _spec(algorithm, target, seeds, widths, steps, record_every, hparams, success_threshold,
          chunk_size, bucketing, metadata) -> SweepSpec:
    if not isinstance(algorithm, Algorithm):
        raise TypeError("algorithm must be a jaxtd Algorithm (e.g. jaxtd.algorithms.gd(...)), got "
                        f"{type(algorithm).__name__}")
    if not isinstance(target, SymCP):
        raise TypeError(f"target must be a jaxtd.SymCP (e.g. from jaxtd.targets), got "
                        f"{type(target).__name__}")
    if _is_int(seeds):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of seed indices, got {seeds}")
        seeds = range(seeds)
    seeds = _int_list("seeds", seeds, 0, "range(16)")
    widths = tuple(sorted(_int_list("widths", widths, 1, "[2, 4, 8]")))
    check_width(widths[-1], "widths")
    steps = check_steps(steps)
    if record_every is None:
        record_every = default_record_every(steps)
    record_every = check_int(record_every, "record_every", 1)
    check_record_every(steps, record_every)
    names, values = _check_hparams(algorithm, hparams)
    if (isinstance(success_threshold, bool) or not isinstance(success_threshold, numbers.Real)
            or not (math.isfinite(success_threshold) and success_threshold > 0)):
        raise ValueError(f"success_threshold must be a finite number > 0, got {success_threshold!r}")
    chunk_size = len(seeds) if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
    if bucketing not in BUCKETINGS:
        raise ValueError(f"bucketing must be one of {BUCKETINGS}, got {bucketing!r}")
    meta = _check_metadata(metadata, set(_RESULT_COLUMNS) | set(names))
    return SweepSpec(seeds, widths, steps, record_every, names, values, float(success_threshold),
                     min(chunk_size, len(seeds)), bucketing, meta)


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _key_data(key) -> np.ndarray:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _key_impl(key) -> str:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key))
    return str(jax.config.jax_default_prng_impl)


# Raised whenever jaxtd's own arithmetic changes the numbers a configuration gives (2: the runner
# carries untouched state leaves, the network's NT step uses its data set's tangent and the
# Hermite derivatives are in closed form, which moves lazy_gd's and the network's last bits;
# 3: lazy GD's and deflation's grids and the lazy-optimum table compile at LLVM level 1 on CPU,
# which moves their last bits; 4: the aligned residual reads its slot Grams off the inner
# products of the aligned vectors, and a grid is one vmap over its cells instead of three
# nested ones, which moves the last bits of records and runs).
NUMERICS_REVISION = 4


def numerics_identity(base_key=None) -> dict:
    """What besides a configuration determines a saved result's numbers: jaxtd's
    :data:`NUMERICS_REVISION`, the default float dtype and x64, the platform (it rounds
    differently and picks the loss's form, :func:`jaxtd.representation.choose`) and the PRNG
    implementation of ``base_key`` (default: JAX's). Part of the identity of every saved sweep,
    slope table and lazy-optimum table."""
    return {"revision": NUMERICS_REVISION,
            "dtype": str(default_dtype()), "x64": bool(jax.config.jax_enable_x64),
            "platform": jax.default_backend(),
            "key_impl": _key_impl(base_key_of(base_key))}


def _config(spec: SweepSpec, algorithm: Algorithm, target: SymCP, base_key) -> dict:
    """What identifies a sweep's results: everything that determines its numbers (compared on
    every reuse by :class:`jaxtd.store.ChunkStore`). The algorithm enters with its full static
    identity (:func:`jaxtd.store.algorithm_identity`: constructor and every argument, optimizer
    included); the seeds with their split into chunks; :func:`numerics_identity`."""
    return {"format": SWEEP_FORMAT,
            "algorithm": algorithm_identity(algorithm),
            "target": {"order": target.order, "dim": target.dim, "rank": target.rank,
                       "dtype": str(target.factors.dtype),
                       "sha256": _fingerprint(target.weights, target.factors)},
            **numerics_identity(base_key),
            "base_key": _fingerprint(_key_data(base_key)),
            "seeds": list(spec.seeds), "widths": list(spec.widths), "steps": spec.steps,
            "record_every": spec.record_every,
            "hparams": {k: list(v) for k, v in zip(spec.hparam_names, spec.hparam_values)},
            "success_threshold": spec.success_threshold, "chunk_size": spec.chunk_size,
            "bucketing": spec.bucketing, "metadata": dict(spec.metadata)}


# -- the compiled grid ------------------------------------------------------------------------

def _grid_fn(algorithm: Algorithm, padded_width: int, steps: int, record_every: int,
             hparam_names: tuple[str, ...]):
    """``f(seeds (S,), actives (W,), grid {name: (H,)}, base_key, target) -> (RunResult, final)``
    with leading axes ``(S, W, H)``: one vmap over every (seed, width, hparam combination) cell,
    seed-major (the seed axis is sharded). ``final`` is the final model's ``(weights, factors)``
    of a float32 run, whose precise final error :func:`_precise_finals` computes on the host
    (``None`` in float64)."""
    def cell(seed, active, h, grid, base_key, target):
        hp = {k: grid[k][h] for k in hparam_names} if hparam_names else None
        result, final = trajectory(algorithm, jax.random.fold_in(base_key, seed), target,
                                   width=padded_width, steps=steps, record_every=record_every,
                                   active=active, hparams=hp)
        if final.factors.dtype == jnp.float64:
            return result, None  # its recorded final error is already the precise one
        return result, (final.weights, final.factors)

    def f(seeds, actives, grid, base_key, target):
        n_h = next(iter(grid.values())).shape[0] if grid else 1
        return vmap_cells(cell, seeds, actives, jnp.arange(n_h), grid, base_key, target)

    return f


def vmap_cells(cell, seeds, actives, third, *shared):
    """``cell(seed, active, x, *shared)`` over every ``(seed, active, x)`` of ``seeds (S,)``,
    ``actives (W,)`` and ``third (X,)``: outputs with leading axes ``(S, W, X)``.

    One vmap over the ``S W X`` cells (seed-major), not three nested ones: JAX batches the
    runner's scans once instead of once per level, which halves the trace time of a grid program
    (and XLA gets one batch axis to vectorize).
    """
    n_s, n_w, n_x = seeds.shape[0], actives.shape[0], third.shape[0]
    cells = (jnp.repeat(seeds, n_w * n_x), jnp.tile(jnp.repeat(actives, n_x), n_s),
             jnp.tile(third, n_s * n_w))
    in_axes = (0, 0, 0) + (None,) * len(shared)
    out = jax.vmap(cell, in_axes=in_axes)(*cells, *shared)
    return jax.tree_util.tree_map(lambda x: x.reshape((n_s, n_w, n_x) + x.shape[1:]), out)


@dataclasses.dataclass
class _Bucket:
    """One width bucket: its widths, padded width and (lazily) compiled executable."""

    widths: tuple[int, ...]
    compiled: Any = None
    compile_seconds: float = 0.0
    how: str = ""  # "compiled" by this sweep, "disk" (saved by an earlier process) or "memory"

    @property
    def fresh(self) -> bool:
        """Compiled by this sweep (not taken from the executable cache)."""
        return self.how == "compiled"

    @property
    def padded_width(self) -> int:
        return max(self.widths)


def _mesh(devices):
    return jax.make_mesh((len(devices),), (_SEED_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def clear_cache() -> None:
    """Forget every compiled grid program of this process (the next sweep compiles again, or
    loads the program saved on disk when JAX's persistent compilation cache is enabled)."""
    _executables.clear()


def _run_chunk(buckets, program_key, fn_for, seeds_padded, grid, base_key, target, shardings,
               devices, multi):
    """Dispatch every bucket of one seed chunk (compiling a bucket on first use), then fetch.

    ``multi``: the devices span several processes; inputs are then built slice by slice in each
    process and the outputs gathered into every process (both collectives)."""
    # device_put cannot address other processes' devices
    put = distributed.global_array if multi else jax.device_put
    seed_sh, repl = shardings
    seeds_arr = put(np.asarray(seeds_padded, np.int32), seed_sh)
    args_rest = put((grid, base_key, target), repl)
    outs = []
    for b in buckets:
        # the default int (int64 under x64), as a Python int `active` would be
        actives = put(np.asarray(b.widths, np.dtype(jnp.result_type(int))), repl)
        args = (seeds_arr, actives) + tuple(args_rest)
        if b.compiled is None:
            key = _executables.program_key((program_key, b.padded_width), args, devices)

            def lower(b=b, args=args):
                return jax.jit(fn_for(b), in_shardings=(seed_sh, repl, repl, repl, repl),
                               out_shardings=seed_sh).lower(*args)

            b.compiled, b.compile_seconds, b.how = _executables.get(
                key, lower, disk_key=key, program=_executables.program_name(program_key[0]))
        outs.append(b.compiled(*args))  # async dispatch: buckets queue up
    shards = len(outs[0][0].final_relative_error.sharding.device_set)
    fetched = [distributed.gather(o) if multi else jax.device_get(o) for o in outs]
    return [_precise_finals(result, final, target) for result, final in fetched], shards


def _precise_finals(result, final, target: SymCP):
    """A fetched bucket's float32 results with their final loss and relative error (and last
    history record) computed precisely on the host: the aligned expansion in float64
    (:func:`jaxtd._aligned.aligned_residual_sq_host`), accurate beyond float32's own precise
    metric. ``final`` is ``None`` for a float64 run, whose recorded values are already precise."""
    if final is None:
        return result
    tw = np.asarray(target.weights, np.float64)
    tf = np.asarray(target.factors, np.float64)
    half = 0.5 * aligned_residual_sq_host(final[0], final[1], tw, tf, target.order)
    target_sq = float(tw @ (tf @ tf.T) ** target.order @ tw)
    dtype = np.asarray(result.final_loss).dtype
    loss = half.astype(dtype)
    rel = (np.sqrt(2.0 * half) / np.sqrt(target_sq)).astype(dtype)
    history = dict(result.history)
    for name, value in (("loss", loss), ("relative_error", rel)):
        column = np.array(history[name])
        column[..., -1] = value
        history[name] = column
    return result._replace(final_loss=loss, final_relative_error=rel, history=history)


# Per-cell outputs a grid does not keep: the final factors are padded to each bucket's width (use
# ``jaxtd.run`` or ``simulate`` for them).
_NOT_TABULATED = ("final_params",)


def _flatten_chunk(spec: SweepSpec, buckets, outs, chunk_seeds) -> tuple[dict, dict]:
    """Per-bucket outputs ``(S_pad, W_b, H, ...)`` → columns and histories in cell order
    (seed, width, hparam combination), padding seeds dropped."""
    n_s, n_h = len(chunk_seeds), len(spec.hparam_grid)
    fields = [o._asdict() for o in outs]

    def cat(get):  # concatenate buckets along the width axis, drop padding seeds, flatten cells
        arr = np.concatenate([get(f) for f in fields], axis=1)[:n_s]
        return arr.reshape((-1,) + arr.shape[3:])

    n_w = len(spec.widths)
    grid_seed, grid_width, grid_h = np.meshgrid(np.asarray(chunk_seeds, np.int64),
                                                np.asarray(spec.widths, np.int64),
                                                np.arange(n_h), indexing="ij")
    padded = np.concatenate([np.full((len(b.widths),), b.padded_width, np.int64)
                             for b in buckets])
    columns = {"seed": grid_seed.ravel(), "width": grid_width.ravel(),
               "padded_width": np.broadcast_to(padded[None, :, None], (n_s, n_w, n_h)).ravel()}
    combos = np.asarray(spec.hparam_grid, np.float64).reshape(n_h, -1)
    for i, name in enumerate(spec.hparam_names):
        columns[name] = combos[grid_h.ravel(), i]
    histories = {}
    for name in fields[0]:
        if name in _NOT_TABULATED:
            continue
        if name == "history":
            for h in fields[0]["history"]:
                histories[h] = cat(lambda f, h=h: np.asarray(f["history"][h]))
            continue
        values = cat(lambda f, name=name: np.asarray(f[name]))
        if values.ndim == 1:
            columns[name] = values
        elif values.ndim == 2:
            stem = "fit_time" if name == "fit_times" else name
            for j in range(values.shape[1]):
                columns[f"{stem}_{j}"] = values[:, j]
        else:  # a per-cell array that is not a scalar or a vector: keep it whole
            histories[name] = values
    err = columns["final_relative_error"]
    columns["success"] = (np.isfinite(err) & (err <= spec.success_threshold)
                          & ~columns["diverged"].astype(bool))
    return columns, histories


def _chunk_records(spec: SweepSpec, algorithm: Algorithm, columns, histories, names) -> list:
    """The log records of one flattened chunk (:mod:`jaxtd.log`): per cell its identifying
    columns (algorithm, metadata, seed, width, swept hparams), then its history step by step."""
    n = len(columns["seed"])
    meta = dict(spec.metadata)
    ids = {} if "algorithm" in meta else {"algorithm": np.full(n, algorithm.name, object)}
    ids.update({k: np.full(n, v, object) for k, v in meta.items()})
    ids.update(seed=columns["seed"], width=columns["width"])
    ids.update({k: columns[k] for k in spec.hparam_names})
    return history_records({k: histories[k] for k in names}, ids)


def _order_columns(columns: Mapping[str, np.ndarray], spec: SweepSpec) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    front = ["seed", "width", "padded_width", *spec.hparam_names, "final_relative_error",
             "final_loss", "success", "diverged", "diverged_step"]
    fits = sorted((c for c in columns if c.startswith("fit_time_")), key=lambda c: int(c[9:]))
    rest = [c for c in columns if c not in front and c not in fits]
    data = {k: [v] * n for k, v in spec.metadata}
    data.update({c: columns[c] for c in front + fits + rest if c in columns})
    return pd.DataFrame(data)


def sweep(algorithm: Algorithm, target: SymCP, *, seeds, widths, steps: int,
          record_every: Optional[int] = None, hparams: Optional[Mapping[str, Sequence[float]]] = None,
          success_threshold: float = 1e-2, chunk_size: Optional[int] = None,
          out_dir: Optional[str] = None, resume: bool = True, progress: Optional[bool] = None,
          bucketing: str = DEFAULT_BUCKETING, base_key=None,
          metadata: Optional[Mapping[str, Any]] = None, devices=None,
          on_event: Optional[Callable[..., None]] = None,
          callback: Optional[Callable[[list], None]] = None) -> Results:
    """Run every (seed, width, hyper-parameter) cell of a grid; one compilation per width bucket.

    Args:
      algorithm: an :class:`~jaxtd.algorithms.Algorithm` (``gd``, ``variant``, ``deflation``,
        ``lazy_gd``, ...).
      target: the ground truth :class:`~jaxtd.SymCP` (order ``l``, dim ``d``, rank ``r``).
      seeds: a count ``n`` (seeds ``0..n-1``) or a sequence of distinct seed indices ``>= 0``;
        cell key = :func:`key_for_seed` ``(seed, base_key)``.
      widths: distinct widths ``>= 1`` (below the target's rank is allowed).
      steps: number of algorithm steps per cell.
      record_every: record the history every this many steps (a divisor of ``steps``; default
        about ``steps / 100``, as in :func:`jaxtd.run`).
      hparams: ``{name: [values]}`` over the algorithm's ``hparams``; the grid is the Cartesian
        product, one vmapped axis (no recompilation per value).
      success_threshold: a cell succeeds when its final relative error is ``<=`` this and it did
        not diverge.
      chunk_size: seeds per chunk (default: all seeds in one chunk). Each chunk is padded to a
        multiple of the device count; with ``out_dir`` each finished chunk is saved.
      out_dir: directory for chunks and final results (:meth:`Results.save` layout). Checked to be
        a writable directory before any compute; one holding a different sweep is refused, and
        a folder another process is writing raises :class:`jaxtd.results.LockedError` naming
        its PID. Damaged or foreign chunks are set aside and recomputed (one warning line).
      resume: with ``out_dir`` holding this same sweep, reuse its saved chunks after checking
        them (``True``); ``False``: refuse a folder that holds a saved sweep; ``"recompute"``:
        remove the sweep saved there (any configuration) and compute everything again. A folder
        holding another configuration, or a sweep whose algorithm cannot be identified (an optax
        ``GradientTransformation`` object instead of a factory such as ``optax.adam``, an
        algorithm built without ``@base.constructor``), raises
        :class:`jaxtd.store.IdentityError` listing the differing fields unless
        ``resume="recompute"``.
      progress: tqdm bar over chunks with ETA; ``None`` shows it only on a terminal.
      bucketing: ``"auto"`` (default: the grouping of least estimated compile + padded run
        time), ``"pow2"``, ``"exact"`` or ``"single"``; see :func:`bucket_widths`.
      base_key: root PRNG key (default ``PRNGKey(0)``; an int means ``PRNGKey(int)``).
      metadata: constant columns prepended to every row (e.g. ``{"algorithm": "gd", "dim": 16}``);
        they become key columns of the result, so summaries group by them.
      devices: devices to shard the seed axis over (default ``jax.devices()``: after
        :func:`jaxtd.distributed.initialize`, the devices of every process); results do not
        depend on it. Devices of several processes run the sweep in all of them (see the module
        docstring): each process must make the same call, and only process 0 uses ``out_dir``.
      on_event: ``on_event(kind, **info)`` for progress displays: ``"compile_start"``
        (``padded_width``, ``widths``) just before a bucket's program is traced and compiled
        (not when the executable cache has it), ``"chunk_done"`` (``cells``, ``chunk``) after
        each computed chunk.
      callback: ``callback(records)`` once per computed chunk, after its compiled programs
        returned and before the chunk is saved: one host dict per (cell, recorded step), in cell
        order, ``{"algorithm", <metadata>, "seed", "width", <swept hparams>, "step", "loss",
        "relative_error", ...}`` with the values of the returned ``histories`` (see
        :mod:`jaxtd.log`, e.g. ``callback=jaxtd.log.csv_writer("history.csv")``). Chunks read
        back from ``out_dir`` are not passed again. The compiled programs are the same with or
        without it (nothing runs inside ``jit``). Several processes: process 0 calls it.

    Returns:
      :class:`~jaxtd.results.Results`, rows ordered by seed, width, hyper-parameter combination.
      ``info`` holds ``n_compiles``, ``compile_seconds`` (per padded width), ``n_programs_loaded``
      and ``load_seconds`` (executables an earlier process saved), ``run_seconds`` (compiled
      execution plus transfer, compilation excluded), device and process counts and versions.
    """
    spec = _spec(algorithm, target, seeds, widths, steps, record_every, hparams,
                 success_threshold, chunk_size, bucketing, metadata)
    check_callback(callback)
    base_key = base_key_of(base_key)
    devices = _check_devices(devices)
    multi = distributed.spans_processes(devices)
    config = _config(spec, algorithm, target, base_key)
    if multi:
        distributed.agree(config_fingerprint(config), "sweep configuration")
    store = None
    if out_dir is not None and (not multi or distributed.is_main_process()):
        try:
            check_out_dir(out_dir)
            store = ChunkStore(out_dir, config, resume=resume)  # holds the folder's lock
        except BaseException as err:
            if multi:  # the others wait for process 0's plan: tell them it failed
                _share_plan(None, error=f"{type(err).__name__}: {err}")
            raise
    try:
        if multi and not distributed.is_main_process():
            callback = None  # process 0 logs for all (every process holds the same results)
        return _execute(spec, algorithm, target, base_key, config, store, progress, devices,
                        multi, on_event, callback)
    finally:
        if store is not None:
            store.close()


def _share_plan(store: Optional[ChunkStore], error: Optional[str] = None) -> set:
    """Process 0's finished chunks → every process (a collective). Process 0 passes its store
    (or ``None`` without ``out_dir``); a failure to open it is sent as ``error`` and raised by the
    other processes too, so none waits forever."""
    plan = None
    if distributed.is_main_process():
        plan = {"error": error, "done": sorted(store.done()) if store is not None else []}
    plan = distributed.broadcast_json(plan)
    if plan["error"] is not None:
        if distributed.is_main_process():
            return set()
        raise RuntimeError(f"process 0 could not open its out_dir ({plan['error']})")
    return set(plan["done"])


def _chunk_bytes(columns: Mapping[str, np.ndarray], histories: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"c/{k}": v for k, v in columns.items()},
             **{f"h/{k}": v for k, v in histories.items()})
    return buffer.getvalue()


def _chunk_from_bytes(payload: bytes) -> tuple[dict, dict]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        columns = {k[2:]: data[k] for k in data.files if k.startswith("c/")}
        histories = {k[2:]: data[k] for k in data.files if k.startswith("h/")}
    return columns, histories


def _read_chunk(store: Optional[ChunkStore], index: int, multi: bool) -> tuple[dict, dict]:
    """A saved chunk, in every process (process 0 reads it and sends it to the others)."""
    if not multi:
        return store.read(index)
    payload = None
    if distributed.is_main_process():
        payload = _chunk_bytes(*store.read(index))
    return _chunk_from_bytes(distributed.broadcast_bytes(payload))


def _check_devices(devices) -> list:
    if devices is None:
        return list(jax.devices())
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("devices must be a non-empty list of jax.Device (e.g. jax.devices()[:2])")
    return devices


def _hparam_inputs(spec: SweepSpec, algorithm: Algorithm) -> dict:
    """``{hparam: (H,) values}`` over the ``H`` combinations of the grid, in the default dtype.

    Every hparam is an input of the program, swept or not (not swept: its default repeated), so
    a cell traces exactly as ``jaxtd.run`` does (it passes them all) and no value is a constant.
    numpy, not jnp: building the grid must not trigger an eager XLA compilation.
    """
    dtype = np.dtype(default_dtype())
    return {name: np.asarray([c[spec.hparam_names.index(name)] if name in spec.hparam_names
                              else float(default) for c in spec.hparam_grid], dtype)
            for name, default in dict(algorithm.hparams).items()}


def _program_info(buckets) -> dict:
    """The ``info`` entries about the buckets' programs: compiled here, reused from this
    process, loaded from disk, and their seconds."""
    compiled = [b for b in buckets if b.fresh]
    return {"n_compiles": len(compiled), "n_buckets": len(buckets),
            "n_programs_reused": sum(1 for b in buckets if b.compiled is not None and not b.fresh),
            "n_programs_loaded": sum(1 for b in buckets if b.how == "disk"),
            "load_seconds": sum(b.compile_seconds for b in buckets if b.how == "disk"),
            "compile_seconds": sum(b.compile_seconds for b in compiled),
            "compile_seconds_by_width": {str(b.padded_width): b.compile_seconds for b in compiled},
            "padded_widths": [b.padded_width for b in buckets]}


def _execute(spec, algorithm, target, base_key, config, store, progress, devices,
             multi=False, on_event=None, callback=None) -> Results:
    tqdm = tqdm_class()

    n_dev = len(devices)
    mesh = _mesh(devices)
    shardings = (NamedSharding(mesh, PartitionSpec(_SEED_AXIS)), NamedSharding(mesh, PartitionSpec()))
    combos = spec.hparam_grid
    grid = _hparam_inputs(spec, algorithm)
    grid_names = tuple(grid)
    buckets = [_Bucket(ws) for ws in _buckets.plan_buckets(
        spec.widths, spec.bucketing, platform=devices[0].platform, dim=target.dim,
        rank=target.rank, steps=spec.steps, n_hparams=len(spec.hparam_grid),
        chunk_size=spec.chunk_size, n_devices=n_dev)]

    def fn_for(b):  # called on an executable-cache miss, just before tracing and compiling
        if on_event is not None:
            on_event("compile_start", padded_width=b.padded_width, widths=b.widths)
        return _grid_fn(algorithm, b.padded_width, spec.steps, spec.record_every, grid_names)

    program_key = (algorithm, spec.steps, spec.record_every, grid_names)
    chunk_len = math.ceil(spec.chunk_size / n_dev) * n_dev
    if multi:
        done = _share_plan(store)
    else:
        done = store.done() if store is not None else set()
    parts, run_seconds, seed_shards = [], 0.0, 0
    bar = tqdm(total=spec.n_chunks, initial=len(done & set(range(spec.n_chunks))), unit="chunk",
               desc=f"sweep {algorithm.name}",
               disable=not (progress_enabled(progress) and distributed.is_main_process()))
    try:
        for index in range(spec.n_chunks):
            if index in done:
                parts.append(_read_chunk(store, index, multi))
                continue
            seeds = spec.chunk(index)
            padded = seeds + (seeds[-1],) * (chunk_len - len(seeds))
            t0 = time.perf_counter()
            compile_before = sum(b.compile_seconds for b in buckets)
            outs, seed_shards = _run_chunk(buckets, program_key, fn_for, padded, grid, base_key,
                                           target, shardings, devices, multi)
            run_seconds += (time.perf_counter() - t0
                            - (sum(b.compile_seconds for b in buckets) - compile_before))
            columns, histories = _flatten_chunk(spec, buckets, outs, seeds)
            if callback is not None:  # before saving: a kill in between logs it again, never not
                callback(_chunk_records(spec, algorithm, columns, histories, outs[0].history))
            if store is not None:
                store.write(index, columns, histories)
            parts.append((columns, histories))
            bar.update(1)
            if on_event is not None:
                on_event("chunk_done", cells=len(seeds) * len(spec.widths) * len(combos),
                         chunk=index)
    finally:
        bar.close()
    columns = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    histories = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    info = {**_program_info(buckets), "run_seconds": run_seconds, "chunks_resumed": len(done),
            "n_devices": n_dev, "n_processes": len({d.process_index for d in devices}),
            "seed_shards": seed_shards, "chunk_len": chunk_len,
            "platform": devices[0].platform, "versions": versions()}
    results = Results(_order_columns(columns, spec), histories, config=config, info=info,
                      key_columns=tuple(k for k, _ in spec.metadata) + spec.hparam_names)
    if store is not None:
        results.save(store.out_dir)
    return results
