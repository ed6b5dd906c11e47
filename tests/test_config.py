"""The TOML config contract of ``jaxtd run`` (jaxtd/config.py) and the shipped presets."""

import dataclasses
import inspect

import pytest

from jaxtd import config as cfg
from jaxtd import schema

GOOD = """
[target]
order = 3
dim = [8, 12]
rank = 2
kind = "orthonormal"
weights = "equal"

[sweep]
algorithms = ["gd", "lazy"]
widths = [8, 2, 4]
seeds = 3
steps = 100
success_threshold = 1e-2

[gd]
learning_rate = 0.2
"""


def test_good_config_resolves_defaults_and_sorts_widths():
    c = cfg.loads(GOOD)
    assert c.target.sizes == ((3, 8, 2), (3, 12, 2))
    assert c.sweep.widths == (2, 4, 8)
    assert c.sweep.algorithms == ("gd", "lazy")
    assert c.sweep.record_every == 1
    assert c.params["gd"]["learning_rate"] == 0.2
    assert c.params["gd"]["model"] == "plain"          # default filled in
    assert c.params["variant"] == {p.name: p.default for p in cfg.schema_of("variant")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sweep.seeds = 4


def test_dumps_round_trips():
    c = cfg.loads(GOOD.replace('weights = "equal"', "weights = [1.0, 0.5]"))
    assert c.target.weights == (1.0, 0.5)
    assert cfg.loads(cfg.dumps(c)) == c


@pytest.mark.parametrize("name", cfg.preset_names())
def test_presets_parse_and_round_trip(name):
    c = cfg.preset(name)
    assert c.name == name and c.description
    assert cfg.loads(cfg.dumps(c)) == c
    q = cfg.quick(c)
    assert q.sweep.seeds <= 2 and q.sweep.steps <= 300 and len(q.sweep.widths) <= 3
    assert len(q.target.sizes) <= len(c.target.sizes)


def test_the_presets_are_shipped():
    assert set(cfg.preset_names()) >= {"headline", "lazy-threshold", "beyond-lazy",
                                       "width-vs-rank", "deflation", "init-scale"}


def test_init_scale_preset_sweeps_the_scale_over_decades():
    from jaxtd import experiment
    c = cfg.preset("init-scale")
    scales = c.params["gd"]["init_scale"]
    assert isinstance(scales, tuple) and max(scales) / min(scales) >= 100
    (gd,) = [s for s in experiment.plan(c) if s.algorithm == "gd"]
    assert gd.hparams == (("init_scale", scales),)
    assert gd.cells == c.sweep.seeds * len(c.sweep.widths) * len(scales)
    # centred and scale-normalized, across the (antisymmetric) lazy threshold
    assert c.params["gd"]["init"] == c.params["lazy"]["init"] == "antisymmetric"
    assert c.params["gd"]["lr_scaling"] == "ntk" and c.plot == "init-scale"
    (order, dim, _), = c.target.sizes
    threshold = cfg.lazy_threshold(dim, order, "antisymmetric")
    assert min(c.sweep.widths) < threshold < max(c.sweep.widths)


def test_headline_crosses_the_lazy_threshold():
    c = cfg.preset("headline")
    assert c.target.sizes == ((3, 24, 3),)
    assert cfg.lazy_threshold(24, 3) == 109
    assert c.sweep.widths[0] == 3 and c.sweep.widths[-1] > 109
    assert {"lazy", "gd", "variant"} <= set(c.sweep.algorithms) and c.sweep.seeds >= 8


@pytest.mark.parametrize("dim,order,expected", [
    (8, 3, 15), (6, 4, 21), (5, 3, 8), (3, 4, 6), (4, 4, 10), (5, 4, 15), (7, 2, 7)])
def test_lazy_threshold_rule_and_defective_cases(dim, order, expected):
    assert cfg.lazy_threshold(dim, order) == expected


def _bad(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize("text,key", [
    (_bad("rank = 2", "rank = 2\ncolour = 1"), "[target] colour"),
    (_bad("[gd]", "[gd]\nlr = 1"), "[gd] lr"),
    (_bad('weights = "equal"\n', "weights = 2\n"), "[target] weights"),
    (_bad("seeds = 3\n", ""), "[sweep] seeds"),
    (_bad("widths = [8, 2, 4]", "widths = [8, 0]"), "[sweep] widths"),
    (_bad("widths = [8, 2, 4]", "widths = [2, 2]"), "[sweep] widths"),
    (_bad("widths = [8, 2, 4]", "widths = []"), "[sweep] widths"),
    (_bad("order = 3", "order = 1"), "[target] order"),
    (_bad("order = 3", "order = 3.0"), "[target] order"),
    (_bad("seeds = 3", 'seeds = "3"'), "[sweep] seeds"),
    (_bad('["gd", "lazy"]', '["gd", "adam"]'), "[sweep] algorithms"),
    (_bad('kind = "orthonormal"', 'kind = "sparse"'), "[target] kind"),
    (_bad('weights = "equal"', "weights = [1.0]"), "[target] weights"),
    (_bad("dim = [8, 12]", "dim = 1"), "[target] rank"),
    (_bad("success_threshold = 1e-2", "success_threshold = -1"), "[sweep] success_threshold"),
    (_bad("learning_rate = 0.2", "learning_rate = 0.0"), "[gd] learning_rate"),
    (_bad("[gd]", '[gd]\nmodel = "cubic"'), "[gd] model"),
    (_bad("[gd]", "[deflation]\ndelta1 = 1e-4\n[gd]"), "[deflation] delta1"),
    (_bad("[gd]", "[deflation]\nlearning_rate = 0.1\n[gd]"), "[deflation] learning_rate"),
    (_bad("learning_rate = 0.2", "learning_rate = [0.2, 0.2]"), "[gd] learning_rate"),
    (_bad("learning_rate = 0.2", "learning_rate = []"), "[gd] learning_rate"),
    (_bad("learning_rate = 0.2", "model = [\"plain\"]"), "[gd] model"),
    (_bad("learning_rate = 0.2", 'optimizer = "adamm"'), "[gd] optimizer"),
    (_bad("learning_rate = 0.2", 'optimizer = "adam"\noptimizer_args = {bq = 1}'),
     "[gd] optimizer_args.bq"),
    (_bad("learning_rate = 0.2", 'optimizer_args = 3'), "[gd] optimizer_args"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]'), "[sweep] algorithms"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]') + "[mine]\nlr = 1\n", "[mine] factory"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]') + '[mine]\nfactory = "nowhere_xyz:f"\n',
     "[mine] factory"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]') + '[mine]\nfactory = "tests.example_algorithm"\n',
     "[mine] factory"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]')
     + '[mine]\nfactory = "tests.example_algorithm:not_an_algorithm"\n', "[mine] factory"),
    (_bad('["gd", "lazy"]', '["gd", "mine"]')
     + '[mine]\nfactory = "tests.example_algorithm:heavy_ball"\nmomentum = 2\n', "[mine]"),
    (_bad('["gd", "lazy"]', '["gd", "mi ne"]'), "[sweep] algorithms"),
    (_bad("[gd]", "[mine]\nfactory = 1\n[gd]"), "mine"),
    (_bad("[sweep]", 'name = ""\n[sweep]'), "name"),
    (_bad("seeds = 3", "seeds = 3\nchunk_size = 0"), "[sweep] chunk_size"),
    (_bad("seeds = 3", "seeds = 3\nrecord_every = 7"), "[sweep] record_every"),
    (_bad("[gd]", "[deflation]\ngamma = 1\n[gd]"), "[deflation] gamma"),
    (_bad("[sweep]", "[swep]\nx = 1\n[sweep]"), "swep"),
    ("[target]\norder = 3", "[sweep]"),
    (_bad("order = 3", "order = "), "config"),
])
def test_bad_config_names_the_key_in_one_line(text, key):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.loads(text)
    message = str(err.value)
    assert message.startswith(key) or key in message
    assert "\n" not in message and "; fix: " in message


