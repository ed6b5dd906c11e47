"""The floor of a GD grid: a minimal hand-written JAX program, independent of jaxtd.

Plain gradient descent on ``T(W) = sum_i mask_i w_i^{⊗l}`` against ``T* = sum_j c_j a_j^{⊗l}``
with the Gram-form loss ``1/2 w^T (U U^T)^{∘l} w``, ``U = [W; A]``, ``w = [mask; -c]``
(``precision=HIGHEST``), ``jax.grad`` of it, ``lax.scan`` over records with an inner
``fori_loop`` of ``record_every`` steps, the loss recorded before the first step and after each
record block; ``vmap`` over seeds × widths, each width an ``active`` mask inside the padded
width ``max(widths)``. Rows start at norm ``init_scale`` (row ``i`` from ``fold_in(key, i)``).
Nothing from jaxtd: it is what any JAX user would write for the same grid, the yardstick of
``benchmarks/compile.py``.

    python benchmarks/floor.py            # the headline GD grid: first call and warm call
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
from jax import lax

HI = lax.Precision.HIGHEST


def orthonormal_target(key, dim: int, rank: int):
    """``(c, A)``: equal weights, orthonormal rows (QR of a Gaussian matrix)."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, rank)))
    return jnp.ones((rank,)), q.T


def make_grid(order: int, steps: int, record_every: int, learning_rate: float,
              init_scale: float, padded: int):
    """``f(seeds (S,), actives (W,), c, A) -> losses (S, W, steps / record_every + 1)``."""
    n_records = steps // record_every

    def loss(weights, params, c, a):
        u = jnp.concatenate([params, a])
        w = jnp.concatenate([weights, -c])
        gram = jnp.matmul(u, u.T, precision=HI) ** order
        return 0.5 * jnp.dot(w, jnp.matmul(gram, w, precision=HI), precision=HI)

    grad = jax.grad(loss, argnums=1)

    def cell(seed, active, c, a):
        key = jax.random.fold_in(jax.random.PRNGKey(0), seed)
        rows = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (a.shape[1],)))(
            jnp.arange(padded))
        params = init_scale * rows / jnp.linalg.norm(rows, axis=1, keepdims=True)
        mask = (jnp.arange(padded) < active).astype(params.dtype)

        def block(p, _):
            p = lax.fori_loop(0, record_every,
                              lambda _, q: q - learning_rate * grad(mask, q, c, a) * mask[:, None],
                              p)
            return p, loss(mask, p, c, a)

        _, history = lax.scan(block, params, None, length=n_records)
        return jnp.concatenate([loss(mask, params, c, a)[None], history])

    per_width = jax.vmap(cell, in_axes=(None, 0, None, None))
    return jax.vmap(per_width, in_axes=(0, None, None, None))


def headline_grid(quick: bool = False) -> dict:
    """The headline's GD grid (l=3, d=24, r=3, 8 seeds x 8 widths, 1000 steps, a record every
    50, learning rate 0.1, init scale 5e-2); ``quick``: 2 seeds, 2 widths, 200 steps."""
    if quick:
        return dict(order=3, dim=24, rank=3, seeds=2, widths=[3, 12], steps=200,
                    record_every=50, learning_rate=0.1, init_scale=5e-2)
    return dict(order=3, dim=24, rank=3, seeds=8, widths=[3, 4, 6, 12, 24, 48, 72, 112],
                steps=1000, record_every=50, learning_rate=0.1, init_scale=5e-2)


# A warm call is pure run time; the best of a few is the estimate least moved by other load.
WARM_CALLS = 3


def time_floor(grid: dict) -> dict:
    """First call (trace + compile + run) and the best of ``WARM_CALLS`` warm calls of the floor,
    in seconds."""
    c, a = orthonormal_target(jax.random.PRNGKey(0), grid["dim"], grid["rank"])
    seeds = jnp.arange(grid["seeds"], dtype=jnp.int32)
    actives = jnp.asarray(grid["widths"], jnp.int32)
    c, a = jax.block_until_ready((c, a))
    fn = jax.jit(make_grid(grid["order"], grid["steps"], grid["record_every"],
                           grid["learning_rate"], grid["init_scale"], max(grid["widths"])))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(seeds, actives, c, a))
    first = time.perf_counter() - t0
    warm = []
    for _ in range(WARM_CALLS):
        t0 = time.perf_counter()
        losses = jax.block_until_ready(fn(seeds, actives, c, a))
        warm.append(time.perf_counter() - t0)
    return {"first": first, "warm": min(warm),
            "final_loss_median": float(jnp.median(losses[..., -1]))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    out = time_floor(headline_grid(args.quick))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
