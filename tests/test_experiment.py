"""The experiment layer (jaxtd/experiment.py): plan, chunking, progress counts, hyper-parameter
columns, compile/run totals."""

import jax
import numpy as np
import pandas as pd
import pytest

from jaxtd import _executables, compile_cache, experiment, lazy, targets
from jaxtd import config as cfg

SMALL = """
name = "small"
[target]
order = 3
dim = 4
rank = 2

[sweep]
algorithms = ["lazy", "gd"]
widths = [2, 3]
seeds = 2
steps = 40
success_threshold = 1e-2
record_every = 20
bucketing = "single"

[lazy]
init = "standard"
learning_rate = 0.02

[gd]
init_scale = 0.2
"""


def test_plan_sub_sweeps_and_chunks():
    c = cfg.loads(SMALL.replace("seeds = 2", "seeds = 6\nchunk_size = 4"))
    subs = experiment.plan(c)
    assert [s.folder for s in subs] == ["lazy-l3-d4-r2", "gd-l3-d4-r2"]
    assert subs[1].chunks() == [(0, 1, 2, 3), (4, 5)] and subs[1].cells == 12
    # rows: lazy GD (its best residual is a column of the same rows), gd
    assert experiment.total_cells(c) == 12 + 12


@pytest.mark.parametrize("seeds", [1, 6, 7, 12])
def test_default_chunk_size_divides_the_seeds(seeds):
    c = cfg.loads(SMALL.replace("seeds = 2", f"seeds = {seeds}").replace("steps = 40",
                                                                       "steps = 400000"))
    k = experiment.default_chunk_size(c, "gd", 3, 4, 2)
    assert 1 <= k <= seeds and seeds % k == 0


def test_describe_is_a_plan():
    text = experiment.describe(cfg.loads(SMALL))
    assert "lazy-l3-d4-r2: 2 seeds x 2 widths" in text
    lazy, gd = text.splitlines()[1:3]
    assert "2 program(s) to compile" in lazy  # one grid, one best-residual table
    assert "1 program(s) to compile" in gd and "4 cells in 2 chunk(s)" not in gd
    total = next(line for line in text.splitlines() if line.startswith("total:"))
    assert total.startswith("total: 8 runs (cells), 3 programs to compile")  # 4 lazy + 4 gd rows
    assert text.splitlines()[-1].startswith("time: ~")


def test_programs_follow_buckets_chunk_shapes_and_passes():
    c = cfg.loads(SMALL.replace("seeds = 2", "seeds = 3\nchunk_size = 2"))
    lazy, gd = experiment.plan(c)
    # chunks of 2 and 1 seeds: two grid programs per bucket; the lazy optimum one more
    assert experiment.programs_of(c, gd) == ["grid:gd", "grid:gd"]
    assert experiment.programs_of(c, lazy) == ["grid:lazy", "grid:lazy", "lazy_table"]
    assert experiment.count_programs(c) == 5
    exact = cfg.loads(SMALL.replace('bucketing = "single"', 'bucketing = "exact"'))
    assert experiment.count_programs(exact) == 2 + 1 + 2
    untrained = cfg.loads(SMALL.replace("[lazy]", "[lazy]\ntrain = false"))
    assert experiment.programs_of(untrained, experiment.plan(untrained)[0]) == ["lazy_table"]


def test_wall_estimate_compile_and_compute_apart():
    c = cfg.loads(SMALL)
    cold = experiment.estimate_wall(c, warm=False)
    warm = experiment.estimate_wall(c, warm=True)
    busy = experiment.estimate_wall(c, warm=False, load=3.0)
    assert cold["compile"] > 2 * warm["compile"] > 0 and cold["compute"] == warm["compute"]
    assert cold["total"] == pytest.approx(cold["compile"] + cold["compute"] + cold["fixed"])
    assert busy["compute"] == pytest.approx(3.0 * cold["compute"])
    assert busy["compile"] > 3.0 * cold["compile"]  # a busy CPU compiles slower still
    assert experiment.describe(c, compile_cache=False, load=1.0, speed=1.0).splitlines()[
        -1].endswith("compile cache off (--no-compile-cache)")
    # a CPU half as fast as the reference: every part takes twice as long, and the plan says so
    slow = experiment.estimate_wall(c, warm=False, speed=2.0)
    assert all(slow[k] == pytest.approx(2.0 * cold[k]) for k in cold)
    assert "this CPU x2.00 the reference machine's time" in experiment.describe(
        c, compile_cache=False, load=1.0, speed=2.0)