def test_unreadable_file_and_unknown_preset(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")
    with pytest.raises(cfg.ConfigError, match="headline"):
        cfg.preset("nope")
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    assert cfg.load(path) == cfg.loads(GOOD)


@pytest.mark.parametrize("table", cfg.ALGORITHMS)
def test_defaults_are_the_constructors(table):
    """One source of defaults: every key's default is the constructor's signature default."""
    constructor = cfg.constructor_of(table)
    signature = inspect.signature(constructor)
    for p in cfg.schema_of(table):
        if p.name in ("optimizer", "optimizer_args", "train", "seeds", "method"):
            continue
        source = "optimizer" if p.name == "learning_rate" else p.name
        assert p.default == signature.parameters[source].default, (table, p.name)
    lazy = cfg.loads(GOOD).params["lazy"]
    assert lazy["learning_rate"] == 0.01 and lazy["init"] == "antisymmetric"


def test_keys_are_the_constructor_argument_names():
    for table in cfg.ALGORITHMS:
        signature = inspect.signature(cfg.constructor_of(table))
        for p in cfg.schema_of(table):
            assert (p.name in signature.parameters
                    or p.name in ("learning_rate", "optimizer", "optimizer_args", "train",
                                  "seeds", "method")), (table, p.name)


def test_schema_validator_messages():
    p = schema.Param("learning_rate", "float", "step", default=0.1, gt=0)
    with pytest.raises(schema.ConfigError) as err:
        schema.check("[gd] learning_rate", p, -0.1)
    assert str(err.value) == ("[gd] learning_rate: must be > 0, got -0.1; fix: use a number > 0")
    assert schema.check("x", p, 2) == 2.0 and isinstance(schema.check("x", p, 2), float)
    with pytest.raises(schema.ConfigError, match="must be a number"):
        schema.check("x", p, True)
    with pytest.raises(schema.ConfigError, match="finite"):
        schema.check("x", p, float("inf"))
    q = schema.Param("steps", "int", "", default=1, ge=0)
    with pytest.raises(schema.ConfigError, match="integer"):
        schema.check("x", q, 1.0)


def test_orthogonal_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="orthonormal"):
        c = cfg.loads(GOOD.replace('"orthonormal"', '"orthogonal"'))
    assert c.target.kind == "orthonormal"
    assert "orthogonal" not in cfg.dumps(c)


