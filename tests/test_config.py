"""The TOML config contract of ``jaxtd run`` (jaxtd/config.py) and the shipped presets."""

import dataclasses

import pytest

from jaxtd import config as cfg

GOOD = """
[target]
order = 3
dim = [8, 12]
rank = 2
kind = "orthogonal"
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
    assert c.params["variant"] == dict(cfg.PARAMS["variant"])
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


def test_the_five_presets_are_shipped():
    assert set(cfg.preset_names()) >= {"headline", "lazy-threshold", "beyond-lazy",
                                       "width-vs-rank", "deflation"}


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
    (_bad('kind = "orthogonal"\n', ""), "[target] kind"),
    (_bad("seeds = 3\n", ""), "[sweep] seeds"),
    (_bad("widths = [8, 2, 4]", "widths = [8, 0]"), "[sweep] widths"),
    (_bad("widths = [8, 2, 4]", "widths = [2, 2]"), "[sweep] widths"),
    (_bad("widths = [8, 2, 4]", "widths = []"), "[sweep] widths"),
    (_bad("order = 3", "order = 1"), "[target] order"),
    (_bad("order = 3", "order = 3.0"), "[target] order"),
    (_bad("seeds = 3", 'seeds = "3"'), "[sweep] seeds"),
    (_bad('["gd", "lazy"]', '["gd", "adam"]'), "[sweep] algorithms"),
    (_bad('kind = "orthogonal"', 'kind = "sparse"'), "[target] kind"),
    (_bad('weights = "equal"', "weights = [1.0]"), "[target] weights"),
    (_bad("dim = [8, 12]", "dim = 1"), "[target] rank"),
    (_bad("success_threshold = 1e-2", "success_threshold = -1"), "[sweep] success_threshold"),
    (_bad("learning_rate = 0.2", "learning_rate = 0.0"), "[gd] learning_rate"),
    (_bad("[gd]", '[gd]\nmodel = "cubic"'), "[gd] model"),
    (_bad("[gd]", "[deflation]\ndelta1 = 1e-4\n[gd]"), "[deflation] delta1"),
    (_bad("[gd]", "[deflation]\ngamma = 1\n[gd]"), "[deflation] gamma"),
    (_bad("[sweep]", "[swep]\nx = 1\n[sweep]"), "swep"),
    ("[target]\norder = 3", "[sweep]"),
    (_bad("order = 3", "order = "), "config"),
])
def test_bad_config_names_the_key_in_one_line(text, key):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.loads(text)
    message = str(err.value)
    assert key in message and "\n" not in message and ";" in message


def test_unreadable_file_and_unknown_preset(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")
    with pytest.raises(cfg.ConfigError, match="headline"):
        cfg.preset("nope")
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    assert cfg.load(path) == cfg.loads(GOOD)
