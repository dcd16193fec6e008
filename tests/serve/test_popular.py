"""The fallback list of the server: the fresh-popular source on the generator's training log."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.samples.streams import Featurizer
from ytdnn.serve.engine import ServeConfig
from ytdnn.serve.popular import PopularItems


def two_item_generator() -> SimpleNamespace:
    """What ``PopularItems.fit`` reads of a CandidateGenerator (featurizer_, streams_) for a log of
    two items: "classic", watched by three users at t = 0, and "fresh", watched once at t = 3000.
    The training window is 0..3000 s."""
    watches = pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                        "item_id": pa.array(["classic", "classic", "classic", "fresh"]),
                        "timestamp": pa.array([0, 0, 0, 3000], pa.int64())})
    f = Featurizer().fit(watches)
    return SimpleNamespace(featurizer_=f, streams_=f.streams(watches))


def test_the_share_of_the_window_sets_the_half_life_by_hand():
    gen = two_item_generator()
    assert (gen.featurizer_.window_start_, gen.featurizer_.window_end_) == (0, 3000)
    # share 1/3: half-life 1000 s. classic: 3 watches aged 3000 s = 3 half-lives: 3 / 8 = 0.375;
    # fresh: 1 watch aged 0: 1. The fresh item comes first though watched a third as often.
    ids, scores = PopularItems(half_life_share=1 / 3).fit(gen).top(5)
    assert list(ids) == ["fresh", "classic"]  # only the two watched items, however large k
    np.testing.assert_allclose(scores, [1.0, 0.375], rtol=1e-6)
    # share 10: half-life 30000 s, a tenth of one for classic's watches: 3 * 2 ** -0.1 = 2.799;
    # fresh still 1. Plain popularity wins.
    ids, scores = PopularItems(half_life_share=10).fit(gen).top(5)
    assert list(ids) == ["classic", "fresh"]
    np.testing.assert_allclose(scores, [3 * 2**-0.1, 1.0], rtol=1e-6)
    ids, scores = PopularItems(half_life_share=1 / 3).fit(gen).top(1)
    assert list(ids) == ["fresh"] and scores.tolist() == [1.0]


def test_the_same_log_on_another_time_scale_gives_the_same_list():
    # the half-life is a share of the window, not a number of days: milliseconds instead of
    # seconds change nothing
    gen = two_item_generator()
    watches = pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                        "item_id": pa.array(["classic", "classic", "classic", "fresh"]),
                        "timestamp": pa.array([0, 0, 0, 3_000_000], pa.int64())})
    f = Featurizer().fit(watches)
    millis = SimpleNamespace(featurizer_=f, streams_=f.streams(watches))
    a_ids, a_scores = PopularItems(1 / 3).fit(gen).top(2)
    b_ids, b_scores = PopularItems(1 / 3).fit(millis).top(2)
    assert list(a_ids) == list(b_ids)
    np.testing.assert_array_equal(a_scores, b_scores)


def test_a_log_without_timestamps_counts_every_watch_once():
    watches = pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                        "item_id": pa.array(["classic", "classic", "classic", "fresh"]),
                        "timestamp": pa.array([None] * 4, pa.int64())})
    f = Featurizer().fit(watches)
    ids, scores = PopularItems(1 / 3).fit(SimpleNamespace(featurizer_=f, streams_=f.streams(watches))).top(2)
    assert list(ids) == ["classic", "fresh"] and scores.tolist() == [3.0, 1.0]


@pytest.mark.parametrize("share", [0, -0.5, float("nan"), float("inf"), True, "0.1"])
def test_a_bad_half_life_share_is_refused(share):
    with pytest.raises(ValueError, match="popular_half_life_share must be a finite number > 0"):
        ServeConfig(popular_half_life_share=share)


def test_the_old_setting_in_days_is_an_unknown_setting():
    with pytest.raises(ValueError, match="unknown setting.*popular_half_life_days"):
        ServeConfig.from_dict({"popular_half_life_days": 7.0})
    with pytest.raises(ValueError, match="half_life_share"):
        PopularItems(half_life_share=0)
    assert ServeConfig().popular_half_life_share == PopularItems().half_life_share == pytest.approx(1 / 30)
