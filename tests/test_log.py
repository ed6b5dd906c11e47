"""jaxtd.log: callbacks of run and sweep, the JSONL/CSV/TensorBoard writers and the [log] table.

Oracles: the history that run/sweep return (records must equal it value for value), JAX's own
compilation events (a callback adds none), files read back with json/pandas and TensorBoard event
files decoded with their protobuf (not with the writer's code).
"""

import json
import struct
import sys

import jax
import numpy as np
import pandas as pd
import pytest

import jaxtd
from jaxtd import experiment, log
from jaxtd import config as cfg
from jaxtd.results import ChunkStore
from jaxtd import sweep

SMALL = """
name = "small"
[target]
order = 3
dim = 4
rank = 2

[sweep]
algorithms = ["gd"]
widths = [2, 3]
seeds = 2
steps = 20
success_threshold = 1e-2
record_every = 10
bucketing = "single"
chunk_size = 1

[gd]
learning_rate = [0.1, 0.2]
init_scale = 0.3
"""

STEPS, RECORD = 20, 10
GRID = dict(seeds=2, widths=[2, 3], steps=STEPS, record_every=RECORD, bucketing="single",
            chunk_size=1, hparams={"learning_rate": [0.1, 0.2]})


# The sweeps below use the algorithm and target of SMALL's gd, so the experiment test reuses
# their compiled grid program (one compilation for the file's sweeps).
def _target():
    return experiment.make_target(cfg.loads(SMALL).target, 3, 4, 2)


def _gd():
    return experiment.make_algorithm(cfg.loads(SMALL), "gd")


def _expected_records(history, ids=None):
    """Records built here from a history, independently of jaxtd.log: per cell, per step."""
    hist = {k: np.asarray(v) for k, v in history.items()}
    single = ids is None
    if single:
        hist = {k: v[None] for k, v in hist.items()}
        ids = {}
    out = []
    for c in range(hist["step"].shape[0]):
        for t in range(hist["step"].shape[1]):
            rec = {k: v[c] for k, v in ids.items()}
            rec["step"] = int(hist["step"][c, t])
            for name, v in hist.items():
                if name == "step":
                    continue
                if v.ndim == 2:
                    rec[name] = float(v[c, t]) if v.dtype.kind == "f" else int(v[c, t])
                else:
                    for j in range(v.shape[2]):
                        rec[f"{name}_{j}"] = float(v[c, t, j])
            out.append(rec)
    return out


# -- run ---------------------------------------------------------------------------------------

def test_run_callback_records_equal_history_and_compile_nothing(backend_compiles):
    kwargs = dict(width=3, steps=STEPS, record_every=RECORD)
    plain = jaxtd.run(_gd(), jax.random.key(1), _target(), **kwargs)
    batches = []
    with backend_compiles() as compiles:
        logged = jaxtd.run(_gd(), jax.random.key(1), _target(), callback=batches.append,
                           **kwargs)
    assert compiles == []  # the same compiled program: logging happens on the host, after it
    assert len(batches) == 1
    (records,) = batches
    assert records == _expected_records(logged.history)
    assert [r["step"] for r in records] == [0, 10, 20]
    assert list(records[0])[0] == "step"  # no identifying columns for one run
    assert records[-1]["relative_error"] == float(logged.final_relative_error)
    np.testing.assert_array_equal(logged.history["loss"], plain.history["loss"])


def test_run_callback_bad_or_traced(backend_compiles):
    with backend_compiles() as compiles:
        with pytest.raises(TypeError, match="callback must be a callable"):
            jaxtd.run(_gd(), jax.random.key(1), _target(), width=3, steps=STEPS,
                      record_every=RECORD, callback="history.jsonl")
    assert compiles == []  # refused before anything compiles

    def final(lr):
        return jaxtd.run(_gd(), jax.random.key(1), _target(), width=3, steps=STEPS,
                         record_every=RECORD, hparams={"learning_rate": lr},
                         callback=print).final_loss

    with pytest.raises(TypeError, match="traced"):
        jax.eval_shape(final, 0.1)


