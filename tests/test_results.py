"""Results: exports, exact save/load round trip, summaries, chunk store rules."""

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from jaxtd.results import ChunkStore, Results, check_out_dir


def _synthetic(n_seeds=4, widths=(2, 3, 5), lrs=(0.1, 0.2), n_records=6, r=2):
    """A hand-made result with known success pattern: success iff width >= 3 (all lrs), except
    seed 0 at width 3."""
    rows, hist = [], []
    for s in range(n_seeds):
        for m in widths:
            for lr in lrs:
                ok = m >= 3 and not (s == 0 and m == 3)
                err = np.float32(1e-3 * (1 + s) if ok else 0.5 + 0.01 * s)
                div = (m == 2 and s == 1 and lr == 0.2)
                rows.append({"seed": s, "width": m, "padded_width": 5, "learning_rate": lr,
                             "final_relative_error": np.float32(np.nan) if div else err,
                             "success": ok, "diverged": div, "diverged_step": 7 if div else -1,
                             **{f"fit_time_{j}": (10 * j if ok else -1) for j in range(r)},
                             "distance": np.float32(3.0 + m), "active_count": np.int32(m)})
                hist.append(np.linspace(1.0, float(err) if not div else 9.0, n_records))
    frame = pd.DataFrame(rows).astype({"final_relative_error": np.float32,
                                       "distance": np.float32, "active_count": np.int32})
    histories = {"relative_error": np.asarray(hist, np.float32),
                 "step": np.tile(np.arange(n_records) * 10, (len(rows), 1)),
                 "fitted_weight": np.random.default_rng(0).normal(size=(len(rows), n_records, r))}
    config = {"algorithm": "gd", "widths": list(widths), "seeds": list(range(n_seeds)),
              "hparams": {"learning_rate": list(lrs)}}
    return Results(frame, histories, config=config, info={"note": "synthetic"},
                   key_columns=("learning_rate",))


def test_save_load_round_trip_is_exact(tmp_path):
    res = _synthetic().with_columns(algorithm="gd", dim=16)
    res.save(tmp_path / "out")
    back = Results.load(tmp_path / "out")
    pd.testing.assert_frame_equal(back.rows, res.rows, check_exact=True)
    assert list(back.rows.columns) == list(res.rows.columns)
    assert sorted(back.histories) == sorted(res.histories)
    for k, v in res.histories.items():
        np.testing.assert_array_equal(back.histories[k], v)
        assert back.histories[k].dtype == v.dtype
    assert back.config == res.config
    assert back.key_columns == res.key_columns == ("algorithm", "dim", "learning_rate")
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert set(meta["info"]["versions"]) >= {"jax", "jaxtd"}


