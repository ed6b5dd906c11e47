"""The ``jaxtd`` command: ``jaxtd run``, ``jaxtd presets``, ``jaxtd params``, ``jaxtd show``.

``jaxtd run [CONFIG.toml] [--preset NAME] [--set section.key=value ...] [--out DIR] [--resume]
[--quick] [--dry-run]`` validates the config (:mod:`jaxtd.config`), runs it
(:func:`jaxtd.experiment.run`: one :func:`jaxtd.sweep` per problem size, algorithm and seed
chunk, saved under ``DIR/sweeps`` so an interrupted run resumes) and writes into ``DIR``:
``config.toml`` (resolved), ``results.csv``/``results.json`` and the saved
:class:`jaxtd.results.Results` (histories in ``histories.npz``), and PNG figures
(:mod:`jaxtd.plots`). Its last line is ``compiled N programs in X s, ran in Y s``.

Exit status: 0 on success (also when the reader of stdout goes away, e.g. ``jaxtd presets |
head -2``: the output stops quietly); 2 for every failure that is not a bug in jaxtd (config,
command line, a user factory's module or algorithm, unreadable, damaged, foreign or locked saved
files, disk full, permissions), with one line naming the key or file and the fix; 130 after
Ctrl-C; 1 only for an internal error (a bug in jaxtd: report it). ``--debug`` prints the
traceback as well, with the same exit status. Ctrl-C exits with status 130 and prints the command
that resumes the run: at once in plain Python, after the current compilation or chunk inside
JAX (aborting XLA half-way crashes the process at exit); further Ctrl-C are ignored.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import gc
import importlib.metadata
import os
import re
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Sequence

import jaxtd
from jaxtd import config as cfg
from jaxtd.units import fmt_bytes, fmt_seconds

# The CLI's fast path: `jaxtd --version`, `--help`, `presets` and `params` import only the
# configuration (no JAX, numpy or pandas). The engine (experiment, plots, results, ...) is
# imported inside the commands that compute, and only there.

__all__ = ["main", "build_parser", "write_outputs", "UsageError", "EXIT_USAGE",
           "EXIT_INTERRUPTED", "EXIT_INTERNAL"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 1  # a bug in jaxtd only


class UsageError(cfg.ConfigError):
    """A bad command line or output folder (same one-line form and exit status as a config)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- outputs ------------------------------------------------------------------------------------

def _table_args(config: cfg.Config):
    init = config.params["lazy"]["init"]
    has_lazy = "lazy" in config.sweep.algorithms
    threshold = (lambda d, l: cfg.lazy_threshold(d, l, init)) if has_lazy else None
    return config.sweep.success_threshold, threshold


def _figures(results, config: cfg.Config, folder: Path, formats=("png",),
             dpi: int | None = None) -> list[Path]:
    from jaxtd import plots
    from jaxtd.targets import weights as weight_profile
    threshold, lazy = _table_args(config)
    true = None
    if config.plot == "deflation":
        rank = config.target.ranks[0]
        true = [float(v) for v in weight_profile(config.target.weights, rank)]
    return list(plots.save_figures(results.to_pandas(), folder, plot=config.plot,
                                   success_threshold=threshold, lazy_threshold=lazy,
                                   histories=results.histories, true_weights=true,
                                   formats=formats, dpi=dpi or plots.DPI))


def _write_config(config: cfg.Config, out_dir: Path) -> Path:
    from jaxtd.results import atomic_write
    path = out_dir / "config.toml"
    with atomic_write(str(path), "w") as f:
        f.write(cfg.dumps(config))
    return path


_DEBUG = False  # --debug: let every exception through, figures included


def _figures_or_note(results, config: cfg.Config, folder: Path, formats=("png",),
                     dpi: int | None = None) -> list[Path]:
    """The figures; a plotting failure is one note line (the results are saved already), not
    a failed run."""
    try:
        return _figures(results, config, folder, formats, dpi)
    except Exception as err:
        if _DEBUG:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        _log(f"jaxtd: note: figures not drawn ({type(err).__name__}: {first}); the results are "
             f"saved; `jaxtd --debug show {folder} --out {folder}` shows the traceback")
        return []


