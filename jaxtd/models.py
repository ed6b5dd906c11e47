"""Models: pure maps from trained parameters to a :class:`~jaxtd.SymCP` (docs/algorithms.md).

A model of width ``m`` takes the ``(m, d)`` parameter matrix ``W`` plus fixed data (``signs``
``s in {±1}^m`` and a 0/1 ``mask`` of the same shape) and returns the tensor it represents:

- ``plain``:            ``T(W) = sum_i s_i mask_i w_i^{⊗l}``  (weights ``s ∘ mask``, factors ``W``).
- ``two_homogeneous``:  ``T(W) = sum_i s_i mask_i ||w_i||^2 (w_i/||w_i||)^{⊗l}`` (weights
  ``s_i ||w_i||^2 mask_i``, unit factors). This is the model the first paper analyses: a
  component's direction moves at a speed independent of its norm.

The regularized loss is ``L_λ(W) = 1/2 ||T(W) - T*||^2 + λ/2 sum_i mask_i ||w_i||^2``; the mask in
the penalty keeps padded rows inert (exactly zero gradient). For the two-homogeneous model the
penalty is ``λ/2 sum_i |weight_i|``, an l1 penalty on the component weights.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp

from jaxtd import losses
from jaxtd import representation as representation_
from jaxtd._checks import check_int
from jaxtd.shapes import ArrayLike, Params, RowMask
from jaxtd.symcp import SymCP

__all__ = ["MODELS", "SIGNS", "plain", "two_homogeneous", "get", "safe_norm",
           "unit_rows", "draw_signs", "regularized_loss"]

MODELS = ("plain", "two_homogeneous")
SIGNS = ("auto", "positive", "random")

ModelFn = Callable[..., SymCP]


def safe_norm(w: ArrayLike, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm along ``axis`` whose value *and gradient* are finite at ``w = 0``.

    The double ``where`` keeps ``sqrt`` away from 0 on the differentiated branch, so a zero row
    gets norm 0 and gradient 0 instead of NaN.
    """
    sq = jnp.sum(w * w, axis=axis, keepdims=keepdims)
    positive = sq > jnp.finfo(w.dtype).tiny
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def unit_rows(w: Params) -> Params:
    """``(m, d)`` rows divided by their norms; a zero row maps to zero (finite gradient)."""
    n = safe_norm(w, axis=-1, keepdims=True)
    return w / jnp.where(n > 0, n, 1.0)


def _fixed(x, width: int, dtype, name: str) -> jax.Array:
    if x is None:
        return jnp.ones((width,), dtype)
    x = jnp.asarray(x)
    if x.shape != (width,):
        raise ValueError(f"{name} must have shape ({width},) to match params of width {width}, "
                         f"got {x.shape}")
    return x.astype(dtype)


def _check_params(params, order) -> None:
    if getattr(params, "ndim", None) != 2:
        raise ValueError(f"params must be a 2-D (width, dim) array, got shape "
                         f"{getattr(params, 'shape', type(params).__name__)}")
    check_int(order, "order", 2)


def plain(params: Params, order: int, signs: Optional[RowMask] = None,
          mask: Optional[RowMask] = None) -> SymCP:
    """Plain model ``sum_i s_i mask_i w_i^{⊗l}``.

    Args:
      params: ``(m, d)`` factors ``W``.
      order: static order ``l``.
      signs: ``(m,)`` fixed weights ``s_i`` (default ones; odd ``l`` expresses signs through ``w_i``).
      mask: ``(m,)`` 0/1 activity mask (default ones).
    Returns:
      ``SymCP(s ∘ mask, W, l)``.
    """
    _check_params(params, order)
    m = params.shape[0]
    weights = _fixed(signs, m, params.dtype, "signs") * _fixed(mask, m, params.dtype, "mask")
    return SymCP(weights, params, order)


