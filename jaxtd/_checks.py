"""The argument checks every public function shares (plain Python, before tracing).

One policy: a value of the wrong type raises ``TypeError``, a value out of range raises
``ValueError``, and each message is one line naming the argument and what it accepts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["check_int", "check_choice", "check_finite", "host_value"]


def check_int(value: Any, name: str, minimum: int, *, why: str = "") -> int:
    """Return ``value`` as an int if it is a Python/numpy int ``>= minimum`` (not a bool): else a
    ``TypeError`` (wrong type) or ``ValueError`` (too small). ``why`` is appended to the type's
    description in the message, e.g. ``" (a static shape)"``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}{why}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_choice(value: Any, name: str, choices) -> Any:
    """Return ``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def host_value(x: Any):
    """The value of ``x`` as a numpy array when it is concrete and already addressable here
    (numpy, or a committed single-process ``jax.Array``), else ``None`` (tracers, abstract
    values, arrays spread over other hosts): validation never forces a trace to concretize."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, jax.Array):
        try:
            if x.is_fully_addressable and not x.is_deleted():
                return np.asarray(x)
        except Exception:  # an exotic array type: skip the value check, never fail on it
            return None
    return None


def check_finite(name: str, x: Any, fix: str) -> None:
    """Raise a ``ValueError`` naming ``name`` and the first non-finite entry of a concrete ``x``
    (tracers and arrays held by other processes pass: see :func:`host_value`)."""
    value = host_value(x)
    if value is not None and not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0]
        raise ValueError(f"{name} has a non-finite entry ({value[tuple(bad)]} at index "
                         f"{tuple(int(i) for i in bad)}); {fix}")
