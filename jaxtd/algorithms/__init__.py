"""Algorithms as values: each constructor returns an :class:`Algorithm` of pure functions.

- :func:`gd` — (optax) gradient descent on ``L_λ`` of a plain or two-homogeneous model.
- :func:`variant` — reconstruction of the first paper's variant of GD (docs/algorithms.md).
- :func:`deflation` — reconstruction of the sequel's modified gradient flow (docs/algorithms.md).
- :func:`lazy_gd` — gradient descent on the linearized (NTK) model (docs/algorithms.md).

Constructors are imported eagerly (so the package attribute ``gd`` is the function, not the
submodule of the same name); a module that does not exist yet is skipped, and asking for its
constructor raises an ``AttributeError`` that says so.
"""

from __future__ import annotations

import importlib

from jaxtd.algorithms.base import Algorithm

__all__ = ["Algorithm", "gd", "variant", "deflation", "lazy_gd"]

_MISSING = {}

for _name in ("gd", "variant", "deflation", "lazy_gd"):
    _modname = f"jaxtd.algorithms.{_name}"
    try:
        globals()[_name] = getattr(importlib.import_module(_modname), _name)
    except ModuleNotFoundError as _err:
        if _err.name != _modname:  # a real import error inside an existing module
            raise
        _MISSING[_name] = _modname
del _name, _modname


def __getattr__(name):
    if name in _MISSING:
        raise AttributeError(f"jaxtd.algorithms.{name} is not available: module {_MISSING[name]} "
                             "does not exist in this checkout")
    raise AttributeError(f"module 'jaxtd.algorithms' has no attribute {name!r}")
