import pytest

from ytdnn.index import ExactIndex, HNSWIndex, IndexConfig, IVFIndex, make_index


def test_config_makes_each_kind_with_its_settings():
    assert isinstance(make_index(IndexConfig(kind="exact")), ExactIndex)
    ivf = make_index(IndexConfig(nprobe=8))
    assert isinstance(ivf, IVFIndex) and ivf.params == {"nlist": None, "nprobe": 8}
    hnsw = make_index(IndexConfig(kind="hnsw", m=8, ef_search=40))
    assert isinstance(hnsw, HNSWIndex) and (hnsw.m, hnsw.ef_search) == (8, 40)


def test_config_round_trips_through_json(tmp_path):
    config = IndexConfig(kind="hnsw", ef_search=256)
    config.save(tmp_path / "index.json")
    assert IndexConfig.load(tmp_path / "index.json") == config


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="annoy")
