"""Array shapes of jaxtd's numeric core, as jaxtyping annotations.

The names below document shapes in signatures (``Factors`` is ``(k, d)``, ``Scalar`` is ``()``)
and are checked at call time when a runtime type checker is attached, as the test suite does
(``jaxtyping.install_import_hook`` with beartype, tests/conftest.py): within one call every
``k``, ``m``, ``d`` must agree across arguments. Outside the tests nothing is checked (zero
cost). Tracers count as arrays, so the checks hold under ``jit``/``vmap``/``grad``, where the
shapes are the per-example ones.
"""

from __future__ import annotations

from typing import Union

import jax
import numpy as np
from jaxtyping import Float, Int

__all__ = ["ArrayLike", "Scalar", "Factors", "Params", "RowMask", "Rows", "History", "Steps",
           "PerComponent", "FitTimes"]

ArrayLike = Union[jax.Array, np.ndarray]
"""A jax or numpy array (and tracers, which are ``jax.Array`` instances)."""

Scalar = Float[ArrayLike, ""]
Factors = Float[ArrayLike, "k d"]        # factors U (one component per row)
Params = Float[ArrayLike, "m d"]         # trained factors W of a width-m model
RowMask = Float[ArrayLike, "m"]          # per-row 0/1 mask or fixed signs of a width-m model
Rows = Float[ArrayLike, "n d"]           # any batch of n directions
PerComponent = Float[ArrayLike, "r"]     # one value per target component
History = Float[ArrayLike, "n r"]        # n records of a per-component value
Steps = Int[ArrayLike, "n"]              # the step of each of n records
FitTimes = Int[ArrayLike, "r"]
