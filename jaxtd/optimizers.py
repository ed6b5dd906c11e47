"""Optimizers of the trained rows: an optax spec normalized once, and one masked update.

Every algorithm that trains a ``(width, d)`` array with optax (gd, the variant, lazy GD) goes
through :func:`make_optimizer` (what an ``optimizer=`` argument accepts), :func:`init_optimizer`
and :func:`optimizer_step`. The learning rate has one home: the ``learning_rate`` hparam of the
algorithm's state, a traced scalar, so one compiled program serves every value of a swept
learning rate. The optax state holds no copy of it: an injected optimizer
(``optax.inject_hyperparams``) gets the rate for the one update that uses it, and the state
keeps only the optimizer's other hyper-parameters. Masked rows (the padding of a width bucket)
stay exactly inert: their gradients, moments and updates are zero.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jaxtd import schema

__all__ = ["OptimizerSpec", "Optimizer", "make_optimizer", "check_optimizer",
           "init_optimizer", "optimizer_step", "mask_rows", "is_rowwise"]


def check_optimizer(optimizer: Any, name: str = "optimizer") -> optax.GradientTransformation:
    """Return ``optimizer`` if it is an optax ``GradientTransformation`` (has callable ``init``
    and ``update``); otherwise raise a ``TypeError`` saying what to pass."""
    if isinstance(optimizer, optax.GradientTransformation) or (
            callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        return optimizer
    raise TypeError(f"{name} must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), a "
                    f"float learning rate, or a factory learning_rate -> GradientTransformation; "
                    f"got {type(optimizer).__name__}")


# what an ``optimizer=`` argument accepts (see make_optimizer)
OptimizerSpec = Union[float, optax.GradientTransformation,
                      Callable[..., optax.GradientTransformation]]


class Optimizer(NamedTuple):
    """A normalized optimizer spec (unpacks as ``tx, learning_rate, injected``).

    Attributes:
      tx: the optax transformation.
      learning_rate: default of the ``learning_rate`` hparam.
      injected: True when ``tx`` takes the learning rate as an injected hyper-parameter (float or
        factory spec, via ``optax.inject_hyperparams``); False when it multiplies the updates of
        a ready transformation.
    """

    tx: optax.GradientTransformation
    learning_rate: float
    injected: bool


def make_optimizer(optimizer: OptimizerSpec, learning_rate: Optional[float] = None) -> Optimizer:
    """Normalize an optimizer spec (docs/algorithms.md, "learning rate as a hyper-parameter").

    - a float ``η``: SGD with learning rate ``η`` (``learning_rate=`` must be None);
    - a ready ``GradientTransformation``: its learning rate is baked in, the hparam is a
      multiplier of its updates (default ``learning_rate`` or 1);
    - a factory ``learning_rate -> GradientTransformation`` (e.g. ``optax.adam``): wrapped in
      ``optax.inject_hyperparams`` (the rate given at each update), default ``learning_rate=``
      (required).
    """
    if isinstance(optimizer, numbers.Real) and not isinstance(optimizer, bool):
        schema.check_hparam("optimizer (a float learning rate)", schema.LEARNING_RATE, optimizer)
        if learning_rate is not None:
            raise ValueError("learning_rate= is only for a factory optimizer; a float optimizer "
                             "already is the learning rate")
        return Optimizer(optax.inject_hyperparams(optax.sgd)(learning_rate=float(optimizer)),
                         float(optimizer), True)
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        check_optimizer(optimizer)
        lr = 1.0 if learning_rate is None else schema.check_hparam(
            "learning_rate", schema.LEARNING_RATE, learning_rate)
        return Optimizer(optimizer, float(lr), False)
    if callable(optimizer):
        return _from_factory(optimizer, learning_rate)
    return Optimizer(check_optimizer(optimizer), 1.0, False)


def _from_factory(factory: Callable, learning_rate: Optional[float]) -> Optimizer:
    if learning_rate is None:
        raise ValueError("learning_rate= is required with a factory optimizer, e.g. "
                         "gd(optax.adam, learning_rate=1e-3)")
    schema.check_hparam("learning_rate", schema.LEARNING_RATE, learning_rate)
    try:
        tx = optax.inject_hyperparams(factory)(learning_rate=float(learning_rate))
    except TypeError as err:
        raise TypeError(f"optimizer factory must accept a learning_rate argument: {err}") from err
    return Optimizer(check_optimizer(tx), float(learning_rate), True)


def _with_rate(opt_state: Any, lr: jax.Array, params: Any) -> Any:
    """An injected state given the learning rate ``lr`` for one update, in the dtype
    ``optax.inject_hyperparams`` keeps its hyper-parameters in (the params' widest float)."""
    rate = jnp.asarray(lr).astype(optax.tree.dtype(params, "highest"))
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})


def _without_rate(opt_state: Any) -> Any:
    """An injected state without its copy of the learning rate (the hparams keep the rate)."""
    hp = {k: v for k, v in opt_state.hyperparams.items() if k != "learning_rate"}
    return opt_state._replace(hyperparams=hp)


def init_optimizer(optimizer: Optimizer, params: Any) -> Any:
    """``optimizer.tx.init(params)``, without the injected learning rate: the rate's one home is
    the algorithm's ``learning_rate`` hparam, which :func:`optimizer_step` passes to each
    update (so one compiled program serves every value)."""
    opt_state = optimizer.tx.init(params)
    return _without_rate(opt_state) if optimizer.injected else opt_state


def optimizer_step(optimizer: Optimizer, params: jax.Array, grads: jax.Array, opt_state: Any,
                   lr: jax.Array, mask: jax.Array) -> tuple:
    """One masked optimizer step: ``(new params, new opt_state)``.

    ``params`` and ``grads`` are ``(m, d)``, ``mask`` is ``(m,)`` 0/1 and ``lr`` a scalar (may be
    traced). With ``u = tx.update(mask ∘ g)`` (the rate injected for this update, or ``u`` times
    ``lr`` for a ready transformation), the new params are
    ``params + mask ∘ u``. Masking the gradient keeps the optimizer's moments of masked rows at
    zero; masking the update keeps those rows fixed under weight decay or any update that is not
    proportional to the gradient: masked rows stay exactly inert.
    """
    grads = mask_rows(grads, mask)
    # optax's own arithmetic (e.g. adam's bias correction, float ** int32 count) is written for
    # standard promotion; jaxtd's code stays strict-clean, the optimizer gets its default.
    with jax.numpy_dtype_promotion("standard"):
        if optimizer.injected:
            updates, opt_state = optimizer.tx.update(
                grads, _with_rate(opt_state, lr, params), params)
            opt_state = _without_rate(opt_state)
        else:
            updates, opt_state = optimizer.tx.update(grads, opt_state, params)
    if not optimizer.injected:
        updates = jax.tree_util.tree_map(lambda u: lr * u, updates)
    updates = mask_rows(updates, mask)
    return optax.apply_updates(params, updates), opt_state


def is_rowwise(leaf, width: int) -> bool:
    """A leaf with a leading axis of length ``width`` (one entry per row of the model)."""
    return getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == width


def mask_rows(tree: Any, mask: jax.Array) -> Any:
    """Multiply every leaf whose leading axis has length ``width`` by the ``(width,)`` mask.

    Used to zero the gradients/updates (and optimizer moments) of masked rows; scalar leaves
    (step counts, hparams) pass through.
    """
    width = mask.shape[0]

    def f(leaf):
        if not is_rowwise(leaf, width):
            return leaf
        return leaf * mask.reshape((width,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype)

    return jax.tree_util.tree_map(f, tree)
