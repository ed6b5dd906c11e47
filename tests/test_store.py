"""jaxtd.store: one resume mechanism whose identity covers everything that determines the
numbers, and checksums that are checked (property-based with hypothesis, plus one regression
test per reported case).

Every sweep here is the same tiny grid (d=3, r=1, widths [2], 2 seeds, 4 steps), so the process
compiles its program once; refusals happen before anything is compiled."""

import functools
import json
import shutil
import warnings

import jax
import numpy as np
import optax
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxtd
from jaxtd import algorithms, store, targets
from jaxtd.results import Results
from jaxtd.store import (ChunkStore, ChunkWarning, IdentityError, ResultsError,
                         algorithm_identity, unidentified)

BASE = dict(seeds=2, widths=[2], steps=4, record_every=2, chunk_size=1, progress=False)
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _target(seed=0):
    return targets.orthonormal(jax.random.key(seed), 3, 1, 3)


def _sweep(algorithm=None, target=None, **kwargs):
    algorithm = algorithms.gd(0.1) if algorithm is None else algorithm
    return jaxtd.sweep(algorithm, _target() if target is None else target, **{**BASE, **kwargs})


def _same(a: Results, b: Results):
    pd.testing.assert_frame_equal(a.rows, b.rows, check_exact=True)
    assert sorted(a.histories) == sorted(b.histories)
    for k in a.histories:
        np.testing.assert_array_equal(a.histories[k], b.histories[k], err_msg=k)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The reference sweep saved in a folder (2 chunks), and the same sweep without files."""
    folder = tmp_path_factory.mktemp("store") / "ref"
    res = _sweep(out_dir=str(folder))
    return folder, res


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Another sweep's folder (other seeds, same program: nothing compiled again), a source of
    foreign files: its chunks and final files have the same names and shapes as ours."""
    folder = tmp_path_factory.mktemp("store") / "foreign"
    _sweep(seeds=[2, 3], out_dir=str(folder))
    return folder


def _copy(saved_folder, tmp_path, name):
    dest = tmp_path / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(saved_folder, dest)
    return dest


# -- identity ------------------------------------------------------------------------------------

# each entry: a change of one identity argument of the reference sweep -> sweep keyword arguments
_CHANGES = {
    "learning rate": lambda v: dict(algorithm=algorithms.gd(0.1 + 0.05 * (v % 5 + 1))),
    "optimizer": lambda v: dict(algorithm=algorithms.gd(
        [optax.adam, optax.sgd, optax.rmsprop][v % 3], learning_rate=0.1)),
    "optimizer arguments": lambda v: dict(algorithm=algorithms.gd(
        functools.partial(optax.sgd, momentum=0.1 * (v % 9)), learning_rate=0.1)),
    "init": lambda v: dict(algorithm=algorithms.gd(0.1, init="antisymmetric")),
    "init_scale": lambda v: dict(algorithm=algorithms.gd(0.1, init_scale=0.02 + 0.01 * (v % 4))),
    "model": lambda v: dict(algorithm=algorithms.gd(0.1, model="two_homogeneous")),
    "regularization": lambda v: dict(algorithm=algorithms.gd(0.1, regularization=1e-3 * (v % 3 + 1))),
    "name": lambda v: dict(algorithm=algorithms.gd(0.1, name=f"gd{v % 3}")),
    "target values": lambda v: dict(target=_target(1 + v % 4)),
    "widths": lambda v: dict(widths=[[1], [3], [1, 2], [2, 3]][v % 4]),
    "seeds": lambda v: dict(seeds=[3, [1, 2], [0, 2], [1, 0]][v % 4]),
    "chunks": lambda v: dict(chunk_size=2),
    "steps": lambda v: dict(steps=[2, 6, 8][v % 3], record_every=2),
    "record_every": lambda v: dict(record_every=[1, 4][v % 2]),
    "base_key": lambda v: dict(base_key=1 + v % 3),
    "swept hparams": lambda v: dict(hparams={"learning_rate": [0.1, 0.2][:1 + v % 2]}),
    "success_threshold": lambda v: dict(success_threshold=0.5),
    "bucketing": lambda v: dict(bucketing=["exact", "single", "pow2"][v % 3]),
    "metadata": lambda v: dict(metadata={"tag": v % 3}),
}


@pytest.mark.timeout(300)
@SETTINGS
@given(change=st.sampled_from(sorted(_CHANGES)), value=st.integers(0, 100))
def test_any_change_of_identity_is_refused_never_reused(saved, tmp_path, change, value):
    """A folder holding the reference sweep is never reused for a sweep that differs in any one
    identity argument: one line naming the differing field, nothing in the folder touched."""
    folder = _copy(saved[0], tmp_path, "run")
    before = _snapshot(folder)
    kwargs = _CHANGES[change](value)
    with jax.numpy_dtype_promotion("standard"), pytest.raises(IdentityError) as info:
        _sweep(out_dir=str(folder), **kwargs)
    message = str(info.value)
    assert "\n" not in message and "differs in" in message and "resume='recompute'" in message
    assert _snapshot(folder) == before
    assert not (folder / ".lock").exists()


