"""benchmarks/compile.py (the per-program compile/run table and its floor): its smallest mode
runs and prints the table it promises."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_tiny_mode_prints_the_table():
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile.py"), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| preset |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "preset", "program", "HLO lines", "trace+lower s", "compile s", "run s", "calls"]
    rows = [line for line in lines if line.startswith("| tiny |") and "total" not in line]
    floor = next(line for line in lines if line.startswith("| floor |"))
    for row in [*rows, floor]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[2]) > 100  # StableHLO lines of a real program
        assert all(float(x) >= 0 for x in cells[3:6]) and float(cells[4]) > 0
    assert len(rows) == 1  # the tiny config compiles one grid program
    assert any(line.startswith("| tiny | **total: 1 programs**") for line in lines)
