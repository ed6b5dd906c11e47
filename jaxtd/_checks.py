"""The argument checks every public function shares (plain Python, before tracing).

One policy: a value of the wrong type raises ``TypeError``, a value out of range raises
``ValueError``, and each message is one line naming the argument and what it accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_int", "check_choice"]


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
