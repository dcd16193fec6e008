"""The two-stage Recommender on the tiny synthetic world: contract, batch = single, round trip."""

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from ytdnn.configuration import TwoStageConfig
from ytdnn.data.schema import DataError, Dataset
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker, RankerBag
from ytdnn.samples.ranking import candidate_features
from ytdnn.train.config import TrainConfig
from ytdnn.training import fit_ranker, train_ranker

USERS = [3, 17, 42, 150]


@pytest.fixture(scope="module")
def tiny(tiny_world):
    d, gen = tiny_world
    ranker = Ranker(RankerConfig(tower="32", max_embedding_dim=8),
                    TrainConfig(max_epochs=1, batch_size=512, progress=False, num_threads=1)).fit(
        gen, d.impressions, users=d.users, items=d.items)
    return d, gen, ranker


@pytest.fixture(scope="module")
def rec(tiny):
    _, gen, ranker = tiny
    return Recommender(gen, ranker, num_candidates=60)


def test_recommend_leaves_out_watched_items_and_labels_the_stage(rec, tiny):
    watches = tiny[0].watches.to_pydict()
    for user in USERS:
        out = rec.recommend(user, k=10)
        watched = {i for u, i in zip(watches["user_id"], watches["item_id"]) if u == user}
        assert len(out.item_ids) == 10 and not set(out.item_ids.tolist()) & watched
        assert list(out.stages) == ["ranker"] * 10
        assert np.all(np.diff(out.scores) <= 0) and np.all(out.scores > 0)  # exp(logit), best first
        assert np.all((out.candidate_ranks >= 1) & (out.candidate_ranks <= 60))


def test_batch_equals_single(rec):
    batch = rec.recommend_batch(USERS, k=8)
    for user, got in zip(USERS, batch):
        single = rec.recommend(user, k=8)
        np.testing.assert_array_equal(got.item_ids, single.item_ids)
        np.testing.assert_allclose(got.scores, single.scores, rtol=1e-5)


def test_retrieval_only_orders_the_same_candidates_by_the_generator(rec, tiny):
    _, gen, _ = tiny
    alone = Recommender(gen, None, num_candidates=60)
    out = alone.recommend(USERS[0], k=10)
    items, _ = gen.retrieve([USERS[0]], k=10)
    np.testing.assert_array_equal(out.item_ids, items[0])
    assert list(out.stages) == ["candidates"] * 10
    retrieved, _ = gen.retrieve([USERS[0]], k=60)
    assert set(rec.recommend(USERS[0], k=10).item_ids.tolist()) <= set(retrieved[0].tolist())


def test_serving_rank_is_the_corpus_rank_the_ranker_trained_on(rec, tiny):
    _, gen, _ = tiny
    rows, _, candidates, scores, ranks = rec._retrieve(USERS, 60, {})
    s = gen.streams_
    flat_rows = np.repeat(rows, candidates.shape[1])
    train_score, train_rank = candidate_features(
        gen, s, flat_rows, s.watch_offsets[flat_rows + 1], s.token_offsets[flat_rows + 1], candidates.ravel())
    np.testing.assert_allclose(scores.ravel(), train_score, rtol=1e-4, atol=1e-4)
    assert np.mean(ranks.ravel() == train_rank) > 0.98  # float32 near-ties may swap a neighbour


def test_unknown_user_is_served_as_cold_start(rec):
    out = rec.recommend(10**9, k=5)
    assert len(out.item_ids) == 5


def test_bad_requests_are_clear_errors(rec, tiny, tmp_path):
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            rec.recommend(USERS[0], k=k)
    with pytest.raises(ValueError, match="num_candidates"):
        Recommender(tiny[1], tiny[2], num_candidates=0)
    with pytest.raises(FileNotFoundError, match="not a ytdnn model directory"):
        Recommender.load(tmp_path / "nothing")


def test_model_directory_holds_both_stages_and_round_trips(rec, tmp_path):
    rec.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["kind"] == "ytdnn.recommender" and config["num_candidates"] == 60
    assert (tmp_path / "model" / "candidates" / "config.json").exists()
    assert (tmp_path / "model" / "ranker" / "ranker.safetensors").exists()
    again = Recommender.load(tmp_path / "model")
    for a, b in zip(rec.recommend_batch(USERS, k=10), again.recommend_batch(USERS, k=10)):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def ranker_settings(settings: dict) -> TwoStageConfig:
    """A one-epoch ranker on one thread, with ``settings`` on top."""
    quick = {"ranker_train.max_epochs": 1, "ranker_train.progress": False, "ranker_train.num_threads": 1}
    return TwoStageConfig().with_settings({**quick, **settings})


def test_a_ranker_trained_next_to_a_candidates_directory_is_loaded_with_it(tiny, tmp_path):
    d, gen, _ = tiny
    gen.save(tmp_path / "cands")
    config = ranker_settings({"tower": "none"})
    train_ranker(d, tmp_path / "cands", config=config)
    loaded = Recommender.load(tmp_path / "cands")
    assert loaded.ranker is not None and loaded.ranker.model_cfg.tower == "none"
    assert list(loaded.recommend(USERS[0], k=3).stages) == ["ranker"] * 3
    with pytest.raises(ValueError, match="unknown setting"):
        ranker_settings({"towr": "256"})


