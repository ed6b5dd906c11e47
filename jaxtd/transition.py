"""The lazy-to-rich transition in the initialization scale, located with derivatives through runs.

Gradient descent from a centred initialization of scale ``δ`` (``gd(init="antisymmetric",
lr_scaling="ntk")``, docs/algorithms.md) is lazy for large ``δ`` (it reproduces the linearized
model, whose best fit is the lazy optimum) and rich for small ``δ``. This module measures how the
outcome of a fixed budget of steps changes with ``δ``:

- :func:`scale_slopes`: for every (seed, width, scale) cell, the final relative error ``E`` and
  its derivative ``dE / d log δ`` through the whole run (forward mode: ``jax.jvp`` of
  :func:`jaxtd.simulate` along ``δ -> δ e^t`` at ``t = 0``), vmapped over seeds, widths (masks of
  one padded width, the cells of :func:`jaxtd.sweep`) and scales: one compiled program.
- :func:`add_slope_column`: the derivative as the column :data:`COLUMN` of a sweep's results.
- :func:`locate`: the transition scale per width, where the median (over seeds) derivative peaks
  (the final error rises fastest from the rich to the lazy value).

The derivative is the piecewise one of :mod:`jaxtd.run` (exact between discrete events such as a
divergence). In float32 the plain model represents ``T(W)`` as a sum of terms of size ``δ^l``
that cancel in pairs, so its rounding noise grows like ``δ^l`` eps: derivatives at ``δ^l >~ 1e3``
(``δ >~ 10`` at ``l = 3``) are dominated by it; use ``JAX_ENABLE_X64=1`` to go further.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxtd import _executables
from jaxtd.algorithms.base import Algorithm
from jaxtd._run import full_hparams, simulate, validate
from jaxtd._sweep import base_key_of, numerics_identity, vmap_cells
from jaxtd.store import (READ_ERRORS, algorithm_identity, arrays_sha256, atomic_write,
                         config_fingerprint, unidentified)
from jaxtd.symcp import SymCP

__all__ = ["COLUMN", "scale_slopes", "add_slope_column", "locate"]

COLUMN = "d_error_d_log_init_scale"
"""Name of the results column holding ``d final_relative_error / d log(init_scale)``."""


def _cell(algorithm: Algorithm, width: int, steps: int, record_every: int):
    """``(seed, active, scale, hp, base_key, target) -> (E, dE/d log δ)`` of one cell."""

    def cell(seed, active, scale, hp, base_key, target):
        key = jax.random.fold_in(base_key, seed)  # jaxtd.key_for_seed, as the sweep does

        def error(t):
            # δ e^t is exactly δ at t = 0, so the primal run is the sweep's cell bit for bit in
            # its inputs; d/dt at 0 is the derivative with respect to log δ
            hparams = {**hp, "init_scale": scale * jnp.exp(t)}
            return simulate(algorithm, key, target, width=width, steps=steps,
                            record_every=record_every, active=active,
                            hparams=hparams).final_relative_error

        zero = jnp.zeros((), scale.dtype)
        return jax.jvp(error, (zero,), (jnp.ones_like(zero),))

    return cell


def _table(algorithm, width, steps, record_every, seeds, actives, scales, hp, base_key, target):
    return vmap_cells(_cell(algorithm, width, steps, record_every), seeds, actives, scales, hp,
                      base_key, target)


_table_jit = jax.jit(_table, static_argnums=(0, 1, 2, 3))


def _check_scales(scales) -> list[float]:
    values = list(np.ravel(np.asarray(scales, dtype=object))) if not isinstance(
        scales, numbers.Number) else [scales]
    if not values:
        raise ValueError("scales must be a non-empty list of init scales > 0, e.g. [0.1, 1.0]")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)) \
                or not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"scales must hold finite numbers > 0 (init scales), got {v!r}; "
                             "fix: e.g. scales=[0.01, 0.1, 1.0]")
        out.append(float(v))
    return out


def _check_ints(values, name: str, low: int) -> list[int]:
    values = [values] if isinstance(values, numbers.Integral) else list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, (numbers.Integral,))
                         or int(v) < low for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints >= {low}, got {values!r}")
    return [int(v) for v in values]


def scale_slopes(algorithm: Algorithm, target: SymCP, *, seeds: Sequence[int],
                 widths: Sequence[int], scales: Sequence[float], steps: int,
                 record_every: int, hparams: Optional[Mapping[str, float]] = None,
                 base_key=None, on_program: Optional[Callable[[str, float], None]] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Final relative error and its derivative with respect to ``log init_scale``, per cell.

    Cell ``(s, j, k)`` is the run of :func:`jaxtd.sweep` at seed ``seeds[s]`` (key
    :func:`jaxtd.key_for_seed`), width ``widths[j]`` (an ``active`` mask of width
    ``max(widths)``) and ``init_scale = scales[k]``; the other hyper-parameters are the
    algorithm's defaults updated by ``hparams``. Forward mode (``jax.jvp``): one extra tangent
    per run, no stored trajectory. One compiled program per call shape.

    Args:
      algorithm: an :class:`~jaxtd.algorithms.Algorithm` with an ``init_scale`` hyper-parameter.
      target: the ground truth ``SymCP``.
      seeds: seed indices ``>= 0`` (``range(n)`` for the sweep's ``seeds=n``).
      widths: ints ``>= 1``.
      scales: init scales ``δ > 0``.
      steps: as in :func:`jaxtd.run`.
      record_every: as in :func:`jaxtd.run`.
      hparams: fixed values of other hyper-parameters (not ``init_scale``).
      base_key: as in :func:`jaxtd.key_for_seed` (default ``PRNGKey(0)``).
      on_program: called with ``(how, seconds)`` of getting the compiled program: ``how`` is
        ``"compiled"``, ``"memory"`` or ``"disk"`` (saved by an earlier process next to JAX's
        persistent compilation cache, when that cache is on, as the sweeps' programs are).
    Returns:
      ``(errors, slopes)``, float64 numpy arrays of shape ``(len(seeds), len(widths),
      len(scales))``: ``E`` and ``dE / d log δ``.
    """
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a jaxtd.algorithms.Algorithm, got "
                        f"{type(algorithm).__name__}")
    if "init_scale" not in algorithm.hparams:
        raise ValueError(f"algorithm {algorithm.name!r} has no init_scale hyper-parameter "
                         f"(it has {sorted(algorithm.hparams)}); use e.g. jaxtd.algorithms.gd")
    seeds = _check_ints(seeds, "seeds", 0)
    widths = _check_ints(widths, "widths", 1)
    scales = _check_scales(scales)
    hparams = dict(hparams or {})
    if "init_scale" in hparams:
        raise ValueError("hparams must not set init_scale: the scales are given by scales=")
    hp = full_hparams(algorithm, hparams)
    hp.pop("init_scale")
    base = base_key_of(base_key)
    padded, steps, record_every = validate(algorithm, base, target, width=max(widths),
                                           steps=steps, record_every=record_every)
    dtype = target.factors.dtype
    # numpy inputs: each jnp conversion would compile an eager program of its own
    hp = {k: np.asarray(v, dtype) for k, v in hp.items()}
    args = (np.asarray(seeds, np.uint32), np.asarray(widths, np.dtype(jnp.result_type(int))),
            np.asarray(scales, dtype), hp, base, target)
    statics = (algorithm, padded, steps, record_every)
    key = _executables.program_key(("jaxtd.transition.scale_slopes", *statics), args)
    executable, seconds, how = _executables.get(key, lambda: _table_jit.lower(*statics, *args),
                                                disk_key=key)
    if on_program is not None:
        on_program(how, seconds)
    errors, slopes = executable(*args)
    return np.asarray(errors, np.float64), np.asarray(slopes, np.float64)


