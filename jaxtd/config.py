"""The experiment configuration of ``jaxtd run``: TOML in, frozen dataclasses out.

A config file has these tables (unknown keys anywhere are errors)::

    name = "headline"                    # optional: a label, the plot kind and a one-line blurb
    description = "lazy vs beyond-lazy"
    plot = "width"                       # width | lazy-threshold | beyond-lazy | width-vs-rank | deflation | init-scale | phase-diagram | samples

    [target]                             # required
    order = 3                            # int >= 2, or a list to sweep problem sizes
    dim = 24                             # int >= 1, or a list; or per order: { 3 = [8, 16], 4 = [8] }
    rank = 3                             # int >= 1, or a list
    kind = "orthonormal"                 # orthonormal | basis | random (default orthonormal)
    weights = "equal"                    # equal | geometric | a list of `rank` numbers
    seed = 0                             # optional: key of the ground truth

    [sweep]                              # required
    algorithms = ["lazy", "gd", "variant"]   # built in: lazy, gd, variant, deflation, network; or your own
    widths = [3, 6, 12, 24, 48, 96, 128] # or per size: { below = 2, above = 1 } around the lazy m*
    seeds = 8
    steps = 3000
    success_threshold = 1e-2
    record_every = 20                    # optional (default: a divisor of steps near steps / 100)
    bucketing = "auto"                   # optional: auto | pow2 | single | exact (see jaxtd.sweep)
    chunk_size = 4                       # optional: seeds per chunk (default: sized for progress)

    [gd]                                 # optional, one table per algorithm
    learning_rate = 0.1                  # keys are the constructor's argument names
    init_scale = [1e-3, 1e-2, 1e-1]      # a hyper-parameter given as a list is swept (vmapped)
    optimizer = "adam"                   # any optax optimizer by name ...
    optimizer_args = { b1 = 0.8 }        # ... with its keyword arguments

    [network]                            # the two-layer network on samples of the target
    regime = "nt"                        # nn | nt | rf (jaxtd.algorithms.network)
    samples = [32, 64, 128]              # data set sizes n: a list is one vmapped axis

    [mine]                               # an algorithm of yours, listed in [sweep] algorithms
    factory = "mypackage.module:build"   # returns a jaxtd Algorithm; other keys are its kwargs
    learning_rate = 0.1

    [log]                                # optional: every run's history, under the run's out dir
    jsonl = true                         # log/<sub-sweep>.jsonl (default false)
    csv = false                          # log/<sub-sweep>.csv
    tensorboard = false                  # log/tensorboard/<sub-sweep>/ (pip install tensorboardX)

The tables ``[gd]``, ``[variant]``, ``[deflation]``, ``[lazy]`` and ``[network]`` take the
arguments of :func:`jaxtd.algorithms.gd`, ``variant``, ``deflation``, ``lazy_gd`` and ``network``:
names, defaults and
ranges come from the schema declared next to each constructor (``SCHEMA``, see
:mod:`jaxtd.schema`); ``jaxtd params`` lists them. ``[lazy]`` adds ``train`` (false: only the exact
best lazy residual, no lazy GD), ``seeds`` (run lazy on the first seeds only; 0 = all) and
``method`` (the solver of the exact best residual: auto | dense | iterative). ``[network]
samples`` given as a list sweeps the data set size like widths: the algorithm is built with the
largest ``n`` and each listed ``n`` masks its data set to the first ``n`` samples (hparam
``active_samples``, one vmapped axis; the cell equals the run with ``samples = n`` alone). A
table ``factory = "jaxtd.algorithms:network"`` takes the same keys, so a config can run several
regimes side by side (the ``samples`` preset).

Validation happens here, in plain Python, before anything is traced; every failure is a
:class:`ConfigError` whose message is one line naming the key and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.util
import re
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from jaxtd import _sizes, schema
from jaxtd._sizes import MAX_ORDER, MAX_WINDOW  # the size bounds the schemas below use
from jaxtd.schema import ConfigError, Param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ConfigError", "Target", "Sweep", "Config", "ALGORITHMS", "TARGET_KINDS", "PLOTS",
           "parse", "loads", "load", "load_raw", "preset", "preset_names", "preset_path", "quick",
           "set_keys", "dumps", "lazy_threshold", "case_widths", "apply_overrides", "schema_of",
           "constructor_of", "user_factory", "is_builtin", "factory_schema", "table_schema",
           "swept", "build_algorithm", "constructor_values",
           "Log", "LOG_SCHEMA", "Phase", "PHASE_SCHEMA"]

# table name -> module of the constructor (jaxtd.algorithms.<module>.<module>)
_BUILTIN = {"lazy": "lazy_gd", "gd": "gd", "variant": "variant", "deflation": "deflation",
            "network": "network"}
ALGORITHMS = tuple(_BUILTIN)
TARGET_KINDS = ("orthonormal", "basis", "random")
_KIND_ALIASES = {"orthogonal": "orthonormal"}  # deprecated spelling, still read
WEIGHTS = ("equal", "geometric")
PLOTS = ("width", "lazy-threshold", "beyond-lazy", "width-vs-rank", "deflation", "init-scale",
         "phase-diagram", "samples")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# [lazy] keys of the experiment, not of lazy_gd: the exact best residual costs O((m d)^3) per
# cell and the lazy outcome barely depends on the seed, so big grids run lazy on few seeds.
LAZY_EXTRA = (
    Param("train", "bool", "also run lazy GD (false: only the exact best lazy residual)",
          default=True),
    Param("seeds", "int", "run lazy on the first this many seeds only (0: every seed)",
          default=0, ge=0),
    Param("method", "choice", "solver of the exact best residual (jaxtd.lazy.best_residual)",
          default="auto", choices=("auto", "dense", "iterative")),
)


TARGET_SCHEMA = (
    Param("order", "ints", "tensor order l (a list sweeps it)", ge=2, le=MAX_ORDER, example=3),
    Param("dim", "ints", "dimension d (a list sweeps it)", ge=1, example=8),
    Param("rank", "ints", "rank r of the ground truth (a list sweeps it)", ge=1, example=2),
    Param("kind", "choice", "components: orthonormal, the standard basis, or random unit",
          default="orthonormal", choices=TARGET_KINDS + tuple(_KIND_ALIASES)),
    Param("weights", "str", "equal | geometric | a list of rank numbers", default="equal"),
    Param("seed", "int", "PRNG seed of the ground truth", default=0, ge=0),
)


# [sweep]: plain data (the bucketings and their default come from jaxtd._sizes, like the
# sweep's own)
SWEEP_SCHEMA = (
    Param("algorithms", "str", "algorithm tables to run", example=["gd"]),
    Param("widths", "ints", "model widths m", ge=1, example=[2, 4, 8]),
    Param("seeds", "int", "number of seeds per cell", ge=1, example=8),
    Param("steps", "int", "steps per run", ge=1, le=2 ** 31 - 1, example=1000),
    Param("success_threshold", "float", "success: relative error <= this", gt=0,
          example=0.01),
    Param("record_every", "int", "history cadence (a divisor of steps)", default=None, ge=1),
    Param("bucketing", "choice", "width buckets sharing one compilation",
          default=_sizes.DEFAULT_BUCKETING, choices=_sizes.BUCKETINGS),
    Param("chunk_size", "int", "seeds per chunk (saved, resumable, progress steps)",
          default=None, ge=1),
)


@dataclasses.dataclass(frozen=True)
class Target:
    """Ground-truth family; ``orders``, ``dims`` and ``ranks`` are swept as a product."""

    orders: tuple[int, ...]
    dims: tuple[int, ...]
    ranks: tuple[int, ...]
    kind: str = "orthonormal"
    weights: str | tuple[float, ...] = "equal"
    seed: int = 0
    # ``dim = {order: [dims]}``: ((order, dims), ...) in order of ``orders``; ``dims`` is then
    # their sorted union. Empty: ``dims`` is crossed with every order.
    dims_per_order: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def dims_of(self, order: int) -> tuple[int, ...]:
        """The dims run at ``order`` (all of ``dims`` unless ``dim`` is given per order)."""
        return dict(self.dims_per_order).get(order, self.dims) if self.dims_per_order else self.dims

    @property
    def sizes(self) -> tuple[tuple[int, int, int], ...]:
        """Every ``(order, dim, rank)`` problem size, in config order."""
        return tuple((o, d, r) for o in self.orders for d in self.dims_of(o) for r in self.ranks)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The grid run for every problem size and algorithm (``chunk_size`` None: automatic)."""

    algorithms: tuple[str, ...]
    widths: tuple[int, ...]
    seeds: int
    steps: int
    success_threshold: float
    record_every: int
    bucketing: str = "auto"
    chunk_size: int | None = None
    # ``widths = {below = b, above = a}``: (b, a), the arguments of
    # :func:`jaxtd.lazy.near_threshold_widths`; ``widths`` is then ``()`` (see :func:`case_widths`)
    near_threshold: tuple[int, int] | None = None


