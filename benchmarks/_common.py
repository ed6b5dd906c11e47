"""Shared helpers for the benchmark scripts: timing and the machine description."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time

# the last line of a `jaxtd run` (jaxtd/cli.py); a warm run also names the programs it loaded
RUN_SUMMARY = re.compile(r"compiled (\d+) programs in ([\d.]+) s(?: \(loaded (\d+) saved by an "
                         r"earlier run in ([\d.]+) s\))?, ran in ([\d.]+) s")


def run_summary(text: str) -> dict | None:
    """The numbers of a run's summary line in ``text`` (``None`` if it has none): programs
    compiled, their compile seconds, programs loaded, load seconds, run seconds."""
    match = RUN_SUMMARY.search(text)
    if match is None:
        return None
    n, compile_s, loaded, load_s, run_s = match.groups()
    return {"programs": int(n), "compile": float(compile_s), "loaded": int(loaded or 0),
            "load": float(load_s or 0.0), "run": float(run_s)}


def block(x):
    import jax  # here: the scripts that only time subprocesses never import JAX
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def median_time(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn(*args)`` (blocked on its outputs) after ``warmup`` calls."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import jax
    dev = jax.devices()[0]
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "jax": jax.__version__,
            "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
            "n_devices": jax.device_count()}