def test_unchanged_identity_is_reused_without_computing(saved, tmp_path):
    folder = _copy(saved[0], tmp_path, "run")
    again = _sweep(out_dir=str(folder))
    assert again.info["chunks_resumed"] == 2 and again.info["n_compiles"] == 0
    _same(again, saved[1])
    assert not (folder / ".lock").exists()


def test_x64_is_part_of_the_identity(saved, tmp_path, x64):
    folder = _copy(saved[0], tmp_path, "run")
    with pytest.raises(IdentityError, match="dtype: saved 'float32', requested 'float64'") as info:
        _sweep(out_dir=str(folder))
    assert "x64: saved false, requested true" in str(info.value)


def test_identity_is_stable_text():
    ident = algorithm_identity(algorithms.gd(optax.adam, learning_rate=0.1))
    assert ident["constructor"] == "jaxtd.algorithms._gd.gd"
    assert ident["arguments"]["optimizer"] == {"callable": "optax.adam"}
    assert json.loads(json.dumps(ident)) == ident and unidentified(ident) is None
    partial = algorithm_identity(algorithms.gd(functools.partial(optax.sgd, momentum=0.5),
                                               learning_rate=0.1))
    assert partial["arguments"]["optimizer"] == {
        "partial": {"callable": "optax.sgd"}, "args": [], "keywords": {"momentum": 0.5}}
    # equal arguments, equal identity, across calls
    assert algorithm_identity(algorithms.gd(0.1)) == algorithm_identity(algorithms.gd(0.1))


@pytest.mark.parametrize("build,fragment", [
    (lambda: algorithms.gd(optax.adam(0.1)), "optax GradientTransformation object"),
    (lambda: algorithms.gd(lambda learning_rate: optax.sgd(learning_rate), learning_rate=0.1),
     "lambda"),
    (lambda: algorithms.gd(0.1)._replace(static_key=None), "without @jaxtd.algorithms.base"),
])
def test_unidentifiable_algorithm_is_never_reused(tmp_path, monkeypatch, build, fragment):
    """An algorithm whose identity cannot be written down: a folder it started is refused on
    resume (one line saying why), and recomputed only when asked (resume='recompute')."""
    from jaxtd import _sweep as sweep_module  # on purpose: its _execute is stubbed
    algorithm = build()
    assert fragment in unidentified(algorithm_identity(algorithm))

    def interrupted(*args, **kwargs):  # the store is open and sweep.json written: stop there
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "_execute", interrupted)
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _sweep(algorithm, out_dir=str(folder))
    assert (folder / "sweep.json").is_file()
    with pytest.raises(IdentityError) as info:
        _sweep(algorithm, out_dir=str(folder))
    assert "cannot be identified" in str(info.value) and fragment in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(KeyboardInterrupt):  # "recompute" is let through (and starts afresh)
        _sweep(algorithm, out_dir=str(folder), resume="recompute")


@pytest.mark.timeout(300)
def test_gd_then_adam_in_the_same_folder_is_refused_or_recomputed(tmp_path):
    """The reported case: gd(0.1) then gd(optax.adam, learning_rate=0.1) with the same out_dir
    used to return the first sweep's rows labelled as Adam."""
    folder = str(tmp_path / "x")
    a = _sweep(algorithms.gd(0.1), out_dir=folder)
    adam = algorithms.gd(optax.adam, learning_rate=0.1)
    with jax.numpy_dtype_promotion("standard"):
        with pytest.raises(IdentityError, match="algorithm.arguments.optimizer: saved 0.1, "
                           'requested {"callable": "optax.adam"}'):
            _sweep(adam, out_dir=folder)
        b = _sweep(adam, out_dir=folder, resume="recompute")
        alone = _sweep(adam)
    _same(b, alone)
    assert not np.array_equal(a.rows["final_loss"], b.rows["final_loss"])
    _same(Results.load(folder), alone)
    assert Results.load(folder).config["algorithm"]["arguments"]["optimizer"] == {
        "callable": "optax.adam"}
    with pytest.raises(ResultsError, match="resume=True"):
        _sweep(adam, out_dir=folder, resume=False)
    with pytest.raises(ValueError, match="resume must be"):
        _sweep(adam, out_dir=folder, resume="again")


# -- damage --------------------------------------------------------------------------------------

