"""The ranker's named feature table (features/ranking.py ``CONTINUOUS``, ``BINARY``): the columns
and values of the positional ``np.stack`` it replaced, the column names saved with a ranker and
checked when it is loaded, and one candidate-rank definition for training and serving."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from fixed_source import Fixed

from ytdnn.candidates import CandidateGenerator
from ytdnn.features import ranking as table
from ytdnn.features.ranking import Feature, RankingFeaturizer
from ytdnn.modeldir import ModelDirError
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.retrieval.blend import SourceView
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.ranking import NEVER, candidate_features, corpus_ranks
from ytdnn.train.config import TrainConfig

I64 = pa.int64()


def _hand_world():
    """Users 1 (en), 2 (fr), 3 (no language) and 4 (unknown to the generator); items 10..40 with
    every kind of extra column: a number (year), a text (studio) and a list (genres)."""
    watches = pa.table({"user_id": pa.array([1, 1, 2, 3], I64), "item_id": pa.array([10, 20, 30, 40], I64),
                        "timestamp": pa.array([100, 200, 400, 150], I64), "watch_time": [1.0, 1.0, 1.0, 1.0]})
    users = pa.table({"user_id": pa.array([1, 2, 3], I64), "language": ["en", "fr", None]})
    items = pa.table({
        "item_id": pa.array([10, 20, 30, 40], I64), "channel": ["X", "Y", "X", "Z"],
        "language": ["en", "fr", "en", "en"], "upload_time": pa.array([0, 0, 50, 120], I64),
        "duration": pa.array([60.0, None, 30.0, 90.0]), "categories": [["a"], ["b"], ["a", "b"], []],
        "year": pa.array([1990.0, None, 2001.0, 1975.0]), "studio": ["s1", "s2", "s1", None],
        "genres": [["War"], ["Drama", "War"], [], None],
    })
    impressions = pa.table({
        "user_id": pa.array([1, 1, 1, 2, 3, 1, 1, 4], I64), "item_id": pa.array([30, 30, 40, 10, 20, 20, 30, 10], I64),
        "timestamp": pa.array([250, 300, 300, 500, 160, 260, 405, 300], I64),
        "clicked": [False, True, False, False, False, True, False, False],
        "watch_time": [0.0, 9.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0], "page_id": pa.array([0, 1, 1, 2, 3, 4, 5, 6], I64),
    })
    return watches, users, items, impressions


@pytest.fixture(scope="module")
def hand():
    watches, users, items, impressions = _hand_world()
    torch.manual_seed(0)
    gen = CandidateGenerator(CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
                             ExampleConfig(max_watch_history=5, max_examples_per_user=None),
                             TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(watches, users=users)
    v = gen.featurizer_.num_items
    ranker = Ranker(RankerConfig(tower="none"), TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(
        gen, impressions, users=users, items=items,
        sources=[(Fixed("a", np.arange(v)), 2), (Fixed("b", -np.arange(v)), 1)])
    return gen, ranker, impressions


# The raw features of the hand world's 8 impressions as the positional np.stack computed them
# before the table (captured from that code; each checkable by hand from _hand_world), in its
# column order. The generator's score and rank and the sources' view are given (below).
OLD_CONTINUOUS = {
    "candidate_score": [0.5, -1, 2, 0.25, 3, -0.5, 1.5, 0],
    "candidate_rank": [2, 4, 1, 3, 1, 4, 2, 3],
    "seconds_since_last_watch": [50, 100, 100, 100, 10, 60, 205, NEVER],  # user 4: no history
    "num_earlier_watches": [2, 2, 2, 1, 1, 2, 2, 0],
    "num_earlier_impressions": [0, 1, 0, 0, 0, 0, 2, 0],  # 30 shown to user 1 at 250, 300
    "seconds_since_upload": [200, 250, 180, 500, 160, 260, 355, 300],
    "num_channel_watches": [1, 1, 0, 1, 0, 1, 1, 0],
    "seconds_since_channel_watch": [150, 200, NEVER, 100, NEVER, 60, 305, NEVER],
    "num_item_watches": [0, 0, 0, 0, 0, 1, 0, 0],
    "duration": [30, 30, 90, 60, 0, 0, 30, 60],  # item 20's unknown: 0
    "category_watch_share": [0.5, 0.5, 0, 1, 0, 0.5, 0.5, 0],
    "seconds_since_category_watch": [50, 100, NEVER, 100, NEVER, 60, 205, NEVER],
    "item_watches_recent": [0, 0, 0, 0, 0, 0, 1, 0],  # user 2 watched 30 at 400: within 10 s of 405
    "year": [2001, 2001, 1975, 1990, 1990, 1990, 2001, 1990],  # item 20's unknown: the median
    "num_studio_watches": [1, 1, 0, 1, 0, 1, 1, 0],
    "seconds_since_studio_watch": [150, 200, NEVER, 100, NEVER, 60, 305, NEVER],
    "genres_watch_share": [0, 0, 0, 0, 0, 0.75, 0, 0],  # item 20 at 260: War 2 of 2, Drama 1 of 2
    "seconds_since_genres_watch": [NEVER, NEVER, NEVER, NEVER, NEVER, 60, NEVER, NEVER],
    "source_a_score": [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5],
    "source_a_rank": [1, 3, 2, 3, 1, 3, 1, 3],
    "source_b_score": [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75],
    "source_b_rank": [3, 1, 1, 2, 2, 1, 1, 2],
}
OLD_BINARY = {
    "same_language": [1, 1, 1, 0, 0, 0, 1, 0],
    "year missing": [0, 0, 0, 0, 1, 1, 0, 0],
    "genres=War": [0, 0, 0, 1, 0.5, 0.5, 0, 1],
    "genres=Drama": [0, 0, 0, 0, 0.5, 0.5, 0, 0],
    "source_a_nominated": [1, 0, 1, 0, 1, 0, 1, 0],
    "source_b_nominated": [0, 1, 1, 0, 0, 1, 1, 0],
}


def _hand_features(gen, ranker, impressions):
    """Raw features of the impressions with the given generator view and sources' view."""
    q = ranker._queries(gen, gen.streams_, impressions)
    c = OLD_CONTINUOUS
    view = SourceView(("a", "b"), np.array([OLD_BINARY["source_a_nominated"], OLD_BINARY["source_b_nominated"]],
                                           bool).T,
                      np.array([c["source_a_score"], c["source_b_score"]], float).T,
                      np.array([c["source_a_rank"], c["source_b_rank"]], float).T)
    return ranker.featurizer_.raw_features(gen, gen.streams_, q, np.array(c["candidate_score"], float),
                                           np.array(c["candidate_rank"], float), view=view)


