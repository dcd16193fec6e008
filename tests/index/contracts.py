"""IndexContract: the tests every ``Index`` passes, with ``ExactIndex`` as the oracle (STYLE rule 4).

Subclass it in a ``Test*`` class and define ``make_index``; set ``min_recall_at_10`` below 1 for an
approximate index. Import it as ``from contracts import IndexContract`` (pytest puts this folder on
sys.path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ytdnn.index import ExactIndex, load_index


@dataclass(frozen=True)
class World:
    vectors: np.ndarray  # [M, d] float32, clustered, norms vary
    ids: np.ndarray  # [M] int64, sparse and shuffled so position != id
    queries: np.ndarray  # [Q, d] float32


def clustered_world(num_items=3000, dim=16, num_queries=40, num_clusters=20, seed=0) -> World:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_clusters, dim))
    vectors = centers[rng.integers(num_clusters, size=num_items)] + rng.normal(
        size=(num_items, dim)
    )
    vectors *= rng.uniform(0.5, 2.0, size=(num_items, 1))  # inner product, not cosine: norms matter
    ids = rng.permutation(10 * num_items)[:num_items].astype(np.int64) + 1
    queries = centers[rng.integers(num_clusters, size=num_queries)] + rng.normal(
        size=(num_queries, dim)
    )
    return World(vectors.astype(np.float32), ids, queries.astype(np.float32))


def brute_force(world: World, k: int, exclude=None) -> np.ndarray:
    """Top-k ids by inner product, computed in numpy: [Q, k]."""
    scores = world.queries.astype(np.float64) @ world.vectors.T.astype(np.float64)  # [Q, M]
    if exclude is not None:
        for row, excluded in enumerate(exclude):
            scores[row, np.isin(world.ids, excluded)] = -np.inf
    return world.ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found)) / truth.size


class IndexContract:
    min_recall_at_10 = 1.0
    expected_exact = False

    def make_index(self):
        raise NotImplementedError

    def make_small_index(self):
        """An index that can be built on 20 vectors (override when make_index needs more)."""
        return self.make_index()

    # class-scoped, so each index is built once per test class
    @pytest.fixture(scope="class")
    @classmethod
    def world(cls) -> World:
        return clustered_world()

    @pytest.fixture(scope="class")
    @classmethod
    def index(cls, world):
        return cls().make_index().build(world.vectors, world.ids)

    @pytest.fixture(scope="class")
    @classmethod
    def oracle(cls, world):
        return ExactIndex().build(world.vectors, world.ids)

    def test_is_exact(self, index):
        assert index.is_exact is self.expected_exact

    def test_shapes_dtypes_and_order(self, index, world):
        scores, ids = index.search(world.queries, 10)
        assert scores.shape == ids.shape == (len(world.queries), 10)
        assert scores.dtype == np.float32 and ids.dtype == np.int64
        assert np.all(np.diff(scores, axis=1) <= 0)  # best first
        assert np.isin(ids, world.ids).all()

    def test_scores_are_the_inner_products_of_the_returned_ids(self, index, world):
        scores, ids = index.search(world.queries, 10)
        position = {int(i): p for p, i in enumerate(world.ids)}
        rows = np.vectorize(position.get)(ids)  # [Q, 10]
        expected = np.einsum("qd,qkd->qk", world.queries, world.vectors[rows])
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)

    def test_results_match_the_exact_oracle(self, index, oracle, world):
        _, ids = index.search(world.queries, 10)
        _, truth = oracle.search(world.queries, 10)
        assert recall(truth, ids) >= self.min_recall_at_10
        np.testing.assert_array_equal(truth, brute_force(world, 10))  # the oracle itself

    def test_exclusions_hold_even_when_the_whole_top_is_excluded(self, index, world):
        # Each query excludes its true top 50 plus 30 random items and ids absent from the index.
        rng = np.random.default_rng(1)
        top = brute_force(world, 50)
        exclude = [np.concatenate([t, rng.choice(world.ids, 30), [-5, 10**9]]) for t in top]
        exclude[0] = None  # None means nothing to exclude
        _, ids = index.search(world.queries, 10, exclude=exclude)
        for row, excluded in enumerate(exclude[1:], start=1):
            assert not np.isin(ids[row], excluded).any()
        assert (ids >= 0).all()  # plenty remain: no padding
        assert recall(brute_force(world, 10, exclude), ids) >= self.min_recall_at_10

    def test_padding_when_fewer_than_k_remain(self, world):
        small = World(world.vectors[:20], world.ids[:20], world.queries[:3])
        index = self.make_small_index().build(small.vectors, small.ids)
        scores, ids = index.search(small.queries, 30, exclude=[None, small.ids[:5], small.ids])
        assert set(ids[0, :20]) == set(small.ids) and (ids[0, 20:] == -1).all()
        assert set(ids[1, :15]) == set(small.ids[5:]) and (ids[1, 15:] == -1).all()
        assert (ids[2] == -1).all()  # everything excluded
        assert np.isneginf(scores[ids == -1]).all() and np.isfinite(scores[ids != -1]).all()

    def test_batch_equals_one_query_at_a_time(self, index, world):
        exclude = [world.ids[i : i + 7] for i in range(len(world.queries))]
        scores, ids = index.search(world.queries, 10, exclude=exclude)
        for row in range(0, len(world.queries), 7):
            one_scores, one_ids = index.search(world.queries[row : row + 1], 10, [exclude[row]])
            np.testing.assert_array_equal(one_ids[0], ids[row])
            np.testing.assert_array_equal(one_scores[0], scores[row])

    def test_accepts_torch_tensors_and_float64(self, index, world):
        expected = index.search(world.queries, 5)[1]
        assert np.array_equal(index.search(torch.from_numpy(world.queries), 5)[1], expected)
        assert np.array_equal(index.search(world.queries.astype(np.float64), 5)[1], expected)

    def test_save_load_round_trip_gives_identical_results(self, index, world, tmp_path):
        index.save(tmp_path / "index")
        exclude = [world.ids[:3]] * len(world.queries)
        expected = index.search(world.queries, 10, exclude)
        for again in (type(index).load(tmp_path / "index"), load_index(tmp_path / "index")):
            assert type(again) is type(index) and again.params == index.params
            result = again.search(world.queries, 10, exclude)
            np.testing.assert_array_equal(result[0], expected[0])
            np.testing.assert_array_equal(result[1], expected[1])
        np.load(tmp_path / "index" / "ids.npy", allow_pickle=False)  # plain array, no pickle

    def test_bad_inputs_raise_clear_errors(self, index, world):
        with pytest.raises(ValueError, match="dimension"):
            index.search(world.queries[:, :-1], 5)
        for k in (0, -3):
            with pytest.raises(ValueError, match="k must be positive"):
                index.search(world.queries, k)
        with pytest.raises(TypeError):
            index.search(world.queries, 2.5)
        with pytest.raises(TypeError, match="floating point"):
            index.search(world.queries.astype(np.int64), 5)
        with pytest.raises(ValueError, match="2-D"):
            index.search(world.queries[0], 5)
        with pytest.raises(ValueError, match="entries"):
            index.search(world.queries, 5, exclude=[[1]])
        with pytest.raises(TypeError, match="floating point"):
            self.make_index().build(world.vectors.astype(np.int32))
        with pytest.raises(ValueError, match="unique"):
            self.make_index().build(world.vectors[:50], np.zeros(50, dtype=np.int64))
        bad = world.vectors[:50].copy()
        bad[3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            self.make_index().build(bad)

    def test_search_before_build_raises(self, world):
        with pytest.raises(RuntimeError, match="not built"):
            self.make_index().search(world.queries, 5)