def test_kind_defaults_to_orthonormal_and_no_preset_uses_the_old_name():
    c = cfg.loads(GOOD.replace('kind = "orthonormal"\n', ""))
    assert c.target.kind == "orthonormal"
    for name in cfg.preset_names():
        assert "orthogonal" not in cfg.preset_path(name).read_text()


def test_overrides_are_toml_values():
    raw = cfg.apply_overrides(cfg._toml(GOOD, "x"), [
        "gd.learning_rate=0.05", "sweep.widths=[2, 3]", "gd.optimizer=adam",
        "gd.optimizer_args.b1=0.8", "name=other", "lazy.init=\"standard\""])
    c = cfg.parse(raw)
    assert c.params["gd"]["learning_rate"] == 0.05 and c.sweep.widths == (2, 3)
    assert c.params["gd"]["optimizer"] == "adam" and c.params["gd"]["optimizer_args"] == {"b1": 0.8}
    assert c.name == "other" and c.params["lazy"]["init"] == "standard"
    for bad in ("gd.learning_rate", "=1", "gd..x=1", "gd.learning_rate=[1,"):
        with pytest.raises(cfg.ConfigError, match="--set"):
            cfg.apply_overrides({}, [bad])
    with pytest.raises(cfg.ConfigError, match="--set"):
        cfg.apply_overrides({"name": "x"}, ["name.y=1"])


def test_swept_hyperparameter_list_round_trips():
    c = cfg.loads(GOOD.replace("learning_rate = 0.2", "init_scale = [1e-3, 1e-2, 1]"))
    assert c.params["gd"]["init_scale"] == (1e-3, 1e-2, 1.0)
    assert cfg.loads(cfg.dumps(c)) == c


def test_each_table_is_built_once_by_the_config_and_the_experiment():
    """parse builds every table to check it; the experiment gets that very algorithm back
    instead of building the table again (counted at the one builder, jaxtd.schema.build)."""
    from unittest import mock

    from jaxtd import experiment
    text = GOOD.replace("learning_rate = 0.2", "learning_rate = 0.2123")  # a table never built
    with mock.patch.object(cfg.schema, "build", wraps=schema.build) as build:
        c = cfg.loads(text)
        first, again = experiment.make_algorithm(c, "gd"), experiment.make_algorithm(c, "gd")
        assert cfg.loads(text) == c
    built = [call.kwargs["name"] for call in build.call_args_list]
    assert sorted(built) == sorted(set(built)) and "gd" in built  # once per table
    assert first is again and first.hparams["learning_rate"] == 0.2123