def _group_values(rows, names: Sequence[str]):
    """The distinct value tuples of columns ``names`` in ``rows`` (one group if none)."""
    if not names:
        return [()]
    return sorted(set(map(tuple, rows[list(names)].to_numpy().tolist())))


def _cache_identity(algorithm: Algorithm, target: SymCP, steps: int, record_every: int,
                    hparams: Mapping[str, Any]) -> Optional[str]:
    """Fingerprint of what determines a cached slope table (the algorithm's full identity, the
    target's values, steps, record cadence, the other hparams, dtype, x64, platform and PRNG
    implementation: :func:`jaxtd._sweep.numerics_identity`); ``None`` when the
    algorithm cannot be identified (its cache is then never reused)."""
    ident = algorithm_identity(algorithm)
    if unidentified(ident) is not None:
        return None
    arrays = {"weights": np.asarray(target.weights), "factors": np.asarray(target.factors)}
    return config_fingerprint({"algorithm": ident, "target": arrays_sha256(arrays),
                               "order": target.order, "steps": steps,
                               "record_every": record_every,
                               "hparams": {k: float(v) for k, v in hparams.items()},
                               **numerics_identity()})


def _load_cache(path: Path, seeds, widths, scales, identity: Optional[str]):
    """The cached slopes when the file holds this very table (same grid and identity) and its
    arrays match their recorded sha256; else ``None`` (recomputed, never trusted)."""
    if identity is None:
        return None
    try:
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in ("slopes", "seeds", "widths", "scales")}
            if (list(arrays["seeds"]) == list(seeds) and list(arrays["widths"]) == list(widths)
                    and np.array_equal(arrays["scales"], np.asarray(scales))
                    and str(saved["identity"]) == identity
                    and str(saved["sha256"]) == arrays_sha256(arrays)):
                return arrays["slopes"]
    except READ_ERRORS:
        pass  # a missing, damaged or foreign cache is recomputed, never trusted
    return None


