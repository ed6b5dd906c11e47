"""Quantities in the units a person reads: durations and memory sizes, one spelling for the
CLI's notes and errors, the run plan (:func:`jaxtd.experiment.describe`) and the benchmark
tables. Plain Python."""

from __future__ import annotations

__all__ = ["fmt_seconds", "fmt_bytes"]


def fmt_seconds(seconds: float) -> str:
    """``"48 s"`` below two minutes, ``"3 min 5 s"`` above (whole seconds)."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"


def fmt_bytes(n: float) -> str:
    """``"512 B"``, ``"3.2 KB"``, ``"1.5 MB"``, ``"2.0 GB"`` (powers of 1024; GB above)."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
