"""Exact Frobenius quantities of symmetric CP tensors in Gram form (docs/math.md).

For ``A = sum_i c_i u_i^{⊗l}`` and ``B = sum_j b_j v_j^{⊗l}``:

    <A, B> = c^T (U V^T)^{∘l} b

so inner products, norms and the loss ``1/2 ||A - B||_F^2`` cost ``O((k_a + k_b)^2 d)`` and never
build the ``d^l`` tensor. Everything is jit/vmap-able and works in float32 and float64.

Which function to differentiate:

- :func:`loss` / :func:`gram_loss` carry a ``jax.custom_jvp`` that reuses the Gram matrix: one
  value-and-gradient costs two ``k x k x d`` matmuls (``U U^T`` and ``K U``) and ``O(k d)`` extra
  memory. Every mode and order: ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.linearize``,
  grad-of-grad (the rule's gradient formulas are plain jax).
- :func:`gram_inner` and :func:`loss_autodiff` are the plain formulas (any mode, any order, as
  in :mod:`jaxtd.lazy`'s nested ``jvp``), at about 1.5x the cost of :func:`loss` under
  ``jax.grad``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jaxtd import _extended
from jaxtd._aligned import aligned_residual_sq
from jaxtd._checks import check_bool
from jaxtd._precision import matmul
from jaxtd.shapes import ArrayLike, Scalar
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["inner", "norm", "loss", "loss_autodiff", "gram_inner", "gram_loss", "residual_sq",
           "relative_error", "stack"]


def gram_inner(c: Float[ArrayLike, "k"], u: Float[ArrayLike, "k d"], b: Float[ArrayLike, "n"],
               v: Float[ArrayLike, "n d"], order: int) -> Scalar:
    """Plain Gram form ``c^T (U V^T)^{∘order} b``; scalar.

    ``c (k,)``, ``u (k, d)``, ``b (n,)``, ``v (n, d)``. Differentiable in every mode and to any
    order (the function to use with ``jax.jvp``/``jax.linearize``).
    """
    return matmul(matmul(c, matmul(u, v.T) ** order), b)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def gram_loss(w, u, order: int) -> jax.Array:
    """``1/2 w^T (U U^T)^{∘order} w`` with a Gram-reusing derivative rule; scalar.

    ``w (k,)``, ``u (k, d)``. With ``G = U U^T`` and ``P = G^{∘(order-1)}``:

        d/dw = (P ∘ G) w,        d/dU = order * (w w^T ∘ P) U,

    so the gradient costs one more ``k x k x d`` matmul than the value. Rows with ``w_i = 0`` get
    zero gradient. The rule is a ``custom_jvp`` whose tangent ``<d/dw, dw> + <d/dU, dU>`` is
    linear in the tangents, so JAX transposes it for reverse mode (``jax.grad`` costs the same
    two matmuls as a hand-written VJP) and every mode and order works: ``jax.jvp``,
    ``jax.linearize``, Hessians (the gradient formulas are plain jax).
    """
    return 0.5 * gram_inner(w, u, w, u, order)


@gram_loss.defjvp
def _gram_loss_jvp(order, primals, tangents):
    w, u = primals
    dw, du = tangents
    g = matmul(u, u.T)
    p = g ** (order - 1)
    hw = matmul(p * g, w)
    grad_u = matmul(order * (w[:, None] * p * w[None, :]), u)
    return 0.5 * matmul(w, hw), jnp.sum(hw * dw) + jnp.sum(grad_u * du)


def inner(a: SymCP, b: SymCP) -> Scalar:
    """Frobenius inner product ``<a, b> = c_a^T (U_a U_b^T)^{∘l} c_b``; scalar."""
    check_compatible(a, b)
    return gram_inner(a.weights, a.factors, b.weights, b.factors, a.order)


def norm(a: SymCP) -> Scalar:
    """Frobenius norm ``||a||_F``; scalar (clamped at 0 before the square root)."""
    sq = inner(a, a)
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def stack(a: SymCP, b: SymCP, sign: float = -1.0) -> SymCP:
    """The SymCP of ``a + sign * b`` as one list of ``k_a + k_b`` components."""
    check_compatible(a, b)
    dtype = jnp.result_type(a.weights, b.weights, a.factors, b.factors)
    weights = jnp.concatenate([a.weights.astype(dtype), sign * b.weights.astype(dtype)])
    factors = jnp.concatenate([a.factors.astype(dtype), b.factors.astype(dtype)])
    return SymCP(weights, factors, a.order)


def loss(a: SymCP, b: SymCP) -> Scalar:
    """``1/2 ||a - b||_F^2`` via the Gram identity on the stacked components ``[a; -b]``; scalar.

    Differentiable in both arguments, in every mode, through :func:`gram_loss` (two matmuls
    per value-and-gradient; ``jax.jvp`` and Hessians work too).
    """
    r = stack(a, b)
    return gram_loss(r.weights, r.factors, r.order)


def loss_autodiff(a: SymCP, b: SymCP) -> Scalar:
    """Same value as :func:`loss` from the plain formula (any-mode, any-order autodiff)."""
    r = stack(a, b)
    return 0.5 * gram_inner(r.weights, r.factors, r.weights, r.factors, r.order)


# jitted so that eager calls (after a run, in notebooks) compile once per shape instead of
# dispatching hundreds of small ops; inside a caller's jit it is simply inlined
_gram_power_sums = jax.jit(_extended.gram_power_sums, static_argnums=(2, 3))


def balanced(a: SymCP) -> SymCP:
    """The same tensor with each weight's magnitude folded into its factor by a power of two.

    ``c_i u_i^{⊗l} = (c_i 2^{-l k_i}) (2^{k_i} u_i)^{⊗l}`` with ``k_i = floor(e_i / l)``, ``e_i``
    the binary exponent of ``c_i``: exact (powers of two), and afterwards ``|c_i|`` lies in
    ``[2^{-l}, 2^l)``, so a model whose huge weights and tiny factors compensate (weights
    ``1e16``, factors ``~1e-16^{1/3}``) no longer puts ``1e32`` into a Gram sum of terms of size
    one. Zero weights are left alone. Not differentiated (the scale is a constant)."""
    c, u, l = a.weights, a.factors, a.order
    e = jnp.frexp(c)[1]                            # |c| in [2^(e-1), 2^e), e = 0 for c = 0
    k = jax.lax.stop_gradient(jnp.floor_divide(e, l)).astype(jnp.int32)
    return SymCP(jnp.ldexp(c, -l * k), jnp.ldexp(u, k[:, None]), l)


def _precise_sums(estimate: SymCP, target: SymCP):
    """Float32 ``(residual, target_sq, exponent)``: true values are ``value * 2^exponent``."""
    r = stack(balanced(estimate), balanced(target))
    return _gram_power_sums(r.weights, r.factors, r.order, target.rank)


def _use_precise(estimate: SymCP, target: SymCP, precise: bool) -> bool:
    check_bool(precise, "precise")
    return precise and jnp.result_type(estimate.factors, estimate.weights, target.factors,
                                       target.weights) == jnp.float32


def residual_sq(estimate: SymCP, target: SymCP, *, precise: bool = True) -> Scalar:
    """``||estimate - target||_F^2``, accurate even when the two nearly cancel; scalar, ``>= 0``.

    Float32 inputs with ``precise`` (default): the stacked Gram matrix is computed error-free
    from float32 slice matmuls and raised to the ``l``-th power and summed in triple-float
    arithmetic (:func:`jaxtd._extended.gram_power_sums`): absolute error ~2^-64 of the sum of the
    magnitudes of the Gram terms, so the result is accurate to ~1e-6 relative down to
    ``residual / ||target||^2 ~ 1e-12``. Cost ~20-25 ``k x k x d`` float32 matmuls plus
    ``O(k^2)`` elementwise triple-float work, ``k = k_estimate + k_target``: measured 38x one
    bare ``W @ W.T`` at ``(m, d, l) = (1024, 256, 4)``, i.e. ~15 value-and-gradient steps of
    :func:`loss` (``benchmarks/loss_grad.py``). Record it every so many steps, or pass
    ``precise=False`` for a cheap float32 figure good down to errors of ~3e-4. Float64 inputs with
    ``precise``: the residual is first rewritten exactly as a sum of terms of its own size, by
    aligning each component with the target direction it fits (:mod:`jaxtd._aligned`), so the
    sum does not cancel: accurate to ~1e-4 relative down to relative errors of 1e-12 (the plain
    Gram form is off by 100% below ~1e-8). ``precise=False`` uses the plain Gram form. Not
    differentiable (use :func:`loss`).
    """
    check_compatible(estimate, target, ("estimate", "target"))
    estimate, target = jax.lax.stop_gradient((estimate, target))
    if _use_precise(estimate, target, precise):
        value, _, exponent = _precise_sums(estimate, target)
        return _extended.scale2(jnp.maximum(value, 0.0), exponent)
    if precise:
        return aligned_residual_sq(balanced(estimate), balanced(target))
    r = stack(balanced(estimate), balanced(target))
    return jnp.maximum(gram_inner(r.weights, r.factors, r.weights, r.factors, r.order), 0.0)


def relative_error(estimate: SymCP, target: SymCP, *, precise: bool = True) -> Scalar:
    """``||estimate - target||_F / ||target||_F``; scalar, finite and non-negative for a nonzero
    target.

    Float32 inputs with ``precise`` (default): accurate to 1e-3 relative down to relative errors
    of 1e-6 (see :func:`residual_sq`; numerator and denominator come from the same power-of-two
    rescaled sums, so no over- or underflow). Float64 inputs: accurate to 1e-3 relative down to
    relative errors of 1e-12 (the aligned expansion of :func:`residual_sq`). ``precise=False``:
    the plain Gram form, whose cancellation error is ~1e-16 of the Gram terms in float64 (~1e-7
    in float32). Not differentiable (the inputs are wrapped in ``stop_gradient``; use
    :func:`jaxtd.metrics.relative_error` for a differentiable one).
    """
    check_compatible(estimate, target, ("estimate", "target"))
    _check_nonzero(target)
    estimate, target = jax.lax.stop_gradient((estimate, target))
    if _use_precise(estimate, target, precise):
        value, target_sq, _ = _precise_sums(estimate, target)
        return jnp.sqrt(jnp.maximum(value, 0.0) / target_sq)
    return jnp.sqrt(residual_sq(estimate, target, precise=precise)) / norm(balanced(target))


def _check_nonzero(target: SymCP) -> None:
    """A concrete target whose weights are all 0 has no relative error: say so (traced ones are
    not checked)."""
    weights = target.weights
    if isinstance(weights, jax.core.Tracer):
        return
    if not np.any(np.asarray(weights) != 0):
        raise ValueError("target is the zero tensor (all weights 0): its relative error is "
                         "undefined; use jaxtd.residual_sq for an absolute figure")
