"""Compiled grid programs, kept for the process and, when asked, on disk across processes.

A grid program is determined by its *program key*: the algorithm (equal constructor arguments
give equal algorithms), the padded width, steps, record cadence, swept hparam names, the
arguments' shapes and dtypes, the devices and the dtype-promotion mode. :func:`get` returns the
executable for a key, in this order:

1. **in memory**: a second sweep of the same shapes in this process compiles nothing;
2. **on disk**, when JAX's persistent compilation cache is enabled
   (:func:`jaxtd.compile_cache.enable`, which ``jaxtd run`` does): the serialized executable
   (``jax.experimental.serialize_executable``) saved by an earlier process, so a warm run skips
   tracing and lowering as well as XLA compilation. JAX's own persistent cache only skips the
   last step, and tracing plus lowering a grid program costs about a second;
3. **compiled** now (then saved to both; a program that JAX's persistent cache supplied is left
   there, since XLA:CPU cannot run a re-serialized copy of a loaded executable).

A file on disk is found by a sha256 of everything that could change the program: the key's
stable text, the versions of jax and jaxlib, the platform and devices, ``XLA_FLAGS`` and the JAX
settings that change lowering (matmul precision, PRNG implementation), the source of jaxtd
and of every installed module whose code the algorithm names (with its distribution's
version). An algorithm that names a user's own module (a factory in their project, which may
import helpers from other files) or whose identity has no stable text (a hand-assembled
``Algorithm``, or a constructor argument such as a ready optax transformation, which is a
closure) is never saved to disk, only kept in memory; multi-process programs are never saved either. A file that cannot be read or
loaded is removed and the program compiled again. Files are written atomically.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import json
import os
import pickle
import sys
import tempfile
import threading
import time
import types
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.monitoring
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.experimental import serialize_executable

from jaxtd import store
from jaxtd.algorithms.base import Algorithm

__all__ = ["get", "clear", "signature", "program_key", "stable_text", "disk_dir",
           "compile_lowered", "compiler_options", "program_name", "COMPILER_OPTIONS", "FAST_COMPILE",
           "FAST_COMPILE_PROGRAMS"]

_MEMORY: "collections.OrderedDict[Any, Any]" = collections.OrderedDict()
_MAX_IN_MEMORY = 64  # each entry holds device code
# "2": files saved by format 1 may hold a re-serialized copy of an executable that JAX's own
# cache had loaded, which XLA:CPU cannot run; a new format ignores every such file.
_FORMAT = "2"


def signature(args) -> tuple:
    """The tree structure and ``(shape, dtype)`` of every leaf of ``args``."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((np.shape(x), str(jnp.asarray(x).dtype) if not hasattr(x, "dtype")
                           else str(x.dtype)) for x in leaves)


def program_key(parts: tuple, args, devices=None) -> tuple:
    """The key of a program built from ``parts`` (its name and static arguments) and called on
    ``args``: with everything else that shapes its compiled code, namely the arguments' tree,
    shapes and dtypes, the devices it runs on (``devices``, default the first of
    ``jax.devices()``; ids are global across processes, and the owning processes and the
    process count tell a multi-process program from a single-process one), the platform and
    JAX's dtype-promotion and x64 settings."""
    devices = jax.devices()[:1] if devices is None else devices
    return (*parts, signature(args), tuple((d.id, d.process_index) for d in devices),
            jax.process_count(), devices[0].platform, jax.config.jax_numpy_dtype_promotion,
            jax.config.jax_enable_x64)


def clear() -> None:
    """Forget every compiled program of this process (files on disk are kept)."""
    _MEMORY.clear()


def disk_dir() -> Optional[Path]:
    """``<JAX persistent cache folder>/jaxtd-programs`` when that cache is enabled on a local
    folder, else ``None``."""
    root = jax.config.jax_compilation_cache_dir
    if not root or "://" in str(root):
        return None
    return Path(root) / "jaxtd-programs"


def get(key, lower: Callable[[], Any], *, disk_key=None,
        program: Optional[str] = None) -> tuple[Any, float, str]:
    """The executable of ``key``: ``(executable, seconds, how)`` with ``how`` one of
    ``"memory"``, ``"disk"``, ``"compiled"`` and ``seconds`` spent getting it.

    ``lower()`` returns the lowered program (``jax.jit(...).lower(...)``), called on a miss only.
    ``disk_key``: a tuple of stable parts (:func:`stable_text`) naming the program across
    processes, or ``None`` to keep it in memory only. ``program``: the name that selects its
    :func:`compiler_options` (it must be part of ``key`` and ``disk_key``).
    """
    hit = _MEMORY.get(key)
    if hit is not None:
        _MEMORY.move_to_end(key)
        return hit, 0.0, "memory"
    t0 = time.perf_counter()
    path = _path(disk_key)
    executable = _load(path) if path is not None else None
    how = "disk"
    if executable is None:
        executable, from_jax_cache = _compile(lower, program)
        how = "compiled"
        if path is not None and not from_jax_cache:
            _save(path, executable)
    _MEMORY[key] = executable
    while len(_MEMORY) > _MAX_IN_MEMORY:
        _MEMORY.popitem(last=False)
    return executable, time.perf_counter() - t0, how


