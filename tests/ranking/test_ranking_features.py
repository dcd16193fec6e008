"""Ranking features on hand-checked inputs: strictly earlier counts, the generator's view, the metric."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.eval.metrics import weighted_per_user_loss
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig, serving_batch
from ytdnn.samples.ranking import (
    NEVER,
    candidate_features,
    earlier_events,
    group_rows,
    history_end,
)
from ytdnn.train.config import TrainConfig


def test_earlier_events_counts_strictly_earlier_events_of_the_same_key():
    keys = np.array([7, 7, 7, 9])
    times = np.array([10, 20, 30, 5])
    # key 7 at 20: only the event at 10 is strictly earlier; key 7 at 31: all three, last at 30;
    # key 9 at 5: the event at 5 is not earlier; key 8: none
    counts, last = earlier_events(keys, times, np.array([7, 7, 9, 8]), np.array([20, 31, 5, 100]))
    np.testing.assert_array_equal(counts, [1, 3, 0, 0])
    np.testing.assert_array_equal(last, [10, 30, np.nan, np.nan])


def test_history_end_stops_before_the_same_second():
    offsets = np.array([0, 0, 3, 5])  # user 0: none; user 1: times 10, 20, 20; user 2: 5, 50
    times = np.array([10, 20, 20, 5, 50])
    ends = history_end(offsets, times, np.array([1, 1, 1, 2, 0]), np.array([20, 21, 5, 100, 7]))
    np.testing.assert_array_equal(ends, [1, 3, 0, 5, 0])


def test_group_rows_gives_one_group_per_distinct_row():
    first, inverse = group_rows(np.array([1, 0, 1, 1]), np.array([5, 5, 5, 6]))
    assert len(first) == 3
    assert inverse[0] == inverse[2] and len({inverse[0], inverse[1], inverse[3]}) == 3


def test_weighted_per_user_loss_by_hand():
    # page 0: positives (w=10, s=0.5), (w=2, s=0.1); negatives s=0.3, 0.6.
    #   first positive: 0.6 is above it -> 10 * 1 of 10 * 2; second: both above -> 2 * 2 of 2 * 2.
    # page 1: positive (w=3, s=1.0) ties its negative (s=1.0) -> half: 1.5 of 3.
    # page 2: a positive without negatives makes no pair.  Loss = (10 + 4 + 1.5) / (20 + 4 + 3).
    scores = np.array([0.5, 0.1, 0.3, 0.6, 1.0, 1.0, 2.0])
    clicked = np.array([1, 1, 0, 0, 1, 0, 1], bool)
    watch_time = np.array([10, 2, 0, 0, 3, 0, 7.0])
    pages = np.array([0, 0, 0, 0, 1, 1, 2])
    assert weighted_per_user_loss(scores, clicked, watch_time, pages) == pytest.approx(15.5 / 27)
    perfect = np.where(clicked, 5.0, 0.0)
    assert weighted_per_user_loss(perfect, clicked, watch_time, pages) == 0.0
    with pytest.raises(ValueError, match="one length"):
        weighted_per_user_loss(scores[:3], clicked, watch_time, pages)


def _hand_log():
    """User 1 watched item 10 (channel X, category a) at t=100 and item 20 (channel Y, category b)
    at t=200; item 30 (channel X, categories a and b, uploaded at t=50) was shown to them at t=250
    and again at t=300."""
    watches = pa.table({"user_id": pa.array([1, 1, 2], pa.int64()), "item_id": pa.array([10, 20, 30], pa.int64()),
                        "timestamp": pa.array([100, 200, 400], pa.int64()), "watch_time": [1.0, 1.0, 1.0]})
    items = pa.table({"item_id": pa.array([10, 20, 30], pa.int64()), "channel": ["X", "Y", "X"],
                      "upload_time": pa.array([0, 0, 50], pa.int64()),
                      "categories": [["a"], ["b"], ["a", "b"]]})
    impressions = pa.table({
        "user_id": pa.array([1, 1], pa.int64()), "item_id": pa.array([30, 30], pa.int64()),
        "timestamp": pa.array([250, 300], pa.int64()), "clicked": [False, True],
        "watch_time": [0.0, 9.0], "page_id": pa.array([0, 1], pa.int64()),
    })
    return watches, items, impressions


def _tiny_generator(watches):
    torch.manual_seed(0)
    return CandidateGenerator(
        CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=5, max_examples_per_user=None),
        TrainConfig(max_epochs=1, progress=False, num_threads=1),
    ).fit(watches)


def test_impression_features_by_hand():
    watches, items, impressions = _hand_log()
    gen = _tiny_generator(watches)
    ranker = Ranker(RankerConfig(tower="none"), TrainConfig(max_epochs=1, progress=False)).fit(
        gen, impressions, items=items)
    raw, binary = ranker.raw_features(gen, impressions)
    f = dict(zip(ranker.featurizer_.continuous_names, raw.T))
    np.testing.assert_array_equal(f["seconds_since_last_watch"], [50, 100])
    np.testing.assert_array_equal(f["num_earlier_watches"], [2, 2])
    np.testing.assert_array_equal(f["num_earlier_impressions"], [0, 1])  # churn: shown at 250
    np.testing.assert_array_equal(f["seconds_since_upload"], [200, 250])
    np.testing.assert_array_equal(f["num_channel_watches"], [1, 1])  # item 10 shares channel X
    np.testing.assert_array_equal(f["seconds_since_channel_watch"], [150, 200])
    np.testing.assert_array_equal(f["num_item_watches"], [0, 0])  # user 2's watch of 30 is not user 1's
    # categories a and b: each holds 1 of the 2 earlier watches -> share (1/2 + 1/2) / 2; b at 200
    np.testing.assert_array_equal(f["category_watch_share"], [0.5, 0.5])
    np.testing.assert_array_equal(f["seconds_since_category_watch"], [50, 100])
    np.testing.assert_array_equal(binary[:, 0], [0, 0])  # no languages in this log
    np.testing.assert_array_equal(f["item_watches_recent"], [0, 0])  # user 2 watches 30 at 400
    # by anyone, strictly before, within the recent window (1/30 of the log's span 100..400: 10 s):
    # at 400 not yet; at 401 and at 410 yes; at 411 no more
    later = pa.table({**impressions.slice(0, 1).to_pydict()} | {"timestamp": pa.array([400], pa.int64())})
    for t, expected in ((400, 0), (401, 1), (410, 1), (411, 0)):
        raw, _ = ranker.raw_features(gen, later.set_column(2, "timestamp", pa.array([t], pa.int64())), in_log=False)
        assert raw[0, ranker.featurizer_.column("item_watches_recent")] == expected, t
    # a user without history: "never" for the time since the last watch
    lone = impressions.set_column(0, "user_id", pa.array([2, 2], pa.int64()))
    raw, _ = ranker.raw_features(gen, lone, in_log=False)
    assert raw[0, ranker.featurizer_.column("seconds_since_last_watch")] == NEVER


def test_candidate_score_and_rank_match_brute_force_for_the_full_history():
    watches, _, _ = _hand_log()
    gen = _tiny_generator(watches)
    s = gen.streams_
    rows = np.array([1, 1, 1, 2])
    items = np.array([1, 2, 3, 0])  # three generator ids and one unknown item
    ends = s.watch_offsets[rows + 1]
    score, rank = candidate_features(gen, s, rows, ends, s.token_offsets[rows + 1], items)
    full = gen.model_.scores(serving_batch(s, gen.example_cfg, rows, gen.featurizer_.serving_age)).numpy()  # [4, V]
    for q in range(3):
        assert score[q] == pytest.approx(full[q, items[q]], rel=1e-5)
        assert rank[q] == 1 + np.sum(full[q, 1:] > full[q, items[q]])
    assert score[3] == pytest.approx(full[3, 1:].min(), rel=1e-5) and rank[3] == len(full[3]) - 1


def test_built_impressions_are_not_counted_as_churn():
    watches, items, impressions = _hand_log()
    gen = _tiny_generator(watches)
    ranker = Ranker(RankerConfig(tower="none"), TrainConfig(max_epochs=1, progress=False)).fit(
        gen, impressions, items=items, log_impressions=False)
    raw, _ = ranker.raw_features(gen, impressions)
    np.testing.assert_array_equal(raw[:, ranker.featurizer_.column("num_earlier_impressions")], [0, 0])