def add_slope_column(results, algorithm: Algorithm, target: SymCP, *, steps: int,
                     record_every: int, cache: Optional[str | Path] = None,
                     on_program: Optional[Callable[[str, float], None]] = None):
    """``results`` (a :class:`~jaxtd.results.Results` of a sweep over ``init_scale``) with the
    column :data:`COLUMN`: each row's ``d final_relative_error / d log init_scale``.

    The seeds, widths and scales are read from the rows (columns ``seed``, ``width``,
    ``init_scale``); other hyper-parameters swept alongside (columns named like the algorithm's
    hparams) are each computed as a separate call of :func:`scale_slopes`. ``cache``: a file
    prefix; each call's slopes are saved as ``<cache>-<k>.npz`` with the fingerprint of what
    determines them (the algorithm's full identity, the target, steps, record cadence, dtype)
    and the sha256 of its arrays, and reused only when all match (a resumed run does not
    recompute them; an edited, damaged or foreign file is recomputed; an algorithm that cannot
    be identified is never cached). ``on_program``: as in :func:`scale_slopes`.
    """
    rows = results.rows
    missing = [c for c in ("seed", "width", "init_scale") if c not in rows.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing}; sweep with "
                         "hparams={'init_scale': [...]} to differentiate in the init scale")
    others = [c for c in algorithm.hparams if c != "init_scale" and c in rows.columns]
    column = np.full(len(rows), np.nan)
    for k, values in enumerate(_group_values(rows, others)):
        sel = np.ones(len(rows), bool)
        for name, v in zip(others, values):
            sel &= rows[name].to_numpy() == v
        part = rows[sel]
        seeds = sorted(set(int(s) for s in part["seed"]))
        widths = sorted(set(int(w) for w in part["width"]))
        scales = sorted(set(float(s) for s in part["init_scale"]))
        path = Path(f"{cache}-{k}.npz") if cache is not None else None
        identity = (_cache_identity(algorithm, target, steps, record_every,
                                    dict(zip(others, values))) if path is not None else None)
        slopes = (_load_cache(path, seeds, widths, scales, identity) if path is not None
                  else None)
        if slopes is None:
            _, slopes = scale_slopes(algorithm, target, seeds=seeds, widths=widths,
                                     scales=scales, steps=steps, record_every=record_every,
                                     hparams=dict(zip(others, values)), on_program=on_program)
            if path is not None and identity is not None and jax.process_index() == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                arrays = {"slopes": np.asarray(slopes), "seeds": np.asarray(seeds),
                          "widths": np.asarray(widths), "scales": np.asarray(scales)}
                with atomic_write(str(path)) as f:
                    np.savez(f, **arrays, identity=np.asarray(identity),
                             sha256=np.asarray(arrays_sha256(arrays)))
        idx = (np.searchsorted(seeds, part["seed"].to_numpy()),
               np.searchsorted(widths, part["width"].to_numpy()),
               np.searchsorted(scales, part["init_scale"].to_numpy().astype(np.float64)))
        column[sel] = slopes[idx]
    return dataclasses.replace(results, rows=rows.assign(**{COLUMN: column}))


