"""Evaluation protocols: fixed splits of a watches table, so numbers compare across versions.

Three protocols (DESIGN.md, "Evaluation protocols"):

- ``temporal_split`` (P-TEMPORAL, ml-100k and any timestamped log): per user, sort by
  (timestamp, item id) ascending; the last row is the test target, the second-last the validation
  target, the rest training. Two rows at the same last timestamp: the larger item id is the test
  target (ids compare numerically when numeric, as strings otherwise).
- ``random_fold_split`` (P-RANDOM, the ml-1m fold files, no timestamps): fold 1 is the test set,
  fold 2 the validation set, folds 3-5 the training set.
- ``global_time_split`` (synthetic world, any log): everything before ``train_end`` is training
  (its last stretch, from ``valid_start``, is the validation window); the test window follows.

Rules shared by all three:

- The catalogue is every user and every item of the whole table, whatever split they fall in,
  so an item never seen in training still counts in the ranking (a miss, never a skip). Dense
  indices follow the sorted ids (numeric order for integer ids), and ``Split.user_ids`` /
  ``Split.item_ids`` map them back.
- Repeated (user, item) rows: only a user's first watch of an item counts (earliest timestamp;
  first listed when there are no timestamps). Targets are therefore always items new to the user,
  which is what a ranking that excludes the user's known items can find. A later re-watch is
  dropped from the split (the row stays in ``Split.watches``).
- Choices are made on ``split.stage("valid")``: fit on train, rank everything but train items,
  score against valid targets. The reported figure comes from ``split.stage("test")``: refit on
  train + valid, rank everything but train + valid items, score against test targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import has_timestamps
from ytdnn.eval.interactions import Interactions

P_TEMPORAL = "P-TEMPORAL"
P_RANDOM = "P-RANDOM"
GLOBAL_TIME = "GLOBAL-TIME"
HOLDOUT = "HOLDOUT"
MIN_TEMPORAL_INTERACTIONS = 3  # one training, one validation and one test item at least


@dataclass(frozen=True)
class Stage:
    """What one evaluation round sees. All three sets are over the split's whole catalogue.

    fit: what the model is trained on; target: what it must find; exclude: what is removed from
    its ranking (the fit set: a user's known items are never recommended back).
    """

    name: str
    fit: Interactions
    target: Interactions
    exclude: Interactions
    watches: pa.Table  # the source table; Interactions.rows index into it

    @property
    def num_users(self) -> int:
        return self.fit.num_users

    @property
    def num_items(self) -> int:
        return self.fit.num_items

    def eval_users(self) -> np.ndarray:
        """Users with at least one target: the users the metrics average over."""
        return self.target.users()

    def fit_table(self) -> pa.Table:
        """The source rows of the fit set, with their dense ``user_idx`` / ``item_idx`` prepended."""
        table = self.watches.take(pa.array(self.fit.rows))
        table = table.add_column(0, "item_idx", pa.array(self.fit.item_idx))
        return table.add_column(0, "user_idx", pa.array(self.fit.user_idx))


@dataclass(frozen=True)
class Split:
    """A protocol applied to one watches table. Use ``stage("valid")`` / ``stage("test")``.

    user_ids: [num_users] original id of each dense user index; item_ids: [num_items] likewise.
    """

    protocol: str
    watches: pa.Table
    user_ids: pa.Array
    item_ids: pa.Array
    train: Interactions
    valid: Interactions
    test: Interactions

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def stage(self, name: Literal["valid", "test"]) -> Stage:
        """valid: fit = exclude = train. test: fit = exclude = train + valid (the refit)."""
        if name == "valid":
            return Stage("valid", self.train, self.valid, self.train, self.watches)
        if name == "test":
            known = self.train + self.valid
            return Stage("test", known, self.test, known, self.watches)
        raise ValueError(f"unknown stage {name!r}; expected 'valid' or 'test'")

    def summary(self) -> dict[str, int | str]:
        return {
            "protocol": self.protocol,
            "users": self.num_users,
            "items": self.num_items,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "valid_users": len(self.valid.users()),
            "test_users": len(self.test.users()),
        }


def _dense_ids(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(sorted unique ids [V], dense index of every row [N]); ids sort numerically if integer."""
    ids = pc.unique(column)
    ids = ids.take(pc.sort_indices(ids))
    return ids, pc.index_in(column, value_set=ids).to_numpy().astype(np.int64)


def _catalogue(watches: pa.Table) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    user_ids, user_idx = _dense_ids(watches.column("user_id"))
    item_ids, item_idx = _dense_ids(watches.column("item_id"))
    return user_ids, item_ids, user_idx, item_idx


def _first_watches(user_idx, item_idx, timestamp, num_items) -> np.ndarray:
    """Row positions of each user's first watch of each item, in (user, time, item) order."""
    order = np.lexsort((item_idx, timestamp, user_idx))  # last key is the primary one
    key = user_idx[order] * num_items + item_idx[order]
    _, first = np.unique(key, return_index=True)  # earliest, since key follows time order
    return order[np.sort(first)]


def _rank_from_end(sorted_users: np.ndarray, num_users: int) -> np.ndarray:
    """For rows grouped by user: 0 for each user's last row, 1 for the second-last, ..."""
    counts = np.bincount(sorted_users, minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(sorted_users)) - starts[sorted_users]
    return counts[sorted_users] - 1 - position


def _timestamps(watches: pa.Table, protocol: str) -> np.ndarray:
    ts = watches.column("timestamp")
    if len(ts) and not has_timestamps(watches):
        raise ValueError(f"{protocol} needs timestamps; this log has none (use random_fold_split)")
    if ts.null_count:
        raise ValueError(f"{protocol}: {ts.null_count} rows have no timestamp")
    return ts.to_numpy().astype(np.int64)


def temporal_split(watches: pa.Table, shift: int = 0) -> Split:
    """P-TEMPORAL: per user, last row -> test, second-last -> valid, the rest -> train.

    Users with fewer than 3 (distinct) items keep all of them in training and are neither
    validated nor tested: with fewer rows there is nothing left to learn the user from.

    shift: leave each user's last ``shift`` rows out of every set first, so the targets are the
    rows before them. Validation stages at shifts 0, 1, 2, ... hold different targets of the same
    users: more evidence for a choice than one target per user, and never the test rows.
    """
    if not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be an int >= 0, got {shift!r}")
    user_ids, item_ids, user_idx, item_idx = _catalogue(watches)
    num_users, num_items = len(user_ids), len(item_ids)
    rows = _first_watches(user_idx, item_idx, _timestamps(watches, P_TEMPORAL), num_items)
    users, items = user_idx[rows], item_idx[rows]
    from_end = _rank_from_end(users, num_users) - shift  # < 0: left out
    kept = np.bincount(users[from_end >= 0], minlength=num_users)[users]
    eligible = kept >= MIN_TEMPORAL_INTERACTIONS
    part = np.select([from_end < 0, eligible & (from_end == 0), eligible & (from_end == 1)], [-1, 2, 1], 0)

    def pick(p: int) -> Interactions:
        m = part == p
        return Interactions.from_pairs(users[m], items[m], num_users, num_items, rows[m])

    return Split(P_TEMPORAL, watches, user_ids, item_ids, pick(0), pick(1), pick(2))


def random_fold_split(
    watches: pa.Table, *, test_fold: int = 1, valid_fold: int = 2, fold_column: str = "fold"
) -> Split:
    """P-RANDOM: test on ``test_fold``, validate on ``valid_fold``, train on the other folds.

    The ml-1m fold files hold each (user, item) pair once; a pair listed twice would sit on both
    sides of the split, so it is an error here rather than silently resolved.
    """
    if fold_column not in watches.column_names:
        raise ValueError(f"P-RANDOM needs a {fold_column!r} column")
    if test_fold == valid_fold:
        raise ValueError("the test and validation folds must differ")
    user_ids, item_ids, user_idx, item_idx = _catalogue(watches)
    num_users, num_items = len(user_ids), len(item_ids)
    key = user_idx * num_items + item_idx
    if len(np.unique(key)) != len(key):
        raise ValueError("P-RANDOM: some (user_id, item_id) pair appears more than once")
    fold = watches.column(fold_column).to_numpy().astype(np.int64)
    rows = np.arange(len(fold))

    def pick(m: np.ndarray) -> Interactions:
        return Interactions.from_pairs(user_idx[m], item_idx[m], num_users, num_items, rows[m])

    test, valid = fold == test_fold, fold == valid_fold
    return Split(
        P_RANDOM, watches, user_ids, item_ids, pick(~(test | valid)), pick(valid), pick(test)
    )


def global_time_split(
    watches: pa.Table, train_end: int, valid_start: int | None = None, test_end: int | None = None
) -> Split:
    """One cut in time for everybody: train [.., valid_start), valid [valid_start, train_end),
    test [train_end, test_end).

    test_end defaults to just after the last watch; valid_start defaults to ``train_end`` minus the
    length of the test window. Targets are a user's first watches of items inside the window, so an
    item already watched earlier is never a target. Rows at or after ``test_end`` fall in no split.
    Users with no earlier watch are still evaluated (cold start counts).
    """
    user_ids, item_ids, user_idx, item_idx = _catalogue(watches)
    num_users, num_items = len(user_ids), len(item_ids)
    ts = _timestamps(watches, GLOBAL_TIME)
    if test_end is None:
        test_end = max(int(ts.max()) + 1, train_end) if len(ts) else train_end
    valid_start = train_end - (test_end - train_end) if valid_start is None else valid_start
    if not valid_start <= train_end <= test_end:
        raise ValueError(
            f"need valid_start <= train_end <= test_end, got {valid_start}, {train_end}, {test_end}"
        )
    rows = _first_watches(user_idx, item_idx, ts, num_items)
    t = ts[rows]

    def pick(m: np.ndarray) -> Interactions:
        return Interactions.from_pairs(
            user_idx[rows[m]], item_idx[rows[m]], num_users, num_items, rows[m]
        )

    train, valid = pick(t < valid_start), pick((t >= valid_start) & (t < train_end))
    test = pick((t >= train_end) & (t < test_end))
    return Split(GLOBAL_TIME, watches, user_ids, item_ids, train, valid, test)


def holdout_split(watches: pa.Table, *, seed: int = 0, share: float = 0.1) -> Split:
    """A validation split carved from one log, for choosing settings without a test set.

    Ordered logs: each user's last first-watch is the validation target (the rest trains), as in
    P-TEMPORAL without its test row. Unordered logs: a random ``share`` of each user's items (at
    least one), drawn with ``seed``. Users with fewer than 3 items only train. ``test`` is empty.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    user_ids, item_ids, user_idx, item_idx = _catalogue(watches)
    num_users, num_items = len(user_ids), len(item_ids)
    ordered = has_timestamps(watches)
    timestamp = _timestamps(watches, HOLDOUT) if ordered else np.zeros(len(watches), np.int64)
    rows = _first_watches(user_idx, item_idx, timestamp, num_items)
    users, items = user_idx[rows], item_idx[rows]
    counts = np.bincount(users, minlength=num_users)
    eligible = counts[users] >= MIN_TEMPORAL_INTERACTIONS
    if ordered:
        held = eligible & (_rank_from_end(users, num_users) == 0)
    else:
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(rows)), users))  # a random order within each user
        position = np.empty(len(rows), np.int64)
        position[order] = np.arange(len(rows)) - np.searchsorted(users[order], users[order], side="left")
        held = eligible & (position < np.maximum(1, np.round(share * counts[users])))

    def pick(m: np.ndarray) -> Interactions:
        return Interactions.from_pairs(users[m], items[m], num_users, num_items, rows[m])

    return Split(HOLDOUT, watches, user_ids, item_ids, pick(~held), pick(held), pick(np.zeros(len(rows), bool)))
