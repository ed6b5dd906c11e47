"""jaxtd.sweep: every cell equals the same run alone; one compilation per width bucket; resume;
divergence isolation; input validation before any compute.

The oracle throughout is a standalone ``jaxtd.run`` of the same cell (same key, same width, same
hyper-parameters), never the sweep's own code path.
"""

import os

import jax
import numpy as np
import pandas as pd
import pytest

import jaxtd
from jaxtd import algorithms
from jaxtd.results import ChunkStore, Results
from jaxtd import run as standalone_run
from jaxtd import BucketCost, bucket_widths, clear_cache, key_for_seed, sweep

DIM, RANK, ORDER = 6, 2, 3
STEPS, RECORD = 240, 40


def _target(order=ORDER):
    return jaxtd.targets.orthonormal(jax.random.PRNGKey(7), DIM, RANK, order)


# Small settings that make every algorithm move within STEPS (re-draws included), and two
# learning rates for the vmapped hyper-parameter axis (the second is checked against a run alone).
FACTORIES = {
    "gd": (lambda: algorithms.gd(0.2, init_scale=0.3), [0.1, 0.2]),
    "variant": (lambda: algorithms.variant(0.1, init_scale=0.1, amplify_steps=5, fit_steps=15,
                                           epochs=None), [0.1, 0.2]),
    "deflation": (lambda: algorithms.deflation(0.05, 0.1, 2.0, 1e-4, tau0=1.0, step_size=0.1),
                  [0.1, 0.2]),
    "lazy_gd": (lambda: algorithms.lazy_gd(0.01), [0.005, 0.01]),
}


def _counting(algorithm):
    """The same algorithm, counting how often its ``init`` is traced (once per compilation)."""
    calls = []

    def init(*args, **kwargs):
        calls.append(1)
        return algorithm.init(*args, **kwargs)

    return algorithm._replace(init=init), calls


def _cell(res, seed, width, **hp):
    rows = res.rows
    mask = (rows.seed == seed) & (rows.width == width)
    for k, v in hp.items():
        mask &= rows[k] == v
    (index,) = np.flatnonzero(mask.to_numpy())
    return index


def _assert_cell_equals_run(res, index, alone, rtol):
    """Row ``index`` of a sweep against a standalone RunResult."""
    row = res.rows.iloc[index]

    def close(actual, expected, what):
        expected = np.asarray(expected, np.float64)
        atol = rtol * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol,
                                   err_msg=what)

    for name in ("final_relative_error", "final_loss", "distance"):
        close(row[name], getattr(alone, name), name)
    assert row["active_count"] == int(alone.active_count)
    assert bool(row["diverged"]) == bool(alone.diverged)
    assert row["diverged_step"] == int(alone.diverged_step)
    fit = [row[f"fit_time_{j}"] for j in range(RANK)]
    np.testing.assert_array_equal(fit, np.asarray(alone.fit_times))
    assert sorted(res.histories) == sorted(alone.history)
    for name, hist in alone.history.items():
        close(res.histories[name][index], hist, f"history {name}")


