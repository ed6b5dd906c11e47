"""Double-float ("float-float") arithmetic for accurate float32 metrics.

Near a solution the Gram form of ``||T - T*||^2`` is a sum of O(1) terms that cancel to O(err^2);
in float32 the rounding of those terms (~6e-8) swamps a squared error of 1e-12. Here every value is
an unevaluated sum ``hi + lo`` of two float32 numbers (~48 significant bits), built from the
error-free transformations TwoSum and TwoProd. The split for TwoProd masks mantissa bits instead of
Veltkamp's ``4097 * a`` trick, so it stays exact even if the compiler fuses multiply-adds.
Used only for metrics (no gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASK32 = jnp.uint32(0xFFFFF000)


def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


def _split(a):
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, jnp.uint32) & _MASK32, a.dtype)
    return hi, a - hi


def two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(x, y):
    s, e = two_sum(x[0], y[0])
    t, f = two_sum(x[1], y[1])
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def mul(x, y):
    p, e = two_prod(x[0], y[0])
    e = e + (x[0] * y[1] + x[1] * y[0])
    return _fast_two_sum(p, e)


def tree_sum(x, axis: int):
    """Sum a double-float array along ``axis`` by pairwise (tree) reduction."""
    hi, lo = (jnp.moveaxis(v, axis, 0) for v in x)
    while hi.shape[0] > 1:
        if hi.shape[0] % 2:
            pad = [(0, 1)] + [(0, 0)] * (hi.ndim - 1)
            hi, lo = jnp.pad(hi, pad), jnp.pad(lo, pad)
        half = hi.shape[0] // 2
        hi, lo = add((hi[:half], lo[:half]), (hi[half:], lo[half:]))
    return hi[0], lo[0]


def gram(u, v, block: int = 32):
    """Double-float ``u @ v.T`` for float32 ``u (k, d)``, ``v (n, d)``; memory ``O(k n block)``."""
    d = u.shape[1]
    nblocks = -(-d // block)
    pad = nblocks * block - d
    u = jnp.pad(u, ((0, 0), (0, pad))).reshape(u.shape[0], nblocks, block).transpose(1, 0, 2)
    v = jnp.pad(v, ((0, 0), (0, pad))).reshape(v.shape[0], nblocks, block).transpose(1, 0, 2)

    def body(acc, uv):
        ub, vb = uv
        prod = two_prod(ub[:, None, :], vb[None, :, :])
        return add(acc, tree_sum(prod, axis=2)), None

    zeros = jnp.zeros((u.shape[1], v.shape[1]), u.dtype)
    (hi, lo), _ = jax.lax.scan(body, (zeros, zeros), (u, v))
    return hi, lo


def weighted_gram_power_sum(w, u, order: int):
    """Double-float ``w^T (u u^T)^{∘order} w`` for float32 ``w (k,)``, ``u (k, d)``."""
    g = gram(u, u)
    p = g
    for _ in range(order - 1):
        p = mul(p, g)
    zero = jnp.zeros_like(w)
    p = mul(p, (w[:, None], zero[:, None]))
    p = mul(p, (w[None, :], zero[None, :]))
    hi, lo = tree_sum(tree_sum(p, axis=1), axis=0)
    return hi, lo
