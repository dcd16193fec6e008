"""One configuration for both stages: `--set section.key=value` text is parsed by the declared
type of the setting it names; bare keys work when unambiguous (issues 14, 15)."""

import json

import pytest

from ytdnn.cli import _parse_overrides, main
from ytdnn.configuration import TwoStageConfig, dotted_keys


def settings(*pairs: str) -> TwoStageConfig:
    return TwoStageConfig().with_settings(_parse_overrides(list(pairs)))


def test_the_cli_keeps_the_text_of_each_value():
    assert _parse_overrides(["tower=256", "lr=0.003", "q=a=b"]) == {
        "tower": "256", "lr": "0.003", "q": "a=b"}  # fmt: skip
    for bad in ("depth", "=2"):
        with pytest.raises(ValueError, match="key=value"):
            _parse_overrides([bad])


def test_each_value_takes_its_settings_declared_type():
    c = settings("ranker.tower=256", "depth=2", "train.lr=0.003", "use_watches=false", "tower_widths=[64,32]",
                 "num_negatives=null", "train.monitor=HR@10", "ranker_train.grad_clip=1", "pipeline.max_items=50")
    assert c.ranker.tower == "256"  # RankerConfig.tower is a str: "256", not 256
    assert type(c.candidates.depth) is int and c.candidates.depth == 2
    assert c.train.lr == 0.003 and c.train.monitor == "HR@10" and c.ranker_train.grad_clip == 1
    assert c.candidates.use_watches is False and c.candidates.tower_widths == (64, 32)
    assert c.candidates.num_negatives is None and c.pipeline.max_items == 50
    assert settings("train.monitor=null").train.monitor is None  # str | None: null is None
    assert settings("tower=256").ranker.tower == "256"  # bare: only the ranker has a tower
    lr, l2 = settings("train.lr=1").train.lr, settings("ease.l2=50").ease.l2
    assert (type(lr), lr, type(l2), l2) == (float, 1.0, float, 50.0)  # a float setting holds a float


@pytest.mark.parametrize(
    ("pair", "key"),
    [("depth=two", "depth"), ("depth=2.5", "depth"), ("use_watches=1", "use_watches"),
     ("tower_widths=[64,x]", "tower_widths"), ("train.lr=fast", "lr"),
     ("num_negatives=[1]", "num_negatives"), ("pipeline.max_items=1.5", "max_items")],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_setting(pair, key):
    with pytest.raises(ValueError, match=rf"\b{key}\b"):
        settings(pair)


def test_an_ambiguous_or_unknown_key_lists_the_dotted_names():
    with pytest.raises(ValueError, match=r"ambiguous: write one of train\.seed, ranker_train\.seed, impressions\.seed"):
        settings("seed=3")
    with pytest.raises(ValueError, match=r"unknown setting 'towr'.*ranker\.tower"):
        settings("towr=3")
    with pytest.raises(ValueError, match=r"unknown setting 'ranker\.depth'"):
        settings("ranker.depth=3")


def test_a_sources_settings_are_reached_by_dotted_keys_only():
    from ytdnn.configuration import SOURCE_SECTIONS
    from ytdnn.training import SOURCE_KINDS

    assert set(SOURCE_SECTIONS) == set(SOURCE_KINDS)  # every source trainable by name has its section
    c = settings("cooc.window=20", "ease.l2=1000", "popular.half_life_share=0.1", "ease.max_items=50")
    assert (c.cooc.window, c.ease.l2, c.popular.half_life_share, c.ease.max_items) == (20, 1000.0, 0.1, 50)
    assert c.pipeline.max_items == TwoStageConfig().pipeline.max_items
    with pytest.raises(ValueError, match=r"write one of ranker\.max_items, pipeline\.max_items$"):
        settings("max_items=50")  # the stages' two, not EASE's as well
    with pytest.raises(ValueError, match=r"'window' is a candidate source's setting: write cooc\.window$"):
        settings("window=20")
    with pytest.raises(ValueError, match=r"cooc\.window"):
        settings("cooc.window=wide")
    with pytest.raises(ValueError, match="window must be >= 1"):
        settings("cooc.window=0")


def test_every_key_is_reachable_from_the_cli_and_has_a_meaning(tmp_path, capsys):
    defaults = {key: value for key, value, _ in TwoStageConfig().describe()}
    assert all(meaning for _, _, meaning in TwoStageConfig().describe())
    for key in dotted_keys():  # setting each key to its own default round-trips through the text
        value = defaults[key]
        text = value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)
        assert {k: v for k, v, _ in settings(f"{key}={text}").describe()} == defaults, key
    assert main(["config", "show", "--set", "ranker.tower=256"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == len(dotted_keys())
    assert any(line.split()[:2] == ["ranker.tower", '"256"'] for line in out.splitlines())


def test_a_configuration_file_and_a_model_config_json_both_load(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"candidates": {"depth": 2}, "pipeline": {"max_items": 10}}))
    c = TwoStageConfig.load(path)
    assert c.candidates.depth == 2 and c.pipeline.max_items == 10 and c.train == TwoStageConfig().train
    for bad, named in (({"pipeline": {"max_items": 1.5}}, "max_items"), ({"sections": {}}, "sections"),
                       ({"train": {"max_epochs": "3"}}, "max_epochs"), ([], "JSON object")):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=named):
            TwoStageConfig.load(path)


def test_config_show_reads_a_configuration_file_as_train_does(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"cooc": {"window": 3}, "pipeline": {"sources": "cooc:5"}}))
    assert main(["config", "show", "--config", str(path), "--set", "ranker.tower=256"]) == 0
    shown = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert (shown["cooc.window"], shown["pipeline.sources"], shown["ranker.tower"]) == ("3", '"cooc:5"', '"256"')
    assert shown["cooc.recent"] == "10"  # a key the file leaves out keeps its default
    path.write_text(json.dumps({"cooc": {"window": 0}}))
    assert main(["config", "show", "--config", str(path)]) == 2
    assert "window must be >= 1" in capsys.readouterr().err
    assert main(["config", "show", "--config", str(path), "--model", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
