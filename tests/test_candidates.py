"""The candidate generator end to end on a tiny world with a planted answer."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig
from ytdnn.train.optim import make_optimizer

NUM_USERS, ITEMS_PER_CLUSTER = 60, 15


def two_clusters(seed=0):
    """Users 0..29 ("north") watch items 100..114, users 30..59 ("south") items 200..214.

    Each user watches 8 items of their cluster in time order; geo names the cluster, so a user with
    no history can still be placed (cold start).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(NUM_USERS):
        base = 100 if u < NUM_USERS // 2 else 200
        items = rng.choice(np.arange(base, base + ITEMS_PER_CLUSTER), size=8, replace=False)
        rows += [(u, int(i), 1000 * t + u) for t, i in enumerate(items)]
    watches = pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "item_id": pa.array([r[1] for r in rows], pa.int64()),
        "timestamp": pa.array([r[2] for r in rows], pa.int64()),
    })
    users = pa.table({
        "user_id": pa.array(np.arange(NUM_USERS), pa.int64()),
        "geo": ["north" if u < NUM_USERS // 2 else "south" for u in range(NUM_USERS)],
        "age": np.linspace(15, 70, NUM_USERS),
    })
    return watches, users


def small_generator(recent=0, **model):
    cfg = {"embedding_dim": 16, "output_dim": 16, "depth": 1, "tower_widths": (32,), "num_negatives": None}
    cfg.update(model)
    return CandidateGenerator(
        CandidateConfig(**cfg),
        ExampleConfig(max_watch_history=10, max_examples_per_user=None, max_recent_watches=recent),
        TrainConfig(lr=1e-2, batch_size=32, max_epochs=15, progress=False, num_threads=1),
    )


@pytest.fixture(scope="module")
def trained():
    watches, users = two_clusters()
    return small_generator().fit(watches, users=users), watches, users


def cluster_share(item_lists, base):
    items = np.concatenate([np.asarray(x, dtype=np.int64) for x in item_lists])
    return np.mean((items >= base) & (items < base + ITEMS_PER_CLUSTER))


def test_recovers_the_planted_clusters_and_excludes_watched(trained):
    gen, watches, _ = trained
    north, south = np.arange(0, 30), np.arange(30, 60)
    items_n, scores_n = gen.retrieve(north, k=5)
    items_s, _ = gen.retrieve(south, k=5)
    assert cluster_share(items_n, 100) == 1.0
    assert cluster_share(items_s, 200) == 1.0
    assert np.all(np.diff(scores_n, axis=1) <= 1e-6)  # best first
    for u, items in zip(north, items_n):
        seen = set(np.asarray(watches.filter(pa.compute.equal(watches["user_id"], u))["item_id"]))
        assert not seen & set(items.tolist())


def test_sampled_softmax_trains_sparse_tables_by_default_and_still_finds_the_clusters():
    watches, users = two_clusters(seed=3)
    gen = small_generator(num_negatives=8).fit(watches, users=users)
    model = gen.model_
    assert model.watch_bag.sparse and model.item_embeddings.sparse and model.item_bias.sparse
    assert [type(o).__name__ for o in make_optimizer(model, gen.train_cfg).optimizers] == ["RowAdam", "Adam"]
    items, _ = gen.retrieve(np.arange(0, 30), k=5)
    assert cluster_share(items, 100) >= 0.9


@pytest.mark.parametrize(("model", "sparse"), [
    ({}, False),  # full softmax: every row gets a gradient anyway
    ({"num_negatives": 8, "sparse_embeddings": False}, False),
    ({"sparse_embeddings": True}, True),
])
def test_sparse_tables_follow_the_softmax_unless_set(model, sparse):
    watches, users = two_clusters(seed=3)
    gen = small_generator(**model)
    gen.train_cfg = gen.train_cfg.replace(max_epochs=1)
    gen.fit(watches, users=users)
    assert gen.model_.watch_bag.sparse is sparse and gen.model_.item_embeddings.sparse is sparse


def test_cold_start_user_is_placed_by_user_features(trained):
    gen, _, _ = trained
    fresh = pa.table({"user_id": pa.array([1000, 1001], pa.int64()), "geo": ["north", "south"], "age": [30.0, 30.0]})
    vectors = gen.cold_start_vectors(fresh)
    assert vectors.shape == (2, 16)
    items, _ = gen.search_vectors(vectors, k=5)
    assert cluster_share(items[:1], 100) >= 0.8
    assert cluster_share(items[1:], 200) >= 0.8


def test_unknown_user_without_features_gets_a_vector(trained):
    gen, _, _ = trained
    items, scores = gen.retrieve([123456], k=3)
    assert len(items[0]) == 3 and np.isfinite(scores).all()


def test_model_directory_round_trip_gives_identical_results(trained, tmp_path):
    gen, _, _ = trained
    gen.build_index("exact")
    gen.save(tmp_path / "model")
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "candidate.safetensors", "vocab", "history.npz", "index"} <= files
    again = CandidateGenerator.load(tmp_path / "model")
    a_items, a_scores = gen.retrieve([0, 31, 45], k=7)
    b_items, b_scores = again.retrieve([0, 31, 45], k=7)
    for x, y in zip(a_items, b_items):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a_scores, b_scores)


def test_loading_a_non_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a ytdnn model directory"):
        CandidateGenerator.load(tmp_path)


