import numpy as np
import pytest

from ytdnn.features import NotFittedError
from ytdnn.retrieval import Context, PopularConfig, PopularSource
from ytdnn.samples.ranking import RECENT_SHARE

from .contracts import RetrieverContract, V, streams_of, tiny_generator, tiny_streams


class TestPopularContract(RetrieverContract):
    name = "popular"
    history_matters = False

    def make(self):
        streams = tiny_streams()
        return PopularSource().fit(streams, V), streams


class TestPopularUnorderedContract(TestPopularContract):
    def make(self):
        streams = tiny_streams(ordered=False)
        return PopularSource().fit(streams, V), streams


# window 0..300, half-life 1/3 of it = 100 s: a watch at 300 weighs 1, at 200 1/2, at 100 1/4, at 0 1/8
TIMED = streams_of({1: [3, 2, 1], 2: [2, 1], 3: [2]}, times={1: [0, 100, 300], 2: [100, 200], 3: [100]})


def test_decayed_counts_by_hand():
    source = PopularSource(PopularConfig(half_life_share=1 / 3)).fit(TIMED, 5)
    # item 1: 1 + 1/2; item 2: three watches at 100 s: 3/4; item 3: 1/8; item 4: never watched
    np.testing.assert_allclose(source.counts_, [0.0, 1.5, 0.75, 0.125, 0.0])
    assert source.window_ == (0, 300)
    state = source.encode(Context.whole(TIMED, np.arange(4)))
    ids, scores = source.retrieve(state, 4, [None, [1], [2, 3], [-1, 99]])
    np.testing.assert_array_equal(ids, [[1, 2, 3, 0], [2, 3, 0, 0], [1, 0, 0, 0], [1, 2, 3, 0]])
    np.testing.assert_allclose(scores[0], [1.5, 0.75, 0.125, -np.inf])
    np.testing.assert_allclose(source.score(state, np.tile([4, 3], (4, 1))), np.tile([0.0, 0.125], (4, 1)))


def test_the_window_can_be_given_and_an_unordered_log_counts_plainly():
    later = PopularSource(PopularConfig(half_life_share=1 / 3)).fit(TIMED, 5, window=(100, 400))
    # half-life 100 s again, ages from 400: item 1 at 300 and 200 -> 1/2 + 1/4
    assert later.counts_[1] == pytest.approx(0.75)
    unordered = streams_of({1: [3, 2, 1], 2: [2, 1], 3: [2]}, ordered=False)
    plain = PopularSource().fit(unordered, 5)
    np.testing.assert_allclose(plain.counts_, [0, 2, 3, 1, 0])
    ids, _ = plain.retrieve(1, 5)
    np.testing.assert_array_equal(ids[0], [2, 1, 3, 0, 0])


def test_ties_go_to_the_lower_id():
    source = PopularSource().fit(streams_of({1: [4, 2], 2: [3, 1]}, ordered=False), 5)
    np.testing.assert_array_equal(source.retrieve(1, 4)[0][0], [1, 2, 3, 4])


def test_from_generator_uses_its_streams_and_window():
    gen = tiny_generator()
    f = gen.featurizer_
    source = PopularSource.from_generator(gen)
    assert source.window_ == (f.window_start_, f.window_end_) and source.num_items == f.num_items
    assert PopularConfig().half_life_share == RECENT_SHARE
    age = f.window_end_ - gen.streams_.watch_times
    weight = 0.5 ** (age / ((f.window_end_ - f.window_start_) * RECENT_SHARE))
    expected = np.bincount(gen.streams_.watch_items, weight, minlength=f.num_items)
    np.testing.assert_allclose(source.counts_[1:], expected[1:])


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="half_life_share"):
        PopularConfig(half_life_share=0.0)
    with pytest.raises(ValueError, match="window"):
        PopularSource().fit(TIMED, 5, window=(10, 0))
    with pytest.raises(ValueError, match="catalogue ids"):
        PopularSource().fit(TIMED, 3)
    with pytest.raises(NotFittedError, match="not fitted"):
        PopularSource().retrieve(1, 3)
