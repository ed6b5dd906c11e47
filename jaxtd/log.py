"""Logging a run's history to files and tools: callbacks that receive host-side records.

:func:`jaxtd.run` and :func:`jaxtd.sweep` take ``callback=``: a plain callable called with a
list of *records* after a compiled program has returned, on the host (never inside ``jit``: no
host callback in the scan, no recompilation, the same program with or without logging):

- ``jaxtd.run``: one call with the run's records, one per recorded step (``history["step"]``);
- ``jaxtd.sweep``: one call per computed chunk of seeds, one record per (cell, recorded step),
  in cell order (seed, width, hyper-parameter combination) then step. Chunks a resumed sweep
  reads back from ``out_dir`` are not passed again (they were logged when they were computed).

A record is a flat dict of Python scalars, in this key order::

    {<identifying columns>..., "step": int, <metric>: number, ...}

The identifying columns are empty for ``run``; for ``sweep`` they are ``algorithm`` (the
algorithm's name, unless ``metadata`` names it), the ``metadata`` columns, ``seed``, ``width``
and the swept hyper-parameters. The metrics are the entries of
:attr:`jaxtd.RunResult.history` (``loss``, ``relative_error``, ``distance``, ``active_count``,
``objective``, ...); a per-component vector entry ``(n, r)`` becomes the columns ``name_0`` ..
``name_{r-1}`` (``fitted_weight_0``, ...). Values equal the returned history's, record by record;
the last record holds the precise final loss and error, as ``history`` does.

Writers (each a callback, with ``close()`` and ``with`` support):

- :func:`jsonl_writer`: one JSON object per line (non-finite numbers written as ``null``);
- :func:`csv_writer`: one header, one row per record (records must share the header's keys);
- :func:`tensorboard_writer`: TensorBoard scalars through ``tensorboardX`` (optional dependency:
  ``pip install tensorboardX``), one TensorBoard run per cell (subfolder named by its
  identifying columns), one tag per metric, ``step`` as the global step.

Each call is appended as one ``write`` of all its records, then flushed to disk (``fsync``), so a
file holds whole calls; reopening with ``append=True`` drops a trailing partial line that a
killed process may have left. A sweep calls the callback before it saves the chunk, so a process
killed between the two logs that chunk again when the resumed sweep recomputes it: rows are
never missing, and a duplicate (same identifying columns and step) can be dropped on reading.

This module is named ``log`` rather than ``logging`` so that it never reads as (or shadows, in a
script run from inside the package folder) the standard library's ``logging``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Records", "Writer", "jsonl_writer", "csv_writer", "tensorboard_writer",
           "history_records", "split_record", "check_callback", "fan_out"]

Records = list  # list[dict[str, Any]]: what a callback receives


def check_callback(callback: Any) -> None:
    """A ``TypeError`` naming ``callback`` unless it is ``None`` or callable (checked before
    anything compiles)."""
    if callback is not None and not callable(callback):
        raise TypeError("callback must be a callable receiving a list of records (e.g. "
                        "jaxtd.log.jsonl_writer('history.jsonl')) or None, got "
                        f"{type(callback).__name__}")


def _columns(history: Mapping[str, np.ndarray]) -> dict:
    """``history`` entries ``(cells, n_records, ...)`` as flat metric columns ``(cells,
    n_records)``: vectors split into ``name_j``; ``step`` first."""
    out = {"step": np.asarray(history["step"])}
    for name, values in history.items():
        if name == "step":
            continue
        values = np.asarray(values)
        if values.ndim == 2:
            out[name] = values
        elif values.ndim == 3:
            for j in range(values.shape[2]):
                out[f"{name}_{j}"] = values[:, :, j]
        # (a metric of higher rank has no flat record form; a step's metrics are scalars)
    return out


def history_records(history: Mapping[str, Any], ids: Optional[Mapping[str, Sequence]] = None
                    ) -> Records:
    """The records of histories: ``history[name]`` of shape ``(n_records, ...)`` (one run) or
    ``(cells, n_records, ...)`` with ``ids[column]`` of shape ``(cells,)``; host numpy values.

    Returns one dict per (cell, recorded step), cells first, keys in the module's order."""
    ids = dict(ids or {})
    hist = {k: np.asarray(v) for k, v in history.items()}
    if hist["step"].ndim == 1:  # one run: a batch of one cell
        hist = {k: v[None] for k, v in hist.items()}
    cells, n_records = hist["step"].shape
    columns = _columns(hist)
    # tolist(): numpy scalars -> Python ints/floats/bools, the whole column at once
    id_lists = {k: np.asarray(v).reshape(cells).tolist() for k, v in ids.items()}
    metric_lists = {k: v.reshape(cells, n_records).tolist() for k, v in columns.items()}
    records = []
    for c in range(cells):
        head = {k: v[c] for k, v in id_lists.items()}
        rows = {k: v[c] for k, v in metric_lists.items()}
        for t in range(n_records):
            record = dict(head)
            record.update((k, v[t]) for k, v in rows.items())
            records.append(record)
    return records


def split_record(record: Mapping[str, Any]) -> tuple[dict, int, dict]:
    """``(identifying columns, step, metrics)`` of a record: the keys before ``step``, its
    value, the keys after it."""
    keys = list(record)
    if "step" not in record:
        raise ValueError(f"a record needs a 'step' entry, got keys {keys}")
    i = keys.index("step")
    return ({k: record[k] for k in keys[:i]}, int(record["step"]),
            {k: record[k] for k in keys[i + 1:]})