def _compile(lower: Callable[[], Any], program: Optional[str]) -> tuple[Any, bool]:
    """``(lower().compile(), whether JAX's persistent cache supplied it)``.

    An executable that JAX loaded from its own cache is not saved again: on XLA:CPU, serializing
    a deserialized executable drops its compiled kernels, and the saved copy fails when run
    ("Function ... not found"). JAX's cache already holds that program for the next process.
    """
    thread = threading.get_ident()
    hits = []

    def listener(event, **_):
        if event == "/jax/compilation_cache/cache_hits" and threading.get_ident() == thread:
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    try:
        executable = compile_lowered(lower(), program)
    finally:
        jax.monitoring.unregister_event_listener(listener)
    return executable, bool(hits)


# XLA options for jaxtd's grid programs, per platform. On CPU, XLA's newer fusion emitters cost
# compile time and buy no run time here: without them the headline-sized GD grid (d=24, m=112,
# 8 seeds, 1000 steps) took 6.0-6.3 s of CPU to trace, lower and compile instead of 8.4-9.2 s,
# the variant's 11.2-11.5 s instead of 12.3-14.1 s, with equal run times and the same numbers
# (jaxlib 0.10.2, 2 shared cores, both settings alternated in one process).
COMPILER_OPTIONS = {"cpu": {"xla_cpu_use_fusion_emitters": False}}

# Programs that XLA:CPU compiles with LLVM's optimization level 1 instead of its default. On
# the headline (d=24, m<=112, 1000 steps, one cold process per setting, jaxlib 0.10.2, 2 cores)
# level 1 compiled GD's grid in 3.1 s instead of 5.9 s with bit-identical results and equal
# run time, lazy GD's in 3.8 s instead of 6.1 s and the lazy-optimum table's in 1.8 s instead
# of 3.7 s, with equal run times and results within an ulp (float32 1.6e-7, float64 7.5e-15
# relative). On the deflation preset (l=4, d=10, m=50) deflation's grid compiled in 5.9-6.1 s
# instead of 15.5-20.2 s and ran 12% longer (5.2 s instead of 4.5-4.7 s), with the same result
# rows and histories within float32 rounding: a cold run 9-14 s shorter, a warm one 0.6 s
# longer. The variant's compiled in half the time but ran 1.5x longer: it keeps the default,
# as does every program not named here.
FAST_COMPILE = {"cpu": {"xla_backend_optimization_level": 1}}
FAST_COMPILE_PROGRAMS = frozenset({"jaxtd.algorithms._gd.gd", "jaxtd.algorithms._lazy_gd.lazy_gd",
                                   "jaxtd.algorithms._deflation.deflation",
                                   "jaxtd.lazy.best_residual_table"})


def program_name(algorithm: Algorithm) -> Optional[str]:
    """``module.constructor`` of a built-in algorithm's grid program, else ``None``."""
    if algorithm.static_key is None:
        return None
    return f"{algorithm.static_key[0]}.{algorithm.static_key[1]}"


def compiler_options(platform: str, program: Optional[str] = None) -> dict:
    """The XLA options jaxtd compiles ``program`` with on ``platform``."""
    options = dict(COMPILER_OPTIONS.get(platform, {}))
    if program in FAST_COMPILE_PROGRAMS:
        options.update(FAST_COMPILE.get(platform, {}))
    return options


def compile_lowered(lowered, program: Optional[str] = None) -> Any:
    """``lowered.compile()`` with the :func:`compiler_options` of ``program`` on the default
    backend's platform (``jax.devices()[0]``, where jaxtd's grid programs run); an XLA build
    that does not know an option compiles with its defaults instead."""
    options = compiler_options(jax.devices()[0].platform, program)
    if not options:
        return lowered.compile()
    try:
        return lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as err:
        if "No such compile option" not in str(err):
            raise
        return lowered.compile()


def _path(disk_key) -> Optional[Path]:
    folder = disk_dir()
    if folder is None or disk_key is None or jax.process_count() > 1:
        return None
    text = stable_text(disk_key)
    if text is None:
        return None
    devices = tuple((d.platform, d.device_kind) for d in jax.devices())
    h = hashlib.sha256()
    for part in (_FORMAT, text, jax.__version__, _jaxlib_version(), repr(devices),
                 jax.devices()[0].client.platform_version, _compiler_settings(),
                 _source_digest()):
        h.update(part.encode())
        h.update(b"\0")
    for module in _modules_named(disk_key):
        digest = _module_digest(module)
        if digest is None:
            return None
        h.update(digest.encode())
    return folder / f"{h.hexdigest()[:32]}.bin"


