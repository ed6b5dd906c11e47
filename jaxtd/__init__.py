"""jaxtd: over-parameterized symmetric tensor decomposition in JAX.

The core: :class:`SymCP` (a symmetric CP tensor as a pytree), exact Gram-form
:func:`inner`/:func:`norm`/:func:`loss`, an accurate :func:`relative_error`, ground truths in
:mod:`jaxtd.targets` and prefix-consistent initialization in :mod:`jaxtd.initialization`.

The names below are loaded on first use (PEP 562 module ``__getattr__``): ``import jaxtd`` does
not start JAX, so ``jaxtd --version`` and ``jaxtd --help`` answer at once; ``jaxtd.sweep``,
``jaxtd.targets``, ... import what they need when first touched.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None: the module itself.
# The runner and the sweep live in private modules (_run, _sweep): jaxtd.run and jaxtd.sweep are
# the functions, with no module of the same name behind them.
_EXPORTS = {
    "initialization": ("jaxtd.initialization", None),
    "targets": ("jaxtd.targets", None),
    "algorithms": ("jaxtd.algorithms", None),
    "metrics": ("jaxtd.metrics", None),
    "network": ("jaxtd.network", None),
    "models": ("jaxtd.models", None),
    "init_factors": ("jaxtd.initialization", "init_factors"),
    "inner": ("jaxtd.losses", "inner"),
    "loss": ("jaxtd.losses", "loss"),
    "norm": ("jaxtd.losses", "norm"),
    "relative_error": ("jaxtd.losses", "relative_error"),
    "residual_sq": ("jaxtd.losses", "residual_sq"),
    "SymCP": ("jaxtd.symcp", "SymCP"),
    "to_dense": ("jaxtd.symcp", "to_dense"),
    "RunResult": ("jaxtd._run", "RunResult"),
    "default_record_every": ("jaxtd._sizes", "default_record_every"),
    "run": ("jaxtd._run", "run"),
    "simulate": ("jaxtd._run", "simulate"),
    "with_init_params": ("jaxtd._run", "with_init_params"),
    "BUCKETINGS": ("jaxtd._sizes", "BUCKETINGS"),
    "BucketCost": ("jaxtd._buckets", "BucketCost"),
    "bucket_widths": ("jaxtd._buckets", "bucket_widths"),
    "clear_cache": ("jaxtd._sweep", "clear_cache"),
    "key_for_seed": ("jaxtd._sweep", "key_for_seed"),
    "sweep": ("jaxtd._sweep", "sweep"),
    "Results": ("jaxtd.results", "Results"),
}

__all__ = ["SymCP", "to_dense", "inner", "norm", "loss", "relative_error", "residual_sq",
           "targets", "initialization", "init_factors", "__version__",
           "algorithms", "models", "metrics", "network", "run", "simulate", "RunResult",
           "default_record_every", "with_init_params", "sweep", "Results", "key_for_seed",
           "bucket_widths", "BucketCost", "BUCKETINGS", "clear_cache"]


def __getattr__(name: str):
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        # a submodule (jaxtd.lazy, jaxtd.results, ...): the eager package used to import most
        # of them, so `import jaxtd; jaxtd.lazy.lstsq(...)` keeps working
        if name.startswith("__") or importlib.util.find_spec(f"jaxtd.{name}") is None:
            raise AttributeError(f"module 'jaxtd' has no attribute {name!r}") from None
        module_name, attribute = f"jaxtd.{name}", None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static tools see the eager imports
    from jaxtd import algorithms, initialization, metrics, models, network, targets
    from jaxtd._run import RunResult, run, simulate, with_init_params
    from jaxtd._sizes import default_record_every
    from jaxtd._buckets import BucketCost, bucket_widths
    from jaxtd._sizes import BUCKETINGS
    from jaxtd._sweep import clear_cache, key_for_seed, sweep
    from jaxtd.initialization import init_factors
    from jaxtd.losses import inner, loss, norm, relative_error, residual_sq
    from jaxtd.results import Results
    from jaxtd.symcp import SymCP, to_dense