def _transitions(results, config: cfg.Config):
    """The located lazy-to-rich transition per width (:func:`jaxtd.transition.locate`) when the
    config draws the init-scale figure and the rows carry the derivative; else ``None``."""
    from jaxtd import transition
    df = results.to_pandas()
    if config.plot != "init-scale" or transition.COLUMN not in df.columns:
        return None
    return transition.locate(df, config.sweep.success_threshold)


def _sample_counts(results, config: cfg.Config):
    """The sample count from which each regime succeeds (:func:`jaxtd.phase.critical_sample_counts`)
    when the config draws the samples figure and sweeps ``samples``; else ``None``."""
    from jaxtd import phase
    df = results.to_pandas()
    if config.plot != "samples" or "active_samples" not in df.columns:
        return None
    return phase.critical_sample_counts(df[df["active_samples"].notna()])


def write_outputs(results, config: cfg.Config, out_dir: Path, formats=("png",),
                  dpi: int | None = None) -> list[Path]:
    """Save results (CSV, JSON, npz), the resolved config and the figures (in each of
    ``formats``, PNG at ``dpi``: :func:`jaxtd.plots.save_figures`); return the paths.
    The init-scale plot also writes ``transition.csv`` (the located transition per width), the
    samples plot ``sample_counts.csv`` (the critical sample count per regime and size)."""
    results.save(str(out_dir))
    _write_config(config, out_dir)
    figs = _figures_or_note(results, config, out_dir, formats, dpi)
    names = ["config.toml", "results.csv", "results.json", "histories.npz"]
    from jaxtd.results import atomic_write
    for name, table in (("transition.csv", _transitions(results, config)),
                        ("sample_counts.csv", _sample_counts(results, config))):
        if table is not None:
            with atomic_write(str(out_dir / name), "w") as f:
                table.to_csv(f, index=False)
            names.append(name)
    return [out_dir / n for n in names] + figs