def _load(path: Path):
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except FileNotFoundError:
        return None
    except Exception:  # damaged, truncated or from an incompatible build: compile again
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _save(path: Path, executable) -> None:
    try:
        blob = pickle.dumps(serialize_executable.serialize(executable))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except Exception:  # a cache that cannot be written only costs the next process a compile
        try:
            os.unlink(tmp)  # noqa: F821 (bound when mkstemp succeeded)
        except (NameError, OSError):
            pass


# -- stable identities -------------------------------------------------------------------------

def stable_text(value) -> Optional[str]:
    """A text that names ``value`` the same way in every process, or ``None`` when it has none.

    Numbers, strings, bools, ``None``, tuples/lists/dicts of those, dtypes, tree definitions and
    devices have one; arrays and other objects do not. An
    :class:`~jaxtd.algorithms.Algorithm` is named by the identity a saved sweep records
    (:func:`jaxtd.store.algorithm_identity`: constructor and every argument), and has none when
    that identity cannot name every argument (a closure, a ready optax transformation).
    """
    if isinstance(value, Algorithm):
        identity = store.algorithm_identity(value)
        if store.unidentified(identity) is not None:
            return None
        return json.dumps(identity, sort_keys=True)
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return float.hex(value)
    if isinstance(value, (tuple, list)):
        parts = [stable_text(v) for v in value]
        return None if None in parts else f"{type(value).__name__}({','.join(parts)})"
    if isinstance(value, dict):
        return stable_text(tuple(sorted(value.items(), key=lambda kv: repr(kv[0]))))
    if isinstance(value, np.dtype):
        return f"dtype({value})"
    if isinstance(value, jax.tree_util.PyTreeDef):
        return f"tree({value})"
    if isinstance(value, jax.Device):
        return f"device({value.platform},{value.id},{value.process_index})"
    return None


def _modules_named(value) -> list[str]:
    """Modules outside jaxtd whose code ``value`` names: constructors of algorithms, functions
    and classes among their arguments (a user factory's module, a custom model function's)."""
    found: set[str] = set()

    def visit(v):
        if isinstance(v, Algorithm):
            if v.static_key is not None:
                found.add(v.static_key[0])
                visit(v.static_key[2])
        elif isinstance(v, (tuple, list)):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.items():
                visit(x)
        elif isinstance(v, (types.FunctionType, type)):
            found.add(v.__module__)

    visit(value)
    return sorted(m for m in found if m != "jaxtd" and not m.startswith("jaxtd."))


def _module_digest(module: str) -> Optional[str]:
    """sha256 of an installed module's source file and its distribution's version, or ``None``.

    Only modules of installed distributions (under ``site-packages``/``dist-packages``, e.g.
    ``optax``) are named this way: a version change or an edit of the file itself is a new key.
    A user's own module (a factory in their project) may import helpers from other files whose
    edits its own digest would not see, so programs that name one are kept in memory only."""
    mod = sys.modules.get(module)
    try:
        path = inspect.getsourcefile(mod) if mod is not None else None
    except TypeError:
        return None
    if not path or not any(part in ("site-packages", "dist-packages") for part in Path(path).parts):
        return None
    try:
        top = module.split(".")[0]
        dists = metadata.packages_distributions().get(top, [])
        versions = ",".join(f"{d}={metadata.version(d)}" for d in sorted(dists))
        return hashlib.sha256(versions.encode() + b"\0" + Path(path).read_bytes()).hexdigest()
    except (OSError, ValueError, metadata.PackageNotFoundError):
        return None


# JAX settings that change a lowered program or its numbers without changing its arguments'
# shapes and dtypes (x64 and the promotion mode are in the program key already).
_JAX_SETTINGS = ("jax_default_matmul_precision", "jax_default_prng_impl",
                 "jax_threefry_partitionable", "jax_enable_checks", "jax_debug_nans",
                 "jax_debug_infs")


def _compiler_settings() -> str:
    """``XLA_FLAGS`` and the JAX settings that shape a program: an executable saved under other
    flags (an optimization level, fast math) is not loaded by a process that sets different ones."""
    values = {name: str(getattr(jax.config, name, None)) for name in _JAX_SETTINGS}
    return json.dumps({"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), **values}, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
    """The digest of this package's source (:func:`_tree_digest`), read once per process."""
    return _tree_digest(Path(__file__).resolve().parent)


def _tree_digest(root: Path) -> str:
    """sha256 over the path and bytes of every ``.py`` file under ``root``, subpackages
    (``algorithms/``, ``lazy/``) included: a code change is a new program even when the version
    number stays."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _jaxlib_version() -> str:
    return str(getattr(jaxlib, "__version__", "?"))
