"""Shared helpers for the benchmark scripts: timing and the machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax


def block(x):
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
    dev = jax.devices()[0]
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "jax": jax.__version__,
            "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
            "n_devices": jax.device_count()}