# [log]: which writers of jaxtd.log record every cell's history (experiment.run opens them)
LOG_SCHEMA = (
    Param("jsonl", "bool", "history as JSON lines: log/<sub-sweep>.jsonl", default=False),
    Param("csv", "bool", "history as CSV: log/<sub-sweep>.csv", default=False),
    Param("tensorboard", "bool", "TensorBoard scalars: log/tensorboard/<sub-sweep>/<cell> "
          "(needs tensorboardX)", default=False),
)


@dataclasses.dataclass(frozen=True)
class Log:
    """The ``[log]`` table: the history writers of a run (all off by default)."""

    jsonl: bool = False
    csv: bool = False
    tensorboard: bool = False


def _parse_log(raw: Any) -> Log:
    t = schema.check_table("log", LOG_SCHEMA, raw)
    if t["tensorboard"] and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("[log] tensorboard", "needs the optional dependency tensorboardX, "
                          "which is not installed", "pip install tensorboardX, or set "
                          "tensorboard = false (jsonl and csv need nothing)")
    return Log(**t)


# [phase] (plot = "phase-diagram"): the cells of the phase diagram, each critical width found by
# jaxtd.phase.search_critical_width between min and max of [sweep] widths
PHASE_SCHEMA = (
    Param("kinds", "str", "component kinds, each a phase diagram of its own",
          default=("orthonormal", "random"), example=["orthonormal", "random"]),
    Param("weights", "str", "weight profiles (equal | geometric), each a phase diagram of its "
          "own; default: [target] weights", example=["equal", "geometric"]),
    Param("rank", "int", "r of the cells swept in d ([target] dim)", ge=1, example=2),
    Param("dim", "int", "d of the cells swept in r ([target] rank)", ge=1, example=16),
    Param("factor", "float", "ratio of the search's coarse geometric width grid", default=2.0,
          gt=1),
    Param("batch", "int", "widths per bisection call of the search", default=3, ge=1),
    Param("lazy_check", "ints", "dims where the exact lazy optimum checks the lazy threshold",
          default=(), ge=1),
    Param("lazy_seeds", "int", "seeds of that check", default=2, ge=1),
)


@dataclasses.dataclass(frozen=True)
class Phase:
    """The ``[phase]`` table: cells ``(d, phase.rank)`` for d in ``[target] dim`` and
    ``(phase.dim, r)`` for r in ``[target] rank``, for each of ``kinds`` and each of
    ``weights`` (None: the one profile of ``[target] weights``)."""

    kinds: tuple[str, ...]
    rank: int
    dim: int
    factor: float = 2.0
    batch: int = 3
    lazy_check: tuple[int, ...] = ()
    lazy_seeds: int = 2
    weights: tuple[str, ...] | None = None