def test_optimizer_by_name_builds_an_optax_algorithm():
    import optax
    c = cfg.loads(GOOD.replace("learning_rate = 0.2", 'learning_rate = 0.01\noptimizer = "adam"\n'
                               "optimizer_args = {b1 = 0.8}"))
    assert cfg.loads(cfg.dumps(c)) == c
    from jaxtd import experiment
    a = experiment.make_algorithm(c, "gd")
    assert a.name == "gd" and a.hparams["learning_rate"] == 0.01
    assert a == experiment.make_algorithm(c, "gd")  # equal configs, equal (cached) programs
    f = schema.optax_factory("adam", {"b1": 0.8})
    assert f.func is optax.adam and f.keywords == {"b1": 0.8}


@pytest.mark.timeout(300)
def test_antisymmetric_lazy_threshold_is_two_m_star_minus_one():
    """m* - 1 pairs plus one unpaired row give m* distinct factors: the exact lazy optimum
    reaches 0 at 2 m* - 1 rows of the antisymmetric init, not before (d=4, l=3: m* = 5)."""
    import jax
    import jax.numpy as jnp

    import jaxtd
    from jaxtd import lazy
    assert cfg.lazy_threshold(4, 3, "antisymmetric") == 9 and cfg.lazy_threshold(4, 3) == 5
    target = jaxtd.targets.orthonormal(jax.random.key(0), 4, 2, 3)
    keys = jnp.stack([jaxtd.key_for_seed(s) for s in range(2)])
    table = lazy.best_residual_table(keys, target, [8, 9], init="antisymmetric")
    assert (table[:, 0] > 1e-3).all() and (table[:, 1] < 1e-8).all()


def test_params_command_lists_every_key(capsys):
    from jaxtd import cli
    assert cli.main(["params", "deflation"]) == 0
    text = capsys.readouterr().out
    for p in cfg.schema_of("deflation"):
        assert f"  {p.name} (" in text
    assert cli.main(["params", "nope"]) == 2


def _negative_cases():
    """Every bounded number of every algorithm table, set to a negative value."""
    for table in cfg.ALGORITHMS:
        for p in cfg.schema_of(table):
            if p.kind in ("float", "int", "ints") and (p.gt is not None or p.ge is not None):
                yield table, p.name, (-1 if p.kind != "float" else -0.5)


@pytest.mark.parametrize("table,key,value", list(_negative_cases()))
def test_negative_numbers_are_refused_with_the_key(table, key, value):
    """Not only zero: a negative value of every bounded key fails, naming ``[table] key``."""
    text = GOOD.replace('["gd", "lazy"]', f'["gd", "{table}"]' if table != "gd" else '["gd"]')
    text = text.replace("[gd]\nlearning_rate = 0.2\n", "") + f"\n[{table}]\n{key} = {value}\n"
    with pytest.raises(cfg.ConfigError) as err:
        cfg.loads(text)
    assert str(err.value).startswith(f"[{table}] {key}:"), str(err.value)


@pytest.mark.parametrize("key,value", [("seeds", -3), ("steps", -100), ("success_threshold", -0.01),
                                       ("chunk_size", -1), ("record_every", -10),
                                       ("widths", "[4, -2]")])