# -- sweep -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged_sweep():
    batches = []
    res = sweep(_gd(), _target(), callback=batches.append, **GRID)
    return res, batches


def _sweep_expected(res):
    rows = res.rows
    ids = {"algorithm": np.full(len(rows), _gd().name, object),
           "seed": rows["seed"].to_numpy(), "width": rows["width"].to_numpy(),
           "learning_rate": rows["learning_rate"].to_numpy()}
    expected = _expected_records(res.histories, ids)
    for r in expected:  # the ids as Python scalars
        r.update(seed=int(r["seed"]), width=int(r["width"]),
                 learning_rate=float(r["learning_rate"]))
    return expected


def test_sweep_callback_one_call_per_chunk_records_equal_histories(logged_sweep):
    res, batches = logged_sweep
    assert len(batches) == 2  # two seed chunks
    cells_per_chunk = len(GRID["widths"]) * 2
    assert [len(b) for b in batches] == [cells_per_chunk * 3] * 2  # 3 records per cell
    records = [r for b in batches for r in b]
    assert records == _sweep_expected(res)
    assert list(records[0])[:5] == ["algorithm", "seed", "width", "learning_rate", "step"]
    assert {r["seed"] for r in batches[0]} == {0} and {r["seed"] for r in batches[1]} == {1}


def test_sweep_callback_adds_no_compilation(logged_sweep, backend_compiles):
    res, _ = logged_sweep
    again = []
    with backend_compiles() as compiles:
        second = sweep(_gd(), _target(), callback=again.append, **GRID)
    assert compiles == [] and second.info["n_compiles"] == 0
    assert [r for b in again for r in b] == _sweep_expected(second)


def test_sweep_metadata_names_the_algorithm():
    batches = []
    sweep(_gd(), _target(), callback=batches.append,
          metadata={"algorithm": "mine", "dim": 4}, **GRID)
    first = batches[0][0]
    assert list(first)[:4] == ["algorithm", "dim", "seed", "width"]
    assert first["algorithm"] == "mine" and first["dim"] == 4
    with pytest.raises(TypeError, match="callback must be a callable"):
        sweep(_gd(), _target(), callback=object(), **GRID)


def _interrupt_after_chunk(index):
    def on_event(kind, **info):
        if kind == "chunk_done" and info["chunk"] == index:
            raise KeyboardInterrupt
    return on_event


def test_resume_does_not_log_chunks_read_back(logged_sweep, tmp_path):
    """Interrupted after chunk 0 was saved: the resumed sweep reads chunk 0 back (no records)
    and logs chunk 1 once; the file ends up with every record exactly once."""
    res, _ = logged_sweep
    path, out = tmp_path / "h.jsonl", tmp_path / "sweep"
    with log.jsonl_writer(path) as writer:
        with pytest.raises(KeyboardInterrupt):
            sweep(_gd(), _target(), out_dir=out, callback=writer,
                  on_event=_interrupt_after_chunk(0), **GRID)
    with log.jsonl_writer(path, append=True) as writer:
        resumed = sweep(_gd(), _target(), out_dir=out, callback=writer, **GRID)
    assert resumed.info["chunks_resumed"] == 1
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == _sweep_expected(res)


