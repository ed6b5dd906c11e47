"""Wall time of every preset, cold and warm: the one source of the README's preset timings.

    python benchmarks/presets.py [--presets a,b] [--quick] [--json PATH] [--readme]

Each preset runs as a whole ``jaxtd run --preset NAME`` process twice: first with an empty
persistent compilation cache (cold), then again with the cache the first run filled (warm). The
run's own last line ("compiled N programs in X s ..., ran in Z s") gives the compile and run
seconds apart. The load average before and after each run is stored beside the times: on a shared
machine a loaded run is an upper bound, and the file says so.

``--json`` (default ``benchmarks/results/presets.json``) is written atomically. ``--readme``
rewrites the last column of the README's preset table and the sentence under it from that file;
``tests/test_docs.py`` checks that the README quotes the file, so the two cannot drift.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxtd.units import fmt_seconds  # the one spelling of a duration (README cells)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "presets.json"
README = ROOT / "README.md"
_ROW = re.compile(r"^\| `(?P<name>[\w-]+)`(?P<mid>.*)\| (?P<cell>[^|]*) \|$")
_SENTENCE = re.compile(r"^Wall times are whole `jaxtd run --preset NAME` processes.*$", re.M)


def readme_cell(entry: dict) -> str:
    """The README table's cell for one preset's measurement: ``"cold / warm"``."""
    return f"{fmt_seconds(entry['cold']['wall'])} / {fmt_seconds(entry['warm']['wall'])}"


def readme_sentence(data: dict) -> str:
    """The sentence under the table: what the numbers are and how loaded the machine was."""
    loads = [v for e in data["presets"].values() for r in ("cold", "warm")
             for v in (e[r]["load_before"], e[r]["load_after"])]
    return (f"Wall times are whole `jaxtd run --preset NAME` processes on {data['machine']}, first "
            f"with an empty persistent compilation cache, then again with the cache the first "
            f"run filled (`python benchmarks/presets.py --readme` measured them on "
            f"{data['date']}, writing `benchmarks/results/presets.json`; the 1-minute load "
            f"average was {min(loads):.1f}-{max(loads):.1f} on {data['cores']} cores, so where "
            f"it exceeds the core count these are upper bounds).")


def _one(preset: str, cache: Path, quick: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"jaxtd-bench-{preset}-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "jaxtd", "run", "--preset", preset, "--out", str(out / "run")]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{preset}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    summary = run_summary(proc.stdout + proc.stderr)
    if summary is None:
        raise RuntimeError(f"{preset}: no 'compiled ... ran in' line in its output")
    return {"wall": wall, **summary, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def measure(preset: str, quick: bool = False) -> dict:
    """Cold then warm wall time of one preset, in a fresh cache folder."""
    cache = Path(tempfile.mkdtemp(prefix="jaxtd-bench-cache-"))
    try:
        return {"cold": _one(preset, cache, quick), "warm": _one(preset, cache, quick)}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def rewrite_readme(data: dict, text: str) -> str:
    """``text`` (the README) with each measured preset's cell and the sentence replaced."""
    lines = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m.group("name") in data["presets"]:
            line = f"| `{m.group('name')}`{m.group('mid')}| " \
                   f"{readme_cell(data['presets'][m.group('name')])} |"
        lines.append(line)
    return _SENTENCE.sub(lambda _: readme_sentence(data), "\n".join(lines) + "\n")


def readme_cells(text: str) -> dict:
    """``{preset: cell}`` of the README's preset table (the test compares them with the file)."""
    return {m.group("name"): m.group("cell") for m in map(_ROW.match, text.splitlines())
            if m and re.fullmatch(r"[\dmin ]+s / [\dmin ]+s", m.group("cell"))}


def _presets() -> list[str]:
    from jaxtd import config
    return sorted(config.preset_names())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=None, help="comma-separated names (default: all)")
    p.add_argument("--quick", action="store_true", help="time the --quick variants (not saved)")
    p.add_argument("--json", default=None, help=f"output file (default {DEFAULT_JSON})")
    p.add_argument("--readme", action="store_true", help="rewrite README.md from the file")
    args = p.parse_args(argv)
    names = args.presets.split(",") if args.presets else _presets()
    path = Path(args.json) if args.json else DEFAULT_JSON
    data = json.loads(path.read_text()) if path.exists() and not args.quick else {"presets": {}}
    print("| preset | cold wall s | compile s | run s | warm wall s | loaded | warm/cold | load |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        entry = measure(name, args.quick)
        data["presets"][name] = entry
        c, w = entry["cold"], entry["warm"]
        print(f"| {name} | {c['wall']:.1f} | {c['compile']:.1f} | {c['run']:.1f} | "
              f"{w['wall']:.1f} | {w['loaded']} | {w['wall'] / c['wall']:.2f} | "
              f"{c['load_before']:.1f}-{w['load_after']:.1f} |", flush=True)
    from _common import cpu_model
    data.update(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                machine=f"{os.cpu_count()} cores ({cpu_model()})")
    if args.quick:
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    if args.readme:
        README.write_text(rewrite_readme(data, README.read_text(encoding="utf-8")),
                          encoding="utf-8")
        print(f"rewrote {README}")
    return data


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