def _parse_phase(raw: Any) -> Phase:
    rest = _without("phase", raw, "kinds")
    rest = {k: v for k, v in rest.items() if k != "weights"}
    t = schema.check_table("phase", PHASE_SCHEMA[2:], rest)  # rank and dim are required
    kinds = raw.get("kinds", ["orthonormal", "random"]) if isinstance(raw, Mapping) else []
    if not isinstance(kinds, list) or not kinds or len(set(kinds)) != len(kinds) or any(
            k not in TARGET_KINDS for k in kinds):
        raise ConfigError("[phase] kinds", f"expected a list of distinct kinds, got {kinds!r}",
                          f"write e.g. kinds = [\"orthonormal\", \"random\"] "
                          f"(of {', '.join(TARGET_KINDS)})")
    weights = raw.get("weights")
    if weights is not None and (not isinstance(weights, list) or not weights or len(
            set(map(str, weights))) != len(weights) or any(w not in WEIGHTS for w in weights)):
        raise ConfigError("[phase] weights", f"expected a list of distinct weight profiles, got "
                          f"{weights!r}", f"write e.g. weights = [\"equal\", \"geometric\"] "
                          f"(of {', '.join(WEIGHTS)}; an explicit list of weights fits one rank "
                          "only: give it as [target] weights and leave [phase] weights out)")
    return Phase(tuple(kinds), t["rank"], t["dim"], t["factor"], t["batch"],
                 tuple(sorted(t["lazy_check"])), t["lazy_seeds"],
                 None if weights is None else tuple(weights))


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated experiment: target family, grid, and every algorithm's resolved parameters
    (``params[table][key]``; a tuple value is a swept hyper-parameter)."""

    target: Target
    sweep: Sweep
    params: Mapping[str, Mapping[str, Any]]
    name: str = "custom"
    description: str = ""
    plot: str = "width"
    log: Log = Log()
    phase: Phase | None = None  # plot = "phase-diagram" only


# ---------------------------------------------------------------------------------------------
# Schemas.

def is_builtin(name: str) -> bool:
    return name in _BUILTIN


def constructor_of(name: str):
    """The constructor of built-in table ``name`` (``lazy`` -> :func:`jaxtd.algorithms.lazy_gd`)."""
    return getattr(importlib.import_module(f"jaxtd.algorithms._{_BUILTIN[name]}"), _BUILTIN[name])


def schema_of(name: str) -> tuple[Param, ...]:
    """The keys of built-in table ``name``: its constructor's ``SCHEMA`` (plus the lazy extras)."""
    module = importlib.import_module(f"jaxtd.algorithms._{_BUILTIN[name]}")
    return tuple(module.SCHEMA) + (LAZY_EXTRA if name == "lazy" else ())


def factory_schema(fn, where: str = "factory") -> tuple[Param, ...]:
    """The keys of a table whose ``factory`` is ``fn``: a built-in constructor's ``SCHEMA`` (so
    ``factory = "jaxtd.algorithms:gd"`` takes exactly the keys of ``[gd]``), else the schema read
    from ``fn``'s signature (:func:`jaxtd.schema.from_signature`)."""
    for name, module in _BUILTIN.items():
        if fn is constructor_of(name):
            return tuple(importlib.import_module(f"jaxtd.algorithms._{module}").SCHEMA)
    return schema.from_signature(fn, where)


def table_schema(name: str, table: Mapping[str, Any]) -> tuple[Param, ...]:
    """The keys of table ``[name]`` (``table`` holds its ``factory`` when it is not built in):
    what validates it, which keys are swept hyper-parameters and which are CSV columns."""
    if is_builtin(name):
        return schema_of(name)
    return factory_schema(user_factory(name, table["factory"]), table["factory"])


def swept(config: Config, name: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The hyper-parameters table ``[name]`` of ``config`` sweeps (list values), as
    ``(hparam, values)`` pairs in the order of its schema."""
    table = config.params[name]
    return tuple((p.hparam, tuple(table[p.name])) for p in table_schema(name, table)
                 if p.hparam and isinstance(table.get(p.name), tuple))


# The files of the user factory modules imported so far -> their config key
# (``[name] factory = "pkg.mod:fn"``): an exception raised from inside them later (while a run
# traces the algorithm) is the user's code failing, which the command reports as a config error.
USER_CODE: dict[str, str] = {}


def _first_line(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def user_factory(name: str, spec: Any):
    """The callable of ``[name] factory = "package.module:function"``; anything the import
    raises becomes a :class:`ConfigError` naming the factory."""
    where = f"[{name}] factory"
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(where, f"expected \"package.module:function\", got {spec!r}",
                          "name the function returning a jaxtd Algorithm")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # the current folder, as `python -m` would have it
            return user_factory(name, spec)
        raise ConfigError(where, f"cannot import {module_name} ({err})",
                          "make the module importable (install it, or run from its folder)") from None
    except Exception as err:  # the user's module failed while importing: its bug, not jaxtd's
        raise ConfigError(where, f"importing {module_name} raised {_first_line(err)}",
                          f"fix {module_name} (`jaxtd --debug run ...` shows the traceback)"
                          ) from err
    if getattr(module, "__file__", None):
        USER_CODE[str(Path(module.__file__).resolve())] = f'{where} = "{spec}"'
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(where, f"{module_name} has no function {attr!r}",
                          "name a function of that module")
    return fn


# ---------------------------------------------------------------------------------------------
# Sections.

def _without(section: str, raw: Any, key: str) -> dict:
    """``raw`` (checked to be a table) without ``key``, which has its own check."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}]", f"must be a table, got {raw!r}",
                          f"write a [{section}] section")
    return {k: v for k, v in raw.items() if k != key}


