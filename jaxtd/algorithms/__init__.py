"""Algorithms as values: each constructor returns an :class:`Algorithm` of pure functions.

- :func:`gd` — (optax) gradient descent on ``L_λ`` of a plain or two-homogeneous model.
- :func:`variant` — reconstruction of the first paper's variant of GD (docs/algorithms.md).
- :func:`deflation` — reconstruction of the sequel's modified gradient flow (docs/algorithms.md).
- :func:`lazy_gd` — gradient descent on the linearized (NTK) model (docs/algorithms.md).
- :func:`network` — the two-layer Hermite network of :mod:`jaxtd.network` trained on samples of
  the target network, as a network (``nn``), its linearization (``nt``) or random features
  (``rf``).

Each lives in a private module (``_gd``, ``_variant``, ``_deflation``, ``_lazy_gd``, ``_network``) and is
re-exported here with its state type and public helpers, so ``jaxtd.algorithms.gd`` is always
the constructor. :mod:`jaxtd.algorithms.base` holds the interface and the shared plumbing; each
module's ``SCHEMA`` (its configurable arguments) is reached through :mod:`jaxtd.config`.
"""

from jaxtd.algorithms import base
from jaxtd.algorithms._deflation import DeflationState, deflation, epoch_start
from jaxtd.algorithms._gd import GDState, gd, make_optimizer, step_factor
from jaxtd.algorithms._lazy_gd import LazyGDState, lazy_gd, polarize
from jaxtd.algorithms._network import NetworkState, network
from jaxtd.algorithms._variant import VariantState, variant
from jaxtd.algorithms.base import Algorithm

__all__ = ["Algorithm", "base", "gd", "GDState", "make_optimizer", "step_factor", "variant",
           "VariantState", "deflation", "DeflationState", "epoch_start", "lazy_gd",
           "LazyGDState", "polarize", "network", "NetworkState"]
