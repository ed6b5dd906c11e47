"""Extended-precision float32 arithmetic for accurate float32 metrics.

Two layers: double-float (below, used by :mod:`jaxtd.lazy`) and, at the end of the module,
triple-float plus an error-free Gram matrix (used by :func:`jaxtd.relative_error` and
:func:`jaxtd.residual_sq`).

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
import numpy as np

_MASK32 = np.uint32(0xFFFFF000)


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


# -- triple-float arithmetic and the error-free Gram (the accurate float32 metrics) ---------------
#
# A triple ``(x0, x1, x2)`` stands for the unevaluated sum ``x0 + x1 + x2`` of float32 numbers
# (~72 significant bits). Near a fit the Gram form of ``||T - T*||^2`` cancels O(1) terms down to
# O(err^2): an error of 1e-6 relative, measured to 1e-3, needs the Gram entries to ~2^-52 of
# ``|u_i||u_j|``, more than double-float (2^-48) gives. The Gram matrix itself is computed
# error-free from float32 matmuls (Ozaki's splitting): rows are cut into slices of ``beta`` bits,
# integer-valued, so that every slice product ``S_p S_q^T`` is an integer below 2^24 and float32
# matmuls compute it exactly whatever their summation order.


def renorm3(x0, x1, x2):
    """Error-free: ``(r0, r1, r2)`` with ``r0 + r1 + r2 == x0 + x1 + x2`` and ``r0 ≈`` the sum."""
    s, e2 = two_sum(x1, x2)
    r0, e1 = two_sum(x0, s)
    r1, r2 = two_sum(e1, e2)
    return r0, r1, r2


def add3(a, b):
    """Triple + triple; absolute error ~2^-70 (|a| + |b|)."""
    s0, t0 = two_sum(a[0], b[0])
    s1, t1 = two_sum(a[1], b[1])
    s1, t2 = two_sum(s1, t0)
    return renorm3(s0, s1, (a[2] + b[2]) + (t1 + t2))


def mul3(a, b):
    """Triple × triple; relative error ~2^-70 (drops ``a1 b2 + a2 b1 + a2 b2``)."""
    p0, e0 = two_prod(a[0], b[0])
    p1, e1 = two_prod(a[0], b[1])
    p2, e2 = two_prod(a[1], b[0])
    m, t0 = two_sum(p1, p2)
    m, t1 = two_sum(m, e0)
    low = ((a[0] * b[2] + a[2] * b[0]) + a[1] * b[1]) + ((e1 + e2) + (t0 + t1))
    return renorm3(p0, m, low)


def sum3(x, axes):
    """Sum a triple array over ``axes`` with one variadic ``lax.reduce`` (any order: each
    :func:`add3` errs by ~2^-70 of its operands; one op keeps compilation fast)."""
    zero = jnp.zeros((), x[0].dtype)
    return jax.lax.reduce(tuple(x), (zero, zero, zero), add3, tuple(axes))


def pow2(n):
    """Exact float32 ``2^n`` for int32 ``n`` in [-126, 127] (built from the exponent bits, since
    ``2.0 ** n`` may go through an inexact ``exp``)."""
    n = jnp.clip(jnp.asarray(n, jnp.int32), -126, 127)
    return jax.lax.bitcast_convert_type(((n + 127) << 23).astype(jnp.int32), jnp.float32)


def scale2(x, n):
    """``x * 2^n`` for float32 ``x`` and a possibly large int ``n`` (exact up to over/underflow)."""
    n = jnp.asarray(n, jnp.int32)
    for _ in range(3):  # |n| up to ~380 covers every float32 exponent range squared
        step = jnp.clip(n, -126, 127)
        x, n = x * pow2(step), n - step
    return x


def _exponent(x):
    """int32 ``e`` with ``|x| < 2^e`` (``e = 0`` for ``x = 0``), clipped to [-126, 126]."""
    return jnp.clip(jnp.frexp(x)[1], -126, 126)


def slice_params(block: int, bits: int = 40):
    """``(beta, n_slices)`` for the error-free Gram of ``block`` columns: ``n_slices * beta >=
    bits`` and ``n_slices * block * 2^(2 beta) <= 2^24``, so that a level sum
    ``sum_{p+q=L} S_p S_q^T`` of integer-valued ``beta``-bit slices is an integer below 2^24 and
    float32 matmuls compute it exactly whatever their summation order."""
    for beta in range(12, 0, -1):
        n = -(-bits // beta)
        if n * block * 2 ** (2 * beta) <= 2 ** 24:
            return beta, n
    raise ValueError(f"block={block} is too large for an error-free float32 Gram (use <= 4096)")


def _lazy_add3f(a, v):
    """Triple + float32 without renormalization (fine while ``|a1|`` stays ~ulp-sized)."""
    s0, t0 = two_sum(a[0], v)
    s1, t1 = two_sum(a[1], t0)
    return s0, s1, a[2] + t1


def _exact_gram_block(x, beta: int, n_slices: int):
    """Triple ``x x^T`` for float32 ``x (k, b)`` with ``|x| < 1`` (``beta``, ``n_slices`` from
    :func:`slice_params`).

    ``x = sum_p S_p 2^(-(p+1) beta) + R 2^(-P beta)`` with integer-valued slices
    ``|S_p| < 2^beta`` (exact truncations). Level ``L`` of the product, ``sum_{p+q=L} S_p S_q^T``
    for ``L < P``, is computed exactly as ``X + X^T`` with ``X = sum_{p<q} S_p S_q^T + S_{L/2}
    (S_{L/2}/2)^T``: one matmul per level of inner size ``~(L/2 + 1) b``. Everything below
    ``2^(-P beta)`` (the "tail") is one float32 matmul whose rounding (~2^-24 of it) is the only
    error. About ``P^2/4 + P + 1`` matmuls' worth of flops of a bare ``x x^T``.
    """
    hp = jax.lax.Precision.HIGHEST
    slices, tails = [], [x]  # tails[j] = x - sum_{p < j} S_p 2^(-(p+1) beta), exactly
    r = x
    for p in range(n_slices):
        r = r * float(2 ** beta)  # exact scaling
        s = jnp.trunc(r)
        r = r - s  # exact: the fractional part of a float
        slices.append(s)
        tails.append(r * float(2.0 ** (-(p + 1) * beta)))
    # materialize the slices once: otherwise XLA fuses the truncation chain into every consumer
    slices, tails = jax.lax.optimization_barrier((slices, tails))
    # tail: all pairs (p, q) with p + q >= P (0-based, the remainder R counting as slice P):
    # sum_p A_p B_p^T with A_p = S_p 2^(-(p+1) beta), A_P = R 2^(-P beta), B_p = tails[P - p]
    lhs = [s * float(2.0 ** (-(p + 1) * beta)) for p, s in enumerate(slices)] + [tails[-1]]
    rhs = [tails[n_slices - p] for p in range(n_slices)] + [x]
    acc = jnp.dot(jnp.concatenate(lhs, 1), jnp.concatenate(rhs, 1).T, precision=hp)
    acc = (acc, jnp.zeros_like(acc), jnp.zeros_like(acc))
    for level in reversed(range(n_slices)):  # smallest first
        left = [slices[p] for p in range((level + 1) // 2)]
        right = [slices[level - p] for p in range((level + 1) // 2)]
        if level % 2 == 0:
            left.append(slices[level // 2])
            right.append(slices[level // 2] * 0.5)  # exact; X + X^T restores the full square
        half = jnp.dot(jnp.concatenate(left, 1), jnp.concatenate(right, 1).T, precision=hp)
        acc = _lazy_add3f(acc, (half + half.T) * float(2.0 ** (-(level + 2) * beta)))
    return renorm3(*acc)


def exact_gram3(x, block: int = 256, bits: int = 40):
    """Triple ``x x^T`` for float32 ``x (k, d)`` with ``|x| < 1`` (absolute error ~2^-(bits+24)
    of ``|x_i||x_j|``). Columns are processed ``block`` at a time (``lax.scan``); memory
    ``O(k^2 + k * block * bits / beta)``."""
    k, d = x.shape
    if d <= block:
        return _exact_gram_block(x, *slice_params(d, bits))
    beta, n_slices = slice_params(block, bits)
    nblocks = -(-d // block)
    xb = jnp.pad(x, ((0, 0), (0, nblocks * block - d))).reshape(k, nblocks, block)

    def body(acc, xc):
        return add3(acc, _exact_gram_block(xc, beta, n_slices)), None

    zeros = jnp.zeros((k, k), x.dtype)
    acc, _ = jax.lax.scan(body, (zeros, zeros, zeros), xb.transpose(1, 0, 2))
    return acc


def gram_power_sums(w, u, order: int, n_tail: int, *, block: int = 256, bits: int = 40):
    """Accurate float32 ``w^T (U U^T)^{∘order} w`` and the same over the last ``n_tail`` rows.

    ``w (k,)``, ``u (k, d)`` float32. Returns ``(total, tail, exponent)`` (float32, float32, int32)
    with the true values ``total * 2^exponent`` and ``tail * 2^exponent``: factors and weights are
    first scaled by powers of two so that nothing over- or underflows (the ratio of the two sums
    needs no rescaling). The absolute error of ``total`` is ~2^-64 of
    ``sum_ij |w_i w_j| (|u_i||u_j|)^order`` (then rounded to float32).
    """
    eu = _exponent(jnp.max(jnp.abs(u)))
    ew = _exponent(jnp.max(jnp.abs(w)))
    u = u * pow2(-eu)
    w = w * pow2(-ew)
    # per-row scaling: |x_i| < 1 with its largest entry >= 1/2, folded into the weights
    e = jnp.maximum(_exponent(jnp.max(jnp.abs(u), axis=1)), -60)
    x = u * pow2(-e)[:, None]
    ws = w
    for _ in range(order):
        ws = ws * pow2(e)  # exact unless it underflows (a negligible row)
    g = exact_gram3(x, block, bits)
    hi, lo = two_prod(ws[:, None], ws[None, :])
    # one mul3 in a loop body instead of ``order`` inlined copies: compiles once
    h = jax.lax.fori_loop(0, order, lambda _, h: mul3(h, g), (hi, lo, jnp.zeros_like(hi)))

    def total(t):
        # rows by a scan (vectorized adds), then the short row vector by one variadic reduce
        zeros = jnp.zeros_like(t[0][0])
        rows, _ = jax.lax.scan(lambda acc, row: (add3(acc, row), None), (zeros,) * 3, t)
        s = sum3(rows, (0,))
        return s[0] + (s[1] + s[2])

    return total(h), total(tuple(v[-n_tail:, -n_tail:] for v in h)), 2 * ew + 2 * order * eu
