"""Run every benchmark in one process and collect its printed ratios into one JSON file.

    python benchmarks/run_all.py [--quick] [--json out.json]

Each benchmark module exposes ``main(argv) -> dict`` (keys named after its rows), so the JSON can be
compared across commits. The machine description (nproc, CPU model, jax version, device) is stored
beside the figures. A benchmark that fails is reported (and makes the exit status non-zero) but does
not stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine  # noqa: E402

BENCHMARKS = ["loss_grad", "lazy", "algorithms", "sweep", "peers", "precision", "scale", "grad",
              "multiprocess"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--only", nargs="*", default=None, help="run only these benchmarks")
    args = p.parse_args(argv)
    results = {"machine": machine()}
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(name)
            results[name] = module.main(["--quick"] if args.quick else [])
        except Exception:  # one failing benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=1)}
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    print("\nmachine:", json.dumps(results["machine"]))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2, default=float)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