def _parse_target(raw: Any) -> Target:
    rest = _without("target", raw, "weights")
    per_order = isinstance(rest.get("dim"), Mapping)
    if per_order:  # checked below, once the orders are known
        rest = {**rest, "dim": 1}
    t = schema.check_table("target", [p for p in TARGET_SCHEMA if p.name != "weights"], rest)
    kind = t["kind"]
    if kind in _KIND_ALIASES:
        new = _KIND_ALIASES[kind]
        warnings.warn(f'[target] kind: "{kind}" is deprecated; write kind = "{new}"',
                      FutureWarning, stacklevel=2)
        kind = new
    ranks, dims = t["rank"], t["dim"]
    by_order = _dims_per_order(raw["dim"], t["order"]) if per_order else ()
    if by_order:
        dims = tuple(sorted({d for _, ds in by_order for d in ds}))
    weights = _weights(raw.get("weights", "equal"), ranks)
    if kind != "random" and max(ranks) > min(dims):
        raise ConfigError("[target] rank", f"rank {max(ranks)} > dim {min(dims)} for a {kind} "
                          "target", 'lower rank, raise dim, or use kind = "random"')
    return Target(t["order"], dims, ranks, kind, weights, t["seed"], by_order)


def _dims_per_order(value: Mapping, orders: tuple[int, ...]) -> tuple:
    """``dim = {order: dims}`` checked: one key per order of ``[target] order`` (a TOML key is a
    string, e.g. ``3 = [4, 8]``), each an int or a list of distinct ints >= 1."""
    out = {}
    for key, dims in value.items():
        where = f"[target] dim.{key}"
        try:
            order = int(key)
        except ValueError:
            order = None
        if order not in orders:
            raise ConfigError(where, f"{key!r} is not an order of [target] order = "
                              f"{list(orders)}", "key each list of dims by one of those orders, "
                              "e.g. dim = { 3 = [4, 8], 4 = [4] }")
        out[order] = schema.check(where, Param("dim", "ints", "", ge=1), dims)
    missing = [o for o in orders if o not in out]
    if missing:
        raise ConfigError("[target] dim", f"no dims for order {missing[0]}",
                          f"add {missing[0]} = [...] to the dim table, or drop that order")
    return tuple((o, out[o]) for o in orders)


def _weights(value: Any, ranks: tuple[int, ...]) -> str | tuple[float, ...]:
    key = "[target] weights"
    if isinstance(value, str):
        return schema.check(key, Param("weights", "choice", "", choices=WEIGHTS), value)
    if not isinstance(value, list):
        raise ConfigError(key, f"expected \"equal\", \"geometric\" or a list, got {value!r}",
                          "write weights = \"equal\"")
    if len(ranks) != 1 or len(value) != ranks[0]:
        raise ConfigError(key, f"a list of {len(value)} weights needs exactly one rank = "
                          f"{len(value)}", "give one weight per component or use \"equal\"")
    return tuple(schema.check(key, Param("weights", "float", "", gt=0), v) for v in value)


NEAR_THRESHOLD_SCHEMA = (  # [sweep] widths as a table: jaxtd.lazy.near_threshold_widths
    # >= 1: a size whose window already fits at its smallest width gives only an upper bound
    Param("below", "int", "widths below the predicted lazy threshold m*", ge=1,
          le=MAX_WINDOW, example=2),
    Param("above", "int", "widths above m*", ge=0, le=MAX_WINDOW, example=1),
)


def _near_threshold(value: Mapping) -> tuple[int, int]:
    """``widths = {below = b, above = a}`` checked (both keys required): ``(b, a)``."""
    names = [p.name for p in NEAR_THRESHOLD_SCHEMA]
    for key in value:
        if key not in names:
            raise ConfigError(f"[sweep] widths.{key}", "unknown key",
                              "a widths table takes below and above (widths around the lazy "
                              "threshold), e.g. widths = { below = 2, above = 1 }")
    t = {}
    for p in NEAR_THRESHOLD_SCHEMA:
        if p.name not in value:
            raise ConfigError(f"[sweep] widths.{p.name}", "missing",
                              f"add it: {p.describe()}, e.g. widths = {{ below = 2, above = 1 }}")
        t[p.name] = schema.check(f"[sweep] widths.{p.name}", p, value[p.name])
    return t["below"], t["above"]


def _parse_sweep(raw: Any) -> Sweep:
    rest = _without("sweep", raw, "algorithms")
    window = None
    if isinstance(rest.get("widths"), Mapping):
        window = _near_threshold(rest["widths"])
        rest = {**rest, "widths": 1}
    s = schema.check_table("sweep", SWEEP_SCHEMA[1:], rest)
    if "algorithms" not in raw:
        raise ConfigError("[sweep] algorithms", "missing",
                          f"add e.g. algorithms = [\"gd\"] using {', '.join(ALGORITHMS)}")
    algorithms = raw["algorithms"]
    if not isinstance(algorithms, list) or not algorithms:
        raise ConfigError("[sweep] algorithms", f"expected a non-empty list, got {algorithms!r}",
                          f"write e.g. algorithms = [\"gd\"] using {', '.join(ALGORITHMS)} or "
                          "a table of yours")
    for a in algorithms:
        if not isinstance(a, str) or not _NAME.match(a):
            raise ConfigError("[sweep] algorithms", f"bad algorithm name {a!r}",
                              f"use {', '.join(ALGORITHMS)} or a table name of letters, digits, "
                              "_ and -")
    if len(set(algorithms)) != len(algorithms):
        raise ConfigError("[sweep] algorithms", "duplicate algorithm", "list each algorithm once")
    steps = s["steps"]
    record_every = s["record_every"] or _sizes.default_record_every(steps)
    if steps % record_every:
        raise ConfigError("[sweep] record_every", f"{record_every} does not divide steps = "
                          f"{steps}", f"use a divisor of steps, e.g. {_sizes.default_record_every(steps)}")
    return Sweep(tuple(algorithms), () if window else tuple(sorted(s["widths"])), s["seeds"],
                 steps, s["success_threshold"], record_every, s["bucketing"], s["chunk_size"],
                 window)