def test_machine_speed_is_a_bounded_repeatable_ratio():
    speed = experiment.machine_speed()
    assert 0.25 <= speed <= 8.0
    assert experiment.machine_speed() == pytest.approx(speed, rel=0.5)


@pytest.mark.timeout(600)
def test_events_announce_every_compilation(tmp_path):
    """``on_event``: one compile_start per program the run compiles (JAX's count), each closed
    by a compile_end before the next starts; the lazy optimum is a phase; the rows reported
    through ``on_cells`` are the results' rows."""
    import jax

    import jaxtd
    jaxtd.clear_cache()
    jax.clear_caches()
    c = cfg.loads(SMALL.replace("seeds = 2", "seeds = 3\nchunk_size = 2")
                  .replace('["lazy", "gd"]', '["lazy"]'))
    events, counted = [], []
    out = experiment.run(c, tmp_path, on_cells=counted.append,
                         on_event=lambda kind, **info: events.append((kind, info)))
    kinds = [k for k, _ in events]
    starts = kinds.count("compile_start")
    assert starts == experiment.count_programs(c) == out.n_compiles == 3  # 2 chunk shapes, table
    for i, k in enumerate(kinds):  # strictly alternating start / end
        if k == "compile_start":
            assert kinds[i + 1:].index("compile_end") < (kinds[i + 1:] + ["compile_start"]).index(
                "compile_start")
    assert kinds.count("compile_end") == starts
    assert ("phase", {"what": "exact lazy optimum"}) in events and ("phase", {"what": None}) in events
    assert sum(counted) == len(out.results) == experiment.total_cells(c) == 6


def test_hyperparameters_are_resolved_values():
    c = cfg.loads(SMALL.replace('algorithms = ["lazy", "gd"]', 'algorithms = ["deflation"]'))
    alg = experiment.make_algorithm(c, "deflation")
    hp = experiment.hyperparameters(c, "deflation", alg)
    # one column per hyper-parameter, named as the algorithm (and a swept column) names it
    assert hp["learning_rate"] == 0.05 and hp["init_scale"] == 1e-3 and hp["threshold"] == 1e-2
    assert not {"step_size", "delta0", "delta1"} & set(hp)
    assert hp["regularization"] == pytest.approx(1e-4)  # left to the constructor: epsilon / 10
    assert alg.name == "deflation"


@pytest.mark.timeout(300)
def test_chunked_run_equals_one_chunk_and_counts_every_cell(tmp_path):
    whole = cfg.loads(SMALL.replace("seeds = 2", "seeds = 2\nchunk_size = 2"))
    split = cfg.loads(SMALL.replace("seeds = 2", "seeds = 2\nchunk_size = 1"))
    counted, started = [], []
    a = experiment.run(whole, tmp_path / "a")
    b = experiment.run(split, tmp_path / "b", on_cells=counted.append,
                       on_start=lambda sub: started.append(sub.folder))
    # lazy GD: 2 chunks (its best residuals add a column, not cells); gd: 2 chunks
    assert sum(counted) == experiment.total_cells(split) == len(b.results) == 8
    assert len(counted) == 2 + 2
    assert started == ["lazy-l3-d4-r2", "gd-l3-d4-r2"]
    # same cells; a different vmap batch may change float32 rounding in the last place
    pd.testing.assert_frame_equal(a.results.rows, b.results.rows, check_exact=False, rtol=1e-5)
    for name in a.results.histories:
        np.testing.assert_allclose(a.results.histories[name], b.results.histories[name],
                                   rtol=1e-5, atol=1e-6)
    rows = b.results.rows
    assert list(rows.columns[:4]) == ["algorithm", "order", "dim", "rank"]
    assert (rows.loc[rows["algorithm"] == "gd", "init_scale"] == 0.2).all()
    assert (rows.loc[rows["algorithm"] == "gd", "init"] == "small").all()  # gd's own default
    assert (rows.loc[rows["algorithm"] == "lazy", "lr_scaling"] == "").all()  # gd-only key
    # totals: the sum of the parts (sweeps and lazy solves)
    assert b.n_compiles == sum(i["n_compiles"] for i in b.infos)
    assert b.run_seconds == pytest.approx(sum(i["run_seconds"] for i in b.infos))
    assert b.results.info["parts"] == b.infos
    # resumed: nothing compiled or run again, same rows
    c = experiment.run(split, tmp_path / "b", resume=True)
    assert c.n_compiles == 0
    pd.testing.assert_frame_equal(c.results.rows, b.results.rows)


