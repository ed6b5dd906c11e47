"""jaxtd: over-parameterized symmetric tensor decomposition in JAX.

The core: :class:`SymCP` (a symmetric CP tensor as a pytree), exact Gram-form
:func:`inner`/:func:`norm`/:func:`loss`, an accurate :func:`relative_error`, ground truths in
:mod:`jaxtd.targets` and prefix-consistent initialization in :mod:`jaxtd.initialization`.
"""

from jaxtd import initialization, targets
from jaxtd.initialization import init_factors
from jaxtd.losses import inner, loss, norm, relative_error, residual_sq
from jaxtd.symcp import SymCP, to_dense
from jaxtd import algorithms, metrics, models
# After the submodule import: the name jaxtd.run is the function, the module stays jaxtd.run in
# sys.modules.
from jaxtd.run import RunResult, run, simulate
# Likewise jaxtd.sweep is the function; the module is jaxtd.sweep in sys.modules.
from jaxtd.results import Results
from jaxtd.sweep import key_for_seed, sweep

__version__ = "0.1.0"

__all__ = ["SymCP", "to_dense", "inner", "norm", "loss", "relative_error", "residual_sq",
           "targets", "initialization", "init_factors", "__version__",
           "algorithms", "models", "metrics", "run", "simulate", "RunResult",
           "sweep", "Results", "key_for_seed"]
