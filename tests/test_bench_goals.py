"""benchmarks/goals.py (the compile-time goals table): the verdicts it prints follow from the
measurements, and its cheapest mode runs and prints the table it promises."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("goals", ROOT / "benchmarks" / "goals.py")
goals = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(goals)


def _preset(name, cache, wall, compile_s, run_s, estimate):
    return {"preset": name, "cache": cache, "wall_s": wall, "compile_s": compile_s,
            "run_s": run_s, "estimate_s": estimate, "load": 1.0, "programs_announced": 4,
            "programs_compiled": 4}


def test_rows_judge_every_goal_from_the_measurements():
    ratio = {"first": 1.4, "warm": 1.1, "sweep": {"first": 4.2, "warm": 1.1},
             "floor": {"first": 3.0, "warm": 1.0}}
    presets = [_preset("headline", "cold", 50.0, 20.0, 25.0, 120.0),
               _preset("headline", "warm", 15.0, 1.0, 12.0, 14.0),
               _preset("phase-diagram", "cold", 900.0, 100.0, 700.0, 1000.0)]
    suite = {"wall_s": 700.0, "counts": {"passed": 10, "failed": 0}, "workers": "2", "cpus": 2,
             "finished": "today", "load_after": 1.0}
    table = goals.rows(ratio, presets, {"--version": 0.3, "--help": 1.2}, suite)
    verdict = {(r["measure"], r["note"].split(":")[0]): r["met"] for r in table}
    assert verdict[("sweep first / floor first", "4.20 s / 3.00 s")] == "met"
    assert verdict[("sweep warm / floor warm", "1.10 s / 1.00 s")] == "not met"
    assert verdict[("headline cold: compile s / run s", "20.0 s / 25.0 s, load 1.0")] == "met"
    assert verdict[("headline warm wall / cold wall", "15.0 s / 50.0 s")] == "met"
    assert verdict[("preset cold wall s", "headline")] == "met"
    assert verdict[("preset cold wall s", "phase-diagram")] == "-"  # a study: not judged
    assert verdict[("dry-run estimate / wall", "headline cold")] == "not met"  # 2.4x over
    assert verdict[("dry-run estimate / wall", "headline warm")] == "met"
    assert verdict[("full test suite s", "10 tests, 2 workers, 2 cpus, today, load after 1.0")] \
        == "not met"
    assert verdict[("jaxtd --version s", "best of 3 fresh processes")] == "met"
    assert verdict[("jaxtd --help s", "best of 3 fresh processes")] == "not met"


def test_only_a_whole_clean_suite_run_counts(tmp_path):
    path = tmp_path / "suite"
    base = {"args": ["tests"], "keyword": "", "markexpr": "", "wall_s": 1.0,
            "counts": {"passed": 3, "failed": 0, "error": 0, "skipped": 0}}
    for change, counted in [({}, True), ({"args": ["tests/test_units.py"]}, False),
                            ({"keyword": "slow"}, False),
                            ({"counts": {"passed": 3, "failed": 1, "error": 0}}, False)]:
        path.write_text(json.dumps({**base, **change}))
        assert (goals.read_suite(path) is not None) == counted, change
    assert goals.read_suite(tmp_path / "missing") is None


@pytest.mark.timeout(300)
def test_cheapest_mode_prints_the_table(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    out = tmp_path / "goals.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "goals.py"), "--presets", "",
                           "--no-ratio", "--json", str(out)], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| measure | before | now | goal | met | measured |" in proc.stdout
    saved = json.loads(out.read_text())
    names = [r["measure"] for r in saved["table"]]
    assert names[-2:] == ["jaxtd --version s", "jaxtd --help s"]
    assert all(r["now"] > 0 for r in saved["table"][-2:])