def test_csv_and_json_exports(tmp_path):
    res = _synthetic()
    res.to_csv(tmp_path / "r.csv")
    res.to_json(tmp_path / "r.json")
    with open(tmp_path / "r.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(res) and list(table[0]) == list(res.rows.columns)
    # floats written at round-trip precision
    errs = np.asarray([float(t["final_relative_error"] or "nan") for t in table], np.float32)
    np.testing.assert_array_equal(errs, res.rows["final_relative_error"].to_numpy())
    records = json.loads((tmp_path / "r.json").read_text())  # strict JSON: NaN became null
    assert len(records) == len(res)
    div = [r for r in records if r["diverged"]]
    assert len(div) == 1 and div[0]["final_relative_error"] is None and div[0]["diverged_step"] == 7


def test_summary_and_critical_width():
    res = _synthetic()
    table = res.summary()
    assert list(table.columns) == ["learning_rate", "width", "n", "success_rate", "median_error",
                                   "diverged_rate"]
    row = table[(table.learning_rate == 0.1) & (table.width == 3)].iloc[0]
    assert row.n == 4 and row.success_rate == 0.75
    np.testing.assert_allclose(row.median_error, np.median([0.5, 2e-3, 3e-3, 4e-3]), rtol=1e-6)
    # a diverged cell counts as an infinite error in the median, never a NaN
    row = table[(table.learning_rate == 0.2) & (table.width == 2)].iloc[0]
    assert row.diverged_rate == 0.25 and np.isfinite(row.median_error)
    crit = res.critical_width(0.7)
    assert list(crit["critical_width"]) == [3, 3]
    crit = res.critical_width(1.0)
    assert list(crit["critical_width"]) == [5, 5]
    # per width only (ignoring the hparam) and with a recomputed threshold
    assert res.critical_width(0.7, by=()) == 3
    assert res.critical_width(0.5, by=(), threshold=1e-6) is None
    assert res.summary(by=(), threshold=2.5e-3)["success_rate"].tolist() == [0.0, 0.25, 0.5]


def test_select_with_columns_concat():
    a = _synthetic().with_columns(algorithm="gd")
    b = _synthetic(widths=(4,), n_records=3).with_columns(algorithm="variant")
    both = Results.concat([a, b])
    assert len(both) == len(a) + len(b)
    assert both.key_columns == ("algorithm", "learning_rate")
    h = both.history("relative_error")
    assert h.shape == (len(both), 6)
    assert np.isnan(h[len(a):, 3:]).all() and np.isfinite(h[len(a):, :3]).all()
    crit = both.critical_width(1.0)
    assert crit[crit.algorithm == "variant"]["critical_width"].tolist() == [4, 4]
    only = both.select(both.rows["algorithm"] == "variant")
    assert len(only) == len(b)
    np.testing.assert_array_equal(only.history("step")[:, :3], b.history("step"))
    with pytest.raises(ValueError, match="already exist"):
        a.with_columns(seed=1)
    # per-row data columns go last and are not key columns
    c = a.with_columns(lazy_best_residual=np.arange(len(a)) / 10.0, dim=16)
    assert list(c.rows.columns[:2]) == ["dim", "algorithm"] and c.rows.columns[-1] == "lazy_best_residual"
    assert c.key_columns == ("dim", "algorithm", "learning_rate")
    np.testing.assert_array_equal(c.rows["lazy_best_residual"], np.arange(len(a)) / 10.0)
    with pytest.raises(ValueError, match="one value per row"):
        a.with_columns(lazy_best_residual=np.ones(3))


def test_bad_inputs(tmp_path):
    res = _synthetic()
    with pytest.raises(ValueError, match="first axis"):
        Results(res.rows, {"x": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="rate"):
        res.critical_width(1.5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        Results.load(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_out_dir(f)
    with pytest.raises(ValueError, match="not a writable directory"):
        check_out_dir(f / "sub")


def test_chunk_store_refuses_mixing(tmp_path):
    cfg = {"algorithm": "gd", "widths": [2, 4], "steps": 10}
    store = ChunkStore(tmp_path / "o", cfg)
    store.write(1, {"seed": np.arange(3)}, {"loss": np.ones((3, 2), np.float32)})
    assert store.done() == {1}
    assert not [e for e in os.listdir(store.chunk_dir) if e.startswith(".tmp-")]
    again = ChunkStore(tmp_path / "o", {"algorithm": "gd", "widths": (2, 4), "steps": 10})
    cols, hist = again.read(1)
    np.testing.assert_array_equal(cols["seed"], np.arange(3))
    assert hist["loss"].dtype == np.float32
    with pytest.raises(ValueError, match=r"another configuration \(differs in steps: saved 10, "
                       r"requested 20\)") as info:
        ChunkStore(tmp_path / "o", {**cfg, "steps": 20})
    assert "\n" not in str(info.value) and "resume='recompute'" in str(info.value)
    with pytest.raises(ValueError, match="resume=True"):
        ChunkStore(tmp_path / "o", cfg, resume=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        ChunkStore(tmp_path / "other", cfg)


# -- verification of saved files ----------------------------------------------------------------

import shutil  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

from jaxtd.results import (ChunkError, ChunkWarning, LockedError, ResultsError,  # noqa: E402
                           atomic_write, config_fingerprint, lock_dir)


def _one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def _flip_byte(path, offset_from_end=200):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,fragments", [
    (lambda d: (d / "config.json").write_text((d / "config.json").read_text()[:50]),
     ["config.json is damaged", "not valid JSON", "save the results again"]),
    (lambda d: (d / "config.json").write_text("{}"), ["config.json does not describe"]),
    (lambda d: (d / "rows.npz").write_bytes((d / "rows.npz").read_bytes()[:100]),
     ["rows.npz does not match the sha256"]),
    (lambda d: (d / "histories.npz").write_bytes(b""), ["histories.npz does not match"]),
    (lambda d: _flip_byte(d / "histories.npz"), ["histories.npz does not match"]),
    (lambda d: (d / "rows.npz").unlink(), ["rows.npz is missing"]),
])
def test_load_refuses_damaged_files_with_one_line(tmp_path, damage, fragments):
    _synthetic().save(tmp_path / "out")
    damage(tmp_path / "out")
    with pytest.raises(ResultsError) as info:
        Results.load(tmp_path / "out")
    _one_line_error(info, *fragments)
    assert isinstance(info.value, ValueError)


def test_load_refuses_a_file_swapped_from_another_result(tmp_path):
    _synthetic().save(tmp_path / "a")
    _synthetic(n_seeds=2).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "rows.npz", tmp_path / "a" / "rows.npz")
    with pytest.raises(ResultsError) as info:
        Results.load(tmp_path / "a")
    _one_line_error(info, "rows.npz", "from another result")


def test_config_json_records_every_file_checksum(tmp_path):
    import hashlib
    _synthetic().save(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "config.json").read_text())
    assert meta["format"] == "jaxtd.results/3"
    for name in ("rows.npz", "histories.npz", "results.csv", "results.json"):
        assert meta["sha256"][name] == hashlib.sha256((tmp_path / "o" / name).read_bytes()).hexdigest()


def test_results_saved_before_checksums_still_load(tmp_path):
    res = _synthetic()
    res.save(tmp_path / "o")
    path = tmp_path / "o" / "config.json"
    meta = json.loads(path.read_text())
    meta["format"] = "jaxtd.results/1"
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    pd.testing.assert_frame_equal(Results.load(tmp_path / "o").rows, res.rows)


_CFG = {"algorithm": "gd", "seeds": [0, 1, 2, 3, 4, 5], "chunk_size": 2, "steps": 10}


def _chunk(seeds):
    seeds = np.asarray(seeds)
    return {"seed": seeds, "final_loss": seeds * 0.5}, {"loss": np.outer(seeds, np.ones(3))}


def _store_with_chunks(path, config=_CFG, indices=(0, 1, 2)):
    store = ChunkStore(path, config)
    for i in indices:
        store.write(i, *_chunk(config["seeds"][2 * i:2 * i + 2]))
    return store


@pytest.mark.parametrize("damage,fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[:-300]), "is damaged"),
    (lambda p: p.write_bytes(b""), "is damaged"),
    (lambda p: p.write_bytes(b"not a zip file at all"), "is damaged"),
    (_flip_byte, "damaged"),
])
def test_damaged_chunk_is_refused_by_read_and_set_aside_by_done(tmp_path, damage, fragment):
    store = _store_with_chunks(tmp_path / "o")
    damage(tmp_path / "o" / "chunks" / "chunk_00001.npz")
    with pytest.raises(ChunkError) as info:
        store.read(1)
    _one_line_error(info, "chunk_00001.npz", fragment)
    with pytest.warns(ChunkWarning, match="chunk_00001.npz.*it will be recomputed"):
        assert store.done() == {0, 2}
    assert os.path.isfile(tmp_path / "o" / "rejected" / "chunk_00001.npz")
    assert [name for name, _ in store.rejected] == ["chunk_00001.npz"]
    # recomputed chunk is accepted again
    store.write(1, *_chunk([2, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.done() == {0, 1, 2}
    np.testing.assert_array_equal(store.read(1)[0]["seed"], [2, 3])


def test_foreign_chunks_are_refused(tmp_path):
    """A chunk of another sweep (another configuration) or at another index never passes."""
    other_cfg = {**_CFG, "seeds": [6, 7, 8, 9, 10, 11]}
    _store_with_chunks(tmp_path / "other", other_cfg).close()
    store = _store_with_chunks(tmp_path / "o", indices=(0,))
    chunks = tmp_path / "o" / "chunks"
    shutil.copy(tmp_path / "other" / "chunks" / "chunk_00001.npz", chunks / "chunk_00001.npz")
    shutil.copy(chunks / "chunk_00000.npz", chunks / "chunk_00002.npz")
    with pytest.raises(ChunkError) as info:
        store.read(1)
    _one_line_error(info, "belongs to another sweep", config_fingerprint(_CFG)[:12])
    with pytest.raises(ChunkError) as info:
        store.read(2)
    _one_line_error(info, "holds chunk 0, not chunk 2")
    with pytest.warns(ChunkWarning) as record:
        assert store.done() == {0}
    assert len(record) == 2 and sorted(n for n, _ in store.rejected) == ["chunk_00001.npz",
                                                                          "chunk_00002.npz"]


def test_chunk_with_other_seeds_is_refused(tmp_path):
    """Same fingerprint but the meta names other seeds (a hand-edited or buggy writer)."""
    store = _store_with_chunks(tmp_path / "o", indices=())
    with pytest.raises(ValueError, match=r"chunk 1 must hold seeds \[2, 3\]"):
        store.write(1, *_chunk([4, 5]))
    loose = ChunkStore(tmp_path / "loose", {"algorithm": "gd"})  # no seeds in the config
    loose.write(3, *_chunk([9, 8]))
    assert loose.done() == {3}


def test_chunk_from_older_jaxtd_without_meta_is_refused(tmp_path):
    store = _store_with_chunks(tmp_path / "o", indices=())
    np.savez(tmp_path / "o" / "chunks" / "chunk_00000.npz", **{"row/seed": np.arange(2)})
    with pytest.raises(ChunkError, match="records no sweep fingerprint"):
        store.read(0)
    with pytest.warns(ChunkWarning):
        assert store.done() == set()


def test_damaged_sweep_json_is_one_clear_error(tmp_path):
    _store_with_chunks(tmp_path / "o").close()
    manifest = tmp_path / "o" / "sweep.json"
    manifest.write_text(manifest.read_text()[:20])
    with pytest.raises(ResultsError) as info:
        ChunkStore(tmp_path / "o", _CFG)
    _one_line_error(info, "sweep.json is damaged", "choose a new out_dir")
    manifest.write_text("[1, 2]")
    with pytest.raises(ResultsError, match="no 'config' object"):
        ChunkStore(tmp_path / "o", _CFG)


def test_stray_temporaries_are_removed_when_a_store_opens(tmp_path):
    _store_with_chunks(tmp_path / "o").close()
    (tmp_path / "o" / ".tmp-abcrows.npz").write_bytes(b"half")
    (tmp_path / "o" / "chunks" / ".tmp-xyzchunk_00003.npz").write_bytes(b"half")
    store = ChunkStore(tmp_path / "o", _CFG)
    assert not [p for p in (tmp_path / "o").rglob(".tmp-*")]
    assert store.done() == {0, 1, 2}


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _synthetic().save(tmp_path / "o")
        _store_with_chunks(tmp_path / "s", indices=(0,)).close()
        with atomic_write(str(tmp_path / "plain.txt"), "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    files = [tmp_path / "plain.txt", tmp_path / "s" / "sweep.json",
             tmp_path / "s" / "chunks" / "chunk_00000.npz"]
    files += [tmp_path / "o" / n for n in ("config.json", "rows.npz", "histories.npz",
                                           "results.csv", "results.json")]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == mode, f


_HOLD_LOCK = """
import sys, time
from jaxtd.results import lock_dir
with lock_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(120)
def test_second_process_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info:
            ChunkStore(out, _CFG)
        _one_line_error(info, f"being written by process {proc.pid}", "choose another out_dir")
        assert info.value.pid == proc.pid
        with pytest.raises(LockedError, match=str(proc.pid)):
            _synthetic().save(out)
        with pytest.raises(LockedError):
            with lock_dir(out):
                pass
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # the OS dropped the lock with the process: the folder is usable again
    store = ChunkStore(out, _CFG)
    store.write(0, *_chunk([0, 1]))
    assert store.done() == {0}
    assert (out / ".lock").read_text().strip() == str(os.getpid())
    store.close()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    out = tmp_path / "o"
    with ChunkStore(out, _CFG) as a:
        b = ChunkStore(out, _CFG)  # same process: allowed (one writer)
        with lock_dir(out):
            _synthetic().save(out)
        b.close()
        a.write(0, *_chunk([0, 1]))
    from jaxtd import store
    assert not [k for k in store._HELD if k[1].startswith(str(tmp_path))]
    assert not (out / ".lock").exists()  # removed by its last holder


def test_foreign_folder_gets_no_lock_file(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ResultsError, match="not empty and holds no jaxtd sweep"):
        ChunkStore(tmp_path / "busy", _CFG)
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]


def test_one_critical_width_on_a_non_monotone_table():
    """A lucky small width below a failing one: Results.critical_width, the statistics'
    stats.critical_widths and stats.seed_critical_widths all give the first width after the last
    failure."""
    from jaxtd import stats
    from jaxtd.results import critical_width_of
    ok_by_width = {2: True, 3: False, 4: True, 6: True}
    rows = [{"algorithm": "gd", "order": 3, "dim": 8, "rank": 2, "seed": s, "width": m,
             "padded_width": 6, "final_relative_error": np.float32(1e-4 if ok else 0.5),
             "success": ok, "diverged": False}
            for s in range(3) for m, ok in ok_by_width.items()]
    res = Results(pd.DataFrame(rows), {}, config={}, info={}, key_columns=("algorithm",))
    assert res.critical_width(by=()) == 4
    assert res.critical_width()["critical_width"].tolist() == [4]
    curves = stats.curves(res.to_pandas(), 1e-2)
    assert stats.critical_widths(curves)["critical_width"].tolist() == [4.0]
    assert stats.seed_critical_widths(res.to_pandas(), 1e-2)["critical_width"].tolist() == [4.0] * 3
    assert np.isnan(critical_width_of([2, 3], [True, False]))
    assert critical_width_of([2, 3], [True, True]) == 2.0
