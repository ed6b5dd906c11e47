"""The ``jaxtd`` command: ``jaxtd run``, ``jaxtd presets``, ``jaxtd show``.

``jaxtd run [CONFIG.toml] [--preset NAME] [--out DIR] [--resume] [--quick]`` validates the config
(:mod:`jaxtd.config`), then for every problem size and algorithm builds the target and the
algorithm and calls :func:`jaxtd.sweep` with its own sub-folder of ``DIR/sweeps`` (chunks written
atomically, so an interrupted run resumes), adds the exact best lazy residual to the lazy rows,
and writes into ``DIR``: ``config.toml`` (resolved), ``results.csv``/``results.json`` and the
saved :class:`jaxtd.results.Results` (histories in ``histories.npz``), and PNG figures
(:mod:`jaxtd.plots`). A bad config exits with status 2 and one line naming the key and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from jaxtd import config as cfg

__all__ = ["main", "build_parser", "make_target", "make_algorithm", "execute", "write_outputs",
           "UsageError"]

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class UsageError(cfg.ConfigError):
    """A bad command line (same one-line form and exit status as a bad config)."""


# -- building blocks ----------------------------------------------------------------------------

def make_target(target: cfg.Target, order: int, dim: int, rank: int):
    """The ground truth of one problem size (key ``PRNGKey(target.seed)``)."""
    import jax

    from jaxtd import targets
    key = jax.random.PRNGKey(target.seed)
    weights = target.weights if isinstance(target.weights, str) else list(target.weights)
    if target.kind == "random":
        return targets.random_unit(key, dim, rank, order, weights)
    return targets.orthonormal(key, dim, rank, order, weights, basis=target.kind == "basis")


def make_algorithm(name: str, params: dict, steps: int):
    """The :class:`jaxtd.algorithms.Algorithm` of config section ``[name]``."""
    from jaxtd import algorithms
    p = params
    if name == "gd":
        return algorithms.gd(p["learning_rate"], model=p["model"], init_scale=p["init_scale"],
                             regularization=p["regularization"])
    if name == "variant":
        epoch = p["amplify_steps"] + p["fit_steps"]
        return algorithms.variant(p["learning_rate"], init_scale=p["init_scale"],
                                  regularization=p["regularization"],
                                  amplify_steps=p["amplify_steps"], fit_steps=p["fit_steps"],
                                  epochs=max(1, steps // epoch), selection=p["selection"])
    if name == "deflation":
        return algorithms.deflation(p["delta0"], p["delta1"], p["gamma"], p["epsilon"],
                                    p["regularization"], tau0=p["tau0"],
                                    step_size=p["learning_rate"], model=p["model"])
    if name == "lazy":
        return algorithms.lazy_gd(p["learning_rate"], init=p["init"])
    raise ValueError(f"name must be one of {cfg.ALGORITHMS}, got {name!r}")


def lazy_best_residuals(algorithm, target, seeds: Sequence[int], widths: Sequence[int]):
    """``(len(seeds), len(widths))`` exact best lazy residuals, in float64.

    Cell ``(s, m)`` linearizes at the very ``W0`` of the lazy GD cell: ``algorithm.init`` (a
    :func:`jaxtd.algorithms.lazy_gd`) with key :func:`jaxtd.sweep.key_for_seed` ``(s)``, drawn in
    the target's dtype, then solved in float64 inside ``jax.enable_x64`` (thread-local): the float32
    normal equations cannot resolve a zero residual.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxtd import lazy
    from jaxtd.sweep import key_for_seed
    from jaxtd.symcp import SymCP

    def to64(t):
        return SymCP(jnp.asarray(t.weights, jnp.float64), jnp.asarray(t.factors, jnp.float64),
                     t.order)

    out = np.full((len(seeds), len(widths)), np.nan)
    keys = jnp.stack([key_for_seed(int(s)) for s in seeds])
    with jax.enable_x64(True):
        tgt = to64(target)
        for j, m in enumerate(widths):
            def solve(key, m=m):
                return lazy.best_residual(to64(algorithm.init(key, target, m).model), tgt)
            out[:, j] = np.asarray(jax.jit(jax.vmap(solve))(keys))
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _seeds(name: str, config: cfg.Config) -> int:
    """How many seeds algorithm ``name`` runs (``[lazy] seeds`` may cut the lazy ones)."""
    n = config.sweep.seeds
    limit = config.params[name].get("seeds", 0) if name == "lazy" else 0
    return min(n, limit) if limit else n


