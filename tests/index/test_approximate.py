import numpy as np
import pytest
from contracts import IndexContract, brute_force, clustered_world, recall

from ytdnn.index import ExactIndex, HNSWIndex, IVFIndex, recall_at_k


class TestHNSWIndex(IndexContract):
    min_recall_at_10 = 0.95

    def make_index(self):
        return HNSWIndex(m=32, ef_construction=128, ef_search=64)  # recall@10 measured 0.98-1.0


class TestIVFIndex(IndexContract):
    min_recall_at_10 = 0.9

    def make_index(self):
        return IVFIndex(nlist=32, nprobe=12)  # recall@10 measured 0.95-0.995

    def make_small_index(self):
        return IVFIndex(nlist=1, nprobe=1)  # 20 vectors: one cell, searched exhaustively


@pytest.fixture(scope="module")
def world():
    return clustered_world(num_items=4000, dim=16, num_queries=60, seed=3)


def test_ivf_recall_grows_with_nprobe_and_is_exact_when_every_cell_is_probed(world):
    truth = brute_force(world, 10)
    index = IVFIndex(nlist=32).build(world.vectors, world.ids)
    recalls = []
    for nprobe in (1, 4, 16, 32):
        index.nprobe = nprobe  # a search-time setting: no rebuild
        recalls.append(recall(truth, index.search(world.queries, 10)[1]))
    assert recalls == sorted(recalls) and recalls[0] < 0.9
    assert recalls[-1] == 1.0


def test_hnsw_recall_grows_with_ef_search(world):
    truth = brute_force(world, 50)
    index = HNSWIndex(m=8, ef_construction=32).build(world.vectors, world.ids)
    recalls = []
    for ef_search in (8, 32, 256):
        index.ef_search = ef_search  # raised to k by faiss when smaller
        recalls.append(recall(truth, index.search(world.queries, 50)[1]))
    assert recalls == sorted(recalls) and recalls[-1] >= 0.95


def test_ivf_picks_about_2_sqrt_m_cells_with_39_points_each(world):
    assert IVFIndex().build(world.vectors).num_cells == 4000 // 39  # min(126, 102)
    big = np.random.default_rng(0).normal(size=(10_000, 4)).astype(np.float32)
    assert IVFIndex().build(big).num_cells == 200  # 2 * sqrt(10_000), under 10_000 / 39


def test_ivf_with_more_cells_than_vectors_is_an_error(world):
    with pytest.raises(ValueError, match="nlist"):
        IVFIndex(nlist=100).build(world.vectors[:50])


def test_recall_at_k_against_exact(world):
    exact = ExactIndex().build(world.vectors, world.ids)
    assert recall_at_k(exact, exact, world.queries, 10) == 1.0
    coarse = IVFIndex(nlist=32, nprobe=1).build(world.vectors, world.ids)
    assert 0 < recall_at_k(coarse, exact, world.queries, 10) < 1


def test_loading_as_the_wrong_kind_is_an_error(world, tmp_path):
    HNSWIndex(m=8).build(world.vectors[:100]).save(tmp_path / "hnsw")
    with pytest.raises(ValueError, match="HNSWIndex"):
        IVFIndex.load(tmp_path / "hnsw")


@pytest.mark.parametrize("kwargs", [{"m": 1}, {"ef_search": 0}, {"ef_construction": 0}])
def test_hnsw_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        HNSWIndex(**kwargs)
