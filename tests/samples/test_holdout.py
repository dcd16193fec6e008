"""Holdout examples of unordered logs: a random bag of kept watches, the held-out rest as labels."""

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.samples.candidate import CandidateExamples, ExampleConfig
from ytdnn.samples.streams import Featurizer


def unordered_log(counts=(6, 1, 12, 3), first_item=100):
    """User u (1-based) watches counts[u - 1] distinct items; no timestamps, so the log is unordered."""
    users, items = [], []
    for u, n in enumerate(counts, start=1):
        users += [u] * n
        items += list(range(first_item + 10 * u, first_item + 10 * u + n))  # disjoint per user
    return pa.table({
        "user_id": np.array(users, np.int64),
        "item_id": np.array(items, np.int64),
        "timestamp": pa.array([None] * len(users), pa.int64()),
    })


def holdout_examples(watches, **cfg):
    f = Featurizer().fit(watches)
    cfg = {"unordered_mode": "holdout", "max_examples_per_user": None, **cfg}
    return f, CandidateExamples(f.streams(watches), ExampleConfig(**cfg))


def contexts(examples, seed=0, batch_size=3):
    """[(user row, bag ids, label ids, label weights, excluded ids)] of one epoch."""
    out = []
    for batch in examples.batches(batch_size, np.random.default_rng(seed)):
        ends = batch.watch_offsets[1:].tolist() + [len(batch.watch_ids)]
        for b, (a, e) in enumerate(zip(batch.watch_offsets.tolist(), ends)):
            mine = (batch.label_rows == b).numpy()
            weights = None if batch.label_weights is None else batch.label_weights.numpy()[mine]
            excluded = None
            if batch.excluded_ids is not None:
                excluded = batch.excluded_ids.numpy()[(batch.excluded_rows == b).numpy()]
            out.append((int(batch.users[b]), batch.watch_ids[a:e].numpy(), batch.labels.numpy()[mine], weights, excluded))
    return out


def test_every_watch_is_either_in_the_bag_or_a_label_never_both():
    watches = unordered_log()
    f, examples = holdout_examples(watches, holdout_keep=0.5, max_watch_history=50)
    owned = {}
    for r in watches.to_pylist():
        owned.setdefault(int(f.users_.encode(pa.array([r["user_id"]]))[0]), set()).add(r["item_id"])
    for seed in range(5):
        got = contexts(examples, seed=seed)
        assert len({user for user, *_ in got}) == len(got)  # one context per user
        for user, bag, labels, weights, _ in got:
            bag, labels = set(f.items_.decode(bag)), list(f.items_.decode(labels))
            assert len(labels) >= 1 and weights is None
            assert not bag & set(labels)
            assert bag | set(labels) == owned[user]  # no cap: nothing is left out
            assert len(labels) == len(set(labels))


def test_keep_rate_and_bag_cap():
    watches = unordered_log(counts=(400, 300))
    _, examples = holdout_examples(watches, holdout_keep=0.3, max_watch_history=1000)
    got = contexts(examples)
    kept = sum(len(bag) for _, bag, *_ in got)
    assert kept / 700 == pytest.approx(0.3, abs=0.05)  # binomial sd 0.017
    # with H = 50 the bag is at most 50 of the kept watches; the other kept ones are no labels
    _, capped = holdout_examples(watches, holdout_keep=0.3, max_watch_history=50, max_examples_per_user=20)
    for _, bag, labels, _, _ in contexts(capped):
        assert len(bag) == 50 and len(labels) == 20


def test_same_seed_same_epoch_other_seed_other_epoch():
    _, examples = holdout_examples(unordered_log(), holdout_keep=0.5)

    def as_sets(got):
        return sorted((u, tuple(sorted(bag)), tuple(sorted(labels))) for u, bag, labels, *_ in got)

    assert as_sets(contexts(examples, seed=7)) == as_sets(contexts(examples, seed=7))
    assert as_sets(contexts(examples, seed=7)) != as_sets(contexts(examples, seed=8))


def test_user_weighting_and_excluded_kept_watches():
    watches = unordered_log(counts=(20, 30))
    _, examples = holdout_examples(
        watches, holdout_keep=0.5, holdout_weighting="user", holdout_exclude_kept=True, max_watch_history=5
    )
    for _, bag, labels, weights, excluded in contexts(examples):
        assert weights.sum() == pytest.approx(1.0)  # each user's labels share a weight of 1
        assert set(bag) <= set(excluded)  # the bag and the kept watches beyond H are excluded
        assert len(bag) == min(len(excluded), 5)  # the bag: at most H = 5 of the kept
        assert not set(excluded) & set(labels)  # a label is never left out of its own softmax


def test_a_repeated_item_kept_once_and_held_out_once_is_not_excluded():
    # user 1 watches item 7 twice (and 30 other items): whenever one copy is kept and the other
    # held out, 7 is a label of that row, so it must stay in the row's softmax
    items = [7, 7] + list(range(100, 130))
    watches = pa.table({"user_id": np.ones(len(items), np.int64), "item_id": np.array(items, np.int64),
                        "timestamp": pa.array([None] * len(items), pa.int64())})
    f, examples = holdout_examples(watches, holdout_keep=0.5, holdout_exclude_kept=True)
    seven = int(f.items_.encode(pa.array([7]))[0])
    split = 0
    for seed in range(40):
        (_, bag, labels, _, excluded), = contexts(examples, seed=seed)
        assert not set(excluded) & set(labels)
        split += int(seven in bag and seven in labels)
    assert split > 0  # the case did happen


def test_expected_number_of_contexts():
    # a user with n watches has a label unless all n are kept: P = 1 - keep**n
    _, examples = holdout_examples(unordered_log(), holdout_keep=0.5)
    expected = sum(1 - 0.5**n for n in (6, 1, 12, 3))
    assert examples.num_examples_per_epoch() == round(expected)
    mean = np.mean([len(contexts(examples, seed=s)) for s in range(200)])
    assert mean == pytest.approx(expected, abs=0.15)


def test_ordered_logs_ignore_the_holdout_mode():
    # ml-100k (timestamps) must train exactly as before: next-watch examples, one label each
    watches = unordered_log().set_column(2, "timestamp", pa.array(np.arange(22) * 10, pa.int64()))
    f = Featurizer().fit(watches)
    streams = f.streams(watches)
    plain = CandidateExamples(streams, ExampleConfig(), f)
    holdout = CandidateExamples(streams, ExampleConfig(unordered_mode="holdout"), f)
    for a, b in zip(plain.batches(4, np.random.default_rng(0)), holdout.batches(4, np.random.default_rng(0)), strict=True):
        assert a.label_rows is None and b.label_rows is None
        assert a.labels.tolist() == b.labels.tolist() and a.watch_ids.tolist() == b.watch_ids.tolist()


@pytest.mark.parametrize("bad", [{"unordered_mode": "random"}, {"holdout_keep": 1.0}, {"holdout_keep": 0.0},
                                 {"holdout_weighting": "item"}])
def test_bad_holdout_settings_raise(bad):
    with pytest.raises(ValueError):
        ExampleConfig(**bad)
