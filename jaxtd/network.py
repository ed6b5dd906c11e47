"""The two-layer network behind a symmetric tensor, on Gaussian data (docs/math.md §7).

A :class:`~jaxtd.SymCP` ``(a, W, l)`` is read as the network

    f(x) = sum_i a_i φ_{w_i}(x),       φ_w(x) = ||w||^l He_l(w·x / ||w||),

with ``He_l`` the probabilists' Hermite polynomial of degree ``l``, ``W`` ``(m, d)`` the inner
weights and ``a`` ``(m,)`` the output layer. ``φ_w`` is a polynomial in ``w`` and ``x``: with
``s = w·x`` and ``r = ||w||^2`` the Hermite recurrence ``He_{k+1}(t) = t He_k(t) - k He_{k-1}(t)``
multiplied by ``||w||^{k+1}`` reads

    h_0 = 1,   h_1 = s,   h_{k+1} = s h_k - k r h_{k-1},   φ_w(x) = h_l,

(the homogeneous form ``sum_k c_k s^{l-2k} r^k`` of ``||w||^l He_l(s/||w||)``), which never
divides by ``||w||``: smooth at ``w = 0``, with finite derivatives of every order there.

For ``x ~ N(0, I_d)``, ``E[φ_w(x) φ_v(x)] = l! (w·v)^l``, so the population risk of the network
against a teacher ``f* = sum_j c_j φ_{u_j}`` with label noise ``σ`` is exact in Gram form:

    ½ E[(f(x) - y)^2] = l! · ½ ||sum_i a_i w_i^{⊗l} - sum_j c_j u_j^{⊗l}||_F^2 + ½ σ^2
                      = l! · jaxtd.loss(model, teacher) + ½ σ^2,

no test set needed (:func:`population_loss`). Training the network in the three regimes (all
weights, the linearization in ``W``, the output layer alone) is
:func:`jaxtd.algorithms.network`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtd import _lapack, losses
from jaxtd._checks import check_finite, check_int, host_value
from jaxtd._precision import matmul
from jaxtd.symcp import SymCP, check_compatible

__all__ = ["sample", "hermite", "features", "predict", "empirical_loss", "population_loss",
           "rf_least_squares", "nt_least_squares"]


# -- validation (plain Python, before tracing) ----------------------------------------------------

def _check_model(model: Any, name: str = "model") -> SymCP:
    if not isinstance(model, SymCP):
        raise TypeError(f"{name} must be a jaxtd.SymCP (weights = output layer a, factors = "
                        f"inner weights W, order = l), got {type(model).__name__}")
    return model


def _check_points(x: Any, dim: int, name: str = "x") -> None:
    """``x`` must be a finite float array of shape ``(n, dim)``."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array of shape (n, {dim}) (one input per row), got "
                        f"{type(x).__name__}")
    if len(shape) != 2 or shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}) (n inputs of the model's dim "
                         f"{dim}), got {tuple(shape)}")
    if np.dtype(x.dtype).kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {x.dtype}: cast with "
                        f"{name}.astype(jnp.float32)")
    check_finite(name, x, "pass finite inputs")


def _check_labels(y: Any, n: int, name: str = "y") -> None:
    shape = getattr(y, "shape", None)
    if shape is None or tuple(shape) != (n,):
        got = tuple(shape) if shape is not None else type(y).__name__
        raise ValueError(f"{name} must have shape ({n},) (one label per row of x), got {got}")
    if np.dtype(y.dtype).kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {y.dtype}")
    check_finite(name, y, "pass finite labels")


