"""What the tests' child processes inherit: the suite's XLA flags, less those a child sets."""

from __future__ import annotations


def without_device_count(flags: str) -> str:
    """The suite's XLA flags for a child that sets its own CPU device count (a
    ``--xla_force_host_platform_device_count`` would fight it); the others stay, among them the
    one that keeps XLA's Eigen pool from deadlocking on 2 cores (tests/conftest.py)."""
    return " ".join(f for f in flags.split()
                    if not f.startswith("--xla_force_host_platform_device_count"))