def _lazy_column(results, algorithm, target, sub: Path):
    """Add ``lazy_best_residual`` to a lazy sweep's rows (cached in ``sub/lazy_best.npz``)."""
    import numpy as np

    from jaxtd.results import atomic_write
    widths = sorted(set(int(w) for w in results.rows["width"]))
    seeds = sorted(set(int(s) for s in results.rows["seed"]))
    cache = sub / "lazy_best.npz"
    if cache.exists():
        with np.load(cache) as saved:
            table, ok = saved["residual"], list(saved["widths"]) == widths and \
                list(saved["seeds"]) == seeds
    if not cache.exists() or not ok:
        table = lazy_best_residuals(algorithm, target, seeds, widths)
        sub.mkdir(parents=True, exist_ok=True)
        with atomic_write(str(cache)) as f:
            np.savez(f, residual=table, widths=np.asarray(widths), seeds=np.asarray(seeds))
    col = [table[seeds.index(int(s)), widths.index(int(w))]
           for s, w in zip(results.rows["seed"], results.rows["width"])]
    rows = results.rows.assign(lazy_best_residual=np.asarray(col, np.float64))
    return dataclasses.replace(results, rows=rows)


def _residual_only(widths: Sequence[int], n_seeds: int):
    """A Results of lazy rows without training (``[lazy] train = false``): error columns NaN."""
    import pandas as pd

    from jaxtd.results import Results
    rows = pd.DataFrame([dict(seed=s, width=w, final_relative_error=float("nan"), success=False,
                              diverged=False) for s in range(n_seeds) for w in widths])
    return Results(rows, {})


def execute(config: cfg.Config, out_dir: Path, *, resume: bool, progress: bool | None = None):
    """Run every (problem size, algorithm) sweep of ``config`` under ``out_dir/sweeps``; return
    the concatenated :class:`~jaxtd.results.Results` (lazy rows with ``lazy_best_residual``)."""
    import numpy as np

    from jaxtd.results import Results
    from jaxtd.sweep import sweep
    s = config.sweep
    parts = []
    for order, dim, rank in config.target.sizes:
        target = make_target(config.target, order, dim, rank)
        for name in s.algorithms:
            params = config.params[name]
            sub = out_dir / "sweeps" / f"{name}-l{order}-d{dim}-r{rank}"
            _log(f"[jaxtd] {name}: l={order} d={dim} r={rank}, widths {list(s.widths)}, "
                 f"{_seeds(name, config)} seeds, {s.steps} steps")
            algorithm = make_algorithm(name, params, s.steps)
            if name == "lazy" and not params["train"]:
                res = _residual_only(s.widths, _seeds(name, config))
            else:
                res = sweep(algorithm, target, seeds=_seeds(name, config),
                                  widths=list(s.widths), steps=s.steps,
                                  record_every=s.record_every,
                                  success_threshold=s.success_threshold, out_dir=str(sub),
                                  resume=resume, progress=progress, bucketing=s.bucketing)
            if name == "lazy":
                res = _lazy_column(res, algorithm, target, sub)
                if not params["train"]:
                    best = res.rows["lazy_best_residual"].to_numpy()
                    res = dataclasses.replace(res, rows=res.rows.assign(
                        success=np.isfinite(best) & (best <= s.success_threshold)))
            parts.append(res.with_columns(algorithm=name, order=order, dim=dim, rank=rank))
    return Results.concat(parts)


def _table_args(config: cfg.Config):
    init = config.params["lazy"]["init"]
    has_lazy = "lazy" in config.sweep.algorithms
    threshold = (lambda d, l: cfg.lazy_threshold(d, l, init)) if has_lazy else None
    return config.sweep.success_threshold, threshold


def write_outputs(results, config: cfg.Config, out_dir: Path) -> list[Path]:
    """Save results (CSV, JSON, npz), the resolved config and the figures; return the paths."""
    from jaxtd import plots
    from jaxtd.targets import weights as weight_profile
    results.save(str(out_dir))
    (out_dir / "config.toml").write_text(cfg.dumps(config), encoding="utf-8")
    threshold, lazy = _table_args(config)
    true = None
    if config.plot == "deflation":
        rank = config.target.ranks[0]
        true = [float(v) for v in weight_profile(config.target.weights, rank)]
    figs = plots.save_figures(results.to_pandas(), out_dir, plot=config.plot,
                              success_threshold=threshold, lazy_threshold=lazy,
                              histories=results.histories, true_weights=true)
    names = ["config.toml", "results.csv", "results.json", "histories.npz"]
    return [out_dir / n for n in names] + list(figs)


def _print_table(results, config: cfg.Config) -> None:
    from jaxtd import plots
    threshold, lazy = _table_args(config)
    print(plots.format_table(results.to_pandas(), threshold, lazy))


# -- commands -----------------------------------------------------------------------------------