def test_the_table_computes_the_columns_of_the_np_stack_it_replaced(hand):
    gen, ranker, impressions = hand
    f = ranker.featurizer_
    assert f.continuous_names == tuple(OLD_CONTINUOUS) and f.binary_names == tuple(OLD_BINARY)
    raw, binary = _hand_features(gen, ranker, impressions)
    assert raw.dtype == np.float64 and binary.dtype == np.float32
    np.testing.assert_array_equal(raw, np.array(list(OLD_CONTINUOUS.values())).T)
    np.testing.assert_array_equal(binary, np.array(list(OLD_BINARY.values())).T)
    assert f.column("candidate_score") == 0 and f.column("source_b_rank") == len(OLD_CONTINUOUS) - 1
    with pytest.raises(KeyError, match="no continuous feature 'nope'"):
        f.column("nope")


def test_a_feature_is_one_entry_of_the_table(hand, monkeypatch):
    gen, ranker, impressions = hand
    f = ranker.featurizer_
    added = Feature("hour", lambda x: x.q.times % 3600)
    monkeypatch.setattr(table, "CONTINUOUS", (*table.CONTINUOUS, added))
    # a ranker fitted without it refuses to compute it: its model reads the columns it learned
    with pytest.raises(ValueError, match="other continuous features .* column 22 is absent in the ranker, 'hour'"):
        _hand_features(gen, ranker, impressions)
    f.columns_ = {**f.columns_, "continuous": (*f.columns_["continuous"], "hour")}  # as if fitted with it
    try:
        raw, _ = _hand_features(gen, ranker, impressions)
        assert f.continuous_names[-1] == "hour" and f.num_continuous == 3 * 23 + 6
        np.testing.assert_array_equal(raw[:, -1], impressions.column("timestamp").to_numpy() % 3600)
        np.testing.assert_array_equal(raw[:, :-1], np.array(list(OLD_CONTINUOUS.values())).T)
        monkeypatch.setattr(table, "CONTINUOUS", (*table.CONTINUOUS[:-1], Feature("hour", lambda x: x.q.times[:3])))
        with pytest.raises(ValueError, match=r"feature hour computed values of shape \(3,\), expected \[8, 1\]"):
            _hand_features(gen, ranker, impressions)
    finally:
        f.columns_ = {**f.columns_, "continuous": f.columns_["continuous"][:-1]}


