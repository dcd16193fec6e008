"""The fast serving path (issue 21) against the reference path: same lists, same scores up to float
rounding, the same fresh history on the very next request."""

import dataclasses

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from ytdnn.models.ranker import RankerConfig, RankerModel, RankerSizes
from ytdnn.pipeline import Recommender
from ytdnn.samples.ranking import assemble_ranking_batch, group_rows
from ytdnn.serve.app import create_app
from ytdnn.serve.engine import ServeConfig, ServingModel
from ytdnn.serve.events import History, Watch
from ytdnn.serve.seed import open_event_store


def assert_same(reference, fast):
    """Two lists of Recommendations: the same items in the same order, scores within 1e-5."""
    assert len(reference) == len(fast)
    for r, f in zip(reference, fast):
        np.testing.assert_array_equal(f.item_ids, r.item_ids)
        np.testing.assert_allclose(f.scores, r.scores, rtol=1e-5)
        # retrieval is untouched, but a user tower over a batch of B rounds as that batch does
        np.testing.assert_allclose(f.candidate_scores, r.candidate_scores, rtol=1e-5)
        np.testing.assert_array_equal(f.candidate_ranks, r.candidate_ranks)


@pytest.fixture(scope="module")
def paths(tiny_world_model):
    _, model_dir = tiny_world_model
    return Recommender.load(model_dir), Recommender.load(model_dir, fast_path=True)


def test_every_user_gets_the_same_list_on_both_paths(paths):
    reference, fast = paths
    users = list(reference.candidates.featurizer_.users_.tokens_) + [10**9]  # and one unknown
    assert_same(reference.recommend_batch(users, k=20), fast.recommend_batch(users, k=20))
    assert fast.ranker._item_side_cache[1] is not None  # the fast path really ran


def test_fresh_histories_give_the_same_list_on_both_paths(tiny_world_model, paths):
    d, _ = tiny_world_model
    reference, fast = paths
    users = [3, 17, 46, 10**9]
    watches = d.watches.to_pylist()
    histories = [History(u, [Watch(u, w["item_id"], w["timestamp"]) for w in watches if w["user_id"] == u]
                         + [Watch(u, 5, 6_000_000)]) for u in users]  # one new watch each
    ref = reference.recommend_batch(users, k=10, histories=histories)
    assert_same(ref, fast.recommend_batch(users, k=10, histories=histories))
    assert all(5 not in r.item_ids for r in ref)
    # one user at a time, as an idle server answers: the same lists as in a batch
    for user, history, expected in zip(users, histories, ref):
        assert_same([expected], [fast.recommend(user, k=10, history=history)])


@pytest.mark.parametrize("tower, score_skip, sources", [("16", True, 0), ("16-8", False, 0), ("16", True, 2)])
def test_item_side_table_gives_the_forward_logits(tower, score_skip, sources):
    torch.manual_seed(0)
    sizes = RankerSizes(num_items=12, user_categorical=(4,), num_user_continuous=1, item_categorical=(5, 3),
                        num_categories=6, num_continuous=3, num_source_skips=sources)
    cfg = RankerConfig(tower=tower, max_embedding_dim=4, score_skip=score_skip, source_skips=sources > 0)
    model = RankerModel(cfg, sizes).eval()
    if score_skip:
        torch.nn.init.constant_(model.score_weight, 0.5)
    rng = np.random.default_rng(0)
    item_categorical = np.stack([rng.integers(0, 5, 12), rng.integers(0, 3, 12)], axis=1)
    counts = rng.integers(0, 3, 12)  # 0 to 2 categories per item, item 0 (padding) included
    category_offsets = np.r_[0, np.cumsum(counts)]
    category_ids = rng.integers(1, 6, category_offsets[-1])
    tables = type("T", (), {})()  # FeatureTables' fields, as a model's featurizer fills them
    tables.history, tables.watch_offsets = rng.integers(0, 12, 9), np.array([0, 4, 9])
    tables.user_categorical, tables.user_continuous = rng.integers(0, 4, (2, 1)), rng.random((2, 1), np.float32)
    tables.item_categorical, tables.category_ids, tables.category_offsets = item_categorical, category_ids, category_offsets
    users, items = np.array([0, 1, 0, 1, 1, 0, 1]), np.array([3, 0, 11, 3, 7, 5, 1])
    batch = assemble_ranking_batch(tables, 3, users, items, tables.watch_offsets[users + 1],
                                   rng.random((7, 3)), share_contexts=True,
                                   prior=rng.normal(size=(7, 1 + sources) if sources else 7))
    table = model.item_side_table(*(torch.from_numpy(a) for a in (item_categorical, category_ids, category_offsets)))
    assert table.shape == (12, model.tower[0].out_features)
    with torch.no_grad():
        expected = model(batch)
        unshared = model(dataclasses.replace(batch, row_context=None, **_spread(batch, users, tables)))
    torch.testing.assert_close(model.serving_logits(batch, table), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(expected, unshared, rtol=1e-5, atol=1e-6)  # the reference itself
    if score_skip:  # the skips add 0.5 x (the generator's logit + each source's score)
        with torch.no_grad():
            without = model(dataclasses.replace(batch, prior=torch.zeros_like(batch.prior)))
        skipped = batch.prior.sum(1) if sources else batch.prior
        torch.testing.assert_close(expected - without, 0.5 * skipped, rtol=1e-5, atol=1e-5)
    assert len(group_rows(users)[0]) == 2


def _spread(batch, users, tables):
    """The user-side inputs of a shared-context batch, one row per impression again."""
    from ytdnn.samples.streams import windows

    start, end = tables.watch_offsets[users], tables.watch_offsets[users + 1]
    watch_ids, watch_offsets = windows(tables.history, start, end, 3)
    last_ids, last_offsets = windows(tables.history, start, end, 1)
    t = torch.from_numpy
    return {"watch_ids": t(watch_ids), "watch_offsets": t(watch_offsets), "last_ids": t(last_ids),
            "last_offsets": t(last_offsets), "user_categorical": t(tables.user_categorical[users]),
            "user_continuous": t(tables.user_continuous[users])}


def test_the_api_answers_alike_on_both_paths_and_reads_a_posted_watch_next(tiny_world_model):
    _, model_dir = tiny_world_model
    models = [ServingModel(model_dir, ServeConfig(fast_path=fast)) for fast in (False, True)]
    store, _ = open_event_store(None, models[0].recommender)  # one store behind both servers
    apps = [create_app(model, events=store) for model in models]
    with TestClient(apps[0]) as reference, TestClient(apps[1]) as fast:
        def both(user):
            answers = [c.get(f"/recommend/{user}", params={"k": 10}).json() for c in (reference, fast)]
            for answer in answers:
                answer.pop("model")  # the version string: equal too, but not the point
            ids = [[i["item_id"] for i in a["items"]] for a in answers]
            assert ids[0] == ids[1]
            assert [i["score"] for i in answers[1]["items"]] == pytest.approx(
                [i["score"] for i in answers[0]["items"]], rel=1e-5)
            return ids[1]

        for user in (1, 46, 99, 10**9):
            both(user)
        top = both(46)[0]
        assert fast.post("/events", json={"user_id": 46, "item_id": top, "timestamp": 6_000_000}).status_code == 200
        assert top not in both(46)  # the very next request, on either path, has the new watch