def _user_table(name: str, raw: Any) -> dict[str, Any]:
    """A user table checked against its factory's schema (:func:`factory_schema`): the same
    validator as the built-in tables, lists only for numbers (swept hyper-parameters)."""
    if raw is None:
        raise ConfigError("[sweep] algorithms", f"{name!r} is neither built in nor a table of "
                          "this config", f"use one of {', '.join(ALGORITHMS)}, or add a [{name}] "
                          'table with factory = "package.module:function"')
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}]", f"must be a table, got {raw!r}", f"write a [{name}] table")
    if "factory" not in raw:
        raise ConfigError(f"[{name}] factory", "missing",
                          'add factory = "package.module:function" returning a jaxtd Algorithm')
    fn = user_factory(name, raw["factory"])
    rest = {k: v for k, v in raw.items() if k != "factory"}
    keys = factory_schema(fn, raw["factory"])
    if "optimizer_args" in rest and not any(p.name == "optimizer_args" for p in keys):
        raise ConfigError(f"[{name}] optimizer_args", f"{raw['factory']} takes no optimizer "
                          "argument (an optimizer name needs one)", "remove optimizer and "
                          "optimizer_args, or give the factory an optimizer argument (a jaxtd "
                          "optimizer spec, see jaxtd.algorithms.base.make_optimizer) and a "
                          "learning_rate argument")
    values = schema.check_table(name, keys, rest)
    return {"factory": raw["factory"], **values}


def _first_param(message: str, names) -> str | None:
    for n in sorted(names, key=len, reverse=True):
        if message.startswith(n) or message.startswith(f"{n} "):
            return n
    return None


def _check_builds(name: str, table: Mapping[str, Any], target: "Target") -> None:
    """Build the algorithm of every table once, so a constructor's own checks (e.g. deflation's
    ``delta1 > delta0``) and user factories fail here, as one config line. A user table is also
    built once per other value of each list (the factory checks every value it will run),
    its lists must name hyper-parameters of the algorithm (what a sweep can vmap), and its
    algorithm is traced once (:func:`check_user_algorithm`)."""
    algorithm = build_algorithm(name, table)
    if is_builtin(name):
        return
    lists = {k: v for k, v in table.items() if isinstance(v, tuple)}
    hparam_of = {p.name: p.hparam for p in table_schema(name, table) if p.hparam}
    for key, values in lists.items():
        if hparam_of.get(key, key) not in algorithm.hparams:
            known = ", ".join(sorted(algorithm.hparams)) or "none"
            raise ConfigError(f"[{name}] {key}", f"a list sweeps a hyper-parameter, and the "
                              f"algorithm of {table['factory']} has none named {key!r} (its "
                              f"hyper-parameters: {known})",
                              f"give one value, one table per value, or make {key} a "
                              "hyper-parameter of the algorithm (docs/architecture.md)")
        for value in values[1:]:
            build_algorithm(name, {**table, key: value}, at=f"{key} = {value!r}")
    order = target.orders[0]
    check_user_algorithm(name, table["factory"], algorithm, order,
                         target.dims_of(order)[0], target.ranks[0])


def check_user_algorithm(name: str, spec: str, algorithm, order: int, dim: int,
                         rank: int, width: int = 2) -> None:
    """Trace a user algorithm's ``init``, ``step``, ``tensor`` and ``params`` once on a small
    problem of the config's first size (shapes only, nothing runs) and check what they return,
    so a malformed factory is one config line naming it before any run starts."""
    # JAX only here and in build_algorithm: `import jaxtd.config` stays plain Python
    import jax
    import jax.numpy as jnp

    from jaxtd.symcp import SymCP
    where = f"[{name}] factory"
    fix = f"fix {spec} (see docs/architecture.md, the Algorithm interface)"

    def fail(problem: str, err: BaseException | None = None):
        raise ConfigError(where, f"{spec}: {problem}", fix) from err

    def call(what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError:
            raise
        except Exception as err:  # the user's code: report it as that table's problem
            fail(f"its {what} raised {_first_line(err)}", err)

    def probe(key):
        dtype = jnp.float32
        target = SymCP(jnp.ones(rank, dtype), jnp.eye(rank, dim, dtype=dtype), order)
        state = call("init(key, target, width)", algorithm.init, key, target, width)
        bad = [x for x in jax.tree_util.tree_leaves(state) if not hasattr(x, "shape")]
        if bad:
            fail(f"init must return a pytree of arrays (the state), got a leaf {bad[0]!r}")
        out = call("step(state, target)", algorithm.step, state, target)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(f"step must return (state, metrics), got {type(out).__name__}")
        new, metrics = out
        if not isinstance(metrics, dict) or "loss" not in metrics:
            fail("step's metrics must be a dict with a 'loss' entry, got "
                 f"{type(metrics).__name__}" + (f" with keys {sorted(metrics)}"
                                                 if isinstance(metrics, dict) else ""))
        before, after = (jax.tree_util.tree_structure(x) for x in (state, new))
        if before != after:
            fail(f"step must return a state of the same structure as init's ({before} vs "
                 f"{after})")
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new)):
            if getattr(a, "shape", None) != getattr(b, "shape", None) or \
                    getattr(a, "dtype", None) != getattr(b, "dtype", None):
                fail("step changes the shape or dtype of a state leaf "
                     f"({getattr(a, 'shape', a)} {getattr(a, 'dtype', '')} -> "
                     f"{getattr(b, 'shape', b)} {getattr(b, 'dtype', '')})")
        for k, v in metrics.items():
            if getattr(v, "shape", None) != ():
                fail(f"step's metrics[{k!r}] must be a scalar, got {v!r}")
        if algorithm.measure is not None:
            measured = call("measure(state, target)", algorithm.measure, new, target)
            if not isinstance(measured, dict) or any(getattr(v, "shape", None) != ()
                                                     for v in measured.values()):
                fail(f"measure(state, target) must return a dict of scalars, got {measured!r}")
        tensor = call("tensor(state)", algorithm.tensor, new)
        if not isinstance(tensor, SymCP):
            fail(f"tensor(state) must return a jaxtd.SymCP, got {type(tensor).__name__}")
        params = call("params(state)", algorithm.params, new)
        if getattr(params, "ndim", None) != 2:
            fail(f"params(state) must return a (width, d) array, got {params!r}")
        return metrics["loss"]

    try:
        jax.eval_shape(probe, jax.random.key(0))
    except ConfigError:
        raise
    except Exception as err:  # anything else while tracing it: still the factory's algorithm
        fail(f"tracing its init/step failed with {_first_line(err)}", err)


