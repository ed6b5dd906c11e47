"""Contractions at full float32 precision, whatever the backend's default.

GPUs and TPUs multiply float32 matrices at reduced (TF32/bfloat16-class) precision unless told
otherwise: on an H200 a float32 Gram matrix deviates ~1e-4 (relative) from float64 at the default
precision against ~1e-6 at ``HIGHEST``, enough to change which runs of an experiment succeed.
Every contraction in jaxtd goes through these helpers, which pin ``Precision.HIGHEST`` on the
operation itself: the user's global ``jax_default_matmul_precision`` is neither read nor changed,
and derivatives (the transposed ``dot_general`` of a VJP) inherit the pinned precision. On CPU,
and in float64, ``HIGHEST`` is what XLA does anyway: it costs nothing there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["HIGHEST", "matmul", "einsum"]

HIGHEST = jax.lax.Precision.HIGHEST


def matmul(a, b) -> jax.Array:
    """``a @ b`` (numpy semantics, vectors included) at ``Precision.HIGHEST``."""
    return jnp.matmul(a, b, precision=HIGHEST)


def einsum(subscripts: str, *operands) -> jax.Array:
    """``jnp.einsum`` at ``Precision.HIGHEST``."""
    return jnp.einsum(subscripts, *operands, precision=HIGHEST)
