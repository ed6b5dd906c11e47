"""``jaxtd run --dry-run``'s time estimate against the run's wall time, cold and warm cache.

For each preset (``--quick``: its quick config), in a fresh compilation-cache folder: the
dry run's estimate, then the real run (``jaxtd run``, a subprocess: its wall time, imports
included, and the compile/run split it reports); then the same again with the cache the first
run filled (warm). The goal: every estimate within 2x of the wall time.

    python benchmarks/estimate.py --presets headline,deflation,init-scale --quick
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import run_summary  # noqa: E402


def _jaxtd(args: list[str], cache_home: str) -> tuple[float, str]:
    env = dict(os.environ, XDG_CACHE_HOME=cache_home, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jaxtd", *args], capture_output=True, text=True,
                          env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"jaxtd {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _seconds(text: str) -> float:
    m = re.match(r"([0-9.]+) (s|min)", text)
    return float(m[1]) * (60 if m[2] == "min" else 1)


def measure(preset: str, quick: bool) -> list[dict]:
    rows = []
    flags = ["--preset", preset] + (["--quick"] if quick else [])
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as out:
        for state in ("cold", "warm"):
            _, plan = _jaxtd(["run", *flags, "--dry-run"], home)
            line = next(x for x in plan.splitlines() if x.startswith("time: ~"))
            est = _seconds(line[len("time: ~"):])
            m = re.search(r"compile ~([0-9.]+ (?:s|min)), compute ~([0-9.]+ (?:s|min))", line)
            wall, text = _jaxtd(["run", *flags, "--out", f"{out}/{state}"], home)
            done = run_summary(text)
            programs = re.search(r"(\d+) programs to compile", plan)
            rows.append({"preset": preset + (" --quick" if quick else ""), "cache": state,
                         "estimate_s": est, "est_compile_s": _seconds(m[1]),
                         "est_compute_s": _seconds(m[2]), "wall_s": wall,
                         "programs_announced": int(programs[1]),
                         "programs_compiled": done["programs"], "compile_s": done["compile"],
                         "run_s": done["run"], "load": os.getloadavg()[0],
                         "busy": (re.search(r"load x([0-9.]+)", line) or [None, "1.0"])[1]})
            r = rows[-1]
            print(f"| {r['preset']} | {state} | {est:.0f} ({r['est_compile_s']:.0f} + "
                  f"{r['est_compute_s']:.0f}) x{r['busy']} | {wall:.0f} | {r['compile_s']:.0f} | "
                  f"{r['run_s']:.0f} | {r['programs_announced']}/{r['programs_compiled']} | "
                  f"{est / wall:.2f} |", flush=True)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="headline")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(f"# benchmarks/estimate.py {' '.join(argv if argv is not None else sys.argv[1:])}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores")
    print("| preset | cache | estimate s (compile + compute) x load | wall s | compile s | "
          "run s | programs announced/compiled | estimate / wall |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets.split(","):
        rows += measure(preset, args.quick)
    return rows


if __name__ == "__main__":
    main()