def _resolve_config(args) -> tuple[cfg.Config, Path]:
    """The config and output folder a ``jaxtd run`` command line asks for."""
    if args.config and args.preset:
        raise UsageError("--preset", "given together with a CONFIG file", "pass one or the other")
    out = Path(args.out) if args.out else None
    saved = out / "config.toml" if out else None
    if args.config:
        config = cfg.load(args.config)
    elif args.preset:
        config = cfg.preset(args.preset)
    elif args.resume and not args.quick and saved is not None and saved.exists():
        return cfg.load(saved), out  # resuming: the saved resolved config, as run before
    else:
        config = cfg.preset("headline")
    if args.quick:
        config = cfg.quick(config)
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{stamp}-{config.name.split()[0]}"
    return config, out


def _check_out(config: cfg.Config, out: Path, resume: bool) -> None:
    """Refuse to mix runs: an existing non-empty folder needs --resume and the same config."""
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file", "pass a folder path")
    busy = out.is_dir() and any(out.iterdir())
    if busy and not resume:
        raise UsageError("--out", f"{out} is not empty",
                         "pass --resume to continue the run saved there, or choose another --out")
    saved = out / "config.toml"
    if resume and saved.exists() and cfg.load(saved) != config:
        raise UsageError("--resume", f"{saved} holds a different config",
                         "rerun with the same config (or none), or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError("--out", f"cannot create {out} ({err.strerror})",
                         "choose a folder you can write to") from None
    # written first so an interrupted run can be resumed from the folder alone
    saved.write_text(cfg.dumps(config), encoding="utf-8")


def cmd_run(args) -> int:
    """``jaxtd run``: run a config or preset, write results and figures, print the table."""
    config, out = _resolve_config(args)
    _check_out(config, out, args.resume)
    start = time.perf_counter()
    try:
        results = execute(config, out, resume=args.resume)
    except KeyboardInterrupt:
        _log(f"\n[jaxtd] interrupted: finished chunks are saved in {out}; resume with:\n"
             f"  jaxtd run --out {out} --resume")
        return EXIT_INTERRUPTED
    paths = write_outputs(results, config, out)
    _print_table(results, config)
    print(f"\n{config.name}: {len(results)} runs in {time.perf_counter() - start:.0f} s; wrote")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_presets(args) -> int:
    """``jaxtd presets``: one line per shipped preset."""
    for name in cfg.preset_names():
        c = cfg.preset(name)
        print(f"{name:<16} {c.description}")
    print("\nrun one with `jaxtd run --preset NAME`; copy its file as a starting point:\n  "
          + str(cfg.preset_path("headline")))
    return 0


def cmd_show(args) -> int:
    """``jaxtd show DIR``: reprint a saved run's table and regenerate its figures."""
    from jaxtd.results import Results
    out = Path(args.dir)
    if not (out / "config.json").is_file() or not (out / "config.toml").is_file():
        raise UsageError("DIR", f"{out} holds no finished jaxtd run",
                         "pass the --out folder of a finished `jaxtd run`")
    config = cfg.load(out / "config.toml")
    results = Results.load(str(out))
    paths = write_outputs(results, config, out)
    _print_table(results, config)
    print("\nwrote\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``jaxtd`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="jaxtd", description="Over-parameterized symmetric tensor decomposition: lazy vs "
        "beyond-lazy training, as seeds x widths grids.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run an experiment (default: the headline preset)",
                         description="Run a TOML config or a preset; with neither, the headline "
                         "preset (about a minute on a 2-core CPU).")
    run.add_argument("config", nargs="?", metavar="CONFIG.toml", help="experiment config file")
    run.add_argument("--preset", metavar="NAME", help="a shipped preset (see `jaxtd presets`)")
    run.add_argument("--out", metavar="DIR",
                     help="output folder (default: a new timestamped folder under runs/)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run saved in --out from its finished chunks")
    run.add_argument("--quick", action="store_true",
                     help="shrink the experiment for a smoke test (2 seeds, <= 300 steps, 2 widths)")
    run.set_defaults(func=cmd_run)
    presets = sub.add_parser("presets", help="list the shipped presets",
                             description="List the shipped presets, one line each.")
    presets.set_defaults(func=cmd_presets)
    show = sub.add_parser("show", help="reprint a saved run's table and redraw its figures",
                          description="Reprint the table of a finished run and regenerate its "
                          "PNG figures, without recomputing.")
    show.add_argument("dir", metavar="DIR", help="the --out folder of a finished run")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxtd`` console script and ``python -m jaxtd``; returns the status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        return args.func(args)
    except cfg.ConfigError as err:
        print(f"jaxtd: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
