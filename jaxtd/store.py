"""The store of saved results: chunks, identity, checksums, locks and atomic files.

:mod:`jaxtd.results` is the table (:class:`~jaxtd.results.Results`, summaries); this module is
everything that decides whether a saved file may be trusted and reused:

- **Identity.** A sweep's configuration (``jaxtd._sweep._config``) covers everything that
  determines its numbers: the algorithm's full static identity (:func:`algorithm_identity`:
  constructor, every bound argument, optimizer included), the target's values, widths, seeds and
  their split into chunks, steps, record cadence, dtype and x64, the base key and a format
  version. :class:`ChunkStore` compares it on every reuse and refuses a mismatch with one line
  listing the differing fields (:class:`IdentityError`). An algorithm whose identity cannot be
  written down (an optax ``GradientTransformation`` object, a lambda, an algorithm built without
  ``@base.constructor``) is never reused: a resume is refused, or recomputed with
  ``resume="recompute"``.
- **Checksums.** ``config.json`` records the sha256 of every other saved file and of itself; each
  chunk records its sweep's fingerprint, its index, its seeds and the sha256 of its arrays.
  :func:`verify_saved` and :meth:`ChunkStore.read` check them; a failure is one line naming the
  file (:class:`ResultsError`).
- **Atomic files.** Every file is written to a temporary file in the same folder and renamed
  (:func:`atomic_write`); temporaries left by a killed writer are removed by the next writer that
  holds the folder's lock.
- **Locks.** ``out_dir/.lock`` (``fcntl.flock``, holding the writer's PID) keeps a second process
  from writing the same folder (:func:`lock_dir`); the file is removed when its holder releases it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import warnings
import weakref
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np
import pandas as pd

from jaxtd import __version__

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

__all__ = ["ChunkStore", "versions", "check_out_dir", "atomic_write", "lock_dir",
           "config_fingerprint", "algorithm_identity", "describe_value", "unidentified",
           "verify_saved", "ResultsError", "ChunkError", "LockedError", "IdentityError",
           "ChunkWarning", "SWEEP_FORMAT", "RESUME_MODES",
           # file helpers shared with results, experiment and transition
           "READ_ERRORS", "jsonable", "arrays_sha256", "file_sha256", "remove_stray_temporaries",
           "read_json", "write_json", "load_npz", "save_npz"]

HISTORY_PREFIX = "history/"
_CHUNK_RE = re.compile(r"^chunk_(\d{5})\.npz$")
_TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
# /2: config.json records the files' sha256; /3: and its own (``sha256_self``)
RESULTS_FORMAT = "jaxtd.results/3"
RESULTS_FORMATS = ("jaxtd.results/1", "jaxtd.results/2", RESULTS_FORMAT)
CHUNK_FORMAT = "jaxtd.chunk/2"
# part of every sweep's identity: /3 = the full algorithm identity, x64, key implementation;
# /4 = the platform
SWEEP_FORMAT = "jaxtd.sweep/4"
RESUME_MODES = (True, False, "recompute")
# the files a finished result holds besides config.json (their sha256 is in config.json)
SAVED_FILES = ("rows.npz", "histories.npz", "results.csv", "results.json")
# what a sweep folder may hold (removed by resume="recompute")
_SWEEP_ENTRIES = ("sweep.json", "config.json", "chunks", "rejected") + SAVED_FILES
# marks a part of an identity that cannot be written down (never reused)
UNIDENTIFIED = "unidentified"
_CHUNK_META = "meta"
# what numpy/zipfile raise on a truncated, empty or corrupted .npz
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


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


class IdentityError(ResultsError):
    """A folder holds results of another configuration, or results whose configuration cannot
    be identified (so cannot be reused). One line: the differing fields and the fix;
    ``problem`` is the line without the fix."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