def test_the_column_names_are_saved_and_checked_on_loading(hand, tmp_path):
    gen, ranker, impressions = hand
    ranker.save(tmp_path / "ranker")
    meta_path = tmp_path / "ranker" / "features" / "ranking_features.json"
    meta = json.loads(meta_path.read_text())
    assert meta["columns"] == {"continuous": list(OLD_CONTINUOUS), "binary": list(OLD_BINARY)}
    loaded = Ranker.load(tmp_path / "ranker")
    np.testing.assert_array_equal(_hand_features(gen, loaded, impressions)[0], _hand_features(gen, ranker, impressions)[0])

    # a ranker trained with the columns in another order (or other ones) is refused, naming the first difference
    swapped = list(OLD_CONTINUOUS)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    meta_path.write_text(json.dumps({**meta, "columns": {**meta["columns"], "continuous": swapped}}))
    with pytest.raises(ValueError, match="column 2 is 'num_earlier_watches' in the ranker, 'seconds_since_last_watch'"):
        RankingFeaturizer.load(tmp_path / "ranker" / "features")
    with pytest.raises(ModelDirError, match="ranker: features: ValueError: the ranker was trained with other continuous"):
        Ranker.load(tmp_path / "ranker")
    meta_path.write_text(json.dumps({**meta, "columns": {**meta["columns"], "binary": list(OLD_BINARY)[:-1]}}))
    with pytest.raises(ValueError, match="other binary features .* column 5 is absent in the ranker"):
        RankingFeaturizer.load(tmp_path / "ranker" / "features")

    # saved before the names were: read in the table's order, as then
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "columns"}))
    old = Ranker.load(tmp_path / "ranker")
    assert old.featurizer_.columns_ == {"continuous": tuple(OLD_CONTINUOUS), "binary": tuple(OLD_BINARY)}


def test_corpus_ranks_by_hand_both_ways():
    # context 0: items scoring 3, 1, 1, 0 and an empty slot; context 1: 2, 5
    pool = np.array([[3, 1, 1, 0, -np.inf], [2, 5, -np.inf, -np.inf, -np.inf]], np.float32)
    context = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([3, 1, 0, -1, 5, 2], np.float32)
    expected = [1, 2, 4, 5, 1, 2]  # ties share a rank: only items strictly above count; -inf never
    np.testing.assert_array_equal(corpus_ranks(pool, context, scores), expected)  # by comparison
    many = np.repeat(np.arange(6), 20)  # 20 scores per context: by binary search in the sorted rows
    np.testing.assert_array_equal(corpus_ranks(pool, context[many], scores[many]), np.repeat(expected, 20))
    # float64 scores of float32 values count as float32 ones
    np.testing.assert_array_equal(corpus_ranks(pool, context, scores.astype(np.float64)), expected)


@pytest.fixture(scope="module")
def tiny(tiny_world):
    return tiny_world


def test_serving_computes_the_candidate_rank_the_ranker_trained_on_exactly(tiny):
    """Retrieved (exact index: among the retrieved and the watched items) and blended (among all)
    candidates get the rank ``candidate_features`` gives training pages, to the last digit."""
    _, gen = tiny
    users = [3, 17, 42, 150, 199]
    extra = Fixed("other", np.random.default_rng(0).random(gen.featurizer_.num_items))
    rec = Recommender(gen, None, num_candidates=60, sources=[(extra, 40)])
    rows, vectors, candidates, _, ranks = rec._retrieve(users, 60, {})
    assert gen.index_.is_exact
    blended, _, blend_ranks, _ = rec._blend(rows, vectors, candidates, np.int64(gen.featurizer_.window_end_ + 1), {})
    assert (blended > 0).sum() > candidates.size  # the other source adds candidates
    s = gen.streams_
    for items, served in ((candidates, ranks), (blended, blend_ranks)):
        valid = items > 0
        row = np.repeat(rows, items.shape[1])[valid.ravel()]
        _, trained = candidate_features(gen, s, row, s.watch_offsets[row + 1], s.token_offsets[row + 1], items[valid])
        np.testing.assert_array_equal(served[valid], trained)
