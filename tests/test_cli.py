"""The ``jaxtd`` command (jaxtd/cli.py): help, presets, errors, a tiny end-to-end run, show,
resume and interruption."""

import os
import shutil
import subprocess
import sys

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


def _one_error_line(capsys, argv, key):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "Traceback" not in err
    return err


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
    _, out = tiny_run
    png = out / "success_vs_width.png"
    png.unlink()
    assert cli.main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "l=3 d=4 r=2" in text and "lazy threshold m = 5" in text and "lazy best" in text
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
