import copy
import json
import pickle

import numpy as np
import pytest

from ytdnn.modeldir import ModelDirError, ModelDirNotFoundError
from ytdnn.retrieval import (
    CoocSource,
    EASESource,
    GeneratorSource,
    PopularSource,
    load_source,
    save_source,
)
from ytdnn.retrieval.base import top_k

from .contracts import V, tiny_generator, tiny_streams


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{kind: directory} of one saved source of each kind over the tiny streams."""
    root = tmp_path_factory.mktemp("sources")
    streams = tiny_streams()
    out = {}
    for source in (EASESource().fit(streams, V), CoocSource().fit(streams, V), PopularSource().fit(streams, V)):
        out[source.name] = save_source(source, root / source.name)
    return out


def test_config_json_names_the_kind(saved):
    kinds = {name: json.loads((path / "config.json").read_text())["kind"] for name, path in saved.items()}
    assert kinds == {"ease": "ytdnn.source.ease", "cooc": "ytdnn.source.cooc", "popular": "ytdnn.source.popular"}


def test_a_generator_directory_loads_as_the_generator_source(tmp_path):
    gen = tiny_generator()
    save_source(GeneratorSource(copy.copy(gen)), tmp_path / "gen")
    loaded = load_source(tmp_path / "gen")
    assert isinstance(loaded, GeneratorSource) and loaded.generator is not gen
    given = load_source(tmp_path / "gen", generator=gen)
    assert given.generator is gen  # served by the generator already loaded, not read again


def test_a_source_must_share_the_generators_catalogue(tmp_path):
    gen = tiny_generator()
    v = gen.featurizer_.num_items
    assert load_source(save_source(PopularSource().fit(gen.streams_, v), tmp_path / "same"), gen).num_items == v
    wider = save_source(PopularSource().fit(gen.streams_, v + 3), tmp_path / "wider")
    with pytest.raises(ModelDirError, match="catalogue ids"):
        load_source(wider, generator=gen)


def test_unknown_kinds_and_missing_directories_are_refused(tmp_path, saved):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"kind": "ytdnn.ranker"}))
    with pytest.raises(ModelDirError, match="not a candidate source"):
        load_source(tmp_path / "other")
    with pytest.raises(ModelDirNotFoundError):
        load_source(tmp_path / "nothing")
    with pytest.raises(TypeError, match="not a candidate source"):
        save_source(object(), tmp_path / "x")


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_broken_files_fail_with_the_files_name(tmp_path, saved):
    # a pickle where the arrays should be
    d = _copy(saved["cooc"], tmp_path / "pickled")
    (d / "cooc.npz").write_bytes(pickle.dumps({"indptr": np.zeros(V + 1)}))
    with pytest.raises(ModelDirError, match="cooc.npz.*pickle"):
        load_source(d)
    # an unknown setting in config.json
    d = _copy(saved["popular"], tmp_path / "typo")
    config = json.loads((d / "config.json").read_text())
    config["config"]["half_life"] = 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="half_life"):
        load_source(d)
    # weights of another shape than the catalogue says
    d = _copy(saved["ease"], tmp_path / "shape")
    config = json.loads((d / "config.json").read_text())
    config["num_items"] = 4
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="ease.safetensors.*catalogue ids"):
        load_source(d)
    # a truncated safetensors file
    d = _copy(saved["ease"], tmp_path / "truncated")
    (d / "ease.safetensors").write_bytes((d / "ease.safetensors").read_bytes()[:20])
    with pytest.raises(ModelDirError, match="ease.safetensors"):
        load_source(d)
    # counts that break the invariants
    d = _copy(saved["popular"], tmp_path / "negative")
    np.savez(d / "popular.npz", counts=-np.ones(V))
    with pytest.raises(ModelDirError, match="popular.npz"):
        load_source(d)


def test_a_file_linked_from_outside_is_refused(tmp_path, saved):
    d = _copy(saved["cooc"], tmp_path / "linked")
    outside = tmp_path / "outside.npz"
    outside.write_bytes((d / "cooc.npz").read_bytes())
    (d / "cooc.npz").unlink()
    (d / "cooc.npz").symlink_to(outside)
    with pytest.raises(ModelDirError, match="outside the model directory"):
        load_source(d)


def test_top_k_ignores_exclusions_outside_the_catalogue():
    scores = np.array([[0.0, 3.0, 2.0, 1.0]])
    # -1 once excluded the last column (negative indexing), 99 raised IndexError
    ids, values = top_k(scores, 3, [np.array([-1, 99, 2])])
    np.testing.assert_array_equal(ids, [[1, 3, 0]])
    np.testing.assert_array_equal(values, np.array([[3.0, 1.0, -np.inf]], np.float32))
    ids, _ = top_k(scores, 2, [None])
    np.testing.assert_array_equal(ids, [[1, 2]])
    with pytest.raises(ValueError, match="k must be positive"):
        top_k(scores, 0)