def _defaults(name: str) -> dict[str, Any]:
    """The values of built-in table ``[name]`` left empty. Such a table is not built unless it
    runs: ``[network]``'s defaults (online SGD with no batch size) build nothing, and an unused
    default table has nothing to check."""
    return schema.check_table(name, schema_of(name), {})


def constructor_values(name: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """Table ``[name]`` without the keys that are not constructor arguments (a user table's
    ``factory``, the lazy extras ``train``, ``seeds``, ``method``)."""
    drop = {p.name for p in LAZY_EXTRA} if name == "lazy" else {"factory"}
    return {k: v for k, v in table.items() if k not in drop}


def build_algorithm(name: str, table: Mapping[str, Any], at: str = ""):
    """The :class:`~jaxtd.algorithms.Algorithm` of table ``[name]``, named ``name``: one path for
    built-in and user tables (:func:`jaxtd.schema.build`: the first value of a swept list,
    optimizer names turned into the ``optimizer`` argument). What the constructor raises is a
    :class:`ConfigError` naming the table (and the key, when its message starts with one);
    ``at`` (e.g. ``"momentum = 0.9"``) says which value of a list was being built.

    Built once per table: :func:`parse` builds every table to check it, and the experiment
    asks again for the same table (equal tables, equal algorithms, see
    :func:`jaxtd.algorithms.base.constructor`), so the algorithm built at load is returned
    (a memo of this pure function, keyed by the table's values; errors are not kept)."""
    return _built(name, _frozen(table), at)


def _frozen(value: Any) -> tuple:
    """A hashable, reversible (:func:`_thawed`) form of a validated table: tables, lists and
    tuples (a swept list) keep their kind, and a scalar its type (``1`` is not ``1.0``)."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    return (type(value).__name__, value)


def _thawed(frozen: tuple) -> Any:
    kind, value = frozen
    if kind == "table":
        return {k: _thawed(v) for k, v in value}
    if kind in ("list", "tuple"):
        return (list if kind == "list" else tuple)(_thawed(v) for v in value)
    return value


@functools.lru_cache(maxsize=256)
def _built(name: str, frozen: tuple, at: str):
    from jaxtd.algorithms import Algorithm
    table = _thawed(frozen)
    builtin = is_builtin(name)
    values = schema.largest_of_lists(table_schema(name, table), constructor_values(name, table))
    fn = constructor_of(name) if builtin else user_factory(name, table["factory"])
    named = builtin or any(fn is constructor_of(n) for n in _BUILTIN)
    what = name if builtin else table["factory"]
    try:
        algorithm = schema.build(fn, values, name=name if named else None, where=name)
    except ConfigError as err:
        if err.key.startswith("["):  # the table's own keys (schema.build): already placed
            raise
        # a constructor's schema check (jaxtd.schema.check_hparam) naming its argument
        raise ConfigError(f"[{name}] {err.key}", err.problem + (f" (at {at})" if at else ""),
                          err.fix) from err
    except Exception as err:  # the constructor's own checks, or the user's code failing
        if builtin and not isinstance(err, (ValueError, TypeError)):
            raise
        message = _first_line(err) if not builtin else str(err).splitlines()[0]
        key = _first_param(str(err), values)
        raise ConfigError(f"[{name}] {key}" if key else f"[{name}]",
                          f"{'' if builtin else what + ' raised '}{message}"
                          + (f" (at {at})" if at else ""),
                          "change the value (see `jaxtd params`)" if builtin else
                          "fix the table's keys (they are its keyword arguments)") from err
    if not isinstance(algorithm, Algorithm):
        raise ConfigError(f"[{name}] factory", f"{what} returned "
                          f"{type(algorithm).__name__}, not a jaxtd Algorithm",
                          "return e.g. jaxtd.algorithms.gd(...)")
    if algorithm.ranges is None:  # a user factory's: the ranges its table's schema declares
        declared = schema.hparam_params(table_schema(name, table))
        algorithm = algorithm._replace(ranges={h: p for h, p in declared.items()
                                               if h in algorithm.hparams})
    return algorithm if algorithm.name == name else algorithm._replace(name=name)


def parse(raw: Mapping[str, Any]) -> Config:
    """Validate a TOML document (already parsed into dicts) into a :class:`Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config", "not a table", "write TOML tables")
    for key in ("target", "sweep"):
        if key not in raw:
            raise ConfigError(f"[{key}]", "missing", "add it (see `jaxtd presets` and the preset "
                              "files for examples)")
    sweep = _parse_sweep(raw["sweep"])
    user = [a for a in sweep.algorithms if not is_builtin(a)]
    if "log" in user:
        raise ConfigError("[sweep] algorithms", "'log' names the [log] table, not an algorithm",
                          "rename your algorithm table")
    allowed = ("name", "description", "plot", "target", "sweep", "log", "phase") + ALGORITHMS + \
        tuple(user)
    for key in raw:
        if key not in allowed:
            raise ConfigError(key, "unknown key or table",
                              f"remove it, list it in [sweep] algorithms, or use one of "
                              f"{', '.join(allowed)}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(key, f"expected a string, got {raw[key]!r}", f'write {key} = "..."')
    name = raw.get("name", "custom")
    if not name.strip():
        raise ConfigError("name", "empty", 'write name = "my-experiment" or leave it out')
    plot = schema.check("plot", Param("plot", "choice", "", choices=PLOTS),
                        raw.get("plot", "width"))
    target = _parse_target(raw["target"])
    params: dict[str, Mapping[str, Any]] = {}
    for table in ALGORITHMS:
        params[table] = schema.check_table(table, schema_of(table), raw.get(table))
    for table in user:
        params[table] = _user_table(table, raw.get(table))
    for table in dict.fromkeys(ALGORITHMS + sweep.algorithms):
        if table in sweep.algorithms or params[table] != _defaults(table):
            _check_builds(table, params[table], target)
    if (plot == "phase-diagram") != ("phase" in raw):
        raise ConfigError("[phase]", "goes with plot = \"phase-diagram\" and only with it",
                          "add both (see the phase-diagram preset) or neither")
    phase = _parse_phase(raw["phase"]) if "phase" in raw else None
    if phase is not None and set(phase.kinds) - {"random"} and max(target.ranks) > phase.dim:
        raise ConfigError("[phase] dim", f"{phase.dim} < rank {max(target.ranks)} of the r "
                          "sweep: no orthonormal target", "raise [phase] dim, or lower rank")
    return Config(target, sweep, params, name, raw.get("description", ""), plot,
                  _parse_log(raw.get("log")), phase)


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, f"invalid TOML ({err})", "fix the syntax at that line") from None


def loads(text: str, source: str = "config") -> Config:
    """Parse and validate TOML text; ``source`` names it in error messages."""
    return parse(_toml(text, source))


def load_raw(path: str | Path) -> dict:
    """The TOML document of a config file, unvalidated (to apply ``--set`` overrides first)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise ConfigError(str(path), f"cannot read the file ({reason})",
                          "pass an existing TOML file, or use --preset NAME (see `jaxtd presets`)"
                          ) from None
    return _toml(text, str(path))


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    return parse(load_raw(path))


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]*", text):
            return text  # a bare word: a string (e.g. optimizer=adam)
        raise ConfigError("--set", f"cannot read the value {text!r}",
                          'write a TOML value, e.g. 0.1, [1, 2], "text" or {b1 = 0.9}') from None


def apply_overrides(raw: Mapping[str, Any], assignments) -> dict:
    """``raw`` with each ``"section.key=value"`` assignment applied (value read as TOML; a bare
    word is a string); ``key=value`` without a dot sets a top-level key. Returns a new dict."""
    out = copy.deepcopy(dict(raw))
    for item in assignments:
        path, sep, value = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError("--set", f"expected section.key=value, got {item!r}",
                              "write e.g. --set gd.learning_rate=0.05")
        node = out
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError("--set", f"{k} is not a table in {item!r}",
                                  "set a key of a table, e.g. sweep.seeds=4")
            node = child
        node[keys[-1]] = _parse_value(value.strip())
    return out


# ---------------------------------------------------------------------------------------------
# Presets shipped in jaxtd/presets/*.toml.

def _preset_dir():
    return resources.files("jaxtd") / "presets"


def preset_names() -> tuple[str, ...]:
    """Names of the shipped presets, sorted (the file stems)."""
    return tuple(sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml")))


def preset_path(name: str):
    """The file of preset ``name`` (a readable Traversable), or a ConfigError listing the names."""
    if name not in preset_names():
        raise ConfigError("--preset", f"unknown preset {name!r}",
                          f"use one of {', '.join(preset_names())}")
    return _preset_dir() / f"{name}.toml"


def preset_raw(name: str) -> dict:
    """The TOML document of a shipped preset."""
    return _toml(preset_path(name).read_text(encoding="utf-8"), f"preset {name}")


def preset(name: str) -> Config:
    """The validated config of a shipped preset."""
    return parse(preset_raw(name))


# ---------------------------------------------------------------------------------------------
# Derived configs and serialization.

def set_keys(assignments) -> frozenset[str]:
    """The ``section.key`` (or top-level ``key``) each ``--set`` assignment sets: what
    :func:`quick` must leave alone (``target.dim.3=[4]`` sets ``target.dim``)."""
    return frozenset(".".join(item.partition("=")[0].strip().split(".")[:2])
                     for item in assignments)


def quick(config: Config, keep=frozenset()) -> Config:
    """A smoke-test version of ``config``: 2 seeds, at most 300 steps, 2 widths (the smallest and
    the middle one, so no cubic-cost lazy solve at the largest), at most 2 values of each size
    (the samples plot: one size, the smallest dim of the first order).

    ``keep``: ``section.key`` names left as they are (:func:`set_keys` of the ``--set``
    assignments: an explicit value wins over ``--quick``, which wins over the file)."""
    t, s = config.target, config.sweep

    def pick(key, shrunk, current):
        return current if key in keep else shrunk

    def ends(values, k):
        return values if len(values) <= k else values[:k - 1] + values[-1:]

    rule = _sizes.default_record_every
    if s.near_threshold:  # one width on each side of the threshold
        widths, window = (), tuple(min(v, 1) for v in s.near_threshold)
    else:
        widths, window = tuple(sorted({s.widths[0], s.widths[(len(s.widths) - 1) // 2]})), None
    if "sweep.widths" in keep:
        widths, window = s.widths, s.near_threshold
    steps = pick("sweep.steps", min(s.steps, 300), s.steps)
    record_every = pick("sweep.record_every", rule(steps, 20), s.record_every)
    if steps % record_every:
        raise ConfigError("[sweep] record_every", f"{record_every} does not divide the quick "
                          f"run's steps = {steps}", f"--set sweep.steps too, or a divisor of "
                          f"{steps}, e.g. {rule(steps, 20)}")
    sweep = dataclasses.replace(
        s, widths=widths, near_threshold=window, steps=steps, record_every=record_every,
        seeds=pick("sweep.seeds", min(s.seeds, 2), s.seeds),
        bucketing=pick("sweep.bucketing", "single", s.bucketing),
        chunk_size=pick("sweep.chunk_size", None, s.chunk_size))
    # the samples plot compiles one program per size and regime: one size, the smallest order's
    # smallest dim (the order where the network separates from the kernel regimes in 300 steps)
    samples_plot = config.plot == "samples"
    orders = pick("target.order", t.orders[:1] if samples_plot else ends(t.orders, 2), t.orders)
    # dims per order: the two smallest of each (the largest are what make such a run long)
    keep_dims = 1 if samples_plot else 2
    if "target.dim" in keep:
        by_order = tuple((o, ds) for o, ds in t.dims_per_order if o in orders)
        dims = t.dims
    else:
        by_order = tuple((o, ds[:keep_dims]) for o, ds in t.dims_per_order if o in orders)
        dims = tuple(sorted({d for _, ds in by_order for d in ds})) if by_order else ends(t.dims, keep_dims)
    target = dataclasses.replace(t, orders=orders, dims=dims,
                                 ranks=pick("target.rank", ends(t.ranks, 2), t.ranks),
                                 dims_per_order=by_order)
    phase = config.phase
    if phase is not None:  # the two smallest of each axis, the r sweep at the smallest d
        target = dataclasses.replace(target, dims=pick("target.dim", t.dims[:2], t.dims),
                                     ranks=pick("target.rank", t.ranks[:2], t.ranks))
        sweep = dataclasses.replace(sweep, widths=pick("sweep.widths", tuple(sorted(
            {s.widths[0], max(s.widths[0], min(s.widths[-1], 16))})), s.widths),
            seeds=pick("sweep.seeds", min(s.seeds, 2), s.seeds))
        # one kind of components (both weight profiles): the kinds share every compiled
        # program, so a second kind only repeats the searches
        phase = dataclasses.replace(
            phase, dim=pick("phase.dim", target.dims[0], phase.dim),
            lazy_check=pick("phase.lazy_check", target.dims[:1], phase.lazy_check),
            kinds=pick("phase.kinds", phase.kinds[:1], phase.kinds))
    params = {k: dict(v) for k, v in config.params.items()}
    for name, table in params.items():
        for key in ("amplify_steps", "fit_steps"):
            if key in table and f"{name}.{key}" not in keep:
                table[key] = max(1, min(table[key], steps // 6))
        if name == "lazy" and "lazy.seeds" not in keep:
            table["seeds"] = 1
    return dataclasses.replace(config, target=target, sweep=sweep, params=params, phase=phase,
                               name=f"{config.name} (quick)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _scalar_or_list(values: tuple) -> Any:
    return values[0] if len(values) == 1 else list(values)


def dumps(config: Config) -> str:
    """The resolved config as TOML text; ``loads(dumps(c)) == c``. Keys left to the constructor
    (``None``) are omitted."""
    t, s = config.target, config.sweep
    top = {"name": config.name, "description": config.description, "plot": config.plot}
    dim = ({str(o): list(ds) for o, ds in t.dims_per_order} if t.dims_per_order
           else _scalar_or_list(t.dims))
    target = {"order": _scalar_or_list(t.orders), "dim": dim,
              "rank": _scalar_or_list(t.ranks), "kind": t.kind,
              "weights": t.weights if isinstance(t.weights, str) else list(t.weights),
              "seed": t.seed}
    widths = (dict(zip(("below", "above"), s.near_threshold)) if s.near_threshold
              else list(s.widths))
    sweep = {"algorithms": list(s.algorithms), "widths": widths, "seeds": s.seeds,
             "steps": s.steps, "success_threshold": s.success_threshold,
             "record_every": s.record_every, "bucketing": s.bucketing,
             "chunk_size": s.chunk_size}
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    log = dataclasses.asdict(config.log)
    tables = [("target", target), ("sweep", sweep), *config.params.items()]
    if config.log != Log():  # written only when set: older config.toml files stay as they were
        tables.append(("log", log))
    if config.phase is not None:
        tables.append(("phase", {f.name: getattr(config.phase, f.name)
                                 for f in dataclasses.fields(Phase)}))
    for section, table in tables:
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()
                                         if v is not None]
    return "\n".join(lines) + "\n"


def lazy_threshold(dim: int, order: int, init: str = "standard") -> int:
    """Smallest width whose generic tangent space spans ``Sym^l(R^d)``.

    ``⌈C(d+l-1, l)/d⌉`` (order 2: ``d``; one more at the Alexander–Hirschowitz defective cases),
    from :func:`jaxtd.lazy.predicted_critical_width`. The antisymmetric init pairs rows on one
    factor (a pair spans the tangent directions of one factor), so it needs ``2 m* - 1`` rows:
    ``m* - 1`` pairs and one unpaired row give ``m*`` distinct factors.
    """
    return _sizes.predicted_width(dim, order, init)


def case_widths(config: Config, order: int, dim: int) -> tuple[int, ...]:
    """The widths run at problem size ``(order, dim)``: ``[sweep] widths`` as given, or, for
    ``widths = {below = b, above = a}``, the window ``m* - b .. m* + a`` (clipped at 1) around
    the lazy threshold :func:`lazy_threshold` of ``[lazy] init``
    (:func:`jaxtd.lazy.near_threshold_widths`)."""
    s = config.sweep
    if not s.near_threshold:
        return tuple(s.widths)
    below, above = s.near_threshold
    rule = _sizes.near_threshold_widths(below, above, config.params["lazy"]["init"])
    return tuple(rule(int(dim), int(order)))

