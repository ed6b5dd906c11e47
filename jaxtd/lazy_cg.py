"""The earlier name of :mod:`jaxtd.lazy.cg` (the matrix-free lazy optimum).

``import jaxtd.lazy_cg`` gives that very module object, so ``jaxtd.lazy_cg.cg_lstsq`` and
``jaxtd.lazy.cg.cg_lstsq`` are one function, defined once.
"""

import sys

from jaxtd.lazy import cg as _cg

sys.modules[__name__] = _cg
