"""Per-order dims and near-threshold width windows in the config (``[target] dim = {order:
dims}``, ``[sweep] widths = {below, above}``), the plan they give, and the lazy-threshold preset."""

import math

import pytest

from jaxtd import config as cfg
from jaxtd import experiment

WINDOW = """
[target]
order = [3, 4]
dim = { 3 = [4, 8, 16], 4 = [4, 8] }
rank = 2

[sweep]
algorithms = ["lazy"]
widths = { below = 2, above = 1 }
seeds = 2
steps = 1
success_threshold = 1e-3

[lazy]
init = "standard"
train = false
"""


def _rule(d, l):  # the exact rule, written out independently of jaxtd
    return -(-math.comb(d + l - 1, l) // d)


def test_dims_per_order_are_not_crossed():
    c = cfg.loads(WINDOW)
    assert c.target.sizes == ((3, 4, 2), (3, 8, 2), (3, 16, 2), (4, 4, 2), (4, 8, 2))
    assert c.target.dims == (4, 8, 16)
    assert [(s.order, s.dim) for s in experiment.plan(c)] == [(3, 4), (3, 8), (3, 16), (4, 4),
                                                               (4, 8)]


def test_window_is_around_each_case_threshold():
    c = cfg.loads(WINDOW)
    assert c.sweep.widths == () and c.sweep.near_threshold == (2, 1)
    for sub in experiment.plan(c):
        m = _rule(sub.dim, sub.order) + ((sub.order, sub.dim) == (4, 4))  # AH exception (4, 4)
        assert sub.widths == tuple(range(m - 2, m + 2)), (sub.order, sub.dim)


def test_window_follows_the_antisymmetric_init():
    c = cfg.loads(WINDOW.replace('init = "standard"', 'init = "antisymmetric"'))
    sub = experiment.plan(c)[1]  # l = 3, d = 8: m* = 15, antisymmetric 2 m* - 1 = 29
    assert sub.widths == (27, 28, 29, 30)


def test_window_and_per_order_dims_round_trip_and_shrink():
    c = cfg.loads(WINDOW)
    assert cfg.loads(cfg.dumps(c)) == c
    q = cfg.quick(c)
    assert q.sweep.near_threshold == (1, 1)
    assert q.target.sizes == ((3, 4, 2), (3, 8, 2), (4, 4, 2), (4, 8, 2))
    assert all(len(s.widths) == 3 for s in experiment.plan(q))


def test_list_widths_are_unchanged():
    c = cfg.loads(WINDOW.replace("{ below = 2, above = 1 }", "[5, 3]")
                  .replace("{ 3 = [4, 8, 16], 4 = [4, 8] }", "[4, 8]"))
    assert c.sweep.widths == (3, 5) and c.sweep.near_threshold is None
    assert c.target.sizes == ((3, 4, 2), (3, 8, 2), (4, 4, 2), (4, 8, 2))
    assert all(s.widths == (3, 5) for s in experiment.plan(c))


@pytest.mark.parametrize("old,new,key", [
    ("below = 2, above = 1", "below = 2", "[sweep] widths.above"),
    ("below = 2, above = 1", "below = 2, above = 1, step = 2", "[sweep] widths.step"),
    ("below = 2, above = 1", "below = 0, above = 1", "[sweep] widths.below"),
    ("below = 2, above = 1", "below = -1, above = 1", "[sweep] widths.below"),
    ("below = 2, above = 1", "below = 2, above = 1.5", "[sweep] widths.above"),
    ("3 = [4, 8, 16], 4 = [4, 8]", "3 = [4, 8, 16]", "[target] dim"),
    ("3 = [4, 8, 16], 4 = [4, 8]", "3 = [4, 8, 16], 4 = [4, 8], 5 = [4]", "[target] dim.5"),
    ("3 = [4, 8, 16], 4 = [4, 8]", "3 = [4, 8, 16], x = [4, 8]", "[target] dim.x"),
    ("3 = [4, 8, 16], 4 = [4, 8]", "3 = [4, 0], 4 = [4, 8]", "[target] dim.3"),
    ("3 = [4, 8, 16], 4 = [4, 8]", "3 = [4, 4], 4 = [4, 8]", "[target] dim.3"),
])
def test_bad_window_or_dims_is_one_line_naming_the_key(old, new, key):
    assert old in WINDOW
    with pytest.raises(cfg.ConfigError) as err:
        cfg.loads(WINDOW.replace(old, new))
    message = str(err.value)
    assert message.startswith(key + ":") and "fix:" in message and "\n" not in message


def test_lazy_threshold_preset_reaches_d32_and_d16_with_small_windows():
    c = cfg.preset("lazy-threshold")
    assert max(c.target.dims_of(3)) == 32 and max(c.target.dims_of(4)) == 16
    assert c.sweep.algorithms == ("lazy",) and c.params["lazy"]["train"] is False
    for sub in experiment.plan(c):
        m = cfg.lazy_threshold(sub.dim, sub.order)
        assert min(sub.widths) < m <= max(sub.widths) and len(sub.widths) <= 5
    _, seconds = experiment.estimate(c)
    assert seconds < 600


def test_window_run_finds_the_rule_critical_width(tmp_path):
    """End to end through experiment.run: each size solves only its window, and the first
    fitting width is the exact rule's (an independent oracle: ceil(C(d+l-1, l)/d))."""
    from jaxtd import stats
    c = cfg.loads(WINDOW.replace("{ 3 = [4, 8, 16], 4 = [4, 8] }", "{ 3 = [4, 6], 4 = [3] }")
                  .replace("seeds = 2", "seeds = 1"))
    df = experiment.run(c, tmp_path).results.to_pandas()
    assert sorted(set(zip(df["order"], df["dim"]))) == [(3, 4), (3, 6), (4, 3)]
    for (l, d), g in df.groupby(["order", "dim"]):
        m = _rule(d, l) + ((l, d) == (4, 3))  # (4, 3): an Alexander-Hirschowitz exception
        assert sorted(g["width"]) == list(range(m - 2, m + 2))
        fits = g.sort_values("width")["lazy_best_residual"].to_numpy() <= 1e-3
        assert list(fits) == [False, False, True, True], (l, d)
    table = stats.threshold_table(df, 1e-3, cfg.lazy_threshold)
    assert table["bracketed"].all() and list(table["critical"]) == list(table["rule"])