def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.timeout(600)
@SETTINGS
@given(data=st.data())
def test_damage_never_gives_a_silently_different_table(saved, foreign, tmp_path, data):
    """Random truncation, bit flips, swapped chunks, deleted files and files copied in from
    another sweep: loading and resuming either refuse (ResultsError, one line naming a file) or
    give exactly the reference table, never another one."""
    folder = _copy(saved[0], tmp_path, "run")
    files = _files(folder)
    kind = data.draw(st.sampled_from(["truncate", "flip", "swap", "foreign", "delete"]))
    name = data.draw(st.sampled_from(files))
    path = folder / name
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)))])
    elif kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        path.write_bytes(raw[:i] + bytes([raw[i] ^ (1 << data.draw(st.integers(0, 7)))])
                         + raw[i + 1:])
    elif kind == "swap":
        a, b = folder / "chunks" / "chunk_00000.npz", folder / "chunks" / "chunk_00001.npz"
        ra, rb = a.read_bytes(), b.read_bytes()
        a.write_bytes(rb)
        b.write_bytes(ra)
    elif kind == "foreign":
        if (foreign / name).is_file():
            shutil.copy(foreign / name, path)
    else:
        path.unlink()
    ref = saved[1]
    try:
        loaded = Results.load(folder)
    except (ResultsError, FileNotFoundError) as err:
        assert "\n" not in str(err)
    else:
        _same(loaded, ref)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChunkWarning)
            resumed = _sweep(out_dir=str(folder))
    except ResultsError as err:
        assert "\n" not in str(err)
    else:
        _same(resumed, ref)
        _same(Results.load(folder), ref)
    assert not (folder / ".lock").exists()


def test_swapped_chunks_are_recomputed_not_reordered(saved, tmp_path):
    folder = _copy(saved[0], tmp_path, "run")
    a, b = folder / "chunks" / "chunk_00000.npz", folder / "chunks" / "chunk_00001.npz"
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    (folder / "config.json").unlink()  # as if the final save never happened
    with pytest.warns(ChunkWarning, match="holds chunk"):
        resumed = _sweep(out_dir=str(folder))
    assert resumed.info["chunks_resumed"] == 0
    _same(resumed, saved[1])


@pytest.mark.parametrize("name", ["results.csv", "results.json", "rows.npz", "histories.npz",
                                  "config.json"])
def test_edited_saved_file_is_refused_by_load_and_resume(saved, tmp_path, name):
    """An edited number in any saved file: Results.load and a resume refuse, naming it."""
    folder = _copy(saved[0], tmp_path, "run")
    path = folder / name
    if name.endswith(".npz"):
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 1
        path.write_bytes(bytes(raw))
    elif name == "config.json":
        meta = json.loads(path.read_text())
        meta["config"]["steps"] = 400  # relabel the saved numbers
        path.write_text(json.dumps(meta))
    else:
        text = path.read_text()
        digit = next(i for i, c in enumerate(text) if c.isdigit() and i > 100)
        path.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
    with pytest.raises(ResultsError) as info:
        Results.load(folder)
    assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ResultsError) as info:
        _sweep(out_dir=str(folder))
    assert name in str(info.value) and "\n" not in str(info.value)


def test_final_files_of_another_sweep_are_refused(saved, foreign, tmp_path):
    """A complete set of final files copied in from another sweep matches its own checksums,
    but not the folder's sweep.json: refused by load and resume."""
    folder = _copy(saved[0], tmp_path, "run")
    for name in ("config.json",) + store.SAVED_FILES:
        shutil.copy(foreign / name, folder / name)
    with pytest.raises(ResultsError, match="another sweep"):
        Results.load(folder)
    with pytest.raises(ResultsError, match="another sweep"):
        _sweep(out_dir=str(folder))


def test_stray_temporaries_of_a_killed_final_save_are_removed(saved, tmp_path):
    folder = _copy(saved[0], tmp_path, "run")
    (folder / ".tmp-abcrows.npz").write_bytes(b"half")
    (folder / "config.json").unlink()  # killed during the final save: not finished
    _sweep(out_dir=str(folder))
    assert not list(folder.rglob(".tmp-*")) and (folder / "config.json").is_file()
    out = tmp_path / "plain"
    saved[1].save(out)
    (out / ".tmp-xyzresults.csv").write_text("half")
    saved[1].save(out)
    assert not list(out.rglob(".tmp-*")) and not (out / ".lock").exists()


def test_a_save_marks_the_folder_unfinished_until_it_completes(saved, tmp_path, monkeypatch):
    """A save killed half-way leaves no config.json (so no stale checksums beside new files)."""
    out = tmp_path / "o"
    saved[1].save(out)

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Results, "to_csv", broken)
    with pytest.raises(KeyboardInterrupt):
        saved[1].save(out)
    assert not (out / "config.json").exists()
    with pytest.raises(FileNotFoundError):
        Results.load(out)


def test_store_refuses_unidentified_config_at_store_level(tmp_path):
    config = {"algorithm": {"unidentified": "an opaque object"}, "steps": 4}
    ChunkStore(tmp_path / "o", config).close()
    with pytest.raises(IdentityError, match="cannot be identified \\(an opaque object\\)"):
        ChunkStore(tmp_path / "o", config)
    with ChunkStore(tmp_path / "o", config, resume="recompute") as s:
        assert s.recomputed and s.done() == set()
