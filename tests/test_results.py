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
    with pytest.raises(ValueError, match=r"different configuration:\n  steps: saved 10"):
        ChunkStore(tmp_path / "o", {**cfg, "steps": 20})
    with pytest.raises(ValueError, match="resume=True"):
        ChunkStore(tmp_path / "o", cfg, resume=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        ChunkStore(tmp_path / "other", cfg)
