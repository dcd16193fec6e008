"""The candidate example builder: features come only from strictly earlier events (no leakage)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.samples.candidate import CandidateExamples, ExampleConfig, serving_batch
from ytdnn.samples.streams import Featurizer


def random_log(seed=0, num_users=12, num_items=40, ordered=True):
    """Each user watches distinct items (so (user, item) names one watch); many equal timestamps."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(1, num_users + 1):
        n = rng.integers(1, 25)
        users += [u] * n
        items += list(rng.choice(np.arange(100, 100 + num_items), size=n, replace=False))
        times += list(rng.integers(0, 10, size=n) * 1000)  # coarse: ties are common
    watches = pa.table({
        "user_id": np.array(users, np.int64),
        "item_id": np.array(items, np.int64),
        "timestamp": pa.array(times if ordered else [None] * len(users), pa.int64()),
    })
    s_users = rng.integers(1, num_users + 1, size=60)
    searches = pa.table({
        "user_id": s_users.astype(np.int64),
        "timestamp": (rng.integers(0, 10, size=60) * 1000 + 500 * rng.integers(0, 2, size=60)).astype(np.int64),
        "query": [f"q{i % 7} w{i % 3}" for i in range(60)],
    })
    return watches, searches


def bags(batch):
    """Split a batch's EmbeddingBag inputs back into per-example lists."""
    def split(ids, offsets):
        ends = list(offsets[1:].tolist()) + [len(ids)]
        return [ids[a:b].numpy() for a, b in zip(offsets.tolist(), ends)]
    return split(batch.watch_ids, batch.watch_offsets), split(batch.search_ids, batch.search_offsets)


def all_examples(examples, seed=0, batch_size=7):
    rng = np.random.default_rng(seed)
    out = []
    for batch in examples.batches(batch_size, rng):
        watch_bags, search_bags = bags(batch)
        for i in range(len(batch)):
            out.append((int(batch.users[i]), int(batch.labels[i]), watch_bags[i], search_bags[i], float(batch.example_age[i])))
    return out


@pytest.mark.parametrize("max_history", [3, 50])
def test_histories_are_exactly_the_last_strictly_earlier_events(max_history):
    watches, searches = random_log()
    f = Featurizer().fit(watches, searches)
    cfg = ExampleConfig(max_watch_history=max_history, max_search_history=max_history, max_examples_per_user=None)
    examples = CandidateExamples(f.streams(watches, searches), cfg, f)
    got = all_examples(examples)
    assert len(got) == len(watches)  # every watch is a label once

    rows = watches.to_pylist()
    token_rows = [(s["user_id"], s["timestamp"], i, q) for i, s in enumerate(searches.to_pylist()) for q in [s["query"]]]
    for user_row, label, watch_bag, search_bag, age in got:
        user = f.users_.decode([user_row])[0]
        item = f.items_.decode([label])[0]
        t = next(r["timestamp"] for r in rows if r["user_id"] == user and r["item_id"] == item)
        # brute force: the user's watches strictly before t, ordered by (time, item id), last H
        earlier = sorted((r["timestamp"], r["item_id"]) for r in rows if r["user_id"] == user and r["timestamp"] < t)
        assert f.items_.decode(watch_bag) == [i for _, i in earlier][-max_history:]
        assert item not in f.items_.decode(watch_bag)
        tokens = [tok for (u, ts, _, q) in sorted(token_rows, key=lambda x: (x[1], x[2])) if u == user and ts < t
                  for tok in _tokens(q)]
        assert f.tokens_.decode(search_bag) == tokens[-max_history:]
        # the example age is the fitted CDF of (window end - t) over the training watches
        assert age == f.example_age([f.window_end_ - t])[0]


def _tokens(query):
    from ytdnn.features.text import tokenize
    return tokenize(query)


def test_unordered_log_never_puts_the_label_in_its_history():
    watches, _searches = random_log(seed=3, ordered=False)
    f = Featurizer().fit(watches)
    assert not f.ordered_
    examples = CandidateExamples(f.streams(watches), ExampleConfig(max_watch_history=50, max_examples_per_user=None))
    for seed in range(3):
        got = all_examples(examples, seed=seed)
        assert len(got) == len(watches)
        for user_row, label, watch_bag, _, age in got:
            user = f.users_.decode([user_row])[0]
            own = {r["item_id"] for r in watches.to_pylist() if r["user_id"] == user}
            history = f.items_.decode(watch_bag)
            assert f.items_.decode([label])[0] not in history
            assert set(history) <= own and len(set(history)) == len(history)
            assert age == 0.0


def test_cap_on_examples_per_user_and_reshuffle_per_epoch():
    watches, _ = random_log(seed=1)
    f = Featurizer().fit(watches)
    examples = CandidateExamples(f.streams(watches), ExampleConfig(max_examples_per_user=4), f)
    got = all_examples(examples, seed=0)
    per_user = np.bincount([u for u, *_ in got])
    assert per_user.max() <= 4
    assert len(got) == examples.num_examples_per_epoch()
    expected = sum(min(4, n) for n in np.bincount(f.users_.encode(watches.column("user_id"))) if n)
    assert len(got) == expected
    assert {x[:2] for x in got} != {x[:2] for x in all_examples(examples, seed=1)}  # other labels drawn


