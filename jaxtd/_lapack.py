"""LAPACK solves that stay one problem per call under ``vmap``.

XLA:CPU runs a batched LAPACK call (a vmapped ``eigh`` or ``lstsq``) on its thread pool and waits
there for the pieces it queued on the same pool; when every pool thread runs such a wait (2
cores, two solves at once) nothing is left to run the pieces and the process hangs for good
(seen in gdb: both pool threads in ``lapack_dsyevd_ffi -> ParallelBatchMap ->
BlockingCounter::Wait``, with ``--xla_cpu_multi_thread_eigen=false`` too). Under ``vmap`` these
wrappers loop over the problems instead (``jax.custom_batching.sequential_vmap``): the same
routine runs on each problem, so the results are the same, and no call waits on the pool.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["eigh", "lstsq"]


@jax.custom_batching.sequential_vmap
def eigh(a):
    """``jnp.linalg.eigh(a)``, one matrix per LAPACK call under vmap."""
    return jnp.linalg.eigh(a)


@functools.lru_cache(maxsize=None)
def lstsq(rcond):
    """``(A, b) -> argmin ||A x - b||`` (min norm, ``jnp.linalg.lstsq`` with ``rcond``), one
    problem per LAPACK call under vmap; one function per ``rcond``, so that jit caches it."""
    return jax.custom_batching.sequential_vmap(
        lambda a, b: jnp.linalg.lstsq(a, b, rcond=rcond)[0])
