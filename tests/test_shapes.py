"""Shapes in types: the jaxtyping annotations of the numeric core (jaxtd/shapes.py), checked by
beartype through jaxtyping's import hook in a fresh interpreter (the hook must see the modules'
first import; the rest of the suite tests jaxtd's own one-line errors for bad shapes, which a
type checker would pre-empt)."""

import inspect
import subprocess
import sys
import textwrap

import pytest

from jaxtd import lazy, losses, metrics, models, shapes

pytestmark = pytest.mark.timeout(600)

CHECKED = ("jaxtd.symcp", "jaxtd.losses", "jaxtd.metrics", "jaxtd.models",
           "jaxtd.lazy")  # the lazy package and its modules

WORKLOAD = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jaxtyping import install_import_hook, TypeCheckError
    with install_import_hook({checked!r}, "beartype.beartype"):
        import jaxtd
        from jaxtd import lazy, losses, metrics, models
    t = jaxtd.targets.orthonormal(jax.random.key(0), 6, 2, 3)
    w = jaxtd.init_factors(jax.random.key(1), 5, 6, scale="standard")
    m = jaxtd.SymCP(jnp.ones(5), w, 3)
    # eager, jit, grad and vmap calls of the annotated core
    jaxtd.loss(m, t); jax.jit(jaxtd.relative_error)(m, t)
    jax.grad(lambda f: jaxtd.loss(jaxtd.SymCP(jnp.ones(5), f, 3), t))(w)
    jax.vmap(lambda f: losses.gram_inner(jnp.ones(5), f, t.weights, t.factors, 3))(w[None])
    models.plain(w, 3, jnp.ones(5), jnp.ones(5)); models.two_homogeneous(w, 3)
    metrics.record(m, t, w, w); metrics.distance(w, w, jnp.ones(5))
    metrics.fit_times(jnp.zeros((4, 2)), jnp.ones(2), jnp.arange(4))
    lazy.lazy_loss(m, jnp.zeros_like(w), t); lazy.lazy_relative_error(m, jnp.zeros_like(w), t)
    # a whole run (models, metrics and the lazy loss under scan, vmap and checkpoint)
    jaxtd.run(jaxtd.algorithms.gd(0.1), jax.random.key(2), t, width=4, steps=20, record_every=10)
    jaxtd.run(jaxtd.algorithms.lazy_gd(0.01), jax.random.key(2), t, width=4, steps=20,
              record_every=10)
    # mismatched symbolic dimensions are caught by the checker
    caught = 0
    for bad in (lambda: metrics.distance(w, w[:, :3]),
                lambda: metrics.fit_times(jnp.zeros((4, 2)), jnp.ones(3), jnp.arange(4)),
                lambda: losses.gram_inner(jnp.ones(5), w, t.weights, t.factors[:, :4], 3),
                lambda: models.plain(w, 3, jnp.ones(4))):
        try:
            bad()
        except TypeCheckError:
            caught += 1
    print("caught", caught)
""")


def test_the_core_type_checks_under_beartype():
    code = WORKLOAD.format(checked=CHECKED)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("caught 4"), proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("module", [losses, metrics, models, lazy])
def test_public_array_functions_are_annotated(module):
    """Every public function of the core whose parameters include an array names its shape."""
    array_names = {"w", "u", "c", "b", "v", "params", "params0", "delta", "fitted", "true",
                   "steps"}
    for name in module.__all__:
        fn = getattr(module, name)
        # lazy re-exports its modules; its CG solver is not part of the annotated core
        if not inspect.isfunction(fn) or fn.__module__ == "jaxtd.lazy.cg":
            continue
        sig = inspect.signature(fn)
        for p in sig.parameters.values():
            if p.name in array_names and not isinstance(p.default, float):  # a scale, not rows
                assert p.annotation is not inspect.Parameter.empty, (module.__name__, name, p.name)
        if any(p.annotation == "SymCP" for p in sig.parameters.values()):
            assert sig.return_annotation is not inspect.Signature.empty, (module.__name__, name)


def test_shape_aliases_are_jaxtyping_types():
    """Each alias is a union of jaxtyping arrays (jax or numpy) with a fixed dtype kind."""
    import typing

    from jaxtyping import AbstractArray
    for name in shapes.__all__:
        if name == "ArrayLike":
            continue
        members = typing.get_args(getattr(shapes, name))
        assert len(members) == 2 and all(issubclass(m, AbstractArray) for m in members), name
        assert len({m.dim_str for m in members}) == 1, name
