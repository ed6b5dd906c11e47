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
# The runner and the sweep live in private modules (_run, _sweep): jaxtd.run and jaxtd.sweep are
# the functions, with no module of the same name behind them.
from jaxtd._run import RunResult, default_record_every, run, simulate, with_init_params
from jaxtd._sweep import BUCKETINGS, BucketCost, bucket_widths, clear_cache, key_for_seed, sweep
from jaxtd.results import Results

__version__ = "0.1.0"

__all__ = ["SymCP", "to_dense", "inner", "norm", "loss", "relative_error", "residual_sq",
           "targets", "initialization", "init_factors", "__version__",
           "algorithms", "models", "metrics", "run", "simulate", "RunResult",
           "default_record_every", "with_init_params", "sweep", "Results", "key_for_seed",
           "bucket_widths", "BucketCost", "BUCKETINGS", "clear_cache"]