def test_negative_sweep_numbers_are_refused(key, value):
    lines = [line for line in GOOD.splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join(lines).replace("[sweep]", f"[sweep]\n{key} = {value}")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.loads(text)
    assert str(err.value).startswith(f"[sweep] {key}:"), str(err.value)


def test_orders_steps_and_windows_are_bounded_before_anything_runs():
    """Huge values that used to hang or exhaust memory are one config line each."""
    from jaxtd import config as cfg
    from jaxtd.symcp import MAX_ORDER
    assert cfg.MAX_ORDER == MAX_ORDER
    base = cfg.preset_raw("headline")
    for section, key, value, words in [("target", "order", 100, "<= 64"),
                                       ("sweep", "steps", 10 ** 12, "<= 2147483647"),
                                       ("sweep", "widths", {"below": 2, "above": 10 ** 12},
                                        "<= 1000")]:
        raw = {**base, section: {**base[section], key: value}}
        with pytest.raises(cfg.ConfigError, match=words):
            cfg.parse(raw)


def test_required_keys_show_a_real_example_not_unset():
    from jaxtd import config as cfg
    base = cfg.preset_raw("headline")
    for key in ("seeds", "steps", "widths", "success_threshold"):
        raw = {**base, "sweep": {k: v for k, v in base["sweep"].items() if k != key}}
        with pytest.raises(cfg.ConfigError) as info:
            cfg.parse(raw)
        assert "UNSET" not in str(info.value) and "e.g." in str(info.value)


# -- user tables: the same schema, lists, optimizers and validation as the built-in ones ---------

USER = GOOD.replace('algorithms = ["gd", "lazy"]', 'algorithms = ["gd", "mine"]') + """
[mine]
factory = "tests.example_algorithm:heavy_ball"
"""


def _user(lines: str) -> cfg.Config:
    return cfg.loads(USER + lines)


def test_user_table_resolves_every_signature_default_and_round_trips():
    from tests.example_algorithm import heavy_ball
    c = _user("momentum = 0.25\n")
    signature = inspect.signature(heavy_ball).parameters
    assert c.params["mine"] == {"factory": "tests.example_algorithm:heavy_ball",
                                "learning_rate": signature["learning_rate"].default,
                                "momentum": 0.25, "init_scale": signature["init_scale"].default}
    assert cfg.loads(cfg.dumps(c)) == c


def test_user_list_of_a_hyperparameter_is_swept_like_a_builtin_one():
    from jaxtd import experiment
    c = _user("learning_rate = [0.05, 0.1]\n")
    assert c.params["mine"]["learning_rate"] == (0.05, 0.1)
    assert cfg.swept(c, "mine") == (("learning_rate", (0.05, 0.1)),)
    sub = [s for s in experiment.plan(c) if s.algorithm == "mine"][0]
    assert sub.hparams == (("learning_rate", (0.05, 0.1)),) and sub.n_hparams == 2
    assert cfg.loads(cfg.dumps(c)) == c


@pytest.mark.parametrize("lines,key,problem", [
    # momentum is baked into optax.sgd, not a hyper-parameter of the algorithm: a list cannot
    # be vmapped (it used to reach the factory as a list, or crash inside the sweep)
    ("momentum = [0.0, 0.5]\n", "[mine] momentum", "has none named 'momentum'"),
    # every value of a list is checked by the factory, not only the first
    ("learning_rate = [0.05, -0.1]\n", "[mine] learning_rate", "-0.1"),
    ("momentum = 1.5\n", "[mine] momentum", "momentum must be in [0, 1)"),
    ('momentum = "high"\n', "[mine] momentum", "must be a number"),
    ("learning_rate = []\n", "[mine] learning_rate", "empty list"),
    ("learning_rate = [0.1, 0.1]\n", "[mine] learning_rate", "duplicate"),
    ("beta = 0.9\n", "[mine] beta", "unknown key"),
    ('optimizer = "adam"\noptimizer_args = {b1 = 0.8}\n', "[mine] optimizer_args",
     "takes no optimizer argument"),
])
def test_user_table_errors_name_the_key_before_anything_runs(lines, key, problem):
    with pytest.raises(cfg.ConfigError) as err:
        _user(lines)
    message = str(err.value)
    assert message.startswith(key) and problem in message and "\n" not in message, message


def test_required_factory_argument_is_a_missing_key(tmp_path, monkeypatch):
    (tmp_path / "needs_arg.py").write_text(
        "import jaxtd\ndef build(hint: int, *, scale: float = 0.1):\n"
        "    return jaxtd.algorithms.gd(0.1, init_scale=scale)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = USER.replace("tests.example_algorithm:heavy_ball", "needs_arg:build")
    with pytest.raises(cfg.ConfigError, match=r"^\[mine\] hint: missing"):
        cfg.loads(text)
    with pytest.raises(cfg.ConfigError, match=r"^\[mine\] hint: must be an integer"):
        cfg.loads(text + "hint = 0.5\n")
    assert cfg.loads(text + "hint = 3\n").params["mine"]["hint"] == 3


def test_builtin_constructor_as_factory_has_the_builtin_schema():
    """``factory = "jaxtd.algorithms:gd"`` takes exactly the keys of [gd]: one schema, one set of
    checks (the same message for a bad learning rate in either table)."""
    import jaxtd
    assert cfg.factory_schema(jaxtd.algorithms.gd) == cfg.schema_of("gd")
    assert cfg.factory_schema(jaxtd.algorithms.deflation) == cfg.schema_of("deflation")
    two = GOOD.replace('algorithms = ["gd", "lazy"]', 'algorithms = ["gd", "adam"]') + (
        '[adam]\nfactory = "jaxtd.algorithms:gd"\nlearning_rate = 0.2\n')
    for table in ("gd", "adam"):
        bad = two.replace("learning_rate = 0.2", "learning_rate = -1", 1 if table == "gd" else 2)
        if table == "adam":
            bad = bad.replace("learning_rate = -1", "learning_rate = 0.2", 1)
        with pytest.raises(cfg.ConfigError) as err:
            cfg.loads(bad)
        assert str(err.value) == (f"[{table}] learning_rate: must be > 0, got -1.0; "
                                  "fix: use a number > 0")


def test_sgd_and_adam_side_by_side_through_factories():
    """One config, an SGD and an Adam variant of GD: the Adam table builds the very algorithm
    of jaxtd.algorithms.gd(optax.adam with b1, learning_rate) (same program identity)."""
    import jaxtd
    text = GOOD.replace('algorithms = ["gd", "lazy"]', 'algorithms = ["gd", "adam", "tuned"]') + (
        '[adam]\nfactory = "jaxtd.algorithms:gd"\noptimizer = "adam"\n'
        "learning_rate = [0.01, 0.02]\noptimizer_args = {b1 = 0.8}\n"
        '[tuned]\nfactory = "tests.example_algorithm:tuned_gd"\noptimizer = "rmsprop"\n'
        "learning_rate = 0.003\n")
    c = cfg.loads(text)
    assert cfg.loads(cfg.dumps(c)) == c
    adam = cfg.build_algorithm("adam", c.params["adam"])
    expected = jaxtd.algorithms.gd(schema.optax_factory("adam", {"b1": 0.8}),
                                   learning_rate=0.01, name="adam")
    assert adam == expected and adam.hparams["learning_rate"] == 0.01
    sgd = cfg.build_algorithm("gd", c.params["gd"])
    assert sgd == jaxtd.algorithms.gd(0.2, name="gd")
    from tests.example_algorithm import tuned_gd
    tuned = cfg.build_algorithm("tuned", c.params["tuned"])
    oracle = tuned_gd(schema.optax_factory("rmsprop"), learning_rate=0.003)
    assert tuned.static_key == oracle.static_key and tuned.name == "tuned"
    assert tuned.hparams == oracle.hparams
    # a plain rate through the same factory: SGD with that step
    c2 = cfg.loads(text.replace('optimizer = "rmsprop"\n', ""))
    assert cfg.build_algorithm("tuned", c2.params["tuned"]).static_key == \
        tuned_gd(0.003).static_key


def test_every_resolved_argument_is_a_results_column():
    """User and built-in tables alike: defaults included, optimizer_args as sorted JSON."""
    import json

    from jaxtd import experiment
    text = GOOD.replace('algorithms = ["gd", "lazy"]', 'algorithms = ["gd", "adam", "mine"]') + (
        '[adam]\nfactory = "jaxtd.algorithms:gd"\noptimizer = "adam"\n'
        "learning_rate = 0.01\noptimizer_args = {eps = 1e-6, b1 = 0.8}\n"
        '[mine]\nfactory = "tests.example_algorithm:heavy_ball"\nlearning_rate = [0.05, 0.1]\n')
    c = cfg.loads(text)
    for name in ("gd", "adam", "mine"):
        columns = experiment.hyperparameters(c, name, experiment.make_algorithm(c, name))
        table = cfg.constructor_values(name, c.params[name])
        for key, value in table.items():
            if isinstance(value, tuple):  # swept: the sweep's own column
                assert key not in columns
            elif isinstance(value, dict):
                assert json.loads(columns[key]) == value
            elif value is not None:
                assert columns[key] == value, (name, key)
    adam = experiment.hyperparameters(c, "adam", experiment.make_algorithm(c, "adam"))
    assert adam["optimizer_args"] == '{"b1":0.8,"eps":1e-06}' and adam["optimizer"] == "adam"
    mine = experiment.hyperparameters(c, "mine", experiment.make_algorithm(c, "mine"))
    assert mine["momentum"] == 0.5 and mine["init_scale"] == 0.1  # the factory's defaults


@pytest.mark.parametrize("key, name", [("learning_rate", "step_size"), ("init_scale", "delta0"),
                                       ("threshold", "delta1")])
def test_a_hyperparameter_name_in_the_deflation_table_is_told_its_key(key, name):
    """The key that sets a hyper-parameter is read from the schema (Param.hparam), not from a
    second table of renames."""
    text = GOOD + f"[deflation]\n{key} = 0.1\n"
    with pytest.raises(cfg.ConfigError, match=f"deflation. {key}: unknown key; fix: rename it to "
                       f"{name}"):
        cfg.loads(text)