# -- files -------------------------------------------------------------------------------------

def _drop_partial_line(path: Path) -> None:
    """Cut a trailing line without its newline (a write interrupted by a kill)."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block, end = 1 << 16, size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)


class Writer:
    """A callback that appends records to a file: ``writer(records)``, ``writer.close()``.

    Subclasses format a call's records as text (:meth:`format`); the base appends it in one
    ``write`` and flushes it to disk. Usable as a context manager."""

    def __init__(self, path, *, append: bool = False):
        if not isinstance(append, bool):
            raise TypeError(f"append must be True or False, got {append!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"path {str(self.path)!r} is a folder; pass a file path "
                                    "for the log")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists():
            _drop_partial_line(self.path)
        self._start(append and self.path.exists() and self.path.stat().st_size > 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self._fd: Optional[int] = os.open(self.path, flags, 0o644)

    def _start(self, existing: bool) -> None:
        """Hook: read what an appended-to file already holds (the CSV header)."""

    def format(self, records: Records) -> str:
        raise NotImplementedError

    def __call__(self, records: Records) -> None:
        if self._fd is None:
            raise ValueError(f"the log writer of {str(self.path)!r} is closed")
        records = list(records)
        if not records:
            return
        data = self.format(records).encode("utf-8")
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r})"


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    return v


class _Jsonl(Writer):
    def format(self, records: Records) -> str:
        return "".join(json.dumps({k: _json_value(v) for k, v in r.items()}) + "\n"
                       for r in records)


class _Csv(Writer):
    header: Optional[list] = None

    def _start(self, existing: bool) -> None:
        self.header = None
        if existing:
            with open(self.path, newline="", encoding="utf-8") as f:
                self.header = next(csv.reader(f), None)

    def format(self, records: Records) -> str:
        if self.header is None:
            header = list(records[0])
        else:
            header = self.header
        for r in records:
            if set(r) != set(header):
                extra, missing = sorted(set(r) - set(header)), sorted(set(header) - set(r))
                raise ValueError(f"csv_writer({str(self.path)!r}): a record's keys differ from "
                                 f"the file's header (extra {extra}, missing {missing}); a CSV "
                                 "file has one header: log records of other keys to another "
                                 "file, or use jsonl_writer")
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        if self.header is None:
            out.writerow(header)
        out.writerows([r[k] for k in header] for r in records)
        self.header = header
        return buffer.getvalue()


def jsonl_writer(path, *, append: bool = False) -> Writer:
    """A callback appending each record to ``path`` as one JSON line (folders are created).

    ``append=False`` starts the file anew; ``append=True`` continues it (a resumed run)."""
    return _Jsonl(path, append=append)


def csv_writer(path, *, append: bool = False) -> Writer:
    """A callback appending records to the CSV file ``path``: a header from the first record's
    keys (or the existing file's header with ``append=True``), one row per record. A record
    whose keys differ from the header raises a ``ValueError`` before anything of its call is
    written."""
    return _Csv(path, append=append)


# -- TensorBoard -------------------------------------------------------------------------------

def _summary_writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ImportError("tensorboard_writer needs the optional dependency tensorboardX: pip "
                          "install tensorboardX (or pip install 'jaxtd[tensorboard]'); the "
                          "jsonl and csv writers need nothing") from err
    return SummaryWriter


def _run_name(ids: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in ids.items()).replace(os.sep, "_")


class _TensorBoard:
    """One ``tensorboardX.SummaryWriter`` per cell (a TensorBoard run), opened on first use."""

    def __init__(self, logdir, summary_writer):
        self.logdir = Path(logdir)
        self._cls = summary_writer
        self._writers: Optional[dict] = {}

    def __call__(self, records: Records) -> None:
        if self._writers is None:
            raise ValueError(f"the TensorBoard writer of {str(self.logdir)!r} is closed")
        touched = set()
        for record in records:
            ids, step, metrics = split_record(record)
            name = _run_name(ids)
            writer = self._writers.get(name)
            if writer is None:
                writer = self._writers[name] = self._cls(
                    logdir=str(self.logdir / name) if name else str(self.logdir))
            for tag, value in metrics.items():
                if isinstance(value, (int, float)):  # bools (e.g. "stopped") as 0 / 1
                    writer.add_scalar(tag, float(value), global_step=step)
            touched.add(name)
        for name in touched:
            self._writers[name].flush()

    def close(self) -> None:
        for writer in (self._writers or {}).values():
            writer.close()
        self._writers = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"tensorboard_writer({str(self.logdir)!r})"


def tensorboard_writer(logdir):
    """A callback writing each record's metrics as TensorBoard scalars under ``logdir``.

    One TensorBoard run per cell: the subfolder ``logdir/<col>=<value>,...`` of the record's
    identifying columns (``logdir`` itself for :func:`jaxtd.run`'s records), one tag per numeric
    metric (bools as 0 / 1), the record's ``step`` as the global step. Needs ``pip install
    tensorboardX`` (an ``ImportError`` saying so otherwise, raised here, before anything runs).
    View with ``tensorboard --logdir LOGDIR``."""
    return _TensorBoard(logdir, _summary_writer_class())


def fan_out(callbacks: Iterable[Callable[[Records], None]]) -> Callable[[Records], None]:
    """One callback calling each of ``callbacks`` in turn with the same records."""
    callbacks = tuple(callbacks)

    def call(records: Records) -> None:
        for cb in callbacks:
            cb(records)

    return call
