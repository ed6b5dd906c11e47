"""Synthetic results tables whose statistics are known in closed form, shared by
tests/test_stats.py and the figure tests (tests/test_plots.py, tests/test_threshold_plot.py)."""

import math

import numpy as np
import pandas as pd

from jaxtd.config import lazy_threshold


def results_table(dims=(8,), orders=(3,), widths=(2, 4, 8, 16), seeds=3):
    """GD succeeds from width 4 on; lazy's best residual vanishes from the lazy threshold on."""
    rows = []
    for order in orders:
        for dim in dims:
            m_star = lazy_threshold(dim, order)
            for width in widths:
                for seed in range(seeds):
                    gd_err = 1e-4 if width >= 4 else 0.5
                    rows.append(dict(algorithm="gd", dim=dim, order=order, rank=2, seed=seed,
                                     width=width, final_relative_error=gd_err,
                                     success=gd_err <= 1e-2, diverged=False,
                                     lazy_best_residual=np.nan))
                    best = 0.0 if width >= m_star else 0.3
                    rows.append(dict(algorithm="lazy", dim=dim, order=order, rank=2, seed=seed,
                                     width=width, final_relative_error=best + 0.1,
                                     success=False, diverged=False, lazy_best_residual=best))
    return pd.DataFrame(rows)


def swept_table(lrs=(0.05, 0.1), seeds=4, widths=(2, 4, 8)):
    """gd at two learning rates: the larger succeeds from width 4, the smaller only at 8."""
    rows = []
    for lr in lrs:
        for width in widths:
            for seed in range(seeds):
                ok = width >= (4 if lr == max(lrs) else 8) or (width == 4 and seed == 0)
                err = 1e-4 if ok else 0.4
                rows.append(dict(algorithm="gd", dim=8, order=3, rank=2, seed=seed, width=width,
                                 final_relative_error=err, success=ok, diverged=False,
                                 learning_rate=lr, final_loss=err * (1 + seed),
                                 fit_time_0=10 * seed, optimizer="sgd"))
    return pd.DataFrame(rows)


# the lazy-threshold tables: (order, dims) measured, and a case that "measures" one more than
# the rule (measured != rule there)
THRESHOLD_DIMS = {3: (4, 8, 16, 32), 4: (4, 8, 16)}
THRESHOLD_SHIFT = {(3, 16): 1}


def threshold_rule(d, l):
    """The exact rule written out independently of jaxtd: ceil(C(d+l-1, l) / d), one more at
    the Alexander-Hirschowitz case (l, d) = (4, 4) (the only one among THRESHOLD_DIMS)."""
    d, l = int(d), int(l)
    return -(-math.comb(d + l - 1, l) // d) + ((l, d) == (4, 4))


def threshold_critical(d, l):
    """The critical width :func:`threshold_rows` builds in: the rule, shifted at
    THRESHOLD_SHIFT."""
    return threshold_rule(d, l) + THRESHOLD_SHIFT.get((l, d), 0)


def threshold_rows(window_below=2, unbracketed=()):
    """Lazy rows of two seeds whose best residual vanishes exactly from
    :func:`threshold_critical` on, over a window of widths ``window_below`` under it (none for
    the ``unbracketed`` ``(order, dim)`` cases: those fit at their smallest width)."""
    rows = []
    for l, dims in THRESHOLD_DIMS.items():
        for d in dims:
            m = threshold_critical(d, l)
            lo = m if (l, d) in unbracketed else m - window_below
            for w in range(lo, m + 2):
                for seed in range(2):
                    rows.append(dict(algorithm="lazy", dim=d, order=l, rank=2, seed=seed,
                                     width=w, final_relative_error=np.nan, success=False,
                                     diverged=False,
                                     lazy_best_residual=0.0 if w >= m else 0.07))
    return pd.DataFrame(rows)
