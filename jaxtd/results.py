"""Results of a sweep: one row per cell plus recorded histories, saved as files first.

A :class:`Results` is a table (a pandas DataFrame, one row per ``(seed, width, hyper-parameters)``
cell) and a dict of histories, each an array of shape ``(n_cells, n_records, ...)`` whose first
axis follows the rows. It round-trips exactly through :meth:`Results.save` / :meth:`Results.load`:

    out_dir/
      config.json      the sweep configuration, column order, dtypes, versions (jax, jaxtd, ...),
                       the sha256 of every other file and of itself
      rows.npz         the table, one array per column (exact dtypes)
      histories.npz    the histories
      results.csv      export (floats written with round-trip precision)
      results.json     export (a list of records; NaN written as null)
      chunks/          a long sweep's finished seed chunks (see :class:`jaxtd.store.ChunkStore`)

:meth:`Results.load` (and ``jaxtd show``, and a resumed sweep) checks every one of these files
against the sha256 recorded in ``config.json`` and raises :class:`ResultsError` (one line
naming the file and the fix) for an edited, damaged, truncated or swapped file.

The files themselves (atomic writes, checksums, identities, chunks, folder locks) are the job of
:mod:`jaxtd.store`; its public names are re-exported here (``ChunkStore``, ``ResultsError``,
``LockedError``, ``atomic_write``, ``check_out_dir``, ``config_fingerprint``, ``versions``, ...).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from jaxtd import store as _store
# the store's public names, re-exported (they lived here before jaxtd.store existed)
from jaxtd.store import (CHUNK_FORMAT, HISTORY_PREFIX, LOCK_NAME, RESULTS_FORMAT,  # noqa: F401
                         SWEEP_FORMAT, ChunkError, ChunkStore, ChunkWarning, IdentityError,
                         LockedError, ResultsError, algorithm_identity, atomic_write,
                         check_out_dir, config_fingerprint, lock_dir, unidentified,
                         verify_saved, versions)
from jaxtd.store import READ_ERRORS, file_sha256, jsonable, load_npz, save_npz, write_json

__all__ = ["Results", "ChunkStore", "versions", "check_out_dir", "atomic_write", "lock_dir",
           "config_fingerprint", "progress_enabled", "ResultsError", "ChunkError",
           "LockedError", "IdentityError", "ChunkWarning", "critical_width_of"]


def _column_array(series: pd.Series) -> np.ndarray:
    """A column as a numpy array that ``np.savez`` stores without pickle (strings as unicode)."""
    arr = series.to_numpy()
    if arr.dtype == object:
        return arr.astype(str)
    return arr


# -- the table ---------------------------------------------------------------------------------

def _records(rows: pd.DataFrame) -> list[dict]:
    """Rows as JSON-able records, NaN and infinities as null."""
    columns = {}
    for name in rows.columns:
        values = rows[name].to_numpy()
        if values.dtype.kind == "f":
            columns[name] = [None if not math.isfinite(v) else v for v in values.tolist()]
        else:
            columns[name] = values.tolist()
    return [dict(zip(columns, vals)) for vals in zip(*columns.values())] if columns else []



def critical_width_of(widths, ok) -> float:
    """The smallest of sorted ``widths`` from which ``ok`` holds at every larger width: the
    first width after the last failure (NaN when the largest width fails). The critical width
    of a success-rate curve (``ok = rate >= 0.5``) and of one seed (``ok`` = it succeeds)."""
    widths, ok = np.asarray(widths), np.asarray(ok, bool)
    fails = np.nonzero(~ok)[0]
    start = 0 if len(fails) == 0 else fails[-1] + 1
    return float(widths[start]) if start < len(widths) else math.nan

@dataclasses.dataclass(frozen=True, eq=False)
class Results:
    """The cells of a sweep.

    Attributes:
      rows: DataFrame with one row per cell. Columns: any constant metadata columns, ``seed``,
        ``width``, ``padded_width``, one column per swept hyper-parameter, ``final_relative_error``,
        ``final_loss``, ``success`` (``final_relative_error <= success_threshold`` and not
        diverged), ``diverged``, ``diverged_step`` (``-1`` = never), ``fit_time_0 .. fit_time_{r-1}``
        (first recorded step where ground-truth component ``j`` is fitted to half its weight,
        ``-1`` = never), ``distance`` (``||W_T - W_0||_F / ||W_0||_F``), ``active_count``, and any
        further scalar output of the algorithm's runner.
      histories: name -> array ``(n_cells, n_records, ...)`` aligned with ``rows``.
      config: the JSON-able configuration that produced the cells (compared on resume).
      info: versions, timings and compile counts (not part of the configuration).
      key_columns: columns that identify a group of cells besides ``seed`` and ``width``
        (metadata and hyper-parameter columns); the summaries group by them.
    """

    rows: pd.DataFrame
    histories: Mapping[str, np.ndarray]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key_columns: tuple = ()

    def __post_init__(self):
        if not isinstance(self.rows, pd.DataFrame):
            raise TypeError(f"rows must be a pandas DataFrame, got {type(self.rows).__name__}")
        n = len(self.rows)
        hist = {}
        for name, arr in dict(self.histories).items():
            arr = np.asarray(arr)
            if arr.ndim < 1 or arr.shape[0] != n:
                raise ValueError(f"histories[{name!r}] has shape {arr.shape}; its first axis must "
                                 f"have one entry per row ({n})")
            hist[name] = arr
        missing = [c for c in self.key_columns if c not in self.rows.columns]
        if missing:
            raise ValueError(f"key_columns {missing} are not columns of rows")
        object.__setattr__(self, "histories", hist)
        object.__setattr__(self, "config", jsonable(dict(self.config)))
        object.__setattr__(self, "info", jsonable(dict(self.info)))
        object.__setattr__(self, "key_columns", tuple(self.key_columns))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self):
        widths = sorted(set(self.rows["width"].tolist())) if "width" in self.rows else []
        return (f"Results({len(self)} cells, widths={widths}, key_columns={list(self.key_columns)}, "
                f"histories={sorted(self.histories)})")

    # -- views and exports -------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """A copy of the table (one row per cell)."""
        return self.rows.copy()

    def history(self, name: str) -> np.ndarray:
        """The recorded history ``name``, shape ``(n_cells, n_records, ...)``."""
        if name not in self.histories:
            raise KeyError(f"no history {name!r}; available: {sorted(self.histories)}")
        return self.histories[name]

    def to_csv(self, path: str) -> None:
        """Write the table as CSV (round-trip float precision), atomically."""
        with atomic_write(os.fspath(path), "w") as f:
            self.rows.to_csv(f, index=False, float_format=None)

    def to_json(self, path: str) -> None:
        """Write the table as a JSON list of records (NaN as null), atomically."""
        write_json(os.fspath(path), _records(self.rows))

    # -- derived results --------------------------------------------------------------------
    def select(self, mask) -> "Results":
        """The cells where the boolean ``mask`` (array or Series, one entry per row) holds."""
        mask = np.asarray(mask, bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), got {mask.shape}")
        return dataclasses.replace(
            self, rows=self.rows[mask].reset_index(drop=True),
            histories={k: v[mask] for k, v in self.histories.items()})

    def with_columns(self, **values) -> "Results":
        """Add columns: a scalar (e.g. ``algorithm="gd", dim=16``) is a constant column placed
        first and becomes a key column (summaries group by it); an array with one entry per row
        (e.g. ``lazy_best_residual=...``) is a data column appended last."""
        clash = [k for k in values if k in self.rows.columns]
        if clash:
            raise ValueError(f"columns {clash} already exist; choose other names")
        const, data = {}, {}
        for k, v in values.items():
            if np.isscalar(v):
                const[k] = v
                continue
            arr = np.asarray(v)
            if arr.shape != (len(self),):
                raise ValueError(f"column {k!r} must be a scalar or have shape ({len(self)},) "
                                 f"(one value per row), got shape {arr.shape}")
            data[k] = arr
        index = self.rows.index
        rows = pd.concat([pd.DataFrame({k: [v] * len(self) for k, v in const.items()}, index=index),
                          self.rows, pd.DataFrame(data, index=index)], axis=1)
        return dataclasses.replace(self, rows=rows,
                                   key_columns=tuple(const) + tuple(self.key_columns))

    @staticmethod
    def concat(parts: Sequence["Results"]) -> "Results":
        """Stack the cells of several results (e.g. one sweep per algorithm or per dimension,
        each tagged with :meth:`with_columns`).

        Columns missing from a part are filled with NaN (numbers) or ``""`` (strings); histories
        missing from a part, or shorter along a trailing axis, are padded with NaN.
        """
        parts = list(parts)
        if not parts or not all(isinstance(p, Results) for p in parts):
            raise TypeError("parts must be a non-empty sequence of Results")
        rows = pd.concat([p.rows for p in parts], ignore_index=True)
        names = list(dict.fromkeys(k for p in parts for k in p.histories))
        histories = {name: _stack_padded([p.histories.get(name) for p in parts],
                                         [len(p) for p in parts]) for name in names}
        keys = tuple(dict.fromkeys(k for p in parts for k in p.key_columns))
        return Results(rows, histories, config={"parts": [p.config for p in parts]},
                       info={"parts": [p.info for p in parts]}, key_columns=keys)

    # -- summaries ---------------------------------------------------------------------------
    def _group_columns(self, by) -> list[str]:
        if by is None:
            by = self.key_columns
        elif isinstance(by, str):
            by = (by,)
        missing = [c for c in by if c not in self.rows.columns]
        if missing:
            raise ValueError(f"by: {missing} are not columns; available: {list(self.rows.columns)}")
        return [c for c in by if c != "width"] + ["width"]

    def _success(self, threshold) -> pd.Series:
        if threshold is None:
            return self.rows["success"].astype(bool)
        err = self.rows["final_relative_error"].to_numpy()
        ok = np.isfinite(err) & (err <= threshold) & ~self.rows["diverged"].to_numpy(bool)
        return pd.Series(ok, index=self.rows.index)

    def summary(self, by=None, *, threshold: float | None = None) -> pd.DataFrame:
        """Per width (and per value of ``by``; default: the key columns, i.e. metadata and
        hyper-parameters): ``n`` cells, ``success_rate``, ``median_error`` (diverged cells count
        as ``inf``, never as a silent NaN), ``diverged_rate``.

        ``threshold`` recomputes success as ``final_relative_error <= threshold``; default: the
        ``success`` column (the sweep's ``success_threshold``).
        """
        cols = self._group_columns(by)
        err = self.rows["final_relative_error"].to_numpy(np.float64)
        err = np.where(np.isfinite(err) & ~self.rows["diverged"].to_numpy(bool), err, np.inf)
        frame = self.rows[cols].assign(_ok=self._success(threshold).to_numpy(np.float64),
                                       _err=err,
                                       _div=self.rows["diverged"].to_numpy(np.float64))
        grouped = frame.groupby(cols, sort=True)
        out = pd.DataFrame({"n": grouped.size(), "success_rate": grouped["_ok"].mean(),
                            "median_error": grouped["_err"].median(),
                            "diverged_rate": grouped["_div"].mean()})
        return out.reset_index()

    def critical_width(self, rate: float = 0.5, by=None, *, threshold: float | None = None):
        """The smallest width from which every larger width of the grid has success rate
        ``>= rate`` (:func:`critical_width_of`; a lucky small width below a failing one does
        not count). The one definition of the critical width: the figures use it too.

        With no key columns (and ``by=None``) returns an ``int``, or ``None`` when the largest
        width fails. Otherwise returns a DataFrame with one row per group and a
        ``critical_width`` column (``pd.NA`` when the group's largest width fails).
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        table = self.summary(by, threshold=threshold).sort_values("width", kind="stable")
        groups = [c for c in table.columns
                  if c not in ("width", "n", "success_rate", "median_error", "diverged_rate")]

        def crit(part: pd.DataFrame):
            found = critical_width_of(part["width"].to_numpy(),
                                      part["success_rate"].to_numpy() >= rate)
            return None if math.isnan(found) else int(found)

        if not groups:
            return crit(table)
        rows = [dict(zip(groups, key if isinstance(key, tuple) else (key,)),
                     critical_width=crit(part))
                for key, part in table.groupby(groups, sort=True)]
        out = pd.DataFrame(rows, columns=groups + ["critical_width"])
        out["critical_width"] = out["critical_width"].astype("Int64")
        return out

    # -- files ---------------------------------------------------------------------------------
    def _columns_meta(self) -> list[list[str]]:
        return [[c, str(self.rows[c].dtype)] for c in self.rows.columns]

    _FILES = _store.SAVED_FILES

    def save(self, out_dir: str) -> str:
        """Write ``config.json``, ``rows.npz``, ``histories.npz``, ``results.csv`` and
        ``results.json`` into ``out_dir`` (created if needed), each atomically, holding the
        folder's lock (:func:`lock_dir`); return the path. An earlier ``config.json`` is removed
        first and the new one written last, recording the sha256 of the other four files and
        of itself: a folder with a ``config.json`` always holds a complete, matching result.
        Temporary files left by a writer killed in an earlier save are removed."""
        out_dir = check_out_dir(out_dir)
        with lock_dir(out_dir):
            _store.remove_stray_temporaries(out_dir)
            marker = os.path.join(out_dir, "config.json")
            if os.path.lexists(marker):  # incomplete until the new one is written
                os.remove(marker)
            paths = {name: os.path.join(out_dir, name) for name in self._FILES}
            save_npz(paths["rows.npz"],
                      {c: _column_array(self.rows[c]) for c in self.rows.columns})
            save_npz(paths["histories.npz"], self.histories)
            self.to_csv(paths["results.csv"])
            self.to_json(paths["results.json"])
            meta = {"format": RESULTS_FORMAT, "config": self.config,
                    "info": {**self.info, "versions": self.info.get("versions", versions())},
                    "columns": self._columns_meta(), "key_columns": list(self.key_columns),
                    "histories": sorted(self.histories),
                    "sha256": {name: file_sha256(p) for name, p in paths.items()}}
            meta = jsonable(meta)
            meta["sha256_self"] = _store.meta_sha256(meta)
            # config.json last: its presence marks a complete result
            write_json(marker, meta)
        return out_dir

    @classmethod
    def load(cls, out_dir: str) -> "Results":
        """Read a result written by :meth:`save` (or by a finished sweep with ``out_dir``).

        ``config.json`` and every file it lists (``rows.npz``, ``histories.npz``,
        ``results.csv``, ``results.json``) are checked against the sha256 recorded in it
        (:func:`jaxtd.store.verify_saved`); an edited, damaged, truncated or swapped file
        raises :class:`ResultsError` naming it (results saved by jaxtd before checksums existed
        load unchecked).
        """
        out_dir = os.fspath(out_dir)
        path = os.path.join(out_dir, "config.json")
        if not os.path.isfile(path):
            if os.path.isfile(os.path.join(out_dir, "sweep.json")):
                raise FileNotFoundError(
                    f"{out_dir!r} holds an unfinished sweep (no config.json yet); rerun "
                    "jaxtd.sweep with the same arguments and out_dir to resume and finish it")
            raise FileNotFoundError(f"{out_dir!r} holds no saved jaxtd results (no config.json); "
                                    "pass the out_dir of a finished sweep or of Results.save")
        sweep = os.path.isfile(os.path.join(out_dir, "sweep.json"))
        fix = ("rerun jaxtd.sweep with the same arguments and out_dir after deleting its "
               "config.json (the final files are written again from the verified chunks)"
               if sweep else
               "save the results again (Results.save) or restore the folder from a copy")
        meta = verify_saved(out_dir, fix)
        if sweep:  # the final files must be those of the folder's sweep
            manifest = _store.read_json(os.path.join(out_dir, "sweep.json"), "sweep.json",
                                         "restore it, or load the files from a copy")
            if not isinstance(manifest, dict) or manifest.get("config") != meta.get("config"):
                raise ResultsError(f"{path} describes another sweep than the folder's "
                                   f"sweep.json (files copied in from another result?); {fix}")
        try:
            arrays = {}
            for name in ("rows.npz", "histories.npz"):
                file = os.path.join(out_dir, name)
                if not os.path.isfile(file):
                    raise ResultsError(f"{file} is missing from a saved result; {fix}")
                try:
                    arrays[name] = load_npz(file)
                except READ_ERRORS as err:
                    raise ResultsError(f"{file} is unreadable ({type(err).__name__}: {err}); "
                                       f"{fix}") from None
            rows = _frame(arrays["rows.npz"], meta["columns"])
            return cls(rows, arrays["histories.npz"], config=meta["config"], info=meta["info"],
                       key_columns=tuple(meta["key_columns"]))
        except ResultsError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise ResultsError(f"{path} does not describe the saved files ({type(err).__name__}: "
                               f"{err}); {fix}") from None


def _frame(columns: Mapping[str, np.ndarray], order: Iterable) -> pd.DataFrame:
    """Rebuild a DataFrame with the saved column order and dtypes."""
    data = {}
    for name, dtype in order:
        arr = columns[name]
        data[name] = pd.Series(arr, dtype=dtype if arr.dtype.kind != "U" else None)
        if str(data[name].dtype) != dtype:
            data[name] = data[name].astype(dtype)
    return pd.DataFrame(data)


def _stack_padded(arrays: Sequence[np.ndarray | None], lengths: Sequence[int]) -> np.ndarray:
    """Concatenate along axis 0, padding trailing axes (and absent parts) with NaN."""
    present = [a for a in arrays if a is not None]
    ndim = max(a.ndim for a in present)
    if any(a.ndim != ndim for a in present):
        raise ValueError("cannot concatenate histories of different ranks")
    trailing = tuple(max(a.shape[i] for a in present) for i in range(1, ndim))
    same = all(a is not None and a.shape[1:] == trailing for a in arrays) and \
        len({a.dtype for a in present}) == 1
    if same:
        return np.concatenate(arrays)
    dtype = np.result_type(np.float32, *[a.dtype for a in present])
    out = []
    for a, n in zip(arrays, lengths):
        block = np.full((n,) + trailing, np.nan, dtype)
        if a is not None:
            block[tuple(slice(0, s) for s in a.shape)] = a
        out.append(block)
    return np.concatenate(out)




def progress_enabled(progress: bool | None) -> bool:
    """``None`` (auto): show a progress bar only when stderr is a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def tqdm_class():
    """tqdm's ``auto`` bar class: a widget in Jupyter when ipywidgets is installed, the text bar
    otherwise. Without ipywidgets, ``tqdm.auto`` falls back to the text bar by itself but first
    warns with the path of the installed package; that warning says nothing to act on inside
    a run's output, so it is silenced here."""
    from tqdm import TqdmWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm
