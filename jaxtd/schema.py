"""Parameter schemas: the one declaration of an algorithm's configurable arguments.

Each algorithm module declares, next to its constructor, a tuple of :class:`Param` (name, kind,
range or choices, help); :func:`derive` fills every default from the constructor's signature, so
names and defaults exist once, in the constructor. The ``jaxtd`` config validates a TOML table
against such a schema with :func:`check_table` (one validator for every section), and builds the
algorithm with :func:`build`. TOML keys are the constructor's argument names; ``learning_rate``,
``optimizer`` (an optax name) and ``optimizer_args`` describe the ``optimizer`` argument of the
optax-based constructors.

Every failure is a :class:`ConfigError` whose message is one line:
``[gd] learning_rate: must be > 0, got -0.1; fix: use a finite number > 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import typing
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["ConfigError", "Param", "derive", "from_signature", "optimizer_params", "check",
           "check_table", "hparam_params", "check_hparam", "LEARNING_RATE", "build",
           "largest_of_lists", "optax_factory", "UNSET"]


class ConfigError(ValueError):
    """A bad configuration; ``str(error)`` is one line: ``KEY: PROBLEM; fix: FIX``."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"{key}: {problem}; fix: {fix}")
        self.key, self.problem, self.fix = key, problem, fix


class _Unset:
    def __repr__(self):
        return "UNSET"


UNSET = _Unset()  # "take the default from the constructor's signature"

PARAM_KINDS = ("float", "int", "ints", "bool", "str", "choice", "table", "any")


@dataclasses.dataclass(frozen=True)
class Param:
    """One configurable argument.

    Attributes:
      name: the TOML key (the constructor's argument name, or ``learning_rate`` / ``optimizer`` /
        ``optimizer_args`` for the optimizer argument).
      kind: ``float | int | ints | bool | str | choice | table | any`` (``ints``: an int or a
        list of distinct ints, read as a tuple; ``any``: passed on unchecked, for a user
        factory's argument whose type its signature does not say).
      help: one line for humans.
      default: the default; :data:`UNSET` means the constructor's signature default (of
        ``default_from`` when given), or a required key in a schema that is not derived. ``None`` means "let the constructor decide" and is only
        the resolved value when the key is absent.
      default_from: the signature argument holding the default, when it is not ``name``.
      gt, ge: open / closed lower bound of a number; le: closed upper bound.
      example: a value to show in messages when ``default`` is :data:`UNSET` (a required key);
        without one, an example is made from the kind and the bounds.
      choices: accepted values of a ``choice``.
      hparam: the algorithm hyper-parameter this argument sets; such a key may be a list of
        numbers, swept by :func:`jaxtd.sweep` as one vmapped axis (no recompilation per value).
      capacity: with ``hparam``, the argument is a size the hyper-parameter selects below (e.g.
        the data set size ``samples`` of :func:`jaxtd.algorithms.network`, hparam
        ``active_samples``): a list builds the constructor at its *largest* value, and each
        swept value masks it down (:func:`largest_of_lists`).
    """

    name: str
    kind: str
    help: str
    default: Any = UNSET
    default_from: Optional[str] = None
    gt: Optional[float] = None
    ge: Optional[float] = None
    le: Optional[float] = None
    choices: tuple = ()
    hparam: Optional[str] = None
    example: Any = None
    capacity: bool = False

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"kind must be one of {PARAM_KINDS}, got {self.kind!r}")
        if self.capacity and not self.hparam:
            raise ValueError(f"capacity=True needs the hparam that selects below {self.name}")

    def describe(self) -> str:
        """``name (kind, range): help [default]`` in one line."""
        if self.kind == "choice":
            rng = " | ".join(map(str, self.choices))
        elif self.gt is not None and self.kind != "ints":
            rng = f"> {self.gt:g}"
        elif self.ge is not None:
            rng = f">= {self.ge:g}"
        else:
            rng = self.kind
        if self.le is not None:
            rng += f", <= {_bound(self.le)}"
        sweep = ", or a list to sweep" if self.hparam else ""
        default = (f"required, e.g. {self.example_value()!r}" if self.default is UNSET
                   else f"default {self.default!r}")
        return f"{self.name} ({rng}{sweep}): {self.help} [{default}]"

    def example_value(self) -> Any:
        """A valid value for messages: ``example``, else the default, else one made from the
        kind and the bounds (never :data:`UNSET`)."""
        if self.example is not None:
            return self.example
        if self.default is not UNSET and self.default is not None:
            return self.default
        if self.choices:
            return self.choices[0]
        low = self.ge if self.ge is not None else (self.gt if self.gt is not None else None)
        if self.kind in ("int", "ints"):
            value = max(1, int(low) + (1 if self.gt is not None and self.ge is None else 0)
                        if low is not None else 1)
            return [value] if self.kind == "ints" else value
        if self.kind == "float":
            return 0.1 if low is None or low < 0.1 else float(low) * 2 or 1.0
        if self.kind == "bool":
            return True
        if self.kind == "table":
            return {}
        return "..."


def _bound(value: float) -> str:
    """A bound as written: ``2147483647``, not ``2.14748e+09``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _toml_value(value: Any) -> str:
    """``value`` as TOML writes it (``true``, ``"text"``, ``[1, 2]``), for "write e.g." fixes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def derive(constructor: Callable, params: Sequence[Param]) -> tuple[Param, ...]:
    """``params`` with every :data:`UNSET` default read from ``constructor``'s signature."""
    signature = inspect.signature(constructor)
    out = []
    for p in params:
        if p.default is UNSET:
            source = p.default_from or p.name
            if source not in signature.parameters:
                raise ValueError(f"{constructor.__name__} has no argument {source!r} for "
                                 f"parameter {p.name!r}")
            default = signature.parameters[source].default
            if default is inspect.Parameter.empty:
                raise ValueError(f"{constructor.__name__}({source}) has no default")
            p = dataclasses.replace(p, default=default)
        out.append(p)
    return tuple(out)


# The learning rate of every optimizer spec (jaxtd.optimizers) and of the tables of the optax-based
# algorithms: the one declaration of its range.
LEARNING_RATE = Param("learning_rate", "float", "learning rate of the optimizer", gt=0,
                      hparam="learning_rate")


def optimizer_params(learning_rate_help: str, learning_rate_default: Any = UNSET,
                     optimizer_default: Any = "sgd") -> tuple[Param, ...]:
    """The keys ``learning_rate`` / ``optimizer`` / ``optimizer_args`` of a constructor whose
    ``optimizer`` argument is a jaxtd optimizer spec (:func:`jaxtd.algorithms.base.make_optimizer`:
    a float SGD step, an optax factory with ``learning_rate=``, or a ready transformation).
    :func:`build` turns them into that argument. ``learning_rate``'s default is the float default
    of ``optimizer`` unless given."""
    return (
        dataclasses.replace(LEARNING_RATE, help=learning_rate_help, default=learning_rate_default,
                            default_from="optimizer" if learning_rate_default is UNSET else None),
        Param("optimizer", "str", "an optax optimizer by name, e.g. adam (sgd: plain "
              "gradient descent)", default=optimizer_default),
        Param("optimizer_args", "table", "keyword arguments of the optax optimizer, "
              "e.g. {b1 = 0.9}", default={}),
    )


# Python types of a signature's annotations or defaults -> the kind of their key (bool first:
# a bool is an int)
_KIND_OF_TYPE = ((bool, "bool"), (numbers.Integral, "int"), (numbers.Real, "float"),
                 (str, "str"), (Mapping, "table"))


def _kind_of(annotation: Any, default: Any) -> str:
    """The kind of an argument from its annotation (``Optional[X]`` read as ``X``), else from the
    type of its default; ``any`` when neither says."""
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        one = args[0] if len(args) == 1 else (None if args else annotation)
        if isinstance(one, type):
            for t, kind in _KIND_OF_TYPE:
                if issubclass(one, t):
                    return kind
            return "any"
    if default is not inspect.Parameter.empty and default is not None:
        for t, kind in _KIND_OF_TYPE:
            if isinstance(default, t):
                return kind
    return "any"


def _toml_able(value: Any) -> bool:
    """Whether ``value`` can be written back as TOML (a resolved config must round-trip)."""
    if isinstance(value, (bool, str, numbers.Real)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _toml_able(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_toml_able(v) for v in value)
    return False


def from_signature(fn: Callable, where: str = "factory") -> tuple[Param, ...]:
    """The schema of a function's keyword arguments, read from its signature: one :class:`Param`
    per argument (``name`` excepted: the table's name names the algorithm), its kind from the
    annotation or the default (:data:`UNSET` default: a required key; a default TOML cannot
    write, e.g. a function, is left to the function: ``None``). Numbers are marked as
    hyper-parameters (``hparam`` = their name): a list is accepted, and the config keeps it only
    if the built algorithm has a hyper-parameter of that name. An ``optimizer`` argument that is
    not a string takes a jaxtd optimizer spec: it becomes the keys of :func:`optimizer_params`.
    A ``**kwargs`` argument is a final ``Param("**", "any", ...)`` (any other key accepted)."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: read them as text
        signature = inspect.signature(fn)
    params = signature.parameters
    out = []
    spec = "optimizer" in params and _kind_of(params["optimizer"].annotation,
                                              params["optimizer"].default) not in ("str", "bool")
    for p in params.values():
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name == "name":
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append(Param("**", "any", f"any keyword argument of {where}", default=None))
            continue
        if spec and p.name in ("optimizer", "learning_rate"):
            if p.name == "optimizer":
                out += _optimizer_keys(params)
            continue
        kind = _kind_of(p.annotation, p.default)
        default = UNSET if p.default is p.empty else (
            p.default if _toml_able(p.default) else None)
        out.append(Param(p.name, kind, f"argument of {where}", default=default,
                         hparam=p.name if kind in ("float", "int") else None))
    return tuple(out)


def _optimizer_keys(params: Mapping[str, inspect.Parameter]) -> tuple[Param, ...]:
    """:func:`optimizer_params` for a signature: ``learning_rate`` defaults to a float default of
    ``optimizer`` (SGD), else to the signature's own ``learning_rate`` default; ``optimizer``
    defaults to ``sgd`` in the first case, else to the function's own (``None``)."""
    default = params["optimizer"].default
    if isinstance(default, numbers.Real) and not isinstance(default, bool):
        return optimizer_params("learning rate of the optimizer", float(default))
    lr = params["learning_rate"].default if "learning_rate" in params else None
    lr = None if lr is inspect.Parameter.empty or not _is_number(lr) else float(lr)
    return optimizer_params("learning rate of the optimizer", lr, optimizer_default=None)


# -- the validator ----------------------------------------------------------------------------

def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check(where: str, param: Param, value: Any) -> Any:
    """``value`` cleaned for ``param`` (ints widened to float where a float is asked), or a
    :class:`ConfigError` naming ``where``. A list is accepted for a sweepable (``hparam``) number
    and becomes a tuple of distinct checked values."""
    if param.hparam and isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(where, "empty list", f"give one value or several to sweep, e.g. "
                              f"{param.name} = [{_toml_value(param.example_value())}]")
        cleaned = tuple(check(where, dataclasses.replace(param, hparam=None, capacity=False), v)
                        for v in value)
        if len(set(cleaned)) != len(cleaned):
            raise ConfigError(where, f"duplicate values in {list(cleaned)}", "list each once")
        return cleaned[0] if len(cleaned) == 1 else cleaned
    kind = param.kind
    if kind == "any":
        return value
    if kind == "ints":
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ConfigError(where, "empty list", "give at least one integer")
        one = dataclasses.replace(param, kind="int")
        cleaned = tuple(check(where, one, v) for v in values)
        if len(set(cleaned)) != len(cleaned):
            raise ConfigError(where, f"duplicate values in {list(cleaned)}", "list each once")
        return cleaned
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {value!r}", "write true or false")
        return value
    if kind in ("str", "choice"):
        if not isinstance(value, str):
            raise ConfigError(where, f"must be a string, got {value!r}",
                              f'write {param.name} = "..."')
        if kind == "choice" and value not in param.choices:
            raise ConfigError(where, f"unknown value {value!r}",
                              f"use one of {', '.join(map(str, param.choices))}")
        return value
    if kind == "table":
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"must be a table, got {value!r}",
                              f"write {param.name} = {{ key = value }}")
        return dict(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(where, f"must be an integer, got {value!r}",
                              f"write e.g. {param.name} = {_toml_value(param.example_value())}")
        value = int(value)
    else:
        if not _is_number(value):
            raise ConfigError(where, f"must be a number, got {value!r}",
                              f"write e.g. {param.name} = {_toml_value(param.example_value())}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(where, f"must be finite, got {value}", "use a finite number")
    if param.gt is not None and not value > param.gt:
        raise ConfigError(where, f"must be > {param.gt:g}, got {value}",
                          f"use a number > {param.gt:g}")
    if param.ge is not None and not value >= param.ge:
        raise ConfigError(where, f"must be >= {param.ge:g}, got {value}",
                          f"use a number >= {param.ge:g}")
    if param.le is not None and not value <= param.le:
        raise ConfigError(where, f"must be <= {_bound(param.le)}, got {value}",
                          f"use a number <= {_bound(param.le)}")
    return value


def hparam_params(params: Sequence[Param]) -> dict[str, Param]:
    """``{hyper-parameter: the Param setting it}`` of a schema (e.g. deflation's ``learning_rate``
    -> its ``step_size`` Param): what an :class:`~jaxtd.algorithms.Algorithm` carries as
    ``ranges``, so an override of a hyper-parameter is checked against its one declaration."""
    return {p.hparam: p for p in params if p.hparam}


def check_hparam(where: str, param: Param, value: Any) -> float:
    """``value`` as a float if it is a finite real number in ``param``'s range: a ``TypeError``
    naming ``where`` for anything else than a real scalar (a string, a bool, an array), else a
    :class:`ConfigError` (a ``ValueError``) naming ``where`` (e.g. ``hparams['learning_rate']``)
    for a value out of range. Read as a float whatever the kind: a hyper-parameter lives in the
    state as a float scalar. The one range check of constructors, runner and sweep."""
    # a bool (Python or array) is not a number here; a complex array would lose its imaginary part
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    not_real = isinstance(value, bool) or kind in ("b", "c")
    if isinstance(value, (str, bytes)) or not_real or getattr(value, "shape", ()) != ():
        raise TypeError(f"{where} must be a real number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a real number, got {value!r}") from None
    plain = dataclasses.replace(param, kind="float", hparam=None, capacity=False)
    return check(where, plain, value)


def check_table(section: str, schema: Sequence[Param],
                raw: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Validate TOML table ``[section]`` against ``schema``: every key known and checked,
    absent keys take their default. A key named as the hyper-parameter another key sets (e.g.
    ``learning_rate`` for deflation's ``step_size``) is told its name, read from the schema."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}]", f"must be a table, got {raw!r}",
                          f"write a [{section}] section")
    by_name = {p.name: p for p in schema}
    renamed = {p.hparam: p.name for p in schema if p.hparam and p.hparam not in by_name}
    rest = by_name.pop("**", None)  # a **kwargs: any other key, passed on unchecked
    for key in raw:
        if key not in by_name and rest is None:
            new = renamed.get(key)
            fix = (f"rename it to {new}" if new else
                   f"remove it or use one of {', '.join(by_name)}")
            raise ConfigError(f"[{section}] {key}", "unknown key", fix)
    out = {}
    for p in by_name.values():
        if p.name in raw:
            out[p.name] = check(f"[{section}] {p.name}", p, raw[p.name])
        elif p.default is UNSET:
            raise ConfigError(f"[{section}] {p.name}", "missing",
                              f"add it: {p.describe()}")
        else:
            out[p.name] = (dict(p.default) if p.kind == "table" and p.default is not None
                           else p.default)
    out.update({k: v for k, v in raw.items() if k not in by_name})
    return out


# -- building an algorithm ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _factory(name: str, args: tuple) -> Callable:
    # cached: equal configs give the very same factory object, hence equal algorithms (one
    # compilation for both, see jaxtd.algorithms.base.constructor)
    import optax
    fn = getattr(optax, name)
    return functools.partial(fn, **dict(args)) if args else fn


def optax_factory(name: str, args: Optional[Mapping[str, Any]] = None,
                  where: str = "optimizer") -> Callable:
    """``optax.<name>`` as a factory ``learning_rate -> GradientTransformation``, with ``args``
    bound; a :class:`ConfigError` for an unknown name or argument."""
    import optax
    fn = getattr(optax, name, None) if name.isidentifier() and not name.startswith("_") else None
    try:
        signature = inspect.signature(fn) if callable(fn) else None
    except (TypeError, ValueError):
        signature = None
    if signature is None or "learning_rate" not in signature.parameters:
        raise ConfigError(where, f"{name!r} is not an optax optimizer taking a learning_rate",
                          "use the name of one, e.g. sgd, adam, adamw, rmsprop, lion")
    args = dict(args or {})
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD
                      for p in signature.parameters.values())
    for key in args:
        if key == "learning_rate":
            raise ConfigError(f"{where}_args.{key}", "the learning rate is its own key",
                              "set learning_rate in the same table instead")
        if key not in signature.parameters and not accepts_any:
            known = [k for k in signature.parameters if k != "learning_rate"]
            raise ConfigError(f"{where}_args.{key}", f"optax.{name} has no argument {key!r}",
                              f"use one of {', '.join(known) or '(none)'}")
    try:
        factory = _factory(name, tuple(sorted(args.items())))
    except TypeError:  # an unhashable argument (a list): no caching
        factory = functools.partial(getattr(optax, name), **args)
    if args:
        _check_optimizer_args(name, args, factory, where)
    return factory


def _probe_optimizer(factory: Callable) -> Optional[BaseException]:
    """Trace one ``init`` and ``update`` of ``factory(learning_rate=0.1)`` on a 2-vector (shapes
    only); the exception it raises, or ``None``."""
    import jax
    import jax.numpy as jnp
    try:  # standard promotion: optax mixes its int32 step count with floats
        with jax.numpy_dtype_promotion("standard"):
            tx = factory(learning_rate=0.1)
            jax.eval_shape(lambda p: tx.update(p, tx.init(p), p),
                           jax.ShapeDtypeStruct((2,), jnp.float32))
    except Exception as err:  # noqa: BLE001 - reported by the caller
        return err
    return None


def _check_optimizer_args(name: str, args: Mapping[str, Any], factory: Callable,
                          where: str) -> None:
    """Refuse ``optimizer_args`` that make the optimizer fail (``b1 = "x"``) before anything
    runs: the optimizer is traced once with and without them; only a failure that the arguments
    cause is reported (an optimizer whose update needs more than gradients is not judged)."""
    err = _probe_optimizer(factory)
    if err is None or _probe_optimizer(getattr(__import__("optax"), name)) is not None:
        return
    text = str(err).splitlines()[0] if str(err) else ""
    shown = ", ".join(f"{k} = {v!r}" for k, v in args.items())
    raise ConfigError(f"{where}_args", f"optax.{name} fails with {{ {shown} }} "
                      f"({type(err).__name__}: {text})",
                      f"give each argument a value of the type optax.{name} documents "
                      "(numbers for rates and decays)")


def build(constructor: Callable, values: Mapping[str, Any], *, name: Optional[str] = None,
          where: str = "algorithm"):
    """Call ``constructor`` with a validated table, every argument by keyword: scalar values
    only (the first of a swept list), ``None`` left to the constructor, and, when the table has
    ``optimizer_args`` (its schema has the keys of :func:`optimizer_params`), ``learning_rate``
    / ``optimizer`` / ``optimizer_args`` turned into its ``optimizer`` argument (a float for
    plain SGD, else an optax factory with ``learning_rate=``)."""
    kwargs = {k: (v[0] if isinstance(v, tuple) else v) for k, v in values.items()
              if v is not None}
    if name is not None:
        kwargs["name"] = name
    if "optimizer_args" in values:
        kwargs.update(_optimizer_arguments(constructor, kwargs, where))
    return constructor(**kwargs)


def largest_of_lists(schema: Sequence[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the list of every ``capacity`` key replaced by its largest value: the
    constructor is built once at the capacity the swept hyper-parameter selects below (a list
    of any other key keeps its first value for :func:`build`)."""
    capacity = {p.name for p in schema if p.capacity}
    return {k: (max(v) if k in capacity and isinstance(v, tuple) else v)
            for k, v in values.items()}


def _optimizer_arguments(constructor: Callable, kwargs: dict, where: str) -> dict:
    """Pop ``optimizer`` / ``optimizer_args`` / ``learning_rate`` from ``kwargs``; return the
    constructor's ``optimizer`` (and ``learning_rate``) arguments. One path for every table."""
    opt, opt_args = kwargs.pop("optimizer", None), kwargs.pop("optimizer_args", None) or {}
    lr = kwargs.pop("learning_rate", None)
    if opt is None:  # the constructor's own default optimizer
        if opt_args:
            raise ConfigError(f"[{where}] optimizer_args", "given without an optimizer",
                              'name the optimizer too, e.g. optimizer = "adam"')
        return {} if lr is None else {"learning_rate": lr}
    if lr is None:
        raise ConfigError(f"[{where}] learning_rate", "missing",
                          f"add learning_rate = 0.01 (the step of optimizer = \"{opt}\")")
    if opt == "sgd" and not opt_args:
        return {"optimizer": lr}
    factory = optax_factory(opt, opt_args, f"[{where}] optimizer")
    parameters = inspect.signature(constructor).parameters
    if "learning_rate" not in parameters and not any(
            p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ConfigError(f"[{where}] optimizer", f"optimizer = \"{opt}\" needs a learning_rate "
                          "argument of the factory (the optax optimizer's rate, a hyper-"
                          "parameter)", 'use optimizer = "sgd", or give the factory a '
                          "learning_rate argument passed on to make_optimizer")
    return {"optimizer": factory, "learning_rate": lr}