def _check_noise(noise: Any) -> None:
    """A concrete ``noise`` must be a finite number ``>= 0`` (traced values pass)."""
    if isinstance(noise, (str, bytes, bool, np.bool_)):
        raise TypeError(f"noise must be a finite number >= 0 (the label noise standard "
                        f"deviation), got {noise!r}")
    value = host_value(noise) if isinstance(noise, jax.Array) else noise
    if value is None:  # traced
        return
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        raise TypeError(f"noise must be a finite number >= 0 (the label noise standard "
                        f"deviation), got {noise!r}")
    if value.shape != ():
        raise ValueError(f"noise must be a scalar (the label noise standard deviation), got "
                         f"shape {value.shape}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"noise must be a finite number >= 0 (the label noise standard "
                         f"deviation), got {value.item()!r}")


def _common(*arrays):
    dtype = jnp.result_type(*arrays)
    return tuple(jnp.asarray(a).astype(dtype) for a in arrays)


# -- the network ------------------------------------------------------------------------------------

def hermite(order: int, s: jax.Array, r=1.0) -> jax.Array:
    """``r^{l/2} He_l(s / sqrt(r))`` elementwise, by the homogeneous Hermite recurrence.

    ``h_0 = 1, h_1 = s, h_{k+1} = s h_k - k r h_{k-1}`` (module docstring): a polynomial in ``s``
    and ``r`` (broadcast together), so ``r = 0`` is no special case (``h_l = s^l`` there). With
    ``r = 1`` this is the probabilists' Hermite polynomial ``He_l(s)``
    (``numpy.polynomial.hermite_e``).
    """
    order = check_int(order, "order", 0)
    s = jnp.asarray(s)
    return _hermite(order, s, jnp.asarray(r).astype(s.dtype))


def _hermites(order: int, s, r) -> list:
    """``[h_0, ..., h_order]`` of :func:`hermite`, broadcast to a common shape."""
    s, r = jnp.broadcast_arrays(s, r)
    h = [jnp.ones_like(s), s]
    for k in range(1, order):
        h.append(s * h[k] - k * r * h[k - 1])
    return h[:order + 1]


# The derivatives in closed form, ∂_s h_l = l h_{l-1} and ∂_r h_l = -l (l-1)/2 h_{l-2} (the
# heat equation of the Hermite polynomials), both already computed by the recurrence: the
# network's gradient then costs a few products, where differentiating the recurrence step by
# step stores and revisits every h_k.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _hermite(order: int, s, r):
    return _hermites(order, s, r)[order]


@_hermite.defjvp
def _hermite_jvp(order: int, primals, tangents):
    s, r = primals
    ds, dr = tangents
    h = _hermites(order, s, r)
    if order == 0:
        return h[0], jnp.zeros_like(h[0])
    dh = order * h[order - 1] * ds
    if order >= 2:
        dh = dh - (order * (order - 1) / 2) * h[order - 2] * dr
    return h[order], dh


@functools.partial(jax.jit, static_argnums=2)  # eager calls: one program, not op by op
def _features(w, x, order: int):
    """``(n, m)`` ``φ_{w_i}(x_j)`` for ``w`` ``(m, d)`` and ``x`` ``(n, d)`` (no checks)."""
    return hermite(order, *_arguments(w, x))


def _arguments(w, x) -> tuple:
    """``(s, r)``: ``s_ji = x_j·w_i`` ``(n, m)`` and ``r_i = ||w_i||^2`` ``(m,)``, so that
    ``φ_{w_i}(x_j) = h_l(s_ji, r_i)``."""
    return matmul(x, w.T), jnp.sum(w * w, axis=1)


@functools.partial(jax.jit, static_argnums=3)
def _predict(a, w, x, order: int):
    return matmul(_features(w, x, order), a)


class Tangent(NamedTuple):
    """The network linearized in ``W`` at ``W0`` on ``n`` points ``x_j``, as coefficients.

    ``φ_w(x) = h_l(w·x, ||w||^2)`` with ``h_l`` of :func:`hermite`, so with ``s_ji = x_j·w_i``
    and ``r_i = ||w_i||^2`` at ``W0``:
    ``f(x_j; W0 + Δ) ≈ f0_j + sum_i gs_ji (x_j·Δ_i) + gr_ji (w_i·Δ_i)``,
    ``gs_ji = a_i ∂_s h_l(s_ji, r_i)``, ``gr_ji = 2 a_i ∂_r h_l(s_ji, r_i)``. Computed once per
    data set (:func:`_tangent`), each evaluation then costs two ``(n, d) x (d, m)`` products
    instead of a linearization of the network.

    Attributes:
      f0: ``(n,)`` the network at ``W0``.
      gs: ``(n, m)``.
      gr: ``(n, m)``.
    """

    f0: jax.Array
    gs: jax.Array
    gr: jax.Array


def _tangent(a, w, x, order: int) -> Tangent:
    """:class:`Tangent` of ``sum_i a_i φ_{w_i}`` on ``x`` ``(n, d)`` (no checks)."""
    s, r = _arguments(w, x)
    h, lin = jax.linearize(lambda s, r: hermite(order, s, r), s, r)
    dh_ds = lin(jnp.ones_like(s), jnp.zeros_like(r))
    dh_dr = lin(jnp.zeros_like(s), jnp.ones_like(r))
    return Tangent(matmul(h, a), dh_ds * a, 2.0 * dh_dr * a)


def _tangent_predict(tangent: Tangent, w, x, delta) -> jax.Array:
    """``(n,)`` the linearized network at ``W0 + Δ`` (``w`` is ``W0``, ``x`` the tangent's
    points)."""
    along = jnp.sum(tangent.gs * matmul(x, delta.T), axis=1)
    return tangent.f0 + along + matmul(tangent.gr, jnp.sum(w * delta, axis=1))


def features(model: SymCP, x: jax.Array) -> jax.Array:
    """Hermite features ``Φ[j, i] = φ_{w_i}(x_j) = ||w_i||^l He_l(w_i·x_j / ||w_i||)``.

    Args:
      model: ``SymCP(a, W, l)``, ``W`` ``(m, d)`` (the weights ``a`` are not used).
      x: ``(n, d)`` inputs.
    Returns:
      ``(n, m)``, a polynomial in ``W`` and ``x`` (smooth at ``w_i = 0``, where it is 0).
    """
    _check_model(model)
    _check_points(x, model.dim)
    w, x = _common(model.factors, x)
    return _features(w, x, model.order)


def predict(model: SymCP, x: jax.Array) -> jax.Array:
    """Network output ``f(x_j) = sum_i a_i φ_{w_i}(x_j)`` = ``features(model, x) @ a``; ``(n,)``."""
    _check_model(model)
    _check_points(x, model.dim)
    a, w, x = _common(model.weights, model.factors, x)
    return _predict(a, w, x, model.order)


def empirical_loss(model: SymCP, x: jax.Array, y: jax.Array) -> jax.Array:
    """``½ mean_j (f(x_j) - y_j)^2``; scalar, differentiable in the model, ``x`` and ``y``.

    Args:
      model: the network ``SymCP(a, W, l)``.
      x: ``(n, d)`` inputs.
      y: ``(n,)`` labels.
    """
    _check_model(model)
    _check_points(x, model.dim)
    _check_labels(y, x.shape[0])
    a, w, x, y = _common(model.weights, model.factors, x, y)
    return 0.5 * jnp.mean((_predict(a, w, x, model.order) - y) ** 2)


def population_loss(model: SymCP, teacher: SymCP, noise=0.0) -> jax.Array:
    """Exact population risk ``½ E[(f(x) - y)^2]``, ``x ~ N(0, I_d)``, ``y = f*(x) + σ ε``.

    Equals ``l! · jaxtd.loss(model, teacher) + ½ σ^2`` (docs/math.md §7): a Gram form costing
    ``O((m + r)^2 d)``, differentiable like :func:`jaxtd.loss`.

    Args:
      model: the network ``SymCP(a, W, l)``.
      teacher: ``SymCP(c, U, l)`` of the same order and dim.
      noise: label noise standard deviation ``σ >= 0`` (may be traced).
    """
    check_compatible(model, teacher, ("model", "teacher"))
    _check_noise(noise)
    value = math.factorial(model.order) * losses.loss(model, teacher)
    return value + 0.5 * jnp.asarray(noise).astype(value.dtype) ** 2


def sample(key, teacher: SymCP, n: int, noise=0.0) -> tuple:
    """``n`` labelled samples of the teacher network: ``(x, y)``.

    ``x`` ``(n, d)`` with rows ``N(0, I_d)``; ``y = f*(x) + σ ε`` ``(n,)`` with ``ε ~ N(0, 1)``
    independent, ``σ = noise`` (may be traced). Both in the teacher's dtype. Row ``j`` is drawn
    from ``fold_in(., j)`` of the two halves of ``split(key)`` (``x`` then ``ε``), so the first
    ``n`` samples of a larger draw are the ``n`` samples of this one: a data set of ``n_max``
    rows masked to its first ``n`` is the data set of size ``n``.
    """
    _check_model(teacher, "teacher")
    n = check_int(n, "n", 1, why=" (the number of samples, a static shape)")
    _check_noise(noise)
    c, u = _common(teacher.weights, teacher.factors)
    return _sample(key, c, u, jnp.asarray(noise).astype(u.dtype), n=n, order=teacher.order)


@functools.partial(jax.jit, static_argnames=("n", "order"))
def _sample(key, c, u, noise, *, n: int, order: int):
    # one compiled program per (n, shapes): an eager call would dispatch (and compile) op by op
    kx, ke = jax.random.split(key)
    rows = jnp.arange(n)
    x = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(kx, j), (u.shape[1],),
                                             u.dtype))(rows)
    eps = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(ke, j), (), u.dtype))(rows)
    return x, _predict(c, u, x, order) + noise * eps


