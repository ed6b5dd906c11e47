"""The experiment configuration of ``jaxtd run``: TOML in, frozen dataclasses out.

A config file has three kinds of tables (unknown keys anywhere are errors)::

    name = "headline"                    # optional: a label, the plot kind and a one-line blurb
    description = "lazy vs beyond-lazy"
    plot = "width"                       # width | lazy-threshold | beyond-lazy | width-vs-rank | deflation

    [target]                             # required
    order = 3                            # int >= 2, or a list to sweep problem sizes
    dim = 24                             # int >= 1, or a list
    rank = 3                             # int >= 1, or a list
    kind = "orthogonal"                  # orthogonal | basis | random
    weights = "equal"                    # equal | geometric | a list of `rank` numbers
    seed = 0                             # optional: key of the ground truth

    [sweep]                              # required
    algorithms = ["lazy", "gd", "variant"]   # subset of lazy, gd, variant, deflation
    widths = [3, 6, 12, 24, 48, 96, 128]
    seeds = 8
    steps = 3000
    success_threshold = 1e-2
    record_every = 20                    # optional (default: a divisor of steps near steps / 100)
    bucketing = "pow2"                   # optional: pow2 | single | exact (compilations vs padding)

    [gd]                                 # optional, one table per algorithm, see PARAMS
    learning_rate = 0.1

Validation happens here, in plain Python, before anything is traced; every failure is a
:class:`ConfigError` whose message is one line naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ConfigError", "Target", "Sweep", "Config", "ALGORITHMS", "KINDS", "PLOTS", "PARAMS",
           "parse", "loads", "load", "preset", "preset_names", "preset_path", "quick", "dumps",
           "lazy_threshold", "default_record_every"]

ALGORITHMS = ("lazy", "gd", "variant", "deflation")
KINDS = ("orthogonal", "basis", "random")
WEIGHTS = ("equal", "geometric")
PLOTS = ("width", "lazy-threshold", "beyond-lazy", "width-vs-rank", "deflation")

# Parameters of each algorithm table with their defaults (ALGORITHMS.md); the default's type is
# the accepted type (an int is accepted where a float is expected).
PARAMS: Mapping[str, Mapping[str, Any]] = {
    "gd": {"learning_rate": 0.1, "init_scale": 1e-2, "model": "plain", "regularization": 0.0},
    "variant": {"learning_rate": 0.05, "init_scale": 1e-2, "regularization": 1e-3,
                "amplify_steps": 100, "fit_steps": 200, "selection": "smallest"},
    "deflation": {"learning_rate": 0.05, "delta0": 1e-3, "delta1": 1e-2, "gamma": 2.0,
                  "tau0": 5.0, "regularization": 1e-4, "epsilon": 1e-3, "model": "two_homogeneous"},
    # seeds: the exact best residual costs O((m d)^3) per cell and the lazy outcome barely
    # depends on the seed, so big grids run lazy on the first few seeds only (0 = every seed).
    "lazy": {"learning_rate": 0.05, "init": "standard", "train": True, "seeds": 0},
}
CHOICES: Mapping[str, tuple[str, ...]] = {
    "model": ("plain", "two_homogeneous"),
    "selection": ("smallest", "round_robin"),
    "init": ("antisymmetric", "standard"),
}
NONNEGATIVE = ("regularization",)  # every other number must be > 0

TOP_KEYS = ("name", "description", "plot", "target", "sweep") + ALGORITHMS
TARGET_KEYS = ("order", "dim", "rank", "kind", "weights", "seed")
SWEEP_KEYS = ("algorithms", "widths", "seeds", "steps", "success_threshold", "record_every",
              "bucketing")
BUCKETINGS = ("pow2", "single", "exact")  # jaxtd.sweep: one compilation per bucket


class ConfigError(ValueError):
    """A bad configuration; ``str(error)`` is one line naming the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"{key}: {problem}; {fix}")
        self.key = key


@dataclasses.dataclass(frozen=True)
class Target:
    """Ground-truth family; ``orders``, ``dims`` and ``ranks`` are swept as a product."""

    orders: tuple[int, ...]
    dims: tuple[int, ...]
    ranks: tuple[int, ...]
    kind: str = "orthogonal"
    weights: str | tuple[float, ...] = "equal"
    seed: int = 0

    @property
    def sizes(self) -> tuple[tuple[int, int, int], ...]:
        """Every ``(order, dim, rank)`` problem size, in config order."""
        return tuple(itertools.product(self.orders, self.dims, self.ranks))


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The grid run for every problem size and algorithm."""

    algorithms: tuple[str, ...]
    widths: tuple[int, ...]
    seeds: int
    steps: int
    success_threshold: float
    record_every: int
    bucketing: str = "pow2"


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated experiment: target family, grid, and every algorithm's resolved parameters."""

    target: Target
    sweep: Sweep
    params: Mapping[str, Mapping[str, Any]]
    name: str = "custom"
    description: str = ""
    plot: str = "width"