def _peak(x: np.ndarray, y: np.ndarray) -> tuple[float, float, bool]:
    """``(x*, y*, at_edge)``: the maximum of ``y`` over ``x``, refined by the parabola through the
    best grid point and its two neighbours (its vertex, if it is a maximum inside them)."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return math.nan, math.nan, False
    i = int(np.argmax(y))
    if i == 0 or i == len(x) - 1:
        return float(x[i]), float(y[i]), True
    (x0, x1, x2), (y0, y1, y2) = x[i - 1:i + 2], y[i - 1:i + 2]
    # Lagrange parabola through the three points: y = a (x - x1)^2 + b (x - x1) + y1
    d0, d2 = x0 - x1, x2 - x1
    a = ((y0 - y1) / d0 - (y2 - y1) / d2) / (d0 - d2)
    b = (y0 - y1) / d0 - a * d0
    if not a < 0:
        return float(x1), float(y1), False
    xv = float(np.clip(x1 - b / (2 * a), x0, x2))
    return xv, float(y1 + a * (xv - x1) ** 2 + b * (xv - x1)), False


def locate(df, success_threshold: Optional[float] = None, column: str = COLUMN) -> "Any":
    """The transition scale of each (algorithm, size, width) of a results table.

    For each group, the median over seeds of ``column`` (``dE / d log δ``) at each init scale; the
    transition scale ``δ*`` is where that median peaks, refined by a parabola in ``log δ``
    (:func:`_peak`).

    With ``success_threshold``, a width has a transition only if its median final error crosses
    it over the grid (``min_error <= success_threshold < max_error``): a width that fits at every
    scale (above the lazy threshold, where the lazy optimum is 0 too) or at none has no rise of
    the error to locate, and its derivative is then left out (``transition_scale`` NaN). This also
    keeps the float32 rounding floor out: a run converged to the floor (``E ~ eps m δ^l``) has a
    meaningless derivative, which can be large.

    Returns a DataFrame with the group keys and ``transition_scale`` (``δ*``), ``peak_slope``
    (the median derivative there), ``at_edge`` (the peak is at the first or last scale: the
    transition may lie outside the grid), ``min_error`` / ``max_error`` (of the median final
    error over the scales) and ``n_seeds``. Rows without the column's values (e.g. the lazy rows)
    are left out.
    """
    if column not in df.columns:
        raise ValueError(f"the table has no column {column!r}; run the sweep with the "
                         "init-scale plot (or add_slope_column) to compute it")
    if success_threshold is not None and not (isinstance(success_threshold, numbers.Real)
                                              and success_threshold > 0):
        raise ValueError(f"success_threshold must be a number > 0 (or None), got "
                         f"{success_threshold!r}")
    rows = df[np.isfinite(df[column].to_numpy(np.float64))]
    keys = [k for k in ("algorithm", "order", "dim", "rank") if k in rows.columns] + ["width"]
    out = []
    for group, g in rows.groupby(keys, sort=True):
        by = g.groupby("init_scale")
        med = by[column].median().sort_index()
        err = by["final_relative_error"].median().sort_index().to_numpy(np.float64)
        lo, hi = float(np.nanmin(err)), float(np.nanmax(err))
        crosses = success_threshold is None or lo <= success_threshold < hi
        x = np.log(med.index.to_numpy(np.float64))
        xv, yv, edge = _peak(x, med.to_numpy(np.float64)) if crosses else (math.nan,) * 2 + (
            False,)
        out.append(dict(zip(keys, group), transition_scale=math.exp(xv) if math.isfinite(xv)
                        else math.nan, peak_slope=yv, at_edge=edge, min_error=lo,
                        max_error=hi, n_seeds=int(g["seed"].nunique())))
    return pd.DataFrame(out, columns=keys + ["transition_scale", "peak_slope", "at_edge",
                                             "min_error", "max_error", "n_seeds"])
