"""A user algorithm for ``jaxtd run`` (see tests/test_cli.py): a config lists it by table name,

    [sweep]
    algorithms = ["gd", "heavy_ball"]

    [heavy_ball]
    factory = "tests.example_algorithm:heavy_ball"
    learning_rate = 0.05     # every other key is a keyword argument of the factory
    momentum = 0.5

and the factory returns a jaxtd Algorithm.
"""

import functools

import optax

import jaxtd


def heavy_ball(learning_rate: float = 0.05, momentum: float = 0.5, init_scale: float = 0.1):
    """Gradient descent with heavy-ball momentum (optax.sgd with ``momentum``)."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return jaxtd.algorithms.gd(functools.partial(optax.sgd, momentum=momentum),
                               learning_rate=learning_rate, init_scale=init_scale)


def not_an_algorithm(**kwargs):
    return "nope"


def tuned_gd(optimizer=0.1, *, learning_rate=None, init_scale: float = 0.1,
             regularization: float = 0.0):
    """A factory with an ``optimizer`` argument (a jaxtd optimizer spec, passed on): its table
    takes ``optimizer = "adam"``, ``optimizer_args`` and ``learning_rate`` as ``[gd]`` does."""
    return jaxtd.algorithms.gd(optimizer, learning_rate=learning_rate, init_scale=init_scale,
                               regularization=regularization)