# ---------------------------------------------------------------------------------------------
# Scalar checks. Each returns the cleaned value or raises ConfigError naming `key`.

def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}", f"write e.g. {key.split()[-1]} = {max(minimum, 1)}")
    if value < minimum:
        raise ConfigError(key, f"{value} < {minimum}", f"use a value >= {minimum}")
    return value


def _float(key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}", "write a number such as 0.01")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(key, f"{value} is not a finite number {bound}", f"use a finite value {bound}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r}", f"use one of {', '.join(choices)}")
    return value


def _int_list(key: str, value: Any, minimum: int) -> tuple[int, ...]:
    """An int or a non-empty list of distinct ints, each >= minimum."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(key, "empty list", f"give at least one integer >= {minimum}")
    cleaned = tuple(_int(key, v, minimum) for v in values)
    if len(set(cleaned)) != len(cleaned):
        raise ConfigError(key, f"duplicate values in {list(cleaned)}", "list each value once")
    return cleaned


def _table(key: str, value: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {value!r}", f"write a [{key}] section")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"[{key}] {k}" if key else k, "unknown key",
                              f"remove it or use one of {', '.join(allowed)}")
    for k in required:
        if k not in value:
            raise ConfigError(f"[{key}] {k}" if key else f"[{k}]", "missing",
                              f"add it (see `jaxtd presets` and the preset files for examples)")
    return value


# ---------------------------------------------------------------------------------------------
# Sections.

def _target(raw: Any) -> Target:
    raw = _table("target", raw, TARGET_KEYS, ("order", "dim", "rank", "kind", "weights"))
    orders = _int_list("[target] order", raw["order"], 2)
    dims = _int_list("[target] dim", raw["dim"], 1)
    ranks = _int_list("[target] rank", raw["rank"], 1)
    kind = _choice("[target] kind", raw["kind"], KINDS)
    weights = _weights(raw["weights"], ranks)
    seed = _int("[target] seed", raw.get("seed", 0), 0)
    if kind != "random" and max(ranks) > min(dims):
        raise ConfigError("[target] rank", f"rank {max(ranks)} > dim {min(dims)} for a {kind} target",
                          "lower rank, raise dim, or use kind = \"random\"")
    return Target(orders, dims, ranks, kind, weights, seed)


def _weights(value: Any, ranks: tuple[int, ...]) -> str | tuple[float, ...]:
    key = "[target] weights"
    if isinstance(value, str):
        return _choice(key, value, WEIGHTS)
    if not isinstance(value, list):
        raise ConfigError(key, f"expected \"equal\", \"geometric\" or a list, got {value!r}",
                          "write weights = \"equal\"")
    if len(ranks) != 1 or len(value) != ranks[0]:
        raise ConfigError(key, f"a list of {len(value)} weights needs exactly one rank = {len(value)}",
                          "give one weight per component or use \"equal\"/\"geometric\"")
    return tuple(_float(key, v) for v in value)


def _sweep(raw: Any) -> Sweep:
    raw = _table("sweep", raw, SWEEP_KEYS, SWEEP_KEYS[:5])
    algorithms = raw["algorithms"]
    if not isinstance(algorithms, list) or not algorithms:
        raise ConfigError("[sweep] algorithms", f"expected a non-empty list, got {algorithms!r}",
                          f"write e.g. algorithms = [\"gd\"] using {', '.join(ALGORITHMS)}")
    algorithms = tuple(_choice("[sweep] algorithms", a, ALGORITHMS) for a in algorithms)
    if len(set(algorithms)) != len(algorithms):
        raise ConfigError("[sweep] algorithms", "duplicate algorithm", "list each algorithm once")
    widths = tuple(sorted(_int_list("[sweep] widths", raw["widths"], 1)))
    steps = _int("[sweep] steps", raw["steps"], 1)
    record_every = _int("[sweep] record_every", raw.get("record_every", default_record_every(steps)), 1)
    if steps % record_every:
        raise ConfigError("[sweep] record_every", f"{record_every} does not divide steps = {steps}",
                          f"use a divisor of steps, e.g. {default_record_every(steps)}")
    bucketing = _choice("[sweep] bucketing", raw.get("bucketing", "pow2"), BUCKETINGS)
    return Sweep(algorithms, widths, _int("[sweep] seeds", raw["seeds"], 1), steps,
                 _float("[sweep] success_threshold", raw["success_threshold"]), record_every,
                 bucketing)


def default_record_every(steps: int, records: int = 100) -> int:
    """The largest divisor of ``steps`` up to ``steps // records`` (about ``records`` records)."""
    return max(k for k in range(1, max(1, steps // records) + 1) if steps % k == 0)


def _params(name: str, raw: Any) -> dict[str, Any]:
    """An algorithm's table merged over its defaults, every value checked."""
    defaults = PARAMS[name]
    raw = _table(name, {} if raw is None else raw, tuple(defaults), ())
    out = dict(defaults)
    for key, value in raw.items():
        where, default = f"[{name}] {key}", defaults[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(where, f"expected true or false, got {value!r}", "write true or false")
            out[key] = value
        elif isinstance(default, str):
            out[key] = _choice(where, value, CHOICES[key])
        elif isinstance(default, int):
            out[key] = _int(where, value, 0 if key == "seeds" else 1)
        else:
            out[key] = _float(where, value, positive=key not in NONNEGATIVE)
    return out


def _check_params(params: Mapping[str, Mapping[str, Any]]) -> None:
    d = params["deflation"]
    if d["delta1"] <= d["delta0"]:
        raise ConfigError("[deflation] delta1", f"{d['delta1']} <= delta0 = {d['delta0']}",
                          "the re-initialization threshold must exceed the init scale")
    if d["gamma"] <= 1:
        raise ConfigError("[deflation] gamma", f"{d['gamma']} <= 1", "epochs must grow: use gamma > 1")


def parse(raw: Mapping[str, Any]) -> Config:
    """Validate a TOML document (already parsed into dicts) into a :class:`Config`."""
    raw = _table("", dict(raw), TOP_KEYS, ("target", "sweep"))
    for key in ("name", "description"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(key, f"expected a string, got {raw[key]!r}", f"write {key} = \"...\"")
    plot = _choice("plot", raw.get("plot", "width"), PLOTS)
    params = {name: _params(name, raw.get(name)) for name in ALGORITHMS}
    _check_params(params)
    return Config(_target(raw["target"]), _sweep(raw["sweep"]), params,
                  raw.get("name", "custom"), raw.get("description", ""), plot)


def loads(text: str, source: str = "config") -> Config:
    """Parse and validate TOML text; ``source`` names it in error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, f"invalid TOML ({err})", "fix the syntax at that line") from None
    return parse(raw)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise ConfigError(str(path), f"cannot read the file ({reason})",
                          "pass an existing TOML file, or use --preset NAME (see `jaxtd presets`)") from None
    return loads(text, str(path))


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


def preset(name: str) -> Config:
    """The validated config of a shipped preset."""
    return loads(preset_path(name).read_text(encoding="utf-8"), f"preset {name}")


# ---------------------------------------------------------------------------------------------
# Derived configs and serialization.

def quick(config: Config) -> Config:
    """A smoke-test version of ``config``: 2 seeds, at most 300 steps, 2 widths (the smallest and
    the middle one, so no cubic-cost lazy solve at the largest), at most 2 values of each size."""
    t, s = config.target, config.sweep

    def ends(values, k):
        return values if len(values) <= k else values[:k - 1] + values[-1:]

    widths = tuple(sorted({s.widths[0], s.widths[(len(s.widths) - 1) // 2]}))
    steps = min(s.steps, 300)
    sweep = dataclasses.replace(s, widths=widths, seeds=min(s.seeds, 2), steps=steps,
                                record_every=default_record_every(steps, 20), bucketing="single")
    target = dataclasses.replace(t, orders=ends(t.orders, 2), dims=ends(t.dims, 2),
                                 ranks=ends(t.ranks, 2))
    params = {k: dict(v) for k, v in config.params.items()}
    for name, table in params.items():
        for key in ("amplify_steps", "fit_steps"):
            if key in table:
                table[key] = max(1, min(table[key], steps // 6))
        if name == "lazy":
            table["seeds"] = 1
    return dataclasses.replace(config, target=target, sweep=sweep, params=params,
                               name=f"{config.name} (quick)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _scalar_or_list(values: tuple) -> Any:
    return values[0] if len(values) == 1 else list(values)


def dumps(config: Config) -> str:
    """The resolved config as TOML text; ``loads(dumps(c)) == c``."""
    t, s = config.target, config.sweep
    top = {"name": config.name, "description": config.description, "plot": config.plot}
    target = {"order": _scalar_or_list(t.orders), "dim": _scalar_or_list(t.dims),
              "rank": _scalar_or_list(t.ranks), "kind": t.kind,
              "weights": t.weights if isinstance(t.weights, str) else list(t.weights),
              "seed": t.seed}
    sweep = {"algorithms": list(s.algorithms), "widths": list(s.widths), "seeds": s.seeds,
             "steps": s.steps, "success_threshold": s.success_threshold,
             "record_every": s.record_every, "bucketing": s.bucketing}
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for section, table in [("target", target), ("sweep", sweep), *config.params.items()]:
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def lazy_threshold(dim: int, order: int, init: str = "standard") -> int:
    """Smallest width whose generic tangent space spans ``Sym^l(R^d)`` (ALGORITHMS.md §B).

    ``⌈C(d+l-1, l)/d⌉`` (order 2: ``d``; one more at the Alexander–Hirschowitz defective cases),
    from :func:`jaxtd.lazy.predicted_critical_width`. The antisymmetric init pairs rows on one
    factor, so it needs ``2 m* - 1`` rows (``m*`` distinct factors, the last one unpaired).
    """
    from jaxtd.lazy import predicted_critical_width  # here: parsing a config never needs JAX

    m = predicted_critical_width(int(dim), int(order))
    return 2 * m - 1 if init == "antisymmetric" else m