class ChunkWarning(UserWarning):
    """A chunk was set aside on resume (damaged or foreign) and will be recomputed."""


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a result (stored beside every saved result)."""
    import jax  # local: results files can be read without initializing JAX
    return {"jaxtd": __version__, "jax": jax.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def jsonable(obj: Any) -> Any:
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
    text = json.dumps(jsonable(dict(config)), sort_keys=True, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


# -- identity ----------------------------------------------------------------------------------

class _Opaque(Exception):
    """A value whose identity cannot be written down; ``args[0]`` says what it is."""


def _unidentified(reason: str) -> dict:
    return {UNIDENTIFIED: reason}


def _named(obj) -> str:
    """``package.qualname`` (e.g. ``optax.adam``) when the package exports ``obj`` under that
    name, else ``module.qualname`` when the module does; ``_Opaque`` for lambdas, local
    functions, closures, bound methods and anything not found again by its name."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    what = f"{type(obj).__name__} {qualname or obj!r}"
    if not isinstance(qualname, str) or not isinstance(module, str) or "<" in qualname:
        raise _Opaque(f"{what} (a lambda or local function has no stable name)")
    if inspect.ismethod(obj) and not inspect.isclass(obj.__self__) \
            and not inspect.ismodule(obj.__self__):
        raise _Opaque(f"{what} (a method bound to an object)")
    if getattr(obj, "__closure__", None):
        raise _Opaque(f"{what} (a closure)")
    for prefix in (module.split(".")[0], module):
        found = sys.modules.get(prefix)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is obj or (inspect.ismethod(obj) and found == obj):
            return f"{prefix}.{qualname}"
    raise _Opaque(f"{what} (not found again as {module}.{qualname})")