def two_homogeneous(params: Params, order: int, signs: Optional[RowMask] = None,
                    mask: Optional[RowMask] = None) -> SymCP:
    """Two-homogeneous model ``sum_i s_i mask_i ||w_i||^2 (w_i/||w_i||)^{⊗l}``.

    Args:
      params: ``(m, d)`` factors ``W``.
      order: static order ``l``.
      signs: ``(m,)`` fixed signs ``s_i`` (default ``+1``; needed for negative weights at even ``l``).
      mask: ``(m,)`` 0/1 activity mask (default ones).
    Returns:
      ``SymCP(s ∘ mask ∘ ||w||^2, W/||w||, l)``; the weight uses ``||w||^2 = sum w^2`` (smooth) and
      the unit factor a safe norm, so a zero row is a zero component with finite gradient.
    """
    _check_params(params, order)
    m = params.shape[0]
    scale = _fixed(signs, m, params.dtype, "signs") * _fixed(mask, m, params.dtype, "mask")
    return SymCP(scale * jnp.sum(params * params, axis=-1), unit_rows(params), order)


_MODELS = {"plain": plain, "two_homogeneous": two_homogeneous}


def get(model: Union[str, ModelFn]) -> ModelFn:
    """The model function for a name in :data:`MODELS` (a callable is returned unchanged)."""
    if callable(model):
        return model
    if model not in _MODELS:
        raise ValueError(f"model must be one of {MODELS} (or a callable (params, order, signs, "
                         f"mask) -> SymCP), got {model!r}")
    return _MODELS[model]


def draw_signs(key, width: int, order: int, rule: str = "auto", dtype=None) -> jax.Array:
    """``(width,)`` fixed signs; row ``i`` from ``fold_in(key, i)`` so a prefix never changes.

    ``rule``: ``"positive"`` all ``+1``; ``"random"`` uniform ``±1``; ``"auto"`` random for even
    ``order`` (where ``w^{⊗l}`` alone cannot be negative) and ``+1`` for odd ``order``.
    """
    if rule not in SIGNS:
        raise ValueError(f"signs must be one of {SIGNS}, got {rule!r}")
    dtype = dtype or jnp.result_type(float)
    if rule == "positive" or (rule == "auto" and order % 2 == 1):
        return jnp.ones((width,), dtype)
    flip = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(jnp.arange(width))
    return jnp.where(flip, -1.0, 1.0).astype(dtype)


def regularized_loss(model: Union[str, ModelFn], params: Params, target: SymCP, *,
                     signs=None, mask=None, regularization=0.0,
                     representation: str = "auto") -> jax.Array:
    """``L_λ(W) = 1/2 ||T(W) - T*||_F^2 + λ/2 sum_i mask_i ||w_i||^2`` (scalar, differentiable).

    ``regularization`` (``λ >= 0``) may be a traced scalar. Masked rows contribute nothing and get
    a zero gradient. ``representation``: how the fit term is computed, ``"gram"``
    (:func:`jaxtd.loss`), ``"explicit"`` (dense ``d^l`` tensors,
    :func:`jaxtd.representation.explicit_loss`) or ``"auto"`` (the cheaper one for these static
    shapes, :func:`jaxtd.representation.choose`: explicit only for wide models, ``m`` above about
    ``d^(l-1)``). Both give the same value and gradient up to rounding.
    """
    fn = get(model)
    if not isinstance(target, SymCP):
        raise TypeError(f"target must be a jaxtd.SymCP, got {type(target).__name__}")
    m = params.shape[0]
    form = representation_.resolve(representation, m, target)
    t = fn(params, target.order, signs, mask)
    lam = jnp.asarray(regularization).astype(params.dtype)
    mask = _fixed(mask, m, params.dtype, "mask")
    penalty = 0.5 * lam * jnp.sum(mask * jnp.sum(params * params, axis=-1))
    fit = representation_.explicit_loss(t, target) if form == "explicit" else losses.loss(t, target)
    return fit + penalty