def test_out_of_vocabulary_watches_stay_history_but_are_never_labels():
    watches, _ = random_log(seed=2)
    f = Featurizer(max_items=5).fit(watches)
    examples = CandidateExamples(f.streams(watches), ExampleConfig(max_examples_per_user=None), f)
    got = all_examples(examples)
    assert all(1 <= label <= 5 for _, label, *_ in got)
    assert len(got) == int((f.items_.encode(watches.column("item_id")) > 0).sum())


def test_serving_batch_uses_the_whole_history_and_zero_age():
    watches, searches = random_log(seed=4)
    f = Featurizer().fit(watches, searches)
    streams = f.streams(watches, searches)
    cfg = ExampleConfig(max_watch_history=5)
    users = f.users_.encode(pa.array([3, 999, 5]))  # 999 is unknown -> row 0, empty bags
    batch = serving_batch(streams, cfg, users, f.serving_age)
    watch_bags, search_bags = bags(batch)
    rows = sorted((r["timestamp"], r["item_id"]) for r in watches.to_pylist() if r["user_id"] == 3)
    assert f.items_.decode(watch_bags[0]) == [i for _, i in rows][-5:]
    assert len(watch_bags[1]) == 0 and len(search_bags[1]) == 0
    assert batch.example_age.tolist() == [f.serving_age] * 3
    assert f.serving_age == f.example_age([0.0])[0] < 0.05  # age 0 is the youngest end of the CDF


def test_example_age_is_the_cdf_of_the_training_ages():
    # ages 0, 10, ..., 90 seconds before the window end: the CDF's cut points, so an age maps to
    # its rank / 9 whatever the unit, and past the oldest it clamps below 1
    watches = pa.table({"user_id": [1] * 10, "item_id": list(range(1, 11)),
                        "timestamp": pa.array(np.arange(10) * 10 + 1000, pa.int64())})
    f = Featurizer().fit(watches)
    got = f.example_age([0.0, 10.0, 45.0, 90.0, 1e6])
    np.testing.assert_allclose(got, [0.0, 1 / 9, 4.5 / 9, 1 - 2**-24, 1 - 2**-24], rtol=1e-6)
    assert got.dtype == np.float32


def test_mixed_null_timestamps_are_an_error():
    watches = pa.table({"user_id": [1, 1], "item_id": [1, 2], "timestamp": pa.array([1, None], pa.int64())})
    with pytest.raises(ValueError, match="some watches have a timestamp"):
        Featurizer().fit(watches)


def test_featurizer_round_trip(tmp_path):
    watches, searches = random_log(seed=5)
    users = pa.table({"user_id": np.arange(1, 13, dtype=np.int64), "age": np.linspace(10, 70, 12), "geo": ["a", "b", "c"] * 4})
    f = Featurizer().fit(watches, searches, users)
    f.save(tmp_path)
    again = Featurizer.load(tmp_path)
    a, b = f.streams(watches, searches, users), again.streams(watches, searches, users)
    for name in ("watch_items", "watch_offsets", "tokens", "token_offsets", "user_categorical", "user_continuous"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.user_continuous.shape == (len(f.users_), 2)


def test_unordered_serving_bag_is_every_watch_of_the_user():
    watches, _ = random_log(seed=6, ordered=False)
    f = Featurizer().fit(watches)
    batch = serving_batch(f.streams(watches), ExampleConfig(max_watch_history=3), f.users_.encode(pa.array([2])))
    own = sorted(r["item_id"] for r in watches.to_pylist() if r["user_id"] == 2)
    assert sorted(f.items_.decode(bags(batch)[0][0])) == own


@pytest.mark.parametrize("lag", [0, 500, 1000, 20_000])
def test_search_lag_withholds_the_searches_just_before_the_label(lag):
    """Paper §3.4 (issue 20): with search_lag_s = L, a label at t sees only the search tokens
    strictly before t - L (never another user's, however large L)."""
    watches, searches = random_log(seed=6)
    f = Featurizer().fit(watches, searches)
    cfg = ExampleConfig(max_search_history=50, max_examples_per_user=None, search_lag_s=lag)
    got = all_examples(CandidateExamples(f.streams(watches, searches), cfg, f))
    rows = watches.to_pylist()
    token_rows = sorted(enumerate(searches.to_pylist()), key=lambda x: (x[1]["timestamp"], x[0]))
    withheld = 0
    for user_row, label, _, search_bag, _ in got:
        user = f.users_.decode([user_row])[0]
        item = f.items_.decode([label])[0]
        t = next(r["timestamp"] for r in rows if r["user_id"] == user and r["item_id"] == item)
        tokens = [tok for _, s in token_rows if s["user_id"] == user and s["timestamp"] < t - lag
                  for tok in _tokens(s["query"])]
        assert f.tokens_.decode(search_bag) == tokens[-50:]
        withheld += any(s["user_id"] == user and t - lag <= s["timestamp"] < t for _, s in token_rows)
    assert (withheld > 0) == (lag > 0)  # the log has searches inside the lag, so the lag bites


def test_search_lag_does_not_touch_serving():
    """Serving sees every search up to now: the lag shapes training only."""
    watches, searches = random_log(seed=7)
    f = Featurizer().fit(watches, searches)
    streams = f.streams(watches, searches)
    users = np.arange(1, streams.num_users)
    lagged = serving_batch(streams, ExampleConfig(search_lag_s=10_000), users)
    plain = serving_batch(streams, ExampleConfig(), users)
    assert torch.equal(lagged.search_ids, plain.search_ids) and len(plain.search_ids) > 0


def test_search_lag_must_not_be_negative():
    with pytest.raises(ValueError, match="search_lag_s"):
        ExampleConfig(search_lag_s=-1)