def test_kill_between_log_and_save_logs_the_chunk_again(logged_sweep, tmp_path, monkeypatch):
    """The documented window: records are passed before the chunk is saved, so a chunk whose
    save was interrupted is logged again when recomputed (never missing); dropping duplicates
    of (cell, step) gives every record once."""
    res, _ = logged_sweep
    path, out = tmp_path / "h.csv", tmp_path / "sweep"
    write = ChunkStore.write

    def interrupted(self, index, *args):
        if index == 1:
            raise KeyboardInterrupt
        return write(self, index, *args)

    monkeypatch.setattr(ChunkStore, "write", interrupted)
    with log.csv_writer(path) as writer, pytest.raises(KeyboardInterrupt):
        sweep(_gd(), _target(), out_dir=out, callback=writer, **GRID)
    monkeypatch.setattr(ChunkStore, "write", write)
    with log.csv_writer(path, append=True) as writer:
        sweep(_gd(), _target(), out_dir=out, callback=writer, **GRID)
    table = pd.read_csv(path)
    expected = pd.DataFrame(_sweep_expected(res))
    assert len(table) == len(expected) + len(expected) // 2  # chunk 1 twice
    keys = ["seed", "width", "learning_rate", "step"]
    deduped = table.drop_duplicates(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(deduped, expected, check_dtype=False)


# -- writers -----------------------------------------------------------------------------------

RECORDS = [{"seed": 0, "step": 0, "loss": 1.5, "ok": True},
           {"seed": 0, "step": 10, "loss": float("nan"), "ok": False}]


def test_jsonl_writer_appends_whole_calls(tmp_path):
    path = tmp_path / "deep" / "h.jsonl"  # folders are created
    with log.jsonl_writer(path) as w:
        w(RECORDS)
        w([])  # nothing to write
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        RECORDS[0], {**RECORDS[1], "loss": None}]  # NaN is not JSON: null
    with pytest.raises(ValueError, match="closed"):
        w(RECORDS)
    # a killed writer's partial last line is dropped when the file is continued
    with open(path, "a") as f:
        f.write('{"seed": 0, "st')
    with log.jsonl_writer(path, append=True) as w:
        w(RECORDS[:1])
    assert len([json.loads(x) for x in path.read_text().splitlines()]) == 3
    with log.jsonl_writer(path) as w:  # append=False starts anew
        w(RECORDS[:1])
    assert len(path.read_text().splitlines()) == 1
    with pytest.raises(IsADirectoryError, match="folder"):
        log.jsonl_writer(tmp_path)


def test_csv_writer_one_header_checked_on_every_call(tmp_path):
    path = tmp_path / "h.csv"
    with log.csv_writer(path) as w:
        w(RECORDS)
        w([{"loss": 2.0, "ok": True, "seed": 1, "step": 0}])  # same keys, other order
        with pytest.raises(ValueError, match=r"extra \['lr'\], missing \['ok'\]"):
            w([{"seed": 1, "step": 10, "loss": 2.0, "ok": True},
               {"seed": 1, "step": 10, "loss": 2.0, "lr": 0.1}])
    table = pd.read_csv(path)
    assert list(table.columns) == ["seed", "step", "loss", "ok"] and len(table) == 3
    assert table["loss"].iloc[0] == 1.5 and np.isnan(table["loss"].iloc[1])
    with log.csv_writer(path, append=True) as w:  # the existing header is kept and checked
        w([{"seed": 2, "step": 0, "loss": 3.0, "ok": False}])
        with pytest.raises(ValueError, match="differ from the file's header"):
            w([{"seed": 2, "step": 0}])
    assert pd.read_csv(path)["seed"].tolist() == [0, 0, 1, 2]


def test_tensorboard_missing_dependency_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now fails
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        log.tensorboard_writer(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()
    with pytest.raises(cfg.ConfigError, match=r"\[log\] tensorboard: needs .*tensorboardX"):
        cfg.loads(SMALL + "\n[log]\ntensorboard = true\n")


def _read_events(folder):
    """``{tag: [(step, value)]}`` of the TensorBoard event files in ``folder``, decoded from the
    TFRecord framing (length, crc, payload, crc) with the Event protobuf."""
    from tensorboardX.proto.event_pb2 import Event
    out = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


@pytest.mark.skipif(not __import__("importlib").util.find_spec("tensorboardX"),
                    reason="tensorboardX not installed (pip install tensorboardX); the "
                           "missing-dependency error is tested above")
def test_tensorboard_writer_one_run_per_cell(logged_sweep, tmp_path):
    res, batches = logged_sweep
    with log.tensorboard_writer(tmp_path) as w:
        for b in batches:
            w(b)
    records = [r for b in batches for r in b]
    cell = tmp_path / f"algorithm={_gd().name},seed=1,width=3,learning_rate=0.2"
    events = _read_events(cell)
    mine = [r for r in records if (r["seed"], r["width"], r["learning_rate"]) == (1, 3, 0.2)]
    for tag in ("loss", "relative_error", "fitted_weight_1", "active_count"):
        assert events[tag] == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in mine]
    assert len(list(tmp_path.iterdir())) == 8  # 2 seeds x 2 widths x 2 learning rates
    with log.tensorboard_writer(tmp_path / "one") as w:  # a run's records: logdir itself
        w(log.history_records({"step": np.array([0, 10]), "loss": np.array([2.0, 1.0])}))
    assert _read_events(tmp_path / "one") == {"loss": [(0, 2.0), (10, 1.0)]}


