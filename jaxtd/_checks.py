"""The argument checks every public function shares (plain Python, before tracing).

One policy: a value of the wrong type raises ``TypeError``, a value out of range raises
``ValueError``, and each message is one line naming the argument and what it accepts.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

from jaxtd._sizes import largest_divisor_at_most  # re-exported (moved below JAX)

__all__ = ["check_int", "check_bool", "check_choice", "check_finite", "check_positive",
           "check_nonnegative", "is_real", "host_value", "largest_divisor_at_most"]


def check_int(value: Any, name: str, minimum: int, *, why: str = "") -> int:
    """Return ``value`` as an int if it is a Python/numpy int ``>= minimum`` (not a bool): else a
    ``TypeError`` (wrong type) or ``ValueError`` (too small). ``why`` is appended to the type's
    description in the message, e.g. ``" (a static shape)"``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}{why}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool (Python or numpy), else a ``TypeError``: a string such
    as ``"no"`` is truthy and would silently select the other branch."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# Trial division stops here: the factorization below is exact for n < _TRIAL_LIMIT**2 = 10**12
# and for any n whose prime factors but one are below _TRIAL_LIMIT (~0.1 s at most).
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


def is_real(x) -> bool:
    """A concrete real number (Python or numpy int/float), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_not_text(value: Any, name: str, what: str) -> None:
    """Strings and bools are not numbers (``"0.05"`` would reach the program as text)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be {what}, got {value!r}")


def check_positive(value: Any, name: str) -> Any:
    """Raise if a concrete number is not finite and > 0 (``TypeError`` for a string or a bool;
    traced values pass through)."""
    _check_not_text(value, name, "a finite number > 0")
    if is_real(value) and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_nonnegative(value: Any, name: str) -> Any:
    """Raise if a concrete number is not finite and >= 0 (``TypeError`` for a string or a bool;
    traced values pass through)."""
    _check_not_text(value, name, "a finite number >= 0")
    if is_real(value) and not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value
