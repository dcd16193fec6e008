"""earlier_events against a brute-force count on random logs (issue 21: the serving path's
binary search must give exactly the counts of the former sort of events and queries together)."""

import numpy as np
import pytest

from ytdnn.samples.ranking import earlier_events


def brute_force(keys, times, q_keys, q_times):
    counts, last = [], []
    for k, t in zip(q_keys, q_times):
        before = times[(keys == k) & (times < t)]
        counts.append(len(before))
        last.append(before.max() if len(before) else np.nan)
    return np.array(counts, np.int64), np.array(last, np.float64)


@pytest.mark.parametrize("seed", range(20))
def test_earlier_events_equals_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    num_events, num_queries = rng.integers(0, 40, size=2)
    keys = rng.integers(0, 6, num_events) * 10**12  # keys and times of any range
    times = rng.integers(-5, 5, num_events) * 10**9
    q_keys = rng.integers(0, 7, num_queries) * 10**12  # key 6: never an event's
    q_times = rng.integers(-6, 7, num_queries) * 10**9  # before, between and after every event
    counts, last = earlier_events(keys, times, q_keys, q_times)
    expected_counts, expected_last = brute_force(keys, times, q_keys, q_times)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_array_equal(last, expected_last)
    assert counts.dtype == np.int64 and last.dtype == np.float64