def _check_same_key_same_result(name, rtol):
    factory, rates = FACTORIES[name]
    algorithm = factory()
    target = _target()
    hparams = {"learning_rate": rates}
    # width 3 runs padded to 4 (pow2 bucket (2, 4]); seeds not starting at 0, not in order
    res = sweep(algorithm, target, seeds=[4, 1], widths=[3, 4], steps=STEPS, record_every=RECORD,
                hparams=hparams, metadata={"algorithm": name}, bucketing="pow2")
    assert res.info["n_compiles"] == 1
    assert res.rows["padded_width"].tolist() == [4] * 8
    assert res.rows["algorithm"].tolist() == [name] * 8
    assert res.key_columns == ("algorithm", "learning_rate")
    for seed in (4, 1):
        alone = standalone_run(algorithm, key_for_seed(seed), target, width=3, steps=STEPS,
                               record_every=RECORD, hparams={"learning_rate": rates[1]})
        _assert_cell_equals_run(res, _cell(res, seed, 3, learning_rate=rates[1]), alone, rtol)
    # the cells moved: the check above compared non-trivial dynamics
    assert np.ptp(res.histories["relative_error"][0]) > 1e-3


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cell_equals_standalone_run_float64(name, x64):
    _check_same_key_same_result(name, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cell_equals_standalone_run_float32(name):
    _check_same_key_same_result(name, rtol=1e-4)


GRID = dict(seeds=3, widths=[3, 4, 6], steps=STEPS, record_every=RECORD, bucketing="pow2")


def _gd():
    return algorithms.gd(0.2, init_scale=0.3)


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted grid (2 chunks, buckets {3, 4} and {6}, two step sizes), the oracle of
    the divergence and resume tests."""
    return sweep(_gd(), _target(), hparams={"learning_rate": [0.1, 0.3]}, chunk_size=2, **GRID)


def _assert_same(res, ref, history_rtol=0.0):
    """Rows bit-identical; histories too, or to ``history_rtol`` for the float ones (the
    recorded aligned residual rounds differently in programs of another batch size)."""
    pd.testing.assert_frame_equal(res.rows, ref.rows, check_exact=True)
    assert sorted(res.histories) == sorted(ref.histories)
    for k, v in ref.histories.items():
        if history_rtol and np.issubdtype(np.asarray(v).dtype, np.floating):
            np.testing.assert_allclose(res.histories[k], v, rtol=history_rtol, atol=0, err_msg=k)
        else:
            np.testing.assert_array_equal(res.histories[k], v, err_msg=k)


def test_divergence_isolated_and_one_compile_per_bucket(reference, backend_compiles):
    algorithm, traces = _counting(_gd())
    with backend_compiles() as compiles:
        bad = sweep(algorithm, _target(), hparams={"learning_rate": [0.1, 1e4, 0.3]},
                    chunk_size=2, **GRID)
    # 2 buckets ({3, 4}, {6}), 2 chunks, 3 widths, 3 step sizes: compiled once per bucket
    assert bucket_widths(GRID["widths"]) == ((3, 4), (6,))
    assert len(traces) == 2 and bad.info["n_compiles"] == 2 and len(compiles) == 2
    assert len(bad) == 3 * 3 * 3
    rows = bad.rows
    huge = rows.learning_rate == 1e4
    assert rows.loc[huge, "diverged"].all() and not rows.loc[~huge, "diverged"].any()
    assert (rows.loc[huge, "diverged_step"] >= 0).all()
    assert (rows.loc[~huge, "diverged_step"] == -1).all()
    assert not rows.loc[huge, "success"].any()
    assert np.isfinite(rows["final_relative_error"]).all()  # flagged, never a NaN
    summary = bad.summary()
    assert np.isinf(summary.loc[summary.learning_rate == 1e4, "median_error"]).all()
    # the other cells are identical to the grid without the bad step size
    _assert_same(bad.select(~huge), reference)
    assert reference.rows["success"].any() and not reference.rows["success"].all()


def test_resume_after_interruption_equals_uninterrupted(reference, tmp_path, monkeypatch,
                                                        capsys):
    algorithm = _gd()
    target = _target()
    kwargs = dict(hparams={"learning_rate": [0.1, 0.3]}, chunk_size=1, **GRID)
    out = tmp_path / "run"
    write = ChunkStore.write

    def interrupted_write(self, index, *args):
        if index == 2:
            raise KeyboardInterrupt
        return write(self, index, *args)

    monkeypatch.setattr(ChunkStore, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        sweep(algorithm, target, out_dir=out, progress=True, **kwargs)
    assert "chunk" in capsys.readouterr().err  # progress bar forced on
    assert sorted(os.listdir(out / "chunks")) == ["chunk_00000.npz", "chunk_00001.npz"]
    assert not (out / "config.json").exists()
    with pytest.raises(FileNotFoundError, match="unfinished sweep"):
        Results.load(out)
    monkeypatch.setattr(ChunkStore, "write", write)

    resumed = sweep(algorithm, target, out_dir=out, progress=False, **kwargs)
    assert resumed.info["chunks_resumed"] == 2
    assert capsys.readouterr().err == ""  # progress=False: quiet
    # equal to the uninterrupted grid (which also used another chunk size)
    # equal to the grid run with another chunk size: rows bit-identical, histories to rounding
    _assert_same(resumed, reference, history_rtol=1e-5)
    loaded = Results.load(out)
    _assert_same(loaded, resumed)
    assert loaded.config == resumed.config

    # rerun of a finished sweep: nothing recomputed; a different configuration is refused
    again = sweep(algorithm, target, out_dir=out, **kwargs)
    assert again.info["n_compiles"] == 0 and again.info["chunks_resumed"] == 3
    _assert_same(again, resumed)
    with pytest.raises(ValueError, match="another configuration \\(differs in steps: saved"):
        sweep(algorithm, target, out_dir=out, **{**kwargs, "steps": 2 * STEPS})
    with pytest.raises(ValueError, match="differs in algorithm.arguments.optimizer: saved 0.2, requested 0.1"):
        sweep(algorithms.gd(0.1, init_scale=0.3), target, out_dir=out, **kwargs)
    # another platform rounds differently and may pick another form of the loss
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="differs in platform: saved 'cpu', requested 'gpu'"):
        sweep(algorithm, target, out_dir=out, **kwargs)
    monkeypatch.undo()
    # results of an earlier jaxtd whose arithmetic gave other numbers
    saved = jaxtd._sweep.NUMERICS_REVISION
    monkeypatch.setattr(jaxtd._sweep, "NUMERICS_REVISION", saved + 1)
    with pytest.raises(ValueError, match=f"differs in revision: saved {saved}, requested "
                                         f"{saved + 1}"):
        sweep(algorithm, target, out_dir=out, **kwargs)


def test_key_for_seed_depends_only_on_seed():
    k = key_for_seed(5)
    np.testing.assert_array_equal(k, jax.random.fold_in(jax.random.PRNGKey(0), 5))
    np.testing.assert_array_equal(key_for_seed(5, base_key=3),
                                  jax.random.fold_in(jax.random.PRNGKey(3), 5))
    assert not np.array_equal(key_for_seed(5), key_for_seed(6))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        key_for_seed(-1)
    with pytest.raises(TypeError, match="seed"):
        key_for_seed(1.5)


def test_auto_buckets_are_the_cheapest_contiguous_grouping():
    import itertools
    widths = [3, 4, 6, 12, 24, 48, 72, 112]

    def brute(cost):
        best = None
        for cuts in itertools.product([False, True], repeat=len(widths) - 1):
            groups, start = [], 0
            for i, cut in enumerate(cuts, 1):
                if cut:
                    groups.append(tuple(widths[start:i]))
                    start = i
            groups.append(tuple(widths[start:]))
            c = sum(cost(g) for g in groups)
            if best is None or c < best[0]:
                best = (c, tuple(groups))
        return best

    for cell_steps in (1e3, 8e3, 1e5, 1e7):
        cost = BucketCost(cell_steps=cell_steps, dim=24, rank=3)
        auto = bucket_widths(widths, "auto", cost=cost)
        c, groups = brute(cost)
        assert auto == groups
        assert sum(cost(b) for b in auto) == pytest.approx(c)
    # a small grid compiles once; a huge one pads less, with more programs
    assert len(bucket_widths(widths, "auto", cost=BucketCost(cell_steps=8e3, dim=24, rank=3))) == 1
    assert len(bucket_widths(widths, "auto", cost=BucketCost(cell_steps=1e7, dim=24, rank=3))) > 3


def test_bucket_widths():
    assert bucket_widths([16, 1, 2, 3, 5, 8, 9, 100]) == ((1,), (2,), (3,), (5, 8), (9, 16),
                                                           (100,))
    assert bucket_widths([3, 4, 5, 6, 7, 8]) == ((3, 4), (5, 6, 7, 8))
    assert bucket_widths([2, 5, 3], "exact") == ((2,), (3,), (5,))
    assert bucket_widths([2, 5, 3], "single") == ((2, 3, 5),)
    # padding waste per bucket stays below 2x in width
    for b in bucket_widths(range(1, 200)):
        assert max(b) < 2 * min(b)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seeds=[]), ValueError, "seeds is empty"),
    (dict(seeds=0), ValueError, "seeds must be >= 1"),
    (dict(seeds=[1, 1]), ValueError, "seeds has duplicates"),
    (dict(seeds=[-1]), ValueError, "seeds must be >= 0"),
    (dict(widths=[]), ValueError, "widths is empty"),
    (dict(widths=[2, 4, 2]), ValueError, r"widths has duplicates \[2\]"),
    (dict(widths=[0, 2]), ValueError, "widths must be >= 1"),
    (dict(widths=[2.5]), TypeError, "widths must hold ints"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(record_every=7), ValueError, "multiple of record_every"),
    (dict(hparams={"step": [0.1]}), ValueError, "unknown names"),
    (dict(hparams={"learning_rate": []}), ValueError, "is empty"),
    (dict(hparams={"learning_rate": [0.1, 0.1]}), ValueError, "duplicate values"),
    (dict(success_threshold=0.0), ValueError, "success_threshold"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
    (dict(bucketing="log"), ValueError, "bucketing must be one of"),
    (dict(metadata={"seed": 1}), ValueError, "clashes"),
    (dict(metadata={"x": [1]}), TypeError, r"metadata\['x'\]"),
])
def test_bad_input_raises_before_compute(kwargs, error, match):
    algorithm, traces = _counting(algorithms.gd(0.1))
    args = dict(seeds=2, widths=[1, 3], steps=20, record_every=10)
    with pytest.raises(error, match=match):
        sweep(algorithm, _target(), **{**args, **kwargs})
    assert not traces


def test_bad_out_dir_and_arguments_raise_before_compute(tmp_path):
    algorithm, traces = _counting(algorithms.gd(0.1))
    args = dict(seeds=2, widths=[1], steps=20, record_every=10)
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        sweep(algorithm, _target(), out_dir=afile, **args)
    with pytest.raises(ValueError, match="not a writable directory"):
        sweep(algorithm, _target(), out_dir=afile / "sub", **args)
    with pytest.raises(ValueError, match="not a writable directory"):
        sweep(algorithm, _target(), out_dir="/proc/jaxtd-cannot-write-here", **args)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no jaxtd sweep"):
        sweep(algorithm, _target(), out_dir=tmp_path / "busy", **args)
    with pytest.raises(TypeError, match="algorithm must be"):
        sweep(lambda x: x, _target(), **args)
    with pytest.raises(TypeError, match="target must be"):
        sweep(algorithm, np.zeros((3, 3)), **args)
    assert not traces


def test_second_identical_sweep_compiles_nothing(backend_compiles):
    """The executable cache: an algorithm rebuilt from equal arguments, same shapes and steps,
    other hparam values and seeds -> zero XLA compilations, the same numbers as a fresh compile."""
    target = _target()
    kwargs = dict(widths=[3, 6], steps=STEPS, record_every=RECORD, bucketing="pow2")
    clear_cache()
    first = sweep(_gd(), target, seeds=2, hparams={"learning_rate": [0.1, 0.2]}, **kwargs)
    assert first.info["n_compiles"] == 2 and first.info["compile_seconds"] > 0
    with backend_compiles() as compiles:
        second = sweep(_gd(), target, seeds=[5, 7], hparams={"learning_rate": [0.3, 0.05]},
                       **kwargs)
    assert len(compiles) == 0
    assert second.info["n_compiles"] == 0 and second.info["n_programs_reused"] == 2
    assert second.info["compile_seconds"] == 0
    # a fresh compile of the same grid gives the same numbers (the cached program is not stale)
    clear_cache()
    with backend_compiles() as compiles:
        fresh = sweep(_gd(), target, seeds=[5, 7], hparams={"learning_rate": [0.3, 0.05]},
                      **kwargs)
    assert len(compiles) == 2
    _assert_same(second, fresh)
    # a different static choice is a different program
    with backend_compiles() as compiles:
        sweep(algorithms.gd(0.2, init_scale=0.3, model="two_homogeneous"), target, seeds=2,
              **kwargs)
    assert len(compiles) == 2


def test_second_standalone_run_compiles_nothing(backend_compiles):
    target = _target()
    jaxtd.run(algorithms.gd(0.1), jax.random.key(0), target, width=4, steps=STEPS,
              record_every=RECORD)
    with backend_compiles() as compiles:
        again = jaxtd.run(algorithms.gd(0.1), jax.random.key(1), target, width=4, steps=STEPS,
                          record_every=RECORD)
    assert len(compiles) == 0 and np.isfinite(again.final_relative_error)


def test_a_second_process_cannot_write_the_same_folder(tmp_path):
    """The sweep holds the folder's lock while it runs: another process is refused at once,
    with the holder's PID, and the lock is released when the sweep returns."""
    import subprocess
    import sys
    import textwrap
    from jaxtd.results import LockedError, lock_dir

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from jaxtd.results import lock_dir
        with lock_dir({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=str(holder.pid)):
            sweep(_gd(), _target(), out_dir=out, **GRID)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    sweep(_gd(), _target(), out_dir=out, **GRID)
    with lock_dir(out):  # released by the finished sweep
        pass


@pytest.mark.timeout(600)
def test_on_event_announces_each_compilation_and_chunk():
    """``on_event``: ``compile_start`` once per program compiled (none when the executable cache
    has it), ``chunk_done`` per chunk with its cells."""
    clear_cache()
    algorithm = algorithms.gd(0.1, init_scale=0.1)
    events = []
    kwargs = dict(seeds=3, widths=[2, 3], steps=20, record_every=10, chunk_size=2,
                  bucketing="single", progress=False,
                  on_event=lambda kind, **info: events.append((kind, info)))
    res = sweep(algorithm, _target(), **kwargs)
    starts = [info for kind, info in events if kind == "compile_start"]
    # chunks of 2 and 1 seeds, the last padded to 2: one program at padded width 3
    assert res.info["n_compiles"] == len(starts) == 1
    assert all(info["padded_width"] == 3 and info["widths"] == (2, 3) for info in starts)
    done = [info for kind, info in events if kind == "chunk_done"]
    assert [d["chunk"] for d in done] == [0, 1] and sum(d["cells"] for d in done) == len(res) == 6
    events.clear()
    again = sweep(algorithm, _target(), **kwargs)
    assert again.info["n_compiles"] == 0 and [k for k, _ in events] == ["chunk_done"] * 2


@pytest.mark.timeout(120)
def test_auto_buckets_are_fast_for_many_widths_and_unchanged():
    """The bucketing DP sliced and scanned every (i, j) pair in Python: 3000 widths took
    minutes (`jaxtd run --dry-run` hung). Same partition as the plain loop, in well under a
    second per thousand widths."""
    import random
    import time

    from jaxtd._buckets import _cheapest_buckets  # the private DP, on purpose

    def reference(widths, cost):
        n = len(widths)
        best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
        for j in range(1, n + 1):
            for i in range(j):
                c = best[i] + cost(widths[i:j])
                if c < best[j]:
                    best[j], cut[j] = c, i
        out, j = [], n
        while j > 0:
            out.append(tuple(widths[cut[j]:j]))
            j = cut[j]
        return tuple(reversed(out))

    rng = random.Random(0)
    for _ in range(50):
        widths = sorted(rng.sample(range(1, 300), rng.randint(1, 25)))
        cost = BucketCost(cell_steps=rng.choice([1e2, 1e4, 1e6]), dim=rng.choice([4, 16, 64]))
        assert _cheapest_buckets(widths, cost) == reference(widths, cost)
    start = time.perf_counter()
    _cheapest_buckets(list(range(1, 2001)), BucketCost())
    assert time.perf_counter() - start < 30