def _print_table(results, config: cfg.Config) -> None:
    from jaxtd import plots
    threshold, lazy = _table_args(config)
    df = results.to_pandas()
    print(plots.format_table(df, threshold, lazy))
    if (config.plot == "lazy-threshold" and lazy is not None and "lazy_best_residual" in df
            and df["lazy_best_residual"].notna().any()):
        print("\n" + plots.format_threshold(df, threshold, lazy))
    swept = sorted({h for a in config.sweep.algorithms for h, _ in
                    cfg.swept(config, a)})
    if swept:  # the width table merges hyper-parameter values: add the per-value summary
        sweeping = [a for a in config.sweep.algorithms if cfg.swept(config, a)]
        summary = results.select(results.rows["algorithm"].isin(sweeping)).summary(
            by=["algorithm", "order", "dim", "rank", *swept])
        print("\nper hyper-parameter value (success rate, median error):")
        print(summary.drop(columns=["diverged_rate"]).to_string(index=False))
    table = _transitions(results, config)
    if table is not None:
        print("\nlazy-to-rich transition: init scale where the median d(final error)/d(log "
              "init_scale) peaks (NaN: the median error does not cross the success threshold; "
              "at_edge: at the grid's end)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    counts = _sample_counts(results, config)
    if counts is not None:
        print("\nsample count from which each regime succeeds (success rate >= 0.5 at every "
              "larger n; bootstrap 95% CI; NaN: not within the grid) vs C(d+l-1, l):")
        print(counts.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


# -- commands -----------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.split("(")[0].strip()).strip("-.") or "run"


def _resolve_config(args) -> tuple[cfg.Config, Path]:
    """The config and output folder a ``jaxtd run`` command line asks for."""
    if args.config and args.preset:
        raise UsageError("--preset", "given together with a CONFIG file", "pass one or the other")
    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise UsageError("--resume", "needs the folder of the run", "add --out DIR")
    saved = out / "config.toml" if out else None
    if args.resume and not (saved.is_file()):
        raise UsageError("--resume", f"nothing to resume in {out} (no config.toml there)",
                         "drop --resume to start a new run, or pass the --out of an earlier run")
    if args.config:
        raw = cfg.load_raw(args.config)
    elif args.preset:
        raw = cfg.preset_raw(args.preset)
    elif args.resume and not args.quick:
        raw = cfg.load_raw(saved)  # resuming: the saved resolved config, as run before
    else:
        raw = cfg.preset_raw("headline")
    # precedence: the file (or preset) < --quick < --set (an explicit value always wins)
    config = cfg.parse(cfg.apply_overrides(raw, args.set or ()))
    if args.quick:
        config = cfg.quick(config, keep=cfg.set_keys(args.set or ()))
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{stamp}-{_slug(config.name)}"
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
    _write_config(config, out)


def _progress_bar(total: int):
    from jaxtd.results import progress_enabled, tqdm_class
    return tqdm_class()(total=total, unit="cell", desc="jaxtd run", file=sys.stderr, smoothing=0.1,
                disable=not progress_enabled(None))


class _CompilePhase:
    """``experiment.run``'s ``on_event`` for the progress bar: "compiling k/N programs" while a
    program compiles, the pass's name while a column is added, "jaxtd run" otherwise. The time
    spent compiling is kept out of the bar's rate, so its ETA is the run's. Without a bar (not a
    terminal) each compilation is one ``[jaxtd]`` line."""

    RUN = "jaxtd run"

    def __init__(self, bar, programs: int):
        self.bar, self.programs, self.started, self.label = bar, programs, 0, self.RUN

    def __call__(self, kind: str, **info) -> None:
        if kind == "compile_start":
            self.started += 1
            total = max(self.programs, self.started)  # a resumed run may compile fewer
            if self.bar.disable:
                _log(f"[jaxtd] compiling {self.started}/{total} programs ({info.get('what')})")
            self.bar.set_description(f"compiling {self.started}/{total} programs", refresh=True)
        elif kind == "compile_end":  # called inside JAX: no interrupt checkpoint here
            self.bar.set_description(self.label, refresh=True)
            if not self.bar.disable:  # the rate (hence the ETA) skips the compilation
                self.bar.last_print_t = self.bar._time()
            return
        elif kind == "phase":
            self.label = info.get("what") or self.RUN
            self.bar.set_description(self.label, refresh=True)
        _INTERRUPTS.checkpoint()


def _drain() -> None:
    """Wait for computations still running on XLA's threads, so that an interrupted process
    never tears the runtime down under them."""
    if "jax" not in sys.modules:
        return
    import jax  # already loaded (checked above): the import starts nothing
    try:
        for array in jax.live_arrays():
            array.block_until_ready()
        jax.effects_barrier()
        sweep_module = sys.modules.get("jaxtd._sweep")
        if sweep_module is not None:
            sweep_module.clear_cache()
        jax.clear_caches()
        gc.collect()
    except Exception:  # best effort: nothing to wait for is fine
        pass


def cmd_run(args) -> int:
    """``jaxtd run``: run a config or preset, write results and figures, print the table."""
    _connect(args)  # before anything starts JAX
    from jaxtd import distributed, experiment
    main = distributed.is_main_process()
    config, out = _resolve_config(args)
    out = Path(distributed.broadcast_json(str(out)))  # process 0's (default: its timestamp)
    if args.dry_run and config.phase is not None:
        print(experiment.describe_phase(config))
        print(f"would write into {out} (nothing written: --dry-run)")
        return 0
    if args.dry_run:
        print(experiment.describe(config, compile_cache=not args.no_compile_cache))
        print(f"would write into {out} (nothing written: --dry-run)")
        return 0
    if config.phase is not None:
        return _run_phase(args, config, out, main)
    seconds = _check_size(config, args.max_memory)
    if main and seconds > LONG_RUN_SECONDS:
        _log(f"jaxtd: note: this run is estimated at ~{fmt_seconds(seconds)} of compute on 2 "
             "CPU cores (rough; `jaxtd run --dry-run` shows the plan); Ctrl-C keeps the finished "
             "chunks and `--resume` continues")
    if main:
        _check_out(config, out, args.resume)
    if not args.no_compile_cache:
        from jaxtd import compile_cache
        compile_cache.enable()
    start = time.perf_counter()
    bar = _progress_bar(experiment.total_cells(config))
    on_event = _CompilePhase(bar, experiment.count_programs(config))

    def on_cells(n: int) -> None:
        bar.update(n)
        _INTERRUPTS.checkpoint()

    def on_start(sub):
        _INTERRUPTS.checkpoint()
        if bar.disable:
            _log(f"[jaxtd] {sub.algorithm}: l={sub.order} d={sub.dim} r={sub.rank}, widths "
                 f"{list(sub.widths)}, {sub.seeds} seeds, {sub.steps} steps")
        else:
            bar.set_postfix_str(sub.folder, refresh=True)

    try:
        try:
            outcome = experiment.run(config, out, resume=args.resume, on_cells=on_cells,
                                     on_start=on_start, on_event=on_event)
            _INTERRUPTS.checkpoint()
        finally:
            bar.close()
        results = outcome.results
        if not main:  # every process holds the same results; process 0 writes and reports
            return 0
        paths = write_outputs(results, config, out, args.format, args.dpi)
    except KeyboardInterrupt:
        _drain()
        _log(f"\n[jaxtd] interrupted: finished chunks are saved in {out}; resume with:\n"
             f"  jaxtd run --out {out} --resume")
        return EXIT_INTERRUPTED
    _print_table(results, config)
    print(f"\n{config.name}: {len(results)} runs in {time.perf_counter() - start:.0f} s; wrote")
    for p in paths:
        print(f"  {p}")
    loaded = (f" (loaded {outcome.n_loaded} saved by an earlier run in "
              f"{outcome.load_seconds:.1f} s)" if outcome.n_loaded else "")
    print(f"compiled {outcome.n_compiles} programs in {outcome.compile_seconds:.1f} s{loaded}, "
          f"ran in {outcome.run_seconds:.1f} s")
    return 0


def write_phase_outputs(outcome, config: cfg.Config, out_dir: Path, formats=("png",),
                        dpi: int | None = None) -> list[Path]:
    """A phase-diagram run's files: ``results.csv`` (every probed run), ``critical_widths.csv``,
    ``exponents.csv``, the resolved config and ``phase_diagram_<kind>`` figures."""
    from jaxtd import plots
    from jaxtd.results import atomic_write
    _write_config(config, out_dir)
    paths = [out_dir / "config.toml"]
    for name, table in (("results.csv", outcome.results.rows),
                        ("critical_widths.csv", outcome.critical_widths),
                        ("exponents.csv", outcome.exponents)):
        with atomic_write(str(out_dir / name), "w") as f:
            table.to_csv(f, index=False)
        paths.append(out_dir / name)
    try:
        paths += plots.save_phase_figures(outcome.critical_widths, out_dir, formats,
                                          dpi or plots.DPI, max(config.sweep.widths))
    except Exception as err:
        if _DEBUG:
            raise
        _log(f"jaxtd: note: figures not drawn ({type(err).__name__}: {err}); the tables are "
             "saved")
    return paths


class _PhaseProgress:
    """``run_phase``'s ``on_cell`` for the progress bar: one step per finished (algorithm, cell),
    counted when the next one starts (and at :meth:`close`), the cell now searched as the bar's
    postfix. Without a bar (not a terminal) each cell is one ``[jaxtd]`` line."""

    def __init__(self, bar):
        self.bar = bar
        self.started = 0

    def __call__(self, name: str, cell: tuple) -> None:
        kind, weights, order, dim, rank = cell
        profile = weights if isinstance(weights, str) else "explicit"
        text = f"{name}: {kind}, {profile} weights, l={order} d={dim} r={rank}"
        if self.started:
            self.bar.update(1)
        self.started += 1
        if self.bar.disable:
            _log(f"[jaxtd] {text}")
        else:
            self.bar.set_postfix_str(text, refresh=True)

    def close(self, finished: bool = True) -> None:
        """Count the last cell (when the run ``finished``) and close the bar."""
        if finished and self.bar.n < self.started:
            self.bar.update(self.started - self.bar.n)
        self.bar.close()


def _run_phase(args, config: cfg.Config, out: Path, main: bool) -> int:
    """``jaxtd run`` of a phase-diagram config: adaptive searches, each probe saved under
    ``DIR/searches`` as it finishes, so ``--resume`` continues an interrupted run."""
    from jaxtd import experiment
    if main:
        _check_out(config, out, args.resume)
    if not args.no_compile_cache:
        from jaxtd import compile_cache
        compile_cache.enable()
    start = time.perf_counter()
    progress = _PhaseProgress(_progress_bar(len(experiment.phase_cells(config))
                                            * len(config.sweep.algorithms)))

    def on_cell(name, cell):
        _INTERRUPTS.checkpoint()
        progress(name, cell)

    outcome = None
    try:
        try:
            outcome = experiment.run_phase(config, on_cell=on_cell,
                                           out_dir=out if main else None, resume=args.resume)
        finally:
            progress.close(finished=outcome is not None)
    except KeyboardInterrupt:
        _drain()
        _log(f"\n[jaxtd] interrupted: finished probes are saved in {out / 'searches'}; "
             f"resume with:\n  jaxtd run --out {out} --resume")
        return EXIT_INTERRUPTED
    if not main:
        return 0
    paths = write_phase_outputs(outcome, config, out, args.format, args.dpi)
    fmt = lambda v: f"{v:.3g}"  # noqa: E731
    print(outcome.critical_widths.to_string(index=False, float_format=fmt))
    print()
    print(outcome.exponents.to_string(index=False, float_format=fmt))
    print(f"\n{config.name}: {len(outcome.results)} runs in {time.perf_counter() - start:.0f} s; "
          "wrote")
    for p in paths:
        print(f"  {p}")
    return 0


_UNITS = {"": 1, "B": 1, "KB": 2 ** 10, "MB": 2 ** 20, "GB": 2 ** 30, "TB": 2 ** 40}


def parse_size(text: str) -> float:
    """``"8GB"``, ``"512 MB"``, ``"1e9"`` -> bytes (binary units); ``UsageError`` otherwise."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?B?)\s*", str(text).upper())
    try:
        value = float(m[1]) * _UNITS[m[2] if m[2] in _UNITS else m[2] + "B"]
    except (TypeError, ValueError, KeyError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError("--max-memory", f"cannot read {text!r} as a size",
                         "give a size such as 8GB or 512MB")
    return value


def available_memory() -> float | None:
    """Bytes of memory available to a new computation (``MemAvailable``), ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# A run estimated above this gets a note with the estimate before it starts.
LONG_RUN_SECONDS = 1800.0


def _check_size(config, max_memory) -> float:
    """Refuse, before anything compiles, a run whose estimated peak memory exceeds
    ``--max-memory`` (default: the memory available now); return the estimated compute
    seconds."""
    from jaxtd import experiment
    limit = parse_size(max_memory) if max_memory is not None else available_memory()
    peak, seconds = experiment.estimate(config)
    if limit is not None and peak > limit:
        raise UsageError("--max-memory", f"the run needs ~{fmt_bytes(peak)} at its peak "
                         f"(~{fmt_seconds(seconds)} of compute) but "
                         f"{fmt_bytes(limit)} is {'allowed' if max_memory else 'available'}",
                         "use fewer or smaller widths, fewer seeds per chunk "
                         "(--set sweep.chunk_size=N) or fewer seeds; `jaxtd run --dry-run` "
                         "shows the plan")
    return seconds


def _connect(args) -> None:
    """Join the other processes (``--coordinator``/``--num-processes``/``--process-id`` or
    ``--distributed auto``); nothing without those flags."""
    flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id}
    given = [k for k, v in flags.items() if v is not None]
    if args.distributed is None and not given:
        return
    from jaxtd import distributed
    if args.distributed == "auto" and given:
        raise UsageError("--distributed", f"auto is given together with {', '.join(given)}",
                         "pass either --distributed auto or the three flags")
    try:
        if args.distributed == "auto":
            distributed.initialize(auto=True)
        else:
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, TypeError, RuntimeError) as err:
        raise UsageError("--distributed" if args.distributed else "--coordinator", str(err),
                         "give every process the same --coordinator HOST:PORT and "
                         "--num-processes N, and its own --process-id 0..N-1") from None