def test_estimate_counts_the_precise_metrics_quadratic_memory_and_per_step_time():
    """A lazy cell at m = 3000, d = 40 allocated 25 GB (the error-free Gram of the precise
    metric, ~(m + r)^2 d floats): the estimate must see it, and 10^9 tiny steps must not be
    estimated as seconds."""
    text = """name = "big"
[target]
order = 3
dim = 40
rank = 2
[sweep]
algorithms = ["lazy"]
widths = [3000]
seeds = 1
steps = 40
record_every = 20
success_threshold = 1e-2
"""
    peak, _ = experiment.estimate(cfg.loads(text))
    assert peak > 20e9
    small = text.replace("dim = 40", "dim = 6").replace("[3000]", "[2, 4]").replace(
        '["lazy"]', '["gd"]')
    long = small.replace("steps = 40", "steps = 1000000000")
    assert experiment.estimate(cfg.loads(long))[1] > 3600 > experiment.estimate(
        cfg.loads(small))[1]


def test_a_sub_sweep_saved_on_another_platform_is_refused(tmp_path, monkeypatch):
    """sub.json names the numerics (dtype, x64, platform, PRNG implementation): the lazy-optimum
    cache kept beside a sweep is never reused by a run that would round differently."""
    config = cfg.loads(SMALL)
    sub = experiment.plan(config)[0]
    experiment._check_sub(config, sub, tmp_path, resume=False)
    assert experiment._check_sub(config, sub, tmp_path, resume=True)  # same: reused
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(experiment.ResumeError, match="numerics.platform"):
        experiment._check_sub(config, sub, tmp_path, resume=True)



def test_the_lazy_optimum_table_is_loaded_by_a_warm_run(tmp_path):
    """The table's program is kept like the grids': with the persistent cache on, a later
    process (here: an emptied in-memory store) loads it instead of tracing, lowering and
    compiling it again, and gets the same numbers; best_residual_table agrees with both."""
    target = targets.orthonormal(jax.random.PRNGKey(0), 4, 2, 3)
    alg = experiment.make_algorithm(cfg.loads(SMALL), "lazy")
    kwargs = dict(init="standard", signs="auto", init_scale=1.0, method="auto")
    compile_cache.enable(tmp_path / "cache")
    _executables.clear()
    cold, warm = (experiment.Outcome(None, []) for _ in range(2))
    first = experiment.lazy_best_residuals(alg, target, [0, 1], [2, 3], cold, **kwargs)
    _executables.clear()
    second = experiment.lazy_best_residuals(alg, target, [0, 1], [2, 3], warm, **kwargs)
    # (cold may find the program in JAX's in-memory caches when an earlier test built it)
    assert cold.n_loaded == 0 and len(list(_executables.disk_dir().glob("*.bin"))) == 1
    assert (warm.n_compiles, warm.n_loaded) == (0, 1)
    np.testing.assert_array_equal(second, first)
    keys = jax.numpy.stack([experiment.key_for_seed(s) for s in (0, 1)])
    np.testing.assert_array_equal(lazy.best_residual_table(keys, target, [2, 3], **kwargs), first)