def test_same_seed_gives_identical_weights():
    watches, users = two_clusters(seed=1)
    a = small_generator().fit(watches, users=users)
    b = small_generator().fit(watches, users=users)
    for (name, x), (_, y) in zip(a.model_.state_dict().items(), b.model_.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("model", [
    {"tied_item_embeddings": True},
    {"num_negatives": 5},
    {"depth": 0, "tower_widths": None},
    {"use_watches": False},
    {"use_user_features": False},
    {"use_example_age": False, "use_searches": False},
])
def test_variants_train_and_retrieve(model):
    watches, users = two_clusters(seed=2)
    gen = small_generator(**model)
    gen.train_cfg = gen.train_cfg.replace(max_epochs=2)
    gen.fit(watches, users=users)
    items, scores = gen.retrieve([0, 40], k=4)
    assert [len(x) for x in items] == [4, 4] and scores.shape == (2, 4)


def test_recent_watches_bag_feeds_the_tower_and_round_trips(tmp_path):
    watches, users = two_clusters(seed=4)
    gen = small_generator(recent=3)
    gen.train_cfg = gen.train_cfg.replace(max_epochs=3)
    gen.fit(watches, users=users)
    items, _ = gen.retrieve([0], k=5)
    again = CandidateGenerator.load(gen.save(tmp_path / "m"))
    np.testing.assert_array_equal(items[0], again.retrieve([0], k=5)[0][0])
    without = small_generator()
    without.train_cfg = without.train_cfg.replace(max_epochs=1)
    without.fit(watches, users=users)
    assert gen.model_.tower[0].in_features == without.model_.tower[0].in_features + 16


def test_switched_off_watches_do_not_change_the_user_vector():
    watches, users = two_clusters(seed=3)
    gen = small_generator(use_watches=False)
    gen.train_cfg = gen.train_cfg.replace(max_epochs=1)
    gen.fit(watches, users=users)
    # users 0 and 1 share geo "north" but have different ages and histories: only age differs
    before = gen.user_vectors(gen.user_rows([0]))
    gen.streams_.watch_items[:] = 1  # rewrite every history
    after = gen.user_vectors(gen.user_rows([0]))
    np.testing.assert_array_equal(before, after)


def test_fresh_history_gives_the_same_vector_as_the_stored_one(trained):
    gen, watches, _ = trained
    user = 5
    history = watches.filter(pa.compute.equal(watches["user_id"], user)).sort_by("timestamp")["item_id"].to_pylist()
    stored = gen.user_vectors(gen.user_rows([user]))
    fresh = gen.vectors_for_histories([history], users=pa.table({"user_id": pa.array([user], pa.int64())}))
    np.testing.assert_allclose(fresh, stored, rtol=1e-5, atol=1e-6)


def test_a_new_watch_moves_the_fresh_vector_and_unknown_items_are_oov(trained):
    gen, _, _ = trained
    base = gen.vectors_for_histories([[100, 101]])
    moved = gen.vectors_for_histories([[100, 101, 200, 201, 202]])
    same = gen.vectors_for_histories([[100, 101, 999_999]])  # 999999 was never seen: OOV, left out
    assert not np.allclose(base, moved)
    np.testing.assert_allclose(base, same, rtol=1e-6)
    with pytest.raises(ValueError, match="same number of users"):
        gen.vectors_for_histories([[100]], queries=[[], []])


def test_fresh_search_tokens_match_the_stored_stream(tmp_path):
    watches, users = two_clusters(seed=5)
    searches = pa.table({
        "user_id": pa.array([3, 3], pa.int64()), "timestamp": pa.array([1, 2], pa.int64()),
        "query": ["red fox", "blue whale"],
    })
    gen = small_generator()
    gen.train_cfg = gen.train_cfg.replace(max_epochs=1)
    gen.fit(watches, searches, users)
    history = watches.filter(pa.compute.equal(watches["user_id"], 3)).sort_by("timestamp")["item_id"].to_pylist()
    fresh = gen.vectors_for_histories([history], [["red fox", "blue whale"]], pa.table({"user_id": pa.array([3], pa.int64())}))
    np.testing.assert_allclose(fresh, gen.user_vectors(gen.user_rows([3])), rtol=1e-5, atol=1e-6)


def test_fresh_query_tokens_are_memoised_without_changing_them(tmp_path):
    """Served requests re-read their users' searches: token ids are kept per query string, and
    must equal what tokenizing afresh gives, however the queries repeat or the memo is filled."""
    watches, users = two_clusters(seed=5)
    searches = pa.table({
        "user_id": pa.array([3, 3, 4], pa.int64()), "timestamp": pa.array([1, 2, 3], pa.int64()),
        "query": ["red fox", "blue whale", "red whale"],
    })
    gen = small_generator()
    gen.train_cfg = gen.train_cfg.replace(max_epochs=1)
    gen.fit(watches, searches, users)
    queries = [["red fox", "blue whale", "red fox"], [], ["red whale", "green fox", "blue whale"]]
    first = gen.fresh_streams([[], [], []], queries)
    again = gen.fresh_streams([[], [], []], queries)  # every query from the memo now
    vocab = gen.featurizer_.tokens_
    # "red fox" -> red, fox, "red fox"; "green" is unknown (0); the memo must not change a thing
    expected = [vocab.encode(q.split(" ") + [q]) for user in queries for q in user]
    for streams in (first, again):
        np.testing.assert_array_equal(streams.tokens, np.concatenate(expected))
        np.testing.assert_array_equal(streams.token_offsets, [0, 9, 9, 18])
    assert vocab.encode(["green"])[0] == 0 and vocab.encode(["red"])[0] > 0
    gen.fit(watches, searches.slice(0, 1), users)  # a new vocabulary: the old memo is not used
    refit = gen.fresh_streams([[]], [["blue whale"]])
    np.testing.assert_array_equal(refit.tokens, gen.featurizer_.tokens_.encode(["blue", "whale", "blue whale"]))