def cmd_presets(args) -> int:
    """``jaxtd presets``: one line per shipped preset (read from the TOML: no JAX start-up; the
    presets' validity is tested)."""
    for name in cfg.preset_names():
        print(f"{name:<16} {cfg.preset_raw(name).get('description', '')}")
    print("\nrun one with `jaxtd run --preset NAME`; copy its file as a starting point:\n  "
          + str(cfg.preset_path("headline")))
    return 0


def cmd_params(args) -> int:
    """``jaxtd params [TABLE]``: the keys of the algorithm tables, with defaults and ranges."""
    names = [args.table] if args.table else list(cfg.ALGORITHMS)
    for name in names:
        if not cfg.is_builtin(name):
            raise UsageError("TABLE", f"unknown algorithm table {name!r}",
                             f"use one of {', '.join(cfg.ALGORITHMS)}")
        print(f"[{name}]")
        for p in cfg.schema_of(name):
            print(f"  {p.describe()}")
    return 0


def cmd_show(args) -> int:
    """``jaxtd show DIR``: reprint a saved run's table after checking every saved file against
    its recorded sha256 (an edited or damaged file exits 2 naming it). Writes nothing: the
    figures are redrawn only into ``--out FIGDIR`` when it is given."""
    from jaxtd.results import Results
    out = Path(args.dir)
    if not (out / "config.json").is_file() or not (out / "config.toml").is_file():
        raise UsageError("DIR", f"{out} holds no finished jaxtd run",
                         "pass the --out folder of a finished `jaxtd run`")
    config = cfg.load(out / "config.toml")
    try:
        results = Results.load(str(out))
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(str(out), f"saved results cannot be read ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})",
                         "rerun it with `jaxtd run --out DIR --resume` after deleting the "
                         "damaged files") from None
    paths = []
    if args.out:
        figures = Path(args.out)
        try:
            figures.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError("--out", f"cannot create {figures} ({err.strerror})",
                             "choose a folder you can write to") from None
        paths = _figures_or_note(results, config, figures, args.format, args.dpi)
    _print_table(results, config)
    if paths:
        print("\nwrote\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def _version() -> str:
    """The installed distribution's version, else the package constant (never imports JAX:
    ``import jaxtd`` is lazy)."""
    try:
        return importlib.metadata.version("jaxtd")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return jaxtd.__version__


def _format_list(text: str) -> tuple[str, ...]:
    from jaxtd import plots
    try:
        return plots.check_formats(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dpi(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 10 <= value <= 2400:
        raise argparse.ArgumentTypeError(f"--dpi must be an integer in [10, 2400] (300 for "
                                         f"print), got {text!r}")
    return value


def _figure_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--dpi``, shared by the commands that draw."""
    parser.add_argument("--format", type=_format_list, default=("png",), metavar="FMT[,FMT]",
                        help="figure formats, comma-separated among png, pdf, svg (default png; "
                        "pdf/svg keep their text as text)")
    parser.add_argument("--dpi", type=_dpi, default=None, metavar="N",
                        help="resolution of the PNG figures (default 300)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``jaxtd`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="jaxtd", description="Over-parameterized symmetric tensor decomposition: lazy vs "
        "beyond-lazy training, as seeds x widths grids.")
    parser.add_argument("--version", action="version", version=f"jaxtd {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run an experiment (default: the headline preset)",
                         description="Run a TOML config or a preset; with neither, the headline "
                         "preset. `--dry-run` prints the grid and an estimate of its time on this machine; "
                         "the README lists each preset's measured wall time.")
    run.add_argument("config", nargs="?", metavar="CONFIG.toml", help="experiment config file")
    run.add_argument("--preset", metavar="NAME", help="a shipped preset (see `jaxtd presets`)")
    run.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                     help="override a config value (a TOML value; repeatable), e.g. "
                     "--set gd.learning_rate=0.05 --set sweep.seeds=4")
    run.add_argument("--out", metavar="DIR",
                     help="output folder (default: a new timestamped folder under runs/)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run saved in --out from its finished chunks")
    run.add_argument("--quick", action="store_true",
                     help="shrink the experiment for a smoke test (2 seeds, <= 300 steps, 2 "
                     "widths); a value given with --set is kept")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (sub-sweeps, cells, programs to compile, memory) and "
                     "write nothing")
    run.add_argument("--no-compile-cache", action="store_true",
                     help="do not use the persistent compilation cache (~/.cache/jaxtd/xla)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show tracebacks instead of one-line errors")
    run.add_argument("--max-memory", metavar="SIZE",
                     help="refuse a run whose estimated peak memory exceeds SIZE, e.g. 8GB "
                     "(default: the memory available now)")
    several = run.add_argument_group(
        "several processes", "one run over the devices of several processes or hosts: start the "
        "same command in every process; process 0 writes --out")
    several.add_argument("--coordinator", metavar="HOST:PORT",
                         help="host of process 0 and a free port, the same in every process")
    several.add_argument("--num-processes", type=int, metavar="N",
                         help="number of processes (with --coordinator)")
    several.add_argument("--process-id", type=int, metavar="I",
                         help="this process's index, 0..N-1 (with --coordinator)")
    several.add_argument("--distributed", choices=["auto"],
                         help="auto: take the processes from the cluster environment (SLURM, "
                         "Open MPI, TPU pod slice)")
    _figure_arguments(run)
    run.set_defaults(func=cmd_run)
    presets = sub.add_parser("presets", help="list the shipped presets",
                             description="List the shipped presets, one line each.")
    presets.set_defaults(func=cmd_presets)
    params = sub.add_parser("params", help="list the keys of the algorithm tables",
                            description="List each algorithm table's keys with default, range "
                            "and meaning (from the schema beside each constructor).")
    params.add_argument("table", nargs="?", metavar="TABLE", help="one of lazy, gd, variant, "
                        "deflation")
    params.set_defaults(func=cmd_params)
    show = sub.add_parser("show", help="reprint a saved run's table (and redraw its figures "
                          "with --out)",
                          description="Reprint the table of a finished run after checking its "
                          "saved files' checksums; nothing is written unless --out asks for "
                          "the figures to be redrawn there.")
    show.add_argument("dir", metavar="DIR", help="the --out folder of a finished run")
    show.add_argument("--out", metavar="FIGDIR", help="redraw the figures into FIGDIR (may be "
                      "DIR itself); without it nothing is written")
    _figure_arguments(show)
    show.set_defaults(func=cmd_show)
    return parser


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _failed_file(err: OSError) -> str | None:
    """The file an ``OSError`` is about: its ``filename``, else the ``path`` being written by
    the innermost jaxtd function on its traceback that has one (every file jaxtd writes goes
    through ``atomic_write(path)`` from a function holding ``path``; a ``write``/``fsync``
    failing for a full disk carries no filename)."""
    if err.filename is not None:
        return os.fsdecode(err.filename)
    tb, found = err.__traceback__, None
    while tb is not None:  # outermost to innermost: keep the innermost
        frame = tb.tb_frame
        if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            path = frame.f_locals.get("path")
            if isinstance(path, (str, os.PathLike)):
                found = os.fspath(path)
        tb = tb.tb_next
    return found


def _os_error_line(err: OSError) -> str:
    where = _failed_file(err) or "an output file"
    if err.errno == errno.ENOSPC:
        problem, fix = "disk full", "free some space (or choose another --out), then --resume"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem, fix = "permission denied", "choose a folder you can write to (--out)"
    elif err.errno == errno.ENOENT:
        problem, fix = "no such file or folder", "check the path"
    else:
        problem, fix = err.strerror or type(err).__name__, "check the path and the disk"
    return f"{where}: {problem}; fix: {fix}"


def _user_code(err: BaseException) -> str | None:
    """The config key (``[name] factory = "mod:fn"``) of the user factory module whose code
    raised ``err`` (a frame of its traceback lies in that module's file), else ``None``."""
    if not cfg.USER_CODE:
        return None
    tb = err.__traceback__
    while tb is not None:
        try:
            filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
        except (OSError, ValueError):
            filename = tb.tb_frame.f_code.co_filename
        if filename in cfg.USER_CODE:
            return cfg.USER_CODE[filename]
        tb = tb.tb_next
    return None


def _user_error_line(err: Exception) -> str | None:
    """The one line (``thing: problem; fix: ...``) of a failure that is not a bug in jaxtd: a
    config or command line, a damaged, foreign or locked results folder, the disk, or an
    exception raised inside a user factory's code; ``None`` for an internal error."""
    if isinstance(err, cfg.ConfigError):
        return str(err)
    store = sys.modules.get("jaxtd.store")  # not imported: cannot be one of its errors
    if store is not None and isinstance(err, store.ResultsError):
        text = str(err)
        return text if "; fix:" in text or "\n" in text else _as_fix(text)
    if isinstance(err, OSError):
        return _os_error_line(err)
    if isinstance(err, MemoryError):
        return ("out of memory: the run (or its plan) does not fit this machine; fix: use fewer "
                "or smaller widths or seeds (`jaxtd run --dry-run` shows the plan)")
    user = _user_code(err)
    if user is not None:
        first = str(err).splitlines()[0] if str(err) else ""
        return (f"{user}: the algorithm raised {type(err).__name__}: {first}; fix: fix that "
                "function (`jaxtd --debug run ...` shows the traceback)")
    return None


def _as_fix(text: str) -> str:
    """``"problem; what to do"`` (a ResultsError) as ``"problem; fix: what to do"``."""
    problem, sep, fix = text.rpartition("; ")
    return f"{problem}; fix: {fix}" if sep else text


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's final flush
    does not raise again (the documented Python recipe), and exit quietly with status 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _inside_jax(frame) -> bool:
    """Whether the interrupted Python stack is inside JAX (compiling or dispatching)."""
    marks = (f"{os.sep}jax{os.sep}", f"{os.sep}jaxlib{os.sep}")
    while frame is not None:
        if any(m in frame.f_code.co_filename for m in marks):
            return True
        frame = frame.f_back
    return False


class _Interrupts:
    """The SIGINT handler of ``jaxtd``.

    A KeyboardInterrupt raised inside an XLA call (a compilation aborted half-way) leaves XLA's
    worker threads running while the interpreter tears down, and the process then crashes
    (segmentation fault) after printing its message. So a Ctrl-C that lands inside JAX is
    deferred: the run stops at the next :meth:`checkpoint` (after the current compilation or
    chunk, whose results are saved); one that lands in plain Python raises at once. Further
    Ctrl-C are ignored while the run shuts down.
    """

    def __init__(self):
        self.pending = False
        self.raised = False

    def __call__(self, signum, frame):
        if self.raised or self.pending:
            return
        if _inside_jax(frame):
            self.pending = True
            _log("\n[jaxtd] Ctrl-C: stopping after the current compilation or chunk ...")
            return
        self.raised = True
        raise KeyboardInterrupt

    def checkpoint(self) -> None:
        """Raise the deferred KeyboardInterrupt, if any (call where stopping is safe)."""
        if self.pending and not self.raised:
            self.raised = True
            raise KeyboardInterrupt


_INTERRUPTS = _Interrupts()


_EIGEN_FLAG = "--xla_cpu_multi_thread_eigen=false"


def _single_threaded_eigen() -> None:
    """Batched ``eigh`` (the dense lazy optimum over several seeds) can deadlock XLA's CPU pool
    on a 2-core machine: every pool thread waits on work queued behind it. Without that pool
    the sweeps run as fast (measured), so the command turns it off unless the user's
    ``XLA_FLAGS`` already decide; it only takes effect before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_EIGEN_FLAG}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxtd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    _single_threaded_eigen()
    global _INTERRUPTS, _DEBUG
    _DEBUG = bool(args.debug)
    previous = None
    handler = _INTERRUPTS = _Interrupts()
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: keep the default behaviour
        previous = None
    show_warning = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        _log(f"jaxtd: note: {str(message).splitlines()[0]}")

    warnings.showwarning = one_line
    try:
        status = args.func(args)
        sys.stdout.flush()  # a reader that went away (`jaxtd presets | head -2`) shows here
        return status
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        _drain()
        _log("\n[jaxtd] interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as err:
        if args.debug:  # the traceback, then the same one line and exit status as without
            traceback.print_exc()
        line = _user_error_line(err)
        if line is not None:
            _log(f"jaxtd: error: {line}")
            return EXIT_USAGE
        first = str(err).splitlines()[0] if str(err) else ""
        _log(f"jaxtd: error: internal error ({type(err).__name__}: {first}); fix: "
             + ("report it with the traceback above" if args.debug else
                "rerun with --debug for the traceback and report it"))
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = show_warning
        # the console script keeps ignoring repeated Ctrl-C until the interpreter has exited
        if previous is not None and (argv is not None or not handler.raised):
            signal.signal(signal.SIGINT, previous)
