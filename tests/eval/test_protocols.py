import numpy as np
import pyarrow as pa
import pytest

from ytdnn.eval.interactions import Interactions
from ytdnn.eval.protocols import global_time_split, random_fold_split, temporal_split


def pairs(inter: Interactions, split) -> set[tuple]:
    """Interactions back in original ids: {(user_id, item_id)}."""
    users = split.user_ids.to_pylist()
    items = split.item_ids.to_pylist()
    return {(users[u], items[i]) for u, i in zip(inter.user_idx, inter.item_idx)}


def temporal_log() -> pa.Table:
    rows = [
        # user 1: items 9 and 10 share the last timestamp; numerically 10 > 9, so 10 is the
        # test target (a string comparison would pick "9") and 9 the validation target
        (1, 5, 100),
        (1, 7, 200),
        (1, 10, 300),
        (1, 9, 300),
        # user 2: two items only -> training only, never evaluated
        (2, 5, 50),
        (2, 7, 60),
        # user 3: re-watches item 5 last; only the first watch counts, so the targets are 8 and 6
        (3, 5, 10),
        (3, 7, 20),
        (3, 6, 40),
        (3, 8, 40),
        (3, 5, 99),
    ]
    u, i, t = zip(*rows)
    return pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t)})


def test_temporal_targets_follow_time_then_numeric_item_id():
    split = temporal_split(temporal_log())
    assert pairs(split.test, split) == {(1, 10), (3, 8)}
    assert pairs(split.valid, split) == {(1, 9), (3, 6)}
    assert pairs(split.train, split) == {(1, 5), (1, 7), (2, 5), (2, 7), (3, 5), (3, 7)}


def test_a_shifted_temporal_split_takes_earlier_targets_and_leaves_the_last_rows_out():
    split = temporal_split(temporal_log(), shift=1)
    # user 1: 10 left out, 9 test, 7 valid, 5 train; user 3: 8 left out (5's re-watch is no
    # first watch), 6 test, 7 valid, 5 train; user 2: one row left, no targets
    assert pairs(split.test, split) == {(1, 9), (3, 6)}
    assert pairs(split.valid, split) == {(1, 7), (3, 7)}
    assert pairs(split.train, split) == {(1, 5), (2, 5), (3, 5)}
    assert split.item_ids.to_pylist() == [5, 6, 7, 8, 9, 10]  # the catalogue is the log's
    assert not temporal_split(temporal_log(), shift=2).valid.counts_per_user().any()  # 2 rows kept: too few
    assert pairs(temporal_split(temporal_log(), shift=0).test, split) == {(1, 10), (3, 8)}
    with pytest.raises(ValueError, match="shift"):
        temporal_split(temporal_log(), shift=-1)


def test_temporal_catalogue_is_dense_and_numerically_sorted():
    split = temporal_split(temporal_log())
    assert split.user_ids.to_pylist() == [1, 2, 3]
    assert split.item_ids.to_pylist() == [5, 6, 7, 8, 9, 10]
    assert split.train.counts_per_user().tolist() == [2, 2, 2]
    assert split.valid.counts_per_user().tolist() == [1, 0, 1]
    assert split.test.counts_per_user().tolist() == [1, 0, 1]
    assert split.stage("test").eval_users().tolist() == [0, 2]


def test_no_test_item_is_in_training_or_validation():
    rng = np.random.default_rng(0)
    n = 2000
    log = pa.table(
        {
            "user_id": rng.integers(0, 50, n),
            "item_id": rng.integers(0, 80, n),
            "timestamp": rng.integers(0, 30, n),  # many ties and re-watches
        }
    )
    split = temporal_split(log)
    known = pairs(split.train, split) | pairs(split.valid, split)
    assert not pairs(split.test, split) & known
    assert not pairs(split.valid, split) & pairs(split.train, split)
    assert len(split.test) == len(split.test.users())  # one target per user