def describe_value(value: Any) -> Any:
    """A stable, JSON-able description of a constructor argument: numbers, strings, ``None``
    and booleans as themselves; lists, tuples and dicts recursively; functions and classes by
    name (``"optax.adam"``); enum members by class and name; ``functools.partial`` by its
    function and bound arguments. Raises ``_Opaque`` for anything else (optax
    ``GradientTransformation`` objects, arrays, lambdas, closures, other objects)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return describe_value(value.item())
    if isinstance(value, enum.Enum):
        return {"enum": f"{_named(type(value))}.{value.name}"}
    if isinstance(value, Mapping):
        return {"dict": {str(k): describe_value(v) for k, v in sorted(
            value.items(), key=lambda kv: str(kv[0]))}}
    if type(value).__name__.startswith("GradientTransformation") and isinstance(value, tuple):
        raise _Opaque("an optax GradientTransformation object (its hyper-parameters live in "
                      "closures)")
    if isinstance(value, (list, tuple)) and (type(value) in (list, tuple)):
        return [describe_value(v) for v in value]
    if isinstance(value, functools.partial):
        return {"partial": describe_value(value.func),
                "args": [describe_value(a) for a in value.args],
                "keywords": {str(k): describe_value(v) for k, v in sorted(value.keywords.items())}}
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value) \
            or inspect.ismethod(value):
        return {"callable": _named(value)}
    raise _Opaque(f"a {type(value).__module__}.{type(value).__qualname__} object")


def _thaw(frozen: Any) -> Any:
    """Undo ``jaxtd.algorithms.base._freeze`` (containers as ``(tag, items)`` pairs) into the
    described value; ``_Opaque`` for what cannot be described."""
    if isinstance(frozen, tuple) and len(frozen) == 2 and isinstance(frozen[0], str) \
            and isinstance(frozen[1], tuple):
        tag, items = frozen
        if tag == "dict":
            return {"dict": {k: _thaw(v) for k, v in items}}
        if tag in ("list", "tuple"):
            return [_thaw(v) for v in items]
        if tag.startswith("GradientTransformation"):
            raise _Opaque("an optax GradientTransformation object (its hyper-parameters live "
                          "in closures)")
        raise _Opaque(f"a {tag} object")
    return describe_value(frozen)


def algorithm_identity(algorithm) -> dict:
    """The full static identity of an :class:`~jaxtd.algorithms.Algorithm`, JSON-able and stable
    across processes: its name, its default hyper-parameters and, for an algorithm built by a
    ``@base.constructor``, the constructor (``module.qualname``) and every bound argument
    (:func:`describe_value`). An argument that cannot be described, or an algorithm without a
    ``static_key`` (built by hand), gives ``{"unidentified": reason}`` in their place: such an
    identity is never matched on resume (:func:`unidentified`)."""
    out = {"name": algorithm.name,
           "hparams": {k: float(v) for k, v in sorted(dict(algorithm.hparams).items())}}
    key = algorithm.static_key
    if key is None:
        out["constructor"] = _unidentified(
            f"algorithm {algorithm.name!r} was built without @jaxtd.algorithms.base.constructor "
            "(no static_key), so its arguments are unknown")
        return out
    module, qualname, arguments = key
    out["constructor"] = f"{module}.{qualname}"
    described = {}
    for name, frozen in arguments:
        try:
            described[name] = _thaw(frozen)
        except _Opaque as err:
            described[name] = _unidentified(f"argument {name}= of {qualname} is {err.args[0]}")
    out["arguments"] = described
    return out


def unidentified(config: Any) -> str | None:
    """The first reason a configuration cannot be identified (an ``{"unidentified": reason}``
    entry anywhere in it), else ``None``."""
    if isinstance(config, Mapping):
        if set(config) == {UNIDENTIFIED}:
            return str(config[UNIDENTIFIED])
        values = config.values()
    elif isinstance(config, (list, tuple)):
        values = config
    else:
        return None
    for v in values:
        reason = unidentified(v)
        if reason is not None:
            return reason
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) \
        else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _diff_paths(old: Any, new: Any, prefix: str, out: list) -> None:
    absent = "<absent>"
    if isinstance(old, Mapping) and isinstance(new, Mapping) and UNIDENTIFIED not in old \
            and UNIDENTIFIED not in new:
        for k in sorted(set(old) | set(new)):
            _diff_paths(old.get(k, absent), new.get(k, absent), f"{prefix}{k}.", out)
    elif old != new:
        out.append(f"{prefix[:-1]}: saved {_short(old)}, requested {_short(new)}")


def identity_diff(saved: Mapping, requested: Mapping) -> list[str]:
    """The fields (dotted paths) where two configurations differ, as
    ``"field: saved X, requested Y"``."""
    out: list[str] = []
    _diff_paths(jsonable(dict(saved)), jsonable(dict(requested)), "", out)
    return out


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
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


def remove_stray_temporaries(folder: str) -> list[str]:
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
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _holder(fd)
                os.close(fd)
                who = f"process {pid}" if pid is not None else "another process"
                raise LockedError(
                    f"{os.path.dirname(path)!r} is being written by {who} (lock {path}); wait "
                    "for it to finish or stop it, or choose another out_dir", pid) from None
            # the holder removes the file when it releases: a lock taken on a file that is no
            # longer the folder's .lock is worthless, take the new one
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
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
            if fcntl is not None:  # still locked: no one else can be using the file
                with contextlib.suppress(OSError):
                    os.remove(path)
            os.close(held[0])  # closing the descriptor drops the flock


@contextlib.contextmanager
def lock_dir(out_dir):
    """Hold ``out_dir/.lock`` for the duration of a ``with`` block (the folder must exist).

    An exclusive ``fcntl.flock`` on ``out_dir/.lock``, whose content is the holder's PID: a second
    process raises :class:`LockedError` naming that PID at once (it never waits). Re-entrant within
    one process (a :class:`ChunkStore` and :meth:`Results.save` inside a locked block reuse the
    lock). The file is removed on release; the OS drops the lock when the holder exits or is
    killed (the file then stays, and the next holder takes it over).
    Without ``fcntl`` (not POSIX) the PID is written but nothing is locked.
    """
    path = _acquire(out_dir)
    try:
        yield path
    finally:
        _release(path)


def save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path: str) -> dict[str, np.ndarray]:
    # our own file object: np.load leaves its handle open when the file is not an archive
    with open(path, "rb") as f:
        data = np.load(f, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}


def read_json(path: str, what: str, fix: str) -> Any:
    """Parse a JSON file or raise a one-line :class:`ResultsError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ResultsError(f"{path} is damaged ({what} is not valid JSON: "
                           f"{str(err).splitlines()[0]}); {fix}") from None


def write_json(path: str, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)




# -- chunked sweeps ---------------------------------------------------------------------------

def meta_sha256(meta: Mapping[str, Any]) -> str:
    """sha256 of a ``config.json`` record without its own ``sha256_self`` entry (canonical JSON),
    so an edit of ``config.json`` itself is detected too."""
    body = {k: v for k, v in meta.items() if k != "sha256_self"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def verify_saved(out_dir: str, fix: str) -> dict:
    """The ``config.json`` record of the finished result in ``out_dir`` after checking it and
    every file it lists (``rows.npz``, ``histories.npz``, ``results.csv``, ``results.json``)
    against their recorded sha256; else :class:`ResultsError`, one line naming the file and
    ending with ``fix``. Results written before checksums existed (format ``/1``) pass
    unchecked."""
    path = os.path.join(out_dir, "config.json")
    meta = read_json(path, "config.json", fix)
    if not isinstance(meta, dict) or "format" not in meta:
        raise ResultsError(f"{path} does not describe the saved files (no format); {fix}")
    fmt = meta["format"]
    if fmt not in RESULTS_FORMATS:
        raise ResultsError(f"{path} has format {fmt!r}, which this jaxtd cannot read; "
                           "upgrade jaxtd or load it with the version that wrote it")
    if fmt == "jaxtd.results/1":
        return meta
    if fmt == RESULTS_FORMAT and meta.get("sha256_self") != meta_sha256(meta):
        raise ResultsError(f"{path} does not match its own recorded sha256 (edited or "
                           f"damaged); {fix}")
    checksums = meta.get("sha256")
    if not isinstance(checksums, dict):
        raise ResultsError(f"{path} does not describe the saved files (no sha256 record); {fix}")
    for name in SAVED_FILES:
        file = os.path.join(out_dir, name)
        if name not in checksums:
            raise ResultsError(f"{path} records no sha256 of {name}; {fix}")
        if not os.path.isfile(file):
            raise ResultsError(f"{file} is missing from a saved result; {fix}")
        if checksums[name] != file_sha256(file):
            raise ResultsError(f"{file} does not match the sha256 recorded in config.json "
                               f"(edited, damaged, truncated or from another result); {fix}")
    return meta


class ChunkStore:
    """The output directory of a chunked sweep.

    ``out_dir/sweep.json`` holds the configuration and its fingerprint;
    ``out_dir/chunks/chunk_NNNNN.npz`` one finished seed chunk each (table columns as
    ``row/<name>``, histories as ``history/<name>``, and ``meta``: the sweep's fingerprint, the
    chunk index, its seeds and the sha256 of its arrays), written atomically.

    Opening a directory that holds a different configuration raises :class:`IdentityError` (one
    line listing the differing fields); one whose configuration cannot be identified
    (:func:`unidentified`: an opaque optimizer object, an algorithm built by hand) is refused
    too, since a match could not be proven. ``resume="recompute"`` removes such a saved sweep
    and starts again instead; ``resume=False`` refuses any saved sweep. Files that are not a
    jaxtd sweep, a damaged ``sweep.json`` or final files that fail their checksums
    (:func:`verify_saved`) raise :class:`ResultsError`: results are never silently mixed. The store takes the folder's lock (:func:`lock_dir`) when it opens and holds
    it until :meth:`close` (or the end of a ``with`` block, or garbage collection), so a second
    process opening the same folder gets :class:`LockedError` naming this one's PID; with the
    lock held, ``.tmp-*`` files left by a killed run are deleted.

    Resuming: :meth:`done` lists only chunks that verify; a chunk that is unreadable, fails its
    checksum, or records another sweep's fingerprint, another index or other seeds is moved to
    ``out_dir/rejected/`` with a :class:`ChunkWarning` (one line) and is not done, so the sweep
    recomputes it; ``self.rejected`` lists ``(file name, reason)`` of every chunk set aside.
    :meth:`read` raises :class:`ChunkError` for such a chunk.
    """

    def __init__(self, out_dir: str, config: Mapping[str, Any], *, resume=True):
        if not any(resume is m or (isinstance(m, str) and resume == m) for m in RESUME_MODES):
            raise ValueError(f"resume must be True, False or 'recompute', got {resume!r}")
        self.out_dir = check_out_dir(out_dir)
        self.config = jsonable(dict(config))
        self.fingerprint = config_fingerprint(self.config)
        self.chunk_dir = os.path.join(self.out_dir, "chunks")
        self.rejected: list[tuple[str, str]] = []
        self.recomputed = False  # resume="recompute" removed a saved sweep
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

    def _refuse(self, problem: str) -> None:
        raise IdentityError(f"out_dir={self.out_dir!r} {problem}; its results are never reused "
                            "for another configuration: choose another out_dir, or pass "
                            "resume='recompute' to recompute it there", problem)

    def _clear(self) -> None:
        """Remove the saved sweep (its known files only), for ``resume="recompute"``."""
        for name in _SWEEP_ENTRIES:
            path = os.path.join(self.out_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        self.recomputed = True

    def _open(self, resume) -> None:
        manifest = os.path.join(self.out_dir, "sweep.json")
        remove_stray_temporaries(self.out_dir)
        if os.path.isfile(manifest) and resume == "recompute":
            self._clear()
        if os.path.isfile(manifest):
            saved = read_json(manifest, "sweep.json",
                               "it identifies the sweep saved in this folder: restore it, or "
                               "choose a new out_dir")
            if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
                raise ResultsError(f"{manifest} is damaged (no 'config' object); restore it, or "
                                   "choose a new out_dir")
            saved = saved["config"]
            reason = unidentified(self.config) or unidentified(saved)
            if reason is not None:
                self._refuse(f"holds a sweep whose configuration cannot be identified ({reason})")
            if saved != self.config:
                self._refuse("holds a sweep with another configuration (differs in "
                             + "; ".join(identity_diff(saved, self.config)) + ")")
            if not resume:
                raise ResultsError(f"out_dir={self.out_dir!r} already holds this sweep; pass "
                                   "resume=True to continue it, resume='recompute' to recompute "
                                   "it, or choose an empty out_dir")
            self._verify_final()
        else:
            self._refuse_foreign_folder()  # again, under the lock
            write_json(manifest, {"format": SWEEP_FORMAT, "config": self.config,
                                   "fingerprint": self.fingerprint, "versions": versions()})
        os.makedirs(self.chunk_dir, exist_ok=True)
        remove_stray_temporaries(self.chunk_dir)

    def _verify_final(self) -> None:
        """A finished sweep's final files must verify and describe this sweep (they are written
        again from the verified chunks at the end); none yet is fine."""
        if not os.path.isfile(os.path.join(self.out_dir, "config.json")):
            return
        fix = ("delete that folder's config.json to write the final files again from the "
               "verified chunks, or pass resume='recompute'")
        meta = verify_saved(self.out_dir, fix)
        if meta.get("config") != self.config:
            raise ResultsError(f"{os.path.join(self.out_dir, 'config.json')} describes another "
                               f"sweep than this folder's sweep.json; {fix}")

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
            data = load_npz(path)
        except READ_ERRORS as err:
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
        if meta.get("sha256") != arrays_sha256(data):
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
                "seeds": seeds, "sha256": arrays_sha256(arrays)}
        arrays[_CHUNK_META] = np.asarray(json.dumps(meta))
        save_npz(self._path(index), arrays)

    def read(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(columns, histories)`` of chunk ``index``, verified (:class:`ChunkError` if it is
        damaged or foreign)."""
        data = self._verify(int(index))
        columns = {k[4:]: v for k, v in data.items() if k.startswith("row/")}
        histories = {k[len(HISTORY_PREFIX):]: v for k, v in data.items()
                     if k.startswith(HISTORY_PREFIX)}
        return columns, histories

