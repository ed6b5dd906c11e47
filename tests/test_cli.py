"""The ``jaxtd`` command (jaxtd/cli.py): help, presets, errors, a tiny end-to-end run, show,
resume and interruption."""

import functools
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from jaxtd import cli, experiment

TINY = """
name = "tiny"
[target]
order = 3
dim = 4
rank = 2
kind = "orthonormal"
weights = "equal"

[sweep]
algorithms = ["lazy", "gd"]
widths = [2, 8]
seeds = 2
steps = 200
success_threshold = 1e-2
record_every = 20
bucketing = "single"

[lazy]
learning_rate = 0.02
init = "standard"

[gd]
init_scale = 0.1
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of the tiny config, shared by the tests that only read its outputs."""
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.toml"
    path.write_text(TINY)
    out = folder / "out"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    return path, out


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["presets", "--help"],
                                  ["show", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert "usage: jaxtd" in capsys.readouterr().out


def test_run_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--preset", "--out", "--resume", "--quick", "CONFIG.toml"):
        assert option in text


def test_presets_lists_one_line_each(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("headline", "lazy-threshold", "beyond-lazy", "width-vs-rank", "deflation"):
        assert sum(line.startswith(name + " ") for line in lines) == 1


def _one_error_line(capsys, argv, key, *, progress_lines=False):
    """Exit status 2 and one error line naming ``key`` (after the progress lines of sub-sweeps
    already started, with ``progress_lines``)."""
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    if progress_lines:
        lines = [line for line in lines if not line.startswith("[jaxtd] ")]
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in lines[0], lines
    assert lines[0].startswith("jaxtd: error: ") and "; fix: " in lines[0]
    return lines[0]


@pytest.mark.parametrize("edit,key", [
    (("widths = [2, 8]", "widths = [0, 8]"), "[sweep] widths"),
    (("order = 3", "order = 1"), "[target] order"),
    (('["lazy", "gd"]', '["lazy", "sgd"]'), "[sweep] algorithms"),
    (("[gd]", "[gd]\nstep = 1"), "[gd] step"),
    (("seeds = 2\n", ""), "[sweep] seeds"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, edit, key):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace(*edit))
    _one_error_line(capsys, ["run", str(path), "--out", str(tmp_path / "o")], key)
    assert not (tmp_path / "o").exists()  # nothing created before the config is valid


def test_bad_command_lines_exit_2(tmp_path, capsys):
    _one_error_line(capsys, ["run", "--preset", "nope"], "--preset")
    _one_error_line(capsys, ["run", str(tmp_path / "missing.toml")], "missing.toml")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    _one_error_line(capsys, ["run", "--quick", "--out", str(busy)], "--resume")
    _one_error_line(capsys, ["show", str(tmp_path)], "DIR")


def test_console_entry_point_exit_status(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("dim = 4", "dim = 1"))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxtd", "run", str(bad)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("jaxtd: error: [target] rank")
    assert "; fix: " in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_writes_the_contracted_outputs(tiny_run):
    _, out = tiny_run
    for name in ("config.toml", "results.csv", "results.json", "histories.npz",
                 "success_vs_width.png"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv")
    for col in ("algorithm", "dim", "order", "rank", "seed", "width", "final_relative_error",
                "success", "diverged", "lazy_best_residual"):
        assert col in df.columns
    assert len(df) == 2 * 2 * 2 and set(df["algorithm"]) == {"lazy", "gd"}
    assert len(pd.read_json(out / "results.json")) == len(df)
    lazy = df[df["algorithm"] == "lazy"]
    assert lazy["lazy_best_residual"].notna().all()
    assert df.loc[df["algorithm"] == "gd", "lazy_best_residual"].isna().all()


def test_lazy_best_residual_is_the_lazy_optimum(tiny_run):
    """Width 8 >= the lazy threshold 5 of d=4, l=3: the tangent space fits T* exactly; width 2
    cannot. Lazy GD starts at the same W0, so it never goes below the exact optimum."""
    df = pd.read_csv(tiny_run[1] / "results.csv")
    lazy = df[df["algorithm"] == "lazy"].set_index(["seed", "width"])
    assert (lazy.xs(8, level="width")["lazy_best_residual"] <= 1e-6).all()
    assert (lazy.xs(2, level="width")["lazy_best_residual"] > 0.1).all()
    assert (lazy["final_relative_error"] >= lazy["lazy_best_residual"] - 1e-4).all()


def test_show_reprints_and_redraws(tiny_run, capsys):
    """`jaxtd show DIR` only reads (nothing in DIR changes); `--out DIR` redraws explicitly."""
    _, out = tiny_run
    png = out / "success_vs_width.png"
    png.unlink()
    def state():  # every file under DIR (the saved sub-sweeps too): name, mtime and bytes
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}

    before = state()
    assert cli.main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "l=3 d=4 r=2" in text and "lazy threshold m = 5" in text and "lazy best" in text
    assert not png.exists()
    assert state() == before
    assert cli.main(["show", str(out), "--out", str(out)]) == 0
    assert png.is_file()


def test_ctrl_c_prints_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run", interrupted)
    out = tmp_path / "out"
    assert cli.main(["run", "--quick", "--out", str(out)]) == 130
    assert f"jaxtd run --out {out} --resume" in capsys.readouterr().err
    assert (out / "config.toml").is_file()  # enough to resume from the folder alone


def test_resume_after_interruption_equals_uninterrupted(tiny_run, tmp_path):
    """A run stopped after its lazy sweep (the gd sweep never started, no final files) resumes
    from the saved chunks and gives the table of an uninterrupted run."""
    path, reference = tiny_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "sweeps" / "gd-l3-d4-r2")
    shutil.rmtree(out / "sweeps" / "lazy-l3-d4-r2" / "chunk-0001", ignore_errors=True)
    for name in ("results.csv", "results.json", "config.json", "rows.npz", "histories.npz"):
        (out / name).unlink()
    assert cli.main(["run", "--out", str(out), "--resume"]) == 0
    got, want = pd.read_csv(out / "results.csv"), pd.read_csv(reference / "results.csv")
    pd.testing.assert_frame_equal(got, want)


def test_resume_with_another_config_is_refused(tiny_run, capsys):
    path, out = tiny_run
    _one_error_line(capsys, ["run", "--quick", "--out", str(out), "--resume"], "different config")


def test_quick_headline_config_is_small():
    config, _ = cli._resolve_config(cli.build_parser().parse_args(["run", "--quick"]))
    assert config.name.startswith("headline")
    s = config.sweep
    assert s.seeds == 2 and s.steps <= 300 and len(s.widths) == 2
    assert np.prod([len(x) for x in (config.target.orders, config.target.dims)]) == 1


# -- the command line's contract ------------------------------------------------------------------

FEATURES = """
name = "features"
[target]
order = 3
dim = 4
rank = 2

[sweep]
algorithms = ["gd", "heavy_ball"]
widths = [2, 4]
seeds = 2
steps = 60
success_threshold = 1e-2
record_every = 20
bucketing = "single"
chunk_size = 1

[gd]
optimizer = "adam"
optimizer_args = {b1 = 0.8}
learning_rate = 0.05
init_scale = [0.1, 0.3]

[heavy_ball]
factory = "tests.example_algorithm:heavy_ball"
learning_rate = [0.05, 0.1]
momentum = 0.5
"""


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    path = folder / "features.toml"
    path.write_text(FEATURES)
    out = folder / "out"
    # optax.adam's bias correction mixes its int32 step count with floats, which the tests'
    # strict dtype promotion refuses; users run under JAX's standard promotion
    import jax
    with jax.numpy_dtype_promotion("standard"):
        assert cli.main(["run", str(path), "--out", str(out), "--no-compile-cache"]) == 0
    return path, out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("jaxtd ")


_REPORT_MODULES = """
import runpy, sys
sys.argv = ["jaxtd", *{argv!r}]
try:
    runpy.run_module("jaxtd", run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
print("\\nexit", code, "heavy", sorted(m for m in ("jax", "jaxlib", "numpy", "pandas")
                                       if m in sys.modules))
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"],
                                  ["params", "--help"], ["show", "--help"], ["presets"]])
def test_fast_commands_do_not_import_jax(argv):
    """``python -m jaxtd --version`` / ``--help`` / ``presets`` never start JAX (nor numpy):
    the package's exports are lazy and the CLI imports heavy modules only to run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    proc = subprocess.run([sys.executable, "-c", _REPORT_MODULES.format(argv=argv)],
                          capture_output=True, text=True, env=env, timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "exit 0 heavy []", (last, proc.stderr[-2000:])
    if argv == ["--version"]:
        assert proc.stdout.startswith("jaxtd 0.")


@pytest.mark.timeout(300)
def test_lazy_package_exports_every_name():
    """``import jaxtd`` alone imports no JAX; every name of ``__all__`` then resolves to the
    same object as its defining module's (functions stay functions, not modules)."""
    code = ("import sys, jaxtd\nassert 'jax' not in sys.modules\n"
            "import jaxtd._run, jaxtd._sweep, jaxtd.losses, jaxtd.symcp\n"
            "for n in jaxtd.__all__: getattr(jaxtd, n)\n"
            "assert jaxtd.sweep is jaxtd._sweep.sweep and jaxtd.run is jaxtd._run.run\n"
            "assert jaxtd.SymCP is jaxtd.symcp.SymCP and jaxtd.targets.__name__ == 'jaxtd.targets'\n"
            "assert set(jaxtd.__all__) <= set(dir(jaxtd))\n"
            "from jaxtd import *\nassert callable(sweep) and callable(loss)\n"
            "import jaxtd as fresh\nassert callable(fresh.lazy.lstsq) and fresh.plots.__name__ "
            "== 'jaxtd.plots'\n"  # submodules the eager package used to import
            "assert not hasattr(fresh, 'nope')\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys, monkeypatch):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "o"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["run", str(path), "--out", str(out), "--dry-run",
                     "--set", "sweep.seeds=3"]) == 0
    text = capsys.readouterr().out
    assert "lazy-l3-d4-r2: 3 seeds x 2 widths" in text and "gd-l3-d4-r2: 3 seeds x 2 widths" in text
    assert "programs to compile" in text and "peak memory" in text and "cells" in text
    # 3 seeds: lazy GD (one chunk shape), its lazy optimum, gd -> 3 programs; 12 rows
    config = experiment.cfg.loads(TINY.replace("seeds = 2", "seeds = 3"))
    assert f"total: {experiment.total_cells(config)} runs" in text
    assert f", {experiment.count_programs(config)} programs to compile" in text
    time_line = next(line for line in text.splitlines() if line.startswith("time: ~"))
    assert "compile ~" in time_line and "compute ~" in time_line and "compile cache cold" in time_line
    assert not out.exists()
    # a non-empty cache folder: warm, and the estimate shrinks; --no-compile-cache: cold
    (tmp_path / "cache" / "jaxtd" / "xla").mkdir(parents=True)
    (tmp_path / "cache" / "jaxtd" / "xla" / "jit_f-0123").write_bytes(b"x")
    assert cli.main(["run", str(path), "--out", str(out), "--dry-run"]) == 0
    warm = capsys.readouterr().out
    assert "compile cache warm (1 entries" in warm
    assert "programs to compile (or to load: a warm cache holds" in warm  # never "compiled" alone
    assert cli.main(["run", str(path), "--out", str(out), "--dry-run", "--no-compile-cache"]) == 0
    cold = capsys.readouterr().out
    assert "compile cache off" in cold and "or to load" not in cold


class _FakeBar:
    disable = False

    def __init__(self):
        self.descriptions, self.last_print_t = [], 0.0

    def set_description(self, text, refresh=True):
        self.descriptions.append(text)

    def _time(self):
        return 123.0


def test_progress_bar_shows_the_compile_phase():
    bar = _FakeBar()
    phase = cli._CompilePhase(bar, 3)
    phase("compile_start", what="width 8")
    phase("compile_end", seconds=2.0)
    phase("phase", what="exact lazy optimum")
    phase("compile_start", what="exact lazy optimum 2x2")
    phase("compile_end", seconds=1.0)
    phase("phase", what=None)
    phase("compile_start", what="width 8")
    phase("compile_start", what="width 16")  # a resumed or re-bucketed run: never k > N
    assert bar.descriptions == ["compiling 1/3 programs", "jaxtd run", "exact lazy optimum",
                                "compiling 2/3 programs", "exact lazy optimum", "jaxtd run",
                                "compiling 3/3 programs", "compiling 4/4 programs"]
    assert bar.last_print_t == 123.0  # the compilation is kept out of the bar's rate


@pytest.mark.timeout(600)
def test_run_announces_each_compilation_and_counts_its_rows(tmp_path, capsys):
    """Without a terminal each compilation is a `[jaxtd] compiling k/N programs` line, N the
    programs the run compiles (counted by JAX); the bar's total is the number of runs."""
    import jax

    import jaxtd
    jaxtd.clear_cache()
    jax.clear_caches()  # the lazy optimum's jit cache too: this run compiles everything
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    config = experiment.cfg.load(path)
    totals = []
    real_bar = cli._progress_bar
    try:
        cli._progress_bar = lambda total: totals.append(total) or real_bar(total)
        assert cli.main(["run", str(path), "--out", str(tmp_path / "o"),
                         "--no-compile-cache"]) == 0
    finally:
        cli._progress_bar = real_bar
    captured = capsys.readouterr()
    n = experiment.count_programs(config)
    lines = [x for x in captured.err.splitlines() if x.startswith("[jaxtd] compiling")]
    assert [x.split(" (")[0] for x in lines] == [f"[jaxtd] compiling {k}/{n} programs"
                                                 for k in range(1, n + 1)]
    import re
    runs = int(re.search(r"tiny: (\d+) runs in", captured.out)[1])
    assert totals == [runs] == [experiment.total_cells(config)]
    compiled = int(re.search(r"compiled (\d+) programs in", captured.out)[1])
    assert compiled == n


def test_set_overrides_and_bad_set(tmp_path, capsys):
    args = cli.build_parser().parse_args(["run", "--quick", "--set", "gd.learning_rate=0.07",
                                          "--set", "sweep.seeds=1"])
    config, _ = cli._resolve_config(args)
    assert config.params["gd"]["learning_rate"] == 0.07 and config.sweep.seeds == 1
    _one_error_line(capsys, ["run", "--quick", "--dry-run", "--set", "gd.learning_rate=-1"],
                    "[gd] learning_rate")
    _one_error_line(capsys, ["run", "--quick", "--dry-run", "--set", "gd.lr"], "--set")


def _resolved(*argv):
    return cli._resolve_config(cli.build_parser().parse_args(["run", *argv]))[0]


def test_set_wins_over_quick_which_wins_over_the_preset():
    """Precedence: preset/file < --quick < --set, whatever the order on the command line."""
    preset = _resolved("--preset", "headline")
    quick = _resolved("--preset", "headline", "--quick")
    assert preset.sweep.seeds > 2 and quick.sweep.seeds == 2  # --quick over the preset
    for argv in (["--quick", "--set", "sweep.seeds=3"], ["--set", "sweep.seeds=3", "--quick"]):
        config = _resolved("--preset", "headline", *argv)
        assert config.sweep.seeds == 3  # was silently 2
        # what --set does not name is still shrunk
        assert config.sweep.steps == quick.sweep.steps
        assert config.sweep.widths == quick.sweep.widths
    config = _resolved("--preset", "headline", "--quick", "--set", "sweep.steps=500",
                       "--set", "sweep.widths=[2, 4, 8]", "--set", "lazy.seeds=2",
                       "--set", "sweep.bucketing=pow2")
    assert config.sweep.steps == 500 and config.sweep.widths == (2, 4, 8)
    assert 500 % config.sweep.record_every == 0  # the cadence follows the kept steps
    assert config.params["lazy"]["seeds"] == 2 and config.sweep.bucketing == "pow2"
    assert config.sweep.seeds == 2
    # --set over the preset without --quick, as before
    assert _resolved("--preset", "headline", "--set", "sweep.seeds=3").sweep.seeds == 3


def test_quick_keeps_a_set_per_order_dim_and_checks_a_kept_cadence(tmp_path, capsys):
    config = _resolved("--preset", "lazy-threshold", "--quick", "--set",
                       "target.dim.3=[4, 6, 8]")
    assert config.target.dims_of(3) == (4, 6, 8)
    # a kept record_every that does not divide the quick steps: one line naming both fixes
    _one_error_line(capsys, ["run", "--preset", "headline", "--quick", "--dry-run", "--set",
                             "sweep.record_every=40"], "[sweep] record_every")


def test_resume_with_nothing_saved_exits_2(tmp_path, capsys):
    _one_error_line(capsys, ["run", "--out", str(tmp_path / "new"), "--resume"], "--resume")
    _one_error_line(capsys, ["run", "--resume"], "--resume")
    assert not (tmp_path / "new").exists()


def test_debug_shows_the_traceback_and_keeps_the_exit_status(tmp_path, capsys, monkeypatch):
    """--debug adds the traceback; the status stays 2 for a user error, 130 for an interrupt
    and 1 only for an internal error (it used to re-raise: exit 1 for everything)."""
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace("order = 3", "order = 1"))
    for argv in (["--debug", "run", str(path), "--dry-run"],
                 ["run", str(path), "--dry-run", "--debug"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "ConfigError" in err
        assert err.strip().splitlines()[-1].startswith("jaxtd: error: [target] order")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in jaxtd")

    monkeypatch.setattr(experiment, "run", bug)
    assert cli.main(["--debug", "run", "--quick", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (ZeroDivisionError" in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run", interrupted)
    assert cli.main(["--debug", "run", "--quick", "--out", str(tmp_path / "o2")]) == 130


@pytest.mark.parametrize("error", [
    "locked", "damaged sweep.json", "foreign folder"])
def test_results_folder_errors_exit_2_not_internal(tmp_path, capsys, monkeypatch, error):
    """A folder locked by another run, a damaged sweep.json or a foreign folder is the user's
    situation, not a bug: exit 2 with one line naming the folder or file and the fix."""
    from jaxtd import results
    made = {"locked": results.LockedError(f"{str(tmp_path)!r} is being written by process 4242 "
                                          f"(lock {tmp_path}/.lock); wait for it to finish or "
                                          "stop it, or choose another out_dir", 4242),
            "damaged sweep.json": results.ResultsError(
                f"{tmp_path}/sweep.json is damaged (sweep.json is not valid JSON: Expecting "
                "value); it identifies the sweep saved in this folder: restore it, or choose a "
                "new out_dir"),
            "foreign folder": results.ChunkError(f"{tmp_path}/chunk-0000.npz belongs to another "
                                                 "sweep; delete it")}[error]

    def fails(*args, **kwargs):
        raise made

    monkeypatch.setattr(experiment, "run", fails)
    assert cli.main(["run", "--quick", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxtd: error: ")
    assert "internal error" not in err[0] and str(tmp_path) in err[0] and "; fix: " in err[0]


def test_damaged_sweep_json_of_an_interrupted_run_exits_2(tmp_path, capsys):
    """Real files: a chunk folder whose sweep.json was damaged before the chunk finished."""
    path = tmp_path / "c.toml"
    path.write_text(TINY.replace('["lazy", "gd"]', '["gd"]').replace("steps = 200", "steps = 20")
                    .replace("seeds = 2", "seeds = 1"))
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out)]) == 0
    chunk = next((out / "sweeps").rglob("sweep.json")).parent
    for name in ("results.json", "config.json", "rows.npz", "histories.npz"):
        (chunk / name).unlink(missing_ok=True)
    (chunk / "sweep.json").write_text("{not json")
    capsys.readouterr()
    assert cli.main(["run", "--resume", "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("jaxtd: error: ") and "sweep.json" in last
    assert "internal error" not in last


def _user_config(tmp_path, monkeypatch, module: str, source: str, fn: str = "build",
                 extra: str = "") -> str:
    """A config running the user factory ``module:fn`` written into ``tmp_path``."""
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{module}.toml"
    path.write_text(TINY.replace('["lazy", "gd"]', '["mine"]')
                    + f'\n[mine]\nfactory = "{module}:{fn}"\n{extra}')
    return str(path)


@pytest.mark.parametrize("case,source,fn,key", [
    ("import", "raise RuntimeError('boom at import')\n", "build", "importing"),
    ("constructor", "def build():\n    raise KeyError('no')\n", "build", "raised KeyError"),
    ("step type", "import jaxtd\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
     "    return a._replace(step=lambda s, t: (s, 3.0))\n", "build", "metrics"),
    ("step arity", "import jaxtd\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
     "    return a._replace(step=lambda s, t: s)\n", "build", "step must return"),
    ("init type", "import jaxtd\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
     "    return a._replace(init=lambda *a, **k: 'state')\n", "build", "init must return"),
    ("step raises", "import jaxtd\ndef bad(s, t):\n    raise ValueError('nan everywhere')\n"
     "def build():\n    return jaxtd.algorithms.gd(0.1)._replace(step=bad)\n", "build",
     "step(state, target) raised ValueError"),
])
def test_user_factory_errors_exit_2_naming_the_factory(tmp_path, capsys, monkeypatch, case,
                                                       source, fn, key):
    """User code failing (at import, construction, or a malformed init/step) is a config error
    of that table, found before anything runs (--dry-run), never an internal error."""
    module = "userfactory_" + case.replace(" ", "_")
    path = _user_config(tmp_path, monkeypatch, module, source, fn)
    assert cli.main(["run", path, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxtd: error: [mine]"), err
    assert key in err[0] and "internal error" not in err[0]


def test_user_code_raising_during_the_run_exits_2(tmp_path, capsys, monkeypatch):
    """An exception from inside a user factory's module while the run traces the algorithm
    (past the config check) names the factory, exit 2."""
    source = ("import jaxtd\nCALLS = []\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
              "    def step(s, t):\n        CALLS.append(1)\n"
              "        if len(CALLS) > 2:\n            raise FloatingPointError('late')\n"
              "        return a.step(s, t)\n    return a._replace(step=step)\n")
    path = _user_config(tmp_path, monkeypatch, "userfactory_late", source)
    assert cli.main(["run", path, "--out", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith('jaxtd: error: [mine] factory = "userfactory_late:build"'), last
    assert "FloatingPointError" in last


@pytest.mark.parametrize("args", ['{ b1 = "x" }', "{ b1 = [1, 2] }", '{ eps = "tiny" }'])
def test_optimizer_args_of_the_wrong_type_are_refused_before_running(tmp_path, capsys, args):
    """They used to fail inside the first compiled step, after the run had started (exit 1)."""
    path = tmp_path / "c.toml"
    path.write_text(TINY.replace('["lazy", "gd"]', '["gd"]')
                    + f'optimizer = "adam"\noptimizer_args = {args}\n')
    out = tmp_path / "o"
    assert cli.main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxtd: error: [gd] optimizer_args"), err
    assert not out.exists()


def test_broken_pipe_exits_quietly(tmp_path):
    """`jaxtd presets | head -2`: the reader goes away; no "disk" error, status 0."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "jaxtd", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=os.getcwd())
    try:
        proc.stdout.close()  # before it writes anything: every write hits a broken pipe
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.decode().strip() == ""


def test_missing_required_key_shows_a_real_example(tmp_path, capsys):
    """Not `seeds = UNSET`."""
    path = tmp_path / "c.toml"
    path.write_text(TINY.replace("seeds = 2\n", ""))
    assert cli.main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "UNSET" not in err and "e.g. 8" in err
    path.write_text(TINY.replace("seeds = 2", 'seeds = "two"'))
    assert cli.main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "UNSET" not in err and "seeds = 8" in err


@pytest.mark.timeout(120)
def test_huge_steps_dry_run_does_not_hang(tmp_path, capsys):
    """default_record_every and the default chunk size were Python loops over ~steps/100 and
    ~seeds candidates; steps beyond the int32 step counters are refused at once."""
    path = tmp_path / "c.toml"
    path.write_text(TINY.replace("steps = 200", "steps = 2147483646")
                    .replace("record_every = 20\n", "").replace("seeds = 2", "seeds = 1000000000000"))
    assert cli.main(["run", str(path), "--dry-run"]) == 0
    assert "nothing written: --dry-run" in capsys.readouterr().out
    path.write_text(TINY.replace("steps = 200", "steps = 1000000000000"))
    assert cli.main(["run", str(path), "--dry-run"]) == 2
    assert "[sweep] steps: must be <= 2147483647" in capsys.readouterr().err


def test_os_errors_are_one_line(tmp_path):
    import errno

    from jaxtd.results import atomic_write
    line = cli._os_error_line(OSError(errno.ENOSPC, "No space left", "/x/rows.npz"))
    assert line.startswith("/x/rows.npz: disk full; fix: ") and "--resume" in line
    assert "permission" in cli._os_error_line(PermissionError(errno.EACCES, "denied", "/y"))
    # a write failing for a full disk carries no filename: the file being written is named
    from jaxtd import results, store
    target = tmp_path / "rows.npz"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch.object(results.np, "savez", full), pytest.raises(OSError) as info:
        store.save_npz(str(target), {"a": np.ones(2)})
    assert cli._os_error_line(info.value).startswith(f"{target}: disk full; fix: ")
    with mock.patch.object(results.os, "fsync", full), pytest.raises(OSError) as info:
        with atomic_write(str(target)) as f:
            f.write(b"x")
    assert cli._os_error_line(info.value).startswith(f"{target}: disk full; fix: ")


def test_compile_cache_is_on_unless_disabled(tmp_path, monkeypatch):
    from jaxtd import compile_cache
    calls = []
    monkeypatch.setattr(compile_cache, "enable", lambda *a, **k: calls.append(1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run", interrupted)
    assert cli.main(["run", "--quick", "--out", str(tmp_path / "a")]) == 130
    assert calls == [1]
    assert cli.main(["run", "--quick", "--out", str(tmp_path / "b"), "--no-compile-cache"]) == 130
    assert calls == [1]


def test_last_line_reports_compiles_and_times(tiny_run, tmp_path, capsys):
    out = tmp_path / "again"
    assert cli.main(["run", str(tiny_run[0]), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    import re
    match = re.fullmatch(r"compiled (\d+) programs in ([\d.]+) s( \(loaded \d+ saved by an "
                         r"earlier run in [\d.]+ s\))?, ran in ([\d.]+) s", last)
    assert match, last
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]  # atomic writes


def test_rows_carry_the_hyperparameters(tiny_run):
    df = pd.read_csv(tiny_run[1] / "results.csv")
    gd, lazy = df[df["algorithm"] == "gd"], df[df["algorithm"] == "lazy"]
    assert (gd["init_scale"] == 0.1).all() and (gd["learning_rate"] == 0.1).all()
    assert (gd["model"] == "plain").all() and (gd["optimizer"] == "sgd").all()
    assert (lazy["learning_rate"] == 0.02).all() and (lazy["init"] == "standard").all()


def test_optimizer_user_algorithm_and_swept_hparam(features_run):
    """`optimizer = "adam"` and the user's heavy-ball factory give the cells of standalone runs
    (same key, same algorithm); a list value sweeps init_scale as a column."""
    import jax
    import optax

    import jaxtd
    from tests.example_algorithm import heavy_ball
    _, out = features_run
    df = pd.read_csv(out / "results.csv")
    assert set(df["algorithm"]) == {"gd", "heavy_ball"}
    gd = df[df["algorithm"] == "gd"]
    assert len(gd) == 2 * 2 * 2 and set(gd["init_scale"]) == {0.1, 0.3}
    assert (gd["optimizer"] == "adam").all() and (gd["optimizer_args"] == '{"b1":0.8}').all()
    hb = df[df["algorithm"] == "heavy_ball"]  # a user table's list: swept like a built-in one
    assert len(hb) == 2 * 2 * 2 and (hb["momentum"] == 0.5).all()
    assert set(hb["learning_rate"]) == {0.05, 0.1} and (hb["init_scale"] == 0.1).all()
    target = experiment.make_target(cli.cfg.load(out / "config.toml").target, 3, 4, 2)
    adam = jaxtd.algorithms.gd(functools.partial(optax.adam, b1=0.8), learning_rate=0.05,
                               init_scale=0.3)
    row = gd[(gd["seed"] == 1) & (gd["width"] == 4) & (gd["init_scale"] == 0.3)].iloc[0]
    with jax.numpy_dtype_promotion("standard"):
        alone = jaxtd.run(adam, jaxtd.key_for_seed(1), target, width=4, steps=60,
                          record_every=20)
    np.testing.assert_allclose(row["final_relative_error"], float(alone.final_relative_error),
                               rtol=1e-4)
    row = hb[(hb["seed"] == 1) & (hb["width"] == 2) & (hb["learning_rate"] == 0.05)].iloc[0]
    alone = jaxtd.run(heavy_ball(0.05, 0.5), jaxtd.key_for_seed(1), target, width=2, steps=60,
                      record_every=20)
    np.testing.assert_allclose(row["final_relative_error"], float(alone.final_relative_error),
                               rtol=1e-4)
    assert jax.numpy.isfinite(alone.final_relative_error)


def test_show_only_reads_the_data(features_run, tmp_path, capsys):
    _, out = features_run
    data = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()
            and not p.name.endswith(".png")}
    figures = tmp_path / "figs"
    assert cli.main(["show", str(out), "--out", str(figures)]) == 0
    assert (figures / "success_vs_width.png").is_file()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()
            and not p.name.endswith(".png")} == data
    assert "per hyper-parameter value" in capsys.readouterr().out


def test_damaged_saved_chunk_exits_2_naming_it(features_run, tmp_path, capsys):
    _, reference = features_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    for name in ("results.csv", "config.json"):
        (out / name).unlink()
    chunk = out / "sweeps" / "gd-l3-d4-r2" / "chunk-0000"
    (chunk / "rows.npz").write_bytes(b"not a zip")
    _one_error_line(capsys, ["run", "--out", str(out), "--resume"], "chunk-0000",
                    progress_lines=True)


def test_resume_in_another_dtype_exits_2(features_run, tmp_path, capsys, x64):
    _, reference = features_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    _one_error_line(capsys, ["run", "--out", str(out), "--resume"], "float32",
                    progress_lines=True)


@pytest.mark.timeout(300)
def test_sigint_exits_130_with_the_resume_command(tmp_path):
    """A real Ctrl-C (during compilation or a chunk): status 130, the resume command, no crash
    (a second Ctrl-C is ignored while the run shuts down)."""
    import signal
    import time
    path = tmp_path / "slow.toml"
    path.write_text(TINY.replace("steps = 200", "steps = 4000").replace("widths = [2, 8]",
                                                                        "widths = [2, 8, 16]"))
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "jaxtd", "run", str(path), "--out", str(out),
                             "--no-compile-cache"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd())
    try:
        line = proc.stderr.readline()  # the first sub-sweep starts: compiling
        assert line.startswith("[jaxtd] lazy"), line
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert f"jaxtd run --out {out} --resume" in err and "Traceback" not in err


def test_ctrl_c_while_writing_the_outputs_can_resume(tiny_run, tmp_path, monkeypatch, capsys):
    _, reference = tiny_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "config.json").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cli, "write_outputs", interrupted)
        assert cli.main(["run", "--out", str(out), "--resume"]) == 130
    assert f"jaxtd run --out {out} --resume" in capsys.readouterr().err
    assert cli.main(["run", "--out", str(out), "--resume"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"),
                                  pd.read_csv(reference / "results.csv"))


def test_a_plotting_failure_is_a_note_not_a_failed_run(tiny_run, tmp_path, monkeypatch, capsys):
    from jaxtd import plots

    def broken(*args, **kwargs):
        raise IndexError("out of bounds")

    monkeypatch.setattr(plots, "save_figures", broken)
    _, reference = tiny_run
    figures = tmp_path / "figs"
    assert cli.main(["show", str(reference), "--out", str(figures)]) == 0
    err = capsys.readouterr().err
    assert "jaxtd: note: figures not drawn (IndexError: out of bounds)" in err
    # --debug lets the plotting bug through: its traceback, and exit 1 (an internal error)
    assert cli.main(["--debug", "show", str(reference), "--out", str(figures)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "IndexError: out of bounds" in err


def test_size_guard_refuses_before_compiling(tmp_path, capsys, monkeypatch, backend_compiles):
    """A run whose estimated peak memory exceeds --max-memory (default: the memory available)
    exits 2 with one line giving the estimate and the fix; nothing is written or compiled."""
    with backend_compiles() as compiles:
        out = tmp_path / "huge"
        assert cli.main(["run", "--quick", "--set", "sweep.widths=[10000000]",
                         "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--max-memory" in err[0] and "GB at its peak" in err[0]
        assert "available" in err[0] and "fix:" in err[0]
        assert cli.main(["run", "--quick", "--max-memory", "1KB", "--out", str(out)]) == 2
        assert "1.0 KB is allowed" in capsys.readouterr().err
        assert cli.main(["run", "--quick", "--max-memory", "lots", "--out", str(out)]) == 2
        assert "cannot read 'lots' as a size" in capsys.readouterr().err
    assert not out.exists()
    assert not compiles
    # an estimate within the limit runs
    peak, _ = experiment.estimate(experiment.cfg.quick(experiment.cfg.preset("headline")))
    assert 0 < peak < cli.parse_size("1GB")


def test_parse_size():
    assert cli.parse_size("8GB") == 8 * 2 ** 30
    assert cli.parse_size("512 mb") == 512 * 2 ** 20
    assert cli.parse_size("1e9") == 1e9
    with pytest.raises(cli.UsageError, match="--max-memory"):
        cli.parse_size("-3GB")


# -- resume checks the identity of everything it reuses ---------------------------------------------

def _edit_table(path, section, key, value):
    """Set ``key = value`` in ``[section]`` of a TOML file written by the command."""
    lines, current = path.read_text().splitlines(), None
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        raise AssertionError(f"no {key} in [{section}]")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("section,key,value", [("gd", "learning_rate", "0.05"),
                                               ("sweep", "steps", "100"),
                                               ("gd", "optimizer", '"adam"')])
def test_config_toml_edited_after_the_run_is_refused_on_resume(tiny_run, tmp_path, capsys,
                                                               section, key, value):
    """Editing a finished run's config.toml and resuming used to relabel the old rows with the
    new values; now the saved sub-sweep config is compared and the differing key named."""
    _, reference = tiny_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    _edit_table(out / "config.toml", section, key, value)
    line = _one_error_line(capsys, ["run", "--out", str(out), "--resume"], f"{section}.{key}",
                           progress_lines=True)
    assert "another config" in line


def test_chunk_folders_are_identity_checked_even_without_sub_json(tiny_run, tmp_path, capsys):
    """Second line of defence: each chunk folder's sweep identity (the algorithm's arguments)."""
    _, reference = tiny_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    _edit_table(out / "config.toml", "gd", "learning_rate", "0.05")
    for sub in (out / "sweeps").iterdir():
        (sub / "sub.json").unlink()
    _one_error_line(capsys, ["run", "--out", str(out), "--resume"],
                    "algorithm.arguments.optimizer: saved 0.1, requested 0.05",
                    progress_lines=True)


def test_swapped_chunk_folders_are_refused(features_run, tmp_path, capsys):
    """Swapped chunk folders used to reorder the CSV; their seeds now differ from the chunk's."""
    _, reference = features_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    sub = out / "sweeps" / "gd-l3-d4-r2"
    (sub / "chunk-0000").rename(sub / "swap")
    (sub / "chunk-0001").rename(sub / "chunk-0000")
    (sub / "swap").rename(sub / "chunk-0001")
    _one_error_line(capsys, ["run", "--out", str(out), "--resume"], "seeds: saved [1], "
                    "requested [0]", progress_lines=True)


def test_chunk_folder_from_another_learning_rate_is_refused(tiny_run, features_run, tmp_path,
                                                            capsys):
    _, reference = features_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    theirs = tiny_run[1] / "sweeps" / "gd-l3-d4-r2" / "chunk-0000"
    ours = out / "sweeps" / "gd-l3-d4-r2" / "chunk-0000"
    shutil.rmtree(ours)
    shutil.copytree(theirs, ours)
    _one_error_line(capsys, ["run", "--out", str(out), "--resume"], "chunk-0000",
                    progress_lines=True)


@pytest.mark.parametrize("name", ["results.csv", "results.json", "rows.npz"])
def test_show_refuses_an_edited_saved_file(tiny_run, tmp_path, capsys, name):
    _, reference = tiny_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    path = out / name
    data = bytearray(path.read_bytes())
    i = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isdigit())
    data[i] = ord("7") if data[i] != ord("7") else ord("3")
    path.write_bytes(bytes(data))
    _one_error_line(capsys, ["show", str(out)], name)