def test_stages_fit_and_exclude_the_right_sets():
    split = temporal_split(temporal_log())
    valid, test = split.stage("valid"), split.stage("test")
    assert valid.fit is split.train and valid.exclude is split.train and valid.target is split.valid
    assert pairs(test.fit, split) == pairs(split.train, split) | pairs(split.valid, split)
    assert pairs(test.exclude, split) == pairs(test.fit, split)
    assert test.target is split.test
    with pytest.raises(ValueError, match="stage"):
        split.stage("train")


def test_fit_table_keeps_source_columns_with_dense_indices():
    split = temporal_split(temporal_log())
    table = split.stage("valid").fit_table()
    assert table.column_names[:2] == ["user_idx", "item_idx"]
    rows = sorted(
        zip(
            table["user_id"].to_pylist(),
            table["item_id"].to_pylist(),
            table["timestamp"].to_pylist(),
        )
    )
    assert rows == [(1, 5, 100), (1, 7, 200), (2, 5, 50), (2, 7, 60), (3, 5, 10), (3, 7, 20)]


def test_temporal_needs_timestamps_and_accepts_string_ids():
    untimed = pa.table(
        {"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": pa.nulls(3, pa.int64())}
    )
    with pytest.raises(ValueError, match="timestamps"):
        temporal_split(untimed)
    named = pa.table({"user_id": ["a"] * 3, "item_id": ["x", "y", "z"], "timestamp": [1, 2, 3]})
    split = temporal_split(named)
    assert pairs(split.test, split) == {("a", "z")}


def fold_log() -> pa.Table:
    rows = [  # (user, item, fold); item 99 appears only in fold 1
        (1, 10, 1),
        (1, 99, 1),
        (1, 11, 2),
        (1, 12, 3),
        (1, 13, 4),
        (1, 14, 5),
        (2, 10, 2),
        (2, 11, 3),
        (2, 12, 5),
        (3, 13, 4),
    ]
    u, i, f = zip(*rows)
    return pa.table(
        {
            "user_id": list(u),
            "item_id": list(i),
            "timestamp": pa.nulls(len(rows), pa.int64()),
            "fold": pa.array(f, pa.int8()),
        }
    )


def test_random_folds_train_valid_test_and_whole_catalogue():
    split = random_fold_split(fold_log())
    assert (split.num_users, split.num_items) == (3, 6)  # all five folds, item 99 included
    assert pairs(split.test, split) == {(1, 10), (1, 99)}
    assert pairs(split.valid, split) == {(1, 11), (2, 10)}
    assert pairs(split.train, split) == {(1, 12), (1, 13), (1, 14), (2, 11), (2, 12), (3, 13)}
    test = split.stage("test")  # refit on folds 2-5
    assert len(test.fit) == 8 and pairs(test.exclude, split) == pairs(test.fit, split)
    assert test.eval_users().tolist() == [0]


def test_random_folds_reject_a_pair_listed_twice():
    log = fold_log()
    doubled = pa.concat_tables([log, log.slice(0, 1)])
    with pytest.raises(ValueError, match="more than once"):
        random_fold_split(doubled)


def test_global_time_split_windows_and_new_items_only():
    rows = [  # (user, item, time); train < 10 <= valid < 20 <= test < 30
        (1, 1, 0),
        (1, 2, 12),
        (1, 1, 22),
        (1, 3, 25),  # item 1 re-watched in test: not a target
        (2, 1, 5),
        (2, 4, 8),
        (2, 4, 15),  # item 4 re-watched in valid: not a target
        (3, 2, 21),  # cold user: evaluated anyway
        (4, 3, 35),  # after test_end: in no split
    ]
    u, i, t = zip(*rows)
    log = pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t)})
    split = global_time_split(log, train_end=20, valid_start=10, test_end=30)
    assert pairs(split.train, split) == {(1, 1), (2, 1), (2, 4)}
    assert pairs(split.valid, split) == {(1, 2)}
    assert pairs(split.test, split) == {(1, 3), (3, 2)}
    assert split.num_users == 4  # user 4 stays in the catalogue
    default = global_time_split(log, train_end=20, test_end=30)  # valid window as long as test
    assert pairs(default.valid, default) == pairs(split.valid, split)
