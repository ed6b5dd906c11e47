"""Independent oracles for the tests: dense tensors in numpy float64."""

import numpy as np


def dense(weights, factors, order):
    w = np.asarray(weights, np.float64)
    u = np.asarray(factors, np.float64)
    out = np.zeros((u.shape[1],) * order)
    for c, v in zip(w, u):
        t = v
        for _ in range(order - 1):
            t = np.multiply.outer(t, v)
        out += c * t
    return out


def _outer_all(vectors):
    t = np.asarray(vectors[0], np.float64)
    for v in vectors[1:]:
        t = np.multiply.outer(t, np.asarray(v, np.float64))
    return t


def dense_lazy(weights, factors, delta, order):
    """Dense ``T(W0) + J Δ`` (numpy float64): ``J Δ = sum_i c_i sum_k w⊗..⊗δ_i(slot k)⊗..⊗w``."""
    w = np.asarray(weights, np.float64)
    u = np.asarray(factors, np.float64)
    e = np.asarray(delta, np.float64)
    out = dense(w, u, order)
    for c, v, dv in zip(w, u, e):
        for k in range(order):
            out += c * _outer_all([dv if j == k else v for j in range(order)])
    return out


def dense_jacobian(weights, factors, order):
    """``(d**l, m*d)`` Jacobian of ``W -> vec T(c, W)`` (numpy float64), column ``i*d + a``."""
    u = np.asarray(factors, np.float64)
    m, d = u.shape
    cols = []
    for i in range(m):
        for a in range(d):
            e = np.zeros_like(u)
            e[i, a] = 1.0
            cols.append((dense_lazy(weights, u, e, order) - dense(weights, u, order)).ravel())
    return np.stack(cols, axis=1)


def lstsq_relative_residual(weights, factors, target_weights, target_factors, order):
    """``min_Δ ||T(W0) + JΔ - T*|| / ||T*||`` by numpy lstsq on the dense Jacobian."""
    jac = dense_jacobian(weights, factors, order)
    y = (dense(target_weights, target_factors, order) - dense(weights, factors, order)).ravel()
    sol, *_ = np.linalg.lstsq(jac, y, rcond=None)
    return np.linalg.norm(jac @ sol - y) / np.linalg.norm(dense(target_weights, target_factors, order))


def gram_sums_longdouble(est_weights, est_factors, tgt_weights, tgt_factors, order):
    """``(||E - T||^2, ||T||^2)`` from the Gram form in numpy ``longdouble`` (64-bit mantissa on
    x86-64): independent of jaxtd's float32 tricks and ~2000x finer than float64."""
    w = np.concatenate([np.asarray(est_weights, np.float64),
                        -np.asarray(tgt_weights, np.float64)]).astype(np.longdouble)
    u = np.concatenate([np.asarray(est_factors, np.float64),
                        np.asarray(tgt_factors, np.float64)]).astype(np.longdouble)
    h = (u @ u.T) ** order * w[:, None] * w[None, :]
    r = len(np.asarray(tgt_weights))
    return h.sum(), h[-r:, -r:].sum()


def relative_error_longdouble(est_weights, est_factors, tgt_weights, tgt_factors, order):
    """``||E - T|| / ||T||`` as a Python float (see :func:`gram_sums_longdouble`)."""
    res, tsq = gram_sums_longdouble(est_weights, est_factors, tgt_weights, tgt_factors, order)
    return float(np.sqrt(max(res, 0) / tsq))


def gram_sums_exact(est_weights, est_factors, tgt_weights, tgt_factors, order):
    """``(||E - T||^2, ||T||^2)`` of the given floating-point inputs in exact rational arithmetic
    (``fractions.Fraction``), rounded once to float: the oracle for relative errors far below
    what any floating-point Gram sum resolves. Small inputs only (cost ``k^2 d`` big rationals)."""
    from fractions import Fraction
    w = ([Fraction(float(x)) for x in np.ravel(est_weights)]
         + [-Fraction(float(x)) for x in np.ravel(tgt_weights)])
    u = [[Fraction(float(x)) for x in row]
         for row in np.concatenate([np.asarray(est_factors, np.float64),
                                    np.asarray(tgt_factors, np.float64)])]
    k, r = len(w), len(np.ravel(tgt_weights))
    total = tail = Fraction(0)
    for i in range(k):
        for j in range(k):
            term = w[i] * w[j] * sum(a * b for a, b in zip(u[i], u[j])) ** order
            total += term
            if i >= k - r and j >= k - r:
                tail += term
    return float(total), float(tail)


def relative_error_exact(est_weights, est_factors, tgt_weights, tgt_factors, order):
    """``||E - T|| / ||T||`` from :func:`gram_sums_exact`."""
    res, tsq = gram_sums_exact(est_weights, est_factors, tgt_weights, tgt_factors, order)
    return float(np.sqrt(max(res, 0.0) / tsq))