def test_fit_ranker_learns_from_logged_built_or_both_pages(tiny):
    d, gen, _ = tiny
    small = {"tower": "none", "impressions.num_candidates": 20, "negatives_per_page": 5, "requests_per_user": 2}
    logged = fit_ranker(gen, d, ranker_settings({**small, "source": "logged"}))
    built = fit_ranker(gen, d, ranker_settings({**small, "source": "built", "last_watches": 5}))
    both = fit_ranker(gen, d, ranker_settings({**small, "source": "both", "last_watches": 5}))
    examples = {name: r.history_.epochs[0]["examples"] for name, r in
                {"logged": logged, "built": built, "both": both}.items()}
    assert examples["logged"] == len(d.impressions)
    assert examples["both"] == examples["logged"] + examples["built"]
    # only really shown pages count as "shown before" (built pages overlap: that would leak labels)
    assert len(logged.featurizer_.log_items_) == len(both.featurizer_.log_items_) == len(d.impressions)
    assert len(built.featurizer_.log_items_) == 0
    for ranker in (built, both):  # learned behind a stacking generator, served behind gen
        assert list(Recommender(gen, ranker, 30).recommend(USERS[0], k=3).stages) == ["ranker"] * 3
    with pytest.raises(DataError, match="needs a log with impressions"):
        fit_ranker(gen, Dataset(d.watches, d.searches), ranker_settings({**small, "source": "both"}))


def test_samples_train_a_bag_served_by_the_members_mean_logit_and_saved_with_the_model(tiny, tmp_path):
    d, gen, _ = tiny
    config = ranker_settings({"tower": "none", "impressions.num_candidates": 20, "negatives_per_page": 5,
                              "requests_per_user": 2, "source": "built", "samples": 2, "impressions.seed": 3,
                              "ranker_train.seed": 3})
    bag = fit_ranker(gen, d, config)
    assert isinstance(bag, RankerBag) and [r.train_cfg.seed for r in bag.rankers] == [3, 4]
    rows, _, candidates, scores, ranks = Recommender(gen, None, 30)._retrieve(USERS, 30, {})
    now = gen.featurizer_.window_end_ + 1
    members = [r.rank_candidates(gen, gen.streams_, rows, candidates, scores, ranks, now) for r in bag.rankers]
    assert not np.allclose(members[0], members[1])  # different pages, different rankers
    timings = {}
    combined = bag.rank_candidates(gen, gen.streams_, rows, candidates, scores, ranks, now, timings)
    np.testing.assert_allclose(combined, np.sqrt(members[0] * members[1]), rtol=1e-12)  # exp(mean logit)
    assert set(timings) == {"ranker_features", "ranker_model"}
    rec = Recommender(gen, bag, 30)
    rec.save(tmp_path / "model")
    again = Recommender.load(tmp_path / "model")
    assert isinstance(again.ranker, RankerBag) and len(again.ranker.rankers) == 2
    for a, b in zip(rec.recommend_batch(USERS, k=5), again.recommend_batch(USERS, k=5)):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)


def _stored_history(d, user):
    """The user's training events as a serving History, oldest first."""
    from ytdnn.serve.events import History, Search, Watch

    w = d.watches.filter(pc.equal(d.watches.column("user_id"), user)).sort_by("timestamp").to_pydict()
    s = d.searches.filter(pc.equal(d.searches.column("user_id"), user)).sort_by("timestamp").to_pydict()
    return History(user, [Watch(user, i, t) for i, t in zip(w["item_id"], w["timestamp"])],
                   [Search(user, t, q) for t, q in zip(s["timestamp"], s["query"])])


def test_a_fresh_history_equal_to_the_log_serves_the_same_items(rec, tiny):
    d = tiny[0]
    histories = [_stored_history(d, u) for u in USERS]
    now = rec.candidates.featurizer_.window_end_ + 1
    stored = rec.recommend_batch(USERS, k=10, now=now)
    fresh = rec.recommend_batch(USERS, k=10, now=now, histories=histories)
    for a, b in zip(stored, fresh):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4)


def test_a_new_watch_changes_the_next_recommendation_and_is_never_served(rec, tiny):
    from ytdnn.serve.events import Watch

    d = tiny[0]
    history = _stored_history(d, USERS[0])
    before = rec.recommend(USERS[0], k=10, history=history)
    top = before.item_ids[0]
    history.watches.append(Watch(USERS[0], top, int(history.watches[-1].timestamp) + 60))
    after = rec.recommend(USERS[0], k=10, history=history)
    assert top not in after.item_ids.tolist()
    common = sorted(set(before.item_ids.tolist()) & set(after.item_ids.tolist()))
    score_before = dict(zip(before.item_ids.tolist(), before.scores))
    score_after = dict(zip(after.item_ids.tolist(), after.scores))
    assert common and not np.allclose([score_before[i] for i in common], [score_after[i] for i in common])


def test_fresh_histories_must_match_the_users(rec):
    with pytest.raises(ValueError, match="one entry per user"):
        rec.recommend_batch(USERS, k=5, histories=[])
