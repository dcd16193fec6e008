import numpy as np
import pytest

from ytdnn.features import NotFittedError
from ytdnn.retrieval import Context, CoocConfig, CoocSource

from .contracts import RetrieverContract, V, streams_of, tiny_streams


class TestCoocContract(RetrieverContract):
    name = "cooc"

    def make(self):
        streams = tiny_streams()
        return CoocSource(CoocConfig(window=2, recent=3)).fit(streams, V), streams


class TestCoocUnorderedContract(TestCoocContract):
    def make(self):
        streams = tiny_streams(ordered=False)
        return CoocSource(CoocConfig(max_pairs_per_user=4)).fit(streams, V), streams


def neighbours(source: CoocSource) -> dict[int, dict[int, float]]:
    p = source.indptr_
    return {a: dict(zip(source.neighbours_[p[a]:p[a + 1]].tolist(), source.similarity_[p[a]:p[a + 1]].tolist()))
            for a in range(source.num_items) if p[a + 1] > p[a]}


# user 1 watches 1, 2, 3, 1 (a rewatch); user 2 watches 2, 3; user 3 watches 4 (alone) and 0 (OOV)
ORDERED = {1: [1, 2, 3, 1], 2: [2, 3], 3: [4, 0]}


def test_ordered_pairs_counted_by_hand():
    # window 1, pairs of consecutive watches: user 1 {1,2}, {2,3}, {3,1}; user 2 {2,3}.
    # users per pair: n_12 = 1, n_23 = 2, n_13 = 1; users per item: n_1 = 1, n_2 = 2, n_3 = 2
    # sim = n_ab / sqrt(n_a n_b): sim(1,2) = 1/sqrt(2), sim(2,3) = 2/2 = 1, sim(1,3) = 1/sqrt(2)
    source = CoocSource(CoocConfig(window=1)).fit(streams_of(ORDERED), 6)
    r = 1 / np.sqrt(2)
    expected = {1: {2: r, 3: r}, 2: {1: r, 3: 1.0}, 3: {1: r, 2: 1.0}}
    got = neighbours(source)
    assert got.keys() == expected.keys()
    for a, links in expected.items():
        assert got[a] == pytest.approx(links)


def test_the_window_reaches_further_watches():
    # window 2 on [1, 2, 3, 4]: {1,2}, {2,3}, {3,4} and {1,3}, {2,4}, never {1,4}
    source = CoocSource(CoocConfig(window=2)).fit(streams_of({1: [1, 2, 3, 4]}), 5)
    got = neighbours(source)
    assert sorted(got[1]) == [2, 3] and sorted(got[4]) == [2, 3] and sorted(got[2]) == [1, 3, 4]
    assert all(s == pytest.approx(1.0) for links in got.values() for s in links.values())


def test_recent_weights_and_scores_by_hand():
    source = CoocSource(CoocConfig(window=1, recent=2, decay=0.5)).fit(streams_of(ORDERED), 6)
    # user 1's history 1, 2, 3, 1: distinct by latest watch 1 (r = 0), 3 (r = 1), 2 (r = 2);
    # recent = 2 keeps 1 (weight 1) and 3 (weight 0.5)
    ctx = Context.whole(streams_of(ORDERED), np.array([1]))
    state = source.encode(ctx)
    np.testing.assert_array_equal(state.items, [1, 3])
    np.testing.assert_allclose(state.weights, [1.0, 0.5])
    # score(2) = 1 * sim(1, 2) + 0.5 * sim(3, 2) = 1/sqrt(2) + 0.5; score(3) = sim(1, 3) = 1/sqrt(2);
    # score(1) = 0.5 * sim(3, 1) = 0.5/sqrt(2); items 4, 5: no link -> 0
    r = 1 / np.sqrt(2)
    got = source.score(state, np.array([[1, 2, 3, 4, 5, 0]]))
    np.testing.assert_allclose(got[0, :5], [0.5 * r, r + 0.5, r, 0.0, 0.0], rtol=1e-6)
    assert np.isneginf(got[0, 5])
    ids, scores = source.retrieve(state, 5)  # only linked items: 2, 3, 1, then padding
    np.testing.assert_array_equal(ids[0], [2, 3, 1, 0, 0])
    np.testing.assert_allclose(scores[0, :3], [r + 0.5, r, 0.5 * r], rtol=1e-6)


def test_unordered_streams_pair_every_distinct_item_of_a_user():
    # users {1, 2, 3} and {2, 3}: n_12 = n_13 = 1, n_23 = 2; n_1 = 1, n_2 = n_3 = 2
    streams = streams_of({1: [3, 1, 2, 1], 2: [2, 3]}, ordered=False)
    source = CoocSource().fit(streams, 4)
    r = 1 / np.sqrt(2)
    got = neighbours(source)
    assert got[1] == pytest.approx({2: r, 3: r}) and got[2] == pytest.approx({1: r, 3: 1.0})
    state = source.encode(Context.whole(streams, np.array([2])))  # no recency: weight 1 each
    np.testing.assert_array_equal(state.items, [2, 3])
    np.testing.assert_allclose(state.weights, [1.0, 1.0])
    # item 1: sim(2, 1) + sim(3, 1) = 2 / sqrt(2)
    np.testing.assert_allclose(source.score(state, np.array([[1]])), [[2 * r]], rtol=1e-6)


def test_the_pair_cap_samples_a_seeded_subset():
    items = list(range(1, 11))  # 45 pairs for one user
    streams = streams_of({1: items}, ordered=False)
    capped = CoocSource(CoocConfig(max_pairs_per_user=6, seed=3)).fit(streams, 11)
    assert 0 < len(capped.neighbours_) <= 2 * 6  # both directions of at most 6 pairs
    again = CoocSource(CoocConfig(max_pairs_per_user=6, seed=3)).fit(streams, 11)
    np.testing.assert_array_equal(capped.neighbours_, again.neighbours_)
    full = CoocSource(CoocConfig(max_pairs_per_user=45)).fit(streams, 11)
    assert len(full.neighbours_) == 90


def test_neighbours_keeps_the_most_similar_ties_to_the_lower_id():
    # 2 co-occurs with 1 for two users, with 3 and 4 for one each
    streams = streams_of({1: [1, 2], 2: [2, 1], 3: [4, 2, 3]})
    source = CoocSource(CoocConfig(window=1, neighbours=2)).fit(streams, 5)
    assert list(neighbours(source)[2]) == [1, 3]  # 1 (best), then 3 of the tied 3, 4


def test_bad_settings():
    for name in ("window", "neighbours", "recent", "max_pairs_per_user"):
        with pytest.raises(ValueError, match=name):
            CoocConfig(**{name: 0})
    with pytest.raises(ValueError, match="decay"):
        CoocConfig(decay=0.0)
    with pytest.raises(NotFittedError, match="not fitted"):
        CoocSource().score(None, np.zeros((1, 1), np.int64))