def rf_least_squares(model: SymCP, x: jax.Array, y: jax.Array, rcond=None) -> SymCP:
    """Random features in closed form: the min-norm least-squares output layer.

    ``a = Φ^+ y`` with ``Φ = features(model, x)`` ``(n, m)`` (``jnp.linalg.lstsq``): the limit of
    gradient descent on :func:`empirical_loss` in ``a`` alone from ``a = 0``
    (:func:`jaxtd.algorithms.network` with ``regime="rf"``). Returns ``SymCP(a, W, l)``.
    """
    _check_model(model)
    _check_points(x, model.dim)
    _check_labels(y, x.shape[0])
    w, x, y = _common(model.factors, x, y)
    phi = _features(w, x, model.order)
    return SymCP(_lapack.lstsq(rcond)(phi, y), w, model.order)


def nt_least_squares(model: SymCP, x: jax.Array, y: jax.Array, rcond=None) -> jax.Array:
    """The tangent model in closed form: the min-norm least-squares perturbation ``Δ``.

    The network linearized in ``W`` at ``W0``, ``f(x; W0) + J(x) vec(Δ)`` with
    ``J[j] = ∂_W f(x_j; W0)`` ``(n, m d)``, is linear in ``Δ``: ``vec(Δ) = J^+ (y - f(x; W0))``
    (``jnp.linalg.lstsq``) is the limit of gradient descent on the empirical loss of the
    linearized network from ``Δ = 0`` (:func:`jaxtd.algorithms.network` with ``regime="nt"``,
    whose state holds ``Δ`` as ``delta``). Its population risk is exact:
    ``l! · jaxtd.lazy.lazy_loss(model, Δ, teacher)``, the tensor of the linearized network being
    ``jaxtd.lazy.polarize(model, Δ)``. With ``n >= C(d+l-1, l)`` generic noise-free samples of a
    teacher inside the tangent space, every interpolant, this one included, is the teacher.

    Args:
      model: the network ``SymCP(a, W0, l)`` (``a`` fixed).
      x: ``(n, d)`` inputs.
      y: ``(n,)`` labels.
      rcond: cut-off of the small singular values of ``J`` (``jnp.linalg.lstsq``).
    Returns:
      ``Δ`` ``(m, d)``.
    """
    _check_model(model)
    _check_points(x, model.dim)
    _check_labels(y, x.shape[0])
    a, w, x, y = _common(model.weights, model.factors, x, y)
    return _nt_lstsq(a, w, x, y, rcond, order=model.order)


@functools.partial(jax.jit, static_argnames=("rcond", "order"))
def _nt_lstsq(a, w, x, y, rcond, *, order: int):
    f0 = _predict(a, w, x, order)
    jac = jax.jacfwd(lambda v: _predict(a, v, x, order))(w)  # (n, m, d)
    delta = _lapack.lstsq(rcond)(jac.reshape(x.shape[0], -1), y - f0)
    return delta.reshape(w.shape)
