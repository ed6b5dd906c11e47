"""Results of a sweep: one row per cell plus recorded histories, saved as files first.

A :class:`Results` is a table (a pandas DataFrame, one row per ``(seed, width, hyper-parameters)``
cell) and a dict of histories, each an array of shape ``(n_cells, n_records, ...)`` whose first
axis follows the rows. It round-trips exactly through :meth:`Results.save` / :meth:`Results.load`:

    out_dir/
      config.json      the sweep configuration, column order, dtypes, versions (jax, jaxtd, ...)
      rows.npz         the table, one array per column (exact dtypes)
      histories.npz    the histories
      results.csv      export (floats written with round-trip precision)
      results.json     export (a list of records; NaN written as null)
      chunks/          a long sweep's finished seed chunks (see :class:`ChunkStore`)

Every file is written atomically (temporary file in the same folder, then ``os.replace``, with
the permissions the user's umask gives a new file), so an interrupted sweep never leaves a
half-written file behind; stray temporary files of a killed run are removed when a
:class:`ChunkStore` opens the folder.

Saved results can be verified:

- ``config.json`` records the sha256 of every other file; :meth:`Results.load` checks
  ``rows.npz`` and ``histories.npz`` against it and raises :class:`ResultsError` (one line
  naming the file and the fix) for a damaged, truncated or swapped file.
- each chunk records its sweep's fingerprint (sha256 of the configuration), its index, its
  seeds and the sha256 of its arrays. :meth:`ChunkStore.read` refuses a chunk that fails any of
  these (:class:`ChunkError`); :meth:`ChunkStore.done` moves such a chunk aside to
  ``out_dir/rejected/`` with a :class:`ChunkWarning`, so a resumed sweep recomputes it.
- ``out_dir/.lock`` (``fcntl.flock``, holding the writer's PID) keeps a second process from
  writing the same folder: :func:`lock_dir`; a :class:`ChunkStore` holds it while open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import threading
import warnings
import weakref
import zipfile
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

__all__ = ["Results", "ChunkStore", "versions", "check_out_dir", "atomic_write", "lock_dir",
           "config_fingerprint", "ResultsError", "ChunkError", "LockedError", "ChunkWarning"]

HISTORY_PREFIX = "history/"
_CHUNK_RE = re.compile(r"^chunk_(\d{5})\.npz$")
_TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
RESULTS_FORMAT = "jaxtd.results/2"  # /2: config.json records the files' sha256
CHUNK_FORMAT = "jaxtd.chunk/2"
_CHUNK_META = "meta"
# what numpy/zipfile raise on a truncated, empty or corrupted .npz
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class ResultsError(ValueError):
    """A saved result, sweep folder or chunk is damaged, foreign or busy. The message is one line
    naming the file and the fix."""


class ChunkError(ResultsError):
    """A chunk file that is damaged (unreadable, checksum mismatch) or belongs to another sweep
    (fingerprint, index or seeds differ)."""


class LockedError(ResultsError):
    """Another process holds the folder's lock; ``pid`` is its PID (``None`` if unknown)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class ChunkWarning(UserWarning):
    """A chunk was set aside on resume (damaged or foreign) and will be recomputed."""


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a result (stored beside every saved result)."""
    import jax  # local: results files can be read without initializing JAX

    import jaxtd
    return {"jaxtd": jaxtd.__version__, "jax": jax.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (lists, not tuples; Python scalars), so a config compares equal after a
    JSON round trip."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of a configuration's canonical JSON (sorted keys): what a chunk records to say
    which sweep it belongs to."""
    text = json.dumps(_jsonable(dict(config)), sort_keys=True, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of named arrays (name, dtype, shape and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- files -----------------------------------------------------------------------------------------

def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success flush, fsync and ``os.replace`` it onto
    ``path`` (atomic on POSIX); on failure remove it. The file gets the permissions of any new
    file (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX, suffix=os.path.basename(path))
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def check_out_dir(out_dir: str, argname: str = "out_dir") -> str:
    """Create ``out_dir`` if needed and prove it writable (by writing a file), before any compute.

    Raises ``ValueError`` naming ``argname`` when it is a file, cannot be created, or cannot be
    written to.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"{argname} must be a path (str or os.PathLike), got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{argname}={out_dir!r} is a file, not a directory; pass a directory path")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise ValueError(f"{argname}={out_dir!r} is not a writable directory ({err.strerror}); "
                         "choose a directory you can write to") from err
    return out_dir


def _remove_stray_temporaries(folder: str) -> list[str]:
    """Delete ``.tmp-*`` files left in ``folder`` by a killed writer (call with the lock held)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(_TMP_PREFIX) and os.path.isfile(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(name)
    return removed


# -- the folder lock ------------------------------------------------------------------------------

_HELD: dict[tuple[int, str], list] = {}  # (pid, lock path) -> [fd, depth]
_HELD_GUARD = threading.Lock()


def _lock_path(out_dir) -> str:
    return os.path.join(os.path.realpath(os.fspath(out_dir)), LOCK_NAME)


def _holder(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 64, 0).decode().strip() or "x")
    return None


def _acquire(out_dir) -> str:
    """Take ``out_dir/.lock`` (re-entrant within this process); return the lock path."""
    path = _lock_path(out_dir)
    key = (os.getpid(), path)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _holder(fd)
                os.close(fd)
                who = f"process {pid}" if pid is not None else "another process"
                raise LockedError(
                    f"{os.path.dirname(path)!r} is being written by {who} (lock {path}); wait "
                    "for it to finish or stop it, or choose another out_dir", pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = [fd, 1]
        return path


def _release(path: str) -> None:
    key = (os.getpid(), path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # closing the descriptor drops the flock


@contextlib.contextmanager
def lock_dir(out_dir):
    """Hold ``out_dir/.lock`` for the duration of a ``with`` block (the folder must exist).

    An exclusive ``fcntl.flock`` on ``out_dir/.lock``, whose content is the holder's PID: a second
    process raises :class:`LockedError` naming that PID at once (it never waits). Re-entrant within
    one process (a :class:`ChunkStore` and :meth:`Results.save` inside a locked block reuse the
    lock). The OS drops the lock when the holder exits or is killed; the file itself stays.
    Without ``fcntl`` (not POSIX) the PID is written but nothing is locked.
    """
    path = _acquire(out_dir)
    try:
        yield path
    finally:
        _release(path)


def _save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    # our own file object: np.load leaves its handle open when the file is not an archive
    with open(path, "rb") as f:
        data = np.load(f, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}


def _read_json(path: str, what: str, fix: str) -> Any:
    """Parse a JSON file or raise a one-line :class:`ResultsError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ResultsError(f"{path} is damaged ({what} is not valid JSON: "
                           f"{str(err).splitlines()[0]}); {fix}") from None


def _write_json(path: str, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)


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
        object.__setattr__(self, "config", _jsonable(dict(self.config)))
        object.__setattr__(self, "info", _jsonable(dict(self.info)))
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
        _write_json(os.fspath(path), _records(self.rows))

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
        """Smallest width whose success rate is ``>= rate``.

        With no key columns (and ``by=None``) returns an ``int``, or ``None`` when no width
        reaches ``rate``. Otherwise returns a DataFrame with one row per group and a
        ``critical_width`` column (``pd.NA`` when none reaches ``rate``).
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        table = self.summary(by, threshold=threshold)
        groups = [c for c in table.columns
                  if c not in ("width", "n", "success_rate", "median_error", "diverged_rate")]
        ok = table[table["success_rate"] >= rate]
        if not groups:
            return int(ok["width"].min()) if len(ok) else None
        found = ok.groupby(groups)["width"].min().rename("critical_width")
        all_groups = table[groups].drop_duplicates().set_index(groups)
        out = all_groups.join(found).reset_index()
        out["critical_width"] = out["critical_width"].astype("Int64")
        return out

    # -- files ---------------------------------------------------------------------------------
    def _columns_meta(self) -> list[list[str]]:
        return [[c, str(self.rows[c].dtype)] for c in self.rows.columns]

    _FILES = ("rows.npz", "histories.npz", "results.csv", "results.json")

    def save(self, out_dir: str) -> str:
        """Write ``config.json``, ``rows.npz``, ``histories.npz``, ``results.csv`` and
        ``results.json`` into ``out_dir`` (created if needed), each atomically, holding the
        folder's lock (:func:`lock_dir`); return the path. ``config.json`` is written last and
        records the sha256 of the other four files."""
        out_dir = check_out_dir(out_dir)
        with lock_dir(out_dir):
            paths = {name: os.path.join(out_dir, name) for name in self._FILES}
            _save_npz(paths["rows.npz"],
                      {c: _column_array(self.rows[c]) for c in self.rows.columns})
            _save_npz(paths["histories.npz"], self.histories)
            self.to_csv(paths["results.csv"])
            self.to_json(paths["results.json"])
            meta = {"format": RESULTS_FORMAT, "config": self.config,
                    "info": {**self.info, "versions": self.info.get("versions", versions())},
                    "columns": self._columns_meta(), "key_columns": list(self.key_columns),
                    "histories": sorted(self.histories),
                    "sha256": {name: _file_sha256(p) for name, p in paths.items()}}
            # config.json last: its presence marks a complete result
            _write_json(os.path.join(out_dir, "config.json"), meta)
        return out_dir

    @classmethod
    def load(cls, out_dir: str) -> "Results":
        """Read a result written by :meth:`save` (or by a finished sweep with ``out_dir``).

        ``rows.npz`` and ``histories.npz`` are checked against the sha256 recorded in
        ``config.json``; a damaged, truncated or swapped file raises :class:`ResultsError`
        naming it (results saved by jaxtd before checksums existed load unchecked).
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
        fix = ("rerun jaxtd.sweep with the same arguments and out_dir (finished chunks are reused "
               "and the final files rewritten)" if sweep else
               "save the results again (Results.save) or restore the folder from a copy")
        meta = _read_json(path, "config.json", fix)
        try:
            fmt = meta["format"]
            if fmt not in ("jaxtd.results/1", RESULTS_FORMAT):
                raise ResultsError(f"{path} has format {fmt!r}, which this jaxtd cannot read; "
                                   "upgrade jaxtd or load it with the version that wrote it")
            checksums = meta.get("sha256", {}) if fmt != "jaxtd.results/1" else {}
            arrays = {}
            for name in ("rows.npz", "histories.npz"):
                file = os.path.join(out_dir, name)
                if not os.path.isfile(file):
                    raise ResultsError(f"{file} is missing from a saved result; {fix}")
                if fmt != "jaxtd.results/1" and checksums.get(name) != _file_sha256(file):
                    raise ResultsError(f"{file} does not match the sha256 recorded in "
                                       f"config.json (damaged, truncated or from another result); "
                                       f"{fix}")
                try:
                    arrays[name] = _load_npz(file)
                except _READ_ERRORS as err:
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


# -- chunked sweeps ---------------------------------------------------------------------------

def _diff(old: Mapping, new: Mapping) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: saved {old.get(k, '<absent>')!r} vs requested {new.get(k, '<absent>')!r}"
            for k in keys if old.get(k, "<absent>") != new.get(k, "<absent>")]


class ChunkStore:
    """The output directory of a chunked sweep.

    ``out_dir/sweep.json`` holds the configuration and its fingerprint;
    ``out_dir/chunks/chunk_NNNNN.npz`` one finished seed chunk each (table columns as
    ``row/<name>``, histories as ``history/<name>``, and ``meta``: the sweep's fingerprint, the
    chunk index, its seeds and the sha256 of its arrays), written atomically.

    Opening a directory that holds a different configuration, files that are not a jaxtd sweep or
    a damaged ``sweep.json`` raises ``ValueError`` (:class:`ResultsError`): results are never
    silently mixed. The store takes the folder's lock (:func:`lock_dir`) when it opens and holds
    it until :meth:`close` (or the end of a ``with`` block, or garbage collection), so a second
    process opening the same folder gets :class:`LockedError` naming this one's PID; with the
    lock held, ``.tmp-*`` files left by a killed run are deleted.

    Resuming: :meth:`done` lists only chunks that verify; a chunk that is unreadable, fails its
    checksum, or records another sweep's fingerprint, another index or other seeds is moved to
    ``out_dir/rejected/`` with a :class:`ChunkWarning` (one line) and is not done, so the sweep
    recomputes it; ``self.rejected`` lists ``(file name, reason)`` of every chunk set aside.
    :meth:`read` raises :class:`ChunkError` for such a chunk.
    """

    def __init__(self, out_dir: str, config: Mapping[str, Any], *, resume: bool = True):
        self.out_dir = check_out_dir(out_dir)
        self.config = _jsonable(dict(config))
        self.fingerprint = config_fingerprint(self.config)
        self.chunk_dir = os.path.join(self.out_dir, "chunks")
        self.rejected: list[tuple[str, str]] = []
        self._refuse_foreign_folder()  # before the lock: never leave a .lock in a foreign folder
        self._lock = _acquire(self.out_dir)
        self._finalizer = weakref.finalize(self, _release, self._lock)
        try:
            self._open(resume)
        except BaseException:
            self.close()
            raise

    def _refuse_foreign_folder(self) -> None:
        if os.path.isfile(os.path.join(self.out_dir, "sweep.json")):
            return
        entries = [e for e in os.listdir(self.out_dir)
                   if e != LOCK_NAME and not e.startswith(_TMP_PREFIX)]
        if entries:
            raise ResultsError(f"out_dir={self.out_dir!r} is not empty and holds no jaxtd sweep "
                               f"(found {sorted(entries)[:5]}); choose an empty or new directory")

    def _open(self, resume: bool) -> None:
        manifest = os.path.join(self.out_dir, "sweep.json")
        _remove_stray_temporaries(self.out_dir)
        if os.path.isfile(manifest):
            saved = _read_json(manifest, "sweep.json",
                               "it identifies the sweep saved in this folder: restore it, or "
                               "choose a new out_dir")
            if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
                raise ResultsError(f"{manifest} is damaged (no 'config' object); restore it, or "
                                   "choose a new out_dir")
            saved = saved["config"]
            if saved != self.config:
                lines = "\n  ".join(_diff(saved, self.config))
                raise ResultsError(
                    f"out_dir={self.out_dir!r} holds a sweep with a different configuration:\n  "
                    f"{lines}\nuse a new out_dir (results of different configurations are never "
                    "mixed)")
            if not resume:
                raise ResultsError(f"out_dir={self.out_dir!r} already holds this sweep; pass "
                                   "resume=True to continue it or choose an empty out_dir")
        else:
            self._refuse_foreign_folder()  # again, under the lock
            _write_json(manifest, {"format": "jaxtd.sweep/2", "config": self.config,
                                   "fingerprint": self.fingerprint, "versions": versions()})
        os.makedirs(self.chunk_dir, exist_ok=True)
        _remove_stray_temporaries(self.chunk_dir)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "ChunkStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- chunks --------------------------------------------------------------------------------
    def _path(self, index: int) -> str:
        return os.path.join(self.chunk_dir, f"chunk_{index:05d}.npz")

    def _expected_seeds(self, index: int) -> list[int] | None:
        """The seeds of chunk ``index`` when the configuration lists ``seeds`` and
        ``chunk_size`` (a sweep's does), else ``None``."""
        seeds, size = self.config.get("seeds"), self.config.get("chunk_size")
        if isinstance(seeds, list) and isinstance(size, int) and size >= 1:
            return [int(s) for s in seeds[index * size:(index + 1) * size]]
        return None

    def _verify(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of chunk ``index`` after every check, else :class:`ChunkError`."""
        path = self._path(index)
        fix = ("delete it (or resume the sweep: jaxtd.sweep with the same out_dir sets it aside "
               "and recomputes it)")
        try:
            data = _load_npz(path)
        except _READ_ERRORS as err:
            raise ChunkError(f"{path} is damaged ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); "
                             f"{fix}") from None
        if _CHUNK_META not in data:
            raise ChunkError(f"{path} records no sweep fingerprint (written by an older jaxtd, "
                             f"or not a jaxtd chunk); {fix}")
        try:
            meta = json.loads(str(data.pop(_CHUNK_META)))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise ChunkError(f"{path} has a damaged meta record; {fix}")
        if meta.get("fingerprint") != self.fingerprint:
            raise ChunkError(f"{path} belongs to another sweep (fingerprint "
                             f"{str(meta.get('fingerprint'))[:12]}, this sweep "
                             f"{self.fingerprint[:12]}); {fix}")
        if meta.get("index") != index:
            raise ChunkError(f"{path} holds chunk {meta.get('index')}, not chunk {index}; {fix}")
        if meta.get("sha256") != _arrays_sha256(data):
            raise ChunkError(f"{path} does not match its checksum (damaged); {fix}")
        expected = self._expected_seeds(index)
        if expected is not None and meta.get("seeds") != expected:
            raise ChunkError(f"{path} holds seeds {meta.get('seeds')}, chunk {index} of this "
                             f"sweep has seeds {expected}; {fix}")
        return data

    def _set_aside(self, name: str, reason: str) -> None:
        folder = os.path.join(self.out_dir, "rejected")
        os.makedirs(folder, exist_ok=True)
        dest, n = os.path.join(folder, name), 1
        while os.path.exists(dest):
            dest, n = os.path.join(folder, f"{name}.{n}"), n + 1
        os.replace(os.path.join(self.chunk_dir, name), dest)
        self.rejected.append((name, reason))
        warnings.warn(f"{reason.split('; ')[0]}; moved to {dest}, it will be recomputed",
                      ChunkWarning, stacklevel=3)

    def done(self) -> set[int]:
        """Indices of the chunks written and verified. Chunks that fail verification are moved
        to ``out_dir/rejected/`` (one :class:`ChunkWarning` each) and left out."""
        out = set()
        for name in sorted(os.listdir(self.chunk_dir)):
            m = _CHUNK_RE.match(name)
            if not m:
                continue
            try:
                self._verify(int(m.group(1)))
            except ChunkError as err:
                self._set_aside(name, str(err))
                continue
            out.add(int(m.group(1)))
        return out

    def write(self, index: int, columns: Mapping[str, np.ndarray],
              histories: Mapping[str, np.ndarray]) -> None:
        """Write chunk ``index`` atomically, with its meta record (fingerprint, index, seeds,
        sha256). A ``seed`` column must hold exactly the chunk's seeds when the configuration
        lists them (``ValueError`` otherwise)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be an int >= 0, got {index!r}")
        index = int(index)
        arrays = {f"row/{k}": np.asarray(v) for k, v in columns.items()}
        arrays.update({HISTORY_PREFIX + k: np.asarray(v) for k, v in histories.items()})
        seeds = (sorted({int(s) for s in np.asarray(columns["seed"]).ravel()})
                 if "seed" in columns else None)
        expected = self._expected_seeds(index)
        if expected is not None:
            if seeds is not None and seeds != sorted(expected):
                raise ValueError(f"chunk {index} must hold seeds {expected}, its seed column "
                                 f"holds {seeds}")
            seeds = expected
        meta = {"format": CHUNK_FORMAT, "fingerprint": self.fingerprint, "index": index,
                "seeds": seeds, "sha256": _arrays_sha256(arrays)}
        arrays[_CHUNK_META] = np.asarray(json.dumps(meta))
        _save_npz(self._path(index), arrays)

    def read(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(columns, histories)`` of chunk ``index``, verified (:class:`ChunkError` if it is
        damaged or foreign)."""
        data = self._verify(int(index))
        columns = {k[4:]: v for k, v in data.items() if k.startswith("row/")}
        histories = {k[len(HISTORY_PREFIX):]: v for k, v in data.items()
                     if k.startswith(HISTORY_PREFIX)}
        return columns, histories


def progress_enabled(progress: bool | None) -> bool:
    """``None`` (auto): show a progress bar only when stderr is a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)
