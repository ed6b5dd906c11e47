"""JAX's persistent compilation cache, in a per-user folder.

Compiling a grid program takes seconds while running it often takes less: the same programs come
back run after run (same algorithm, shapes and steps). :func:`enable` points JAX's persistent
compilation cache at a folder (default ``$XDG_CACHE_HOME/jaxtd/xla``, i.e.
``~/.cache/jaxtd/xla``), so a later process loads the executable instead of compiling it. The
``jaxtd`` command enables it unless ``--no-compile-cache`` is given; library code never changes
the user's JAX configuration by itself. Inside one process, :func:`jaxtd.sweep` keeps its own
in-memory cache of compiled grids as well.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import jax

__all__ = ["default_dir", "enable"]


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxtd/xla`` (``~/.cache/jaxtd/xla`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "jaxtd" / "xla"


def enable(path: Optional[os.PathLike | str] = None) -> Optional[Path]:
    """Use ``path`` (default :func:`default_dir`) as JAX's persistent compilation cache.

    Every program is cached, however fast it compiled (JAX's default skips those under a
    second, which are most of jaxtd's on a small problem). Returns the folder, or ``None`` with
    one warning line when it cannot be created or written: the run then goes on without it.
    """
    folder = Path(path) if path is not None else default_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        warnings.warn(f"compile cache disabled: cannot write {folder} ({err.strerror or err}); "
                      "pass another folder or --no-compile-cache", RuntimeWarning, stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
