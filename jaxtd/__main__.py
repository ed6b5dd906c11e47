"""``python -m jaxtd``: a short demo (a later issue turns this into the full CLI)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxtd


def demo(dim: int = 16, rank: int = 3, order: int = 3, width: int = 12, steps: int = 3000,
         lr: float = 0.1) -> float:
    """Fit an orthonormal rank-``rank`` target from a small init with plain GD; return the error."""
    key_t, key_w = jax.random.split(jax.random.PRNGKey(0))
    target = jaxtd.targets.orthonormal(key_t, dim, rank, order)
    w0 = jaxtd.init_factors(key_w, width, dim, scale="small", delta=1e-2)
    ones = jnp.ones((width,), w0.dtype)

    def loss(w):
        return jaxtd.loss(jaxtd.SymCP(ones, w, order), target)

    @jax.jit
    def fit(w):
        def step(w, _):
            return w - lr * jax.grad(loss)(w), None
        return jax.lax.scan(step, w, None, length=steps)[0]

    w = fit(w0)
    err = float(jaxtd.relative_error(jaxtd.SymCP(ones, w, order), target))
    print(f"order={order} dim={dim} rank={rank} width={width} steps={steps}: "
          f"relative error {err:.3e}")
    return err


if __name__ == "__main__":
    demo()