# -- [log] in configs and jaxtd run --------------------------------------------------------------



def test_log_table_validation_and_round_trip():
    assert cfg.loads(SMALL).log == cfg.Log()
    c = cfg.loads(SMALL + "\n[log]\njsonl = true\ncsv = true\n")
    assert c.log == cfg.Log(jsonl=True, csv=True)
    assert cfg.loads(cfg.dumps(c)) == c
    assert "[log]" not in cfg.dumps(cfg.loads(SMALL))  # written only when set
    for text, match in (("jsonl = 1", r"\[log\] jsonl: must be true or false"),
                        ("json = true", r"\[log\] json: unknown key; fix: remove it or use one "
                                        "of jsonl, csv, tensorboard")):
        with pytest.raises(cfg.ConfigError, match=match):
            cfg.loads(SMALL + f"\n[log]\n{text}\n")
    with pytest.raises(cfg.ConfigError, match=r"\[log\]: must be a table"):
        cfg.parse({**cfg._toml(SMALL, "t"), "log": 3})
    with pytest.raises(cfg.ConfigError, match="'log' names the \\[log\\] table"):
        cfg.loads(SMALL.replace('["gd"]', '["gd", "log"]') + '\n[log]\nfactory = "a:b"\n')
    assert cfg.quick(c).log == c.log


def test_experiment_logs_every_cell_once_across_resume(logged_sweep, tmp_path):
    """``jaxtd run``'s [log]: records of the config's table name and problem size, every cell
    once across an interruption; the fixture's sweep compiled the same grid program."""
    config = cfg.loads(SMALL + "\n[log]\njsonl = true\ncsv = true\n")
    out = tmp_path / "run"

    def stop(n):  # after the first chunk (saved and logged)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run(config, out, on_cells=stop)
    outcome = experiment.run(config, out, resume=True)
    (sub,) = experiment.plan(config)
    paths = experiment.log_paths(config, out, sub)
    assert set(paths) == {"jsonl", "csv"}
    assert paths["jsonl"] == out / "log" / "gd-l3-d4-r2.jsonl"
    res = outcome.results
    rows = res.rows
    expected = _expected_records(res.histories, {
        "algorithm": rows["algorithm"].to_numpy(), "order": rows["order"].to_numpy(),
        "dim": rows["dim"].to_numpy(), "rank": rows["rank"].to_numpy(),
        "seed": rows["seed"].to_numpy(), "width": rows["width"].to_numpy(),
        "learning_rate": rows["learning_rate"].to_numpy()})
    expected = pd.DataFrame(expected)
    lines = pd.DataFrame([json.loads(x) for x in paths["jsonl"].read_text().splitlines()])
    pd.testing.assert_frame_equal(lines, expected, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), expected, check_dtype=False)
    assert set(lines["algorithm"]) == {"gd"}  # the config's table name
    before = paths["jsonl"].read_text()
    assert outcome.n_compiles == 0  # the sweeps above compiled its program
    experiment.run(config, out, resume=True)  # everything read back: nothing logged
    assert paths["jsonl"].read_text() == before

