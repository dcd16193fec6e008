"""Candidate-generation examples (paper §3.4): the label is a watch, the features come only from
that user's strictly earlier events.

- Ordered logs: the history of a label at time t is the user's last <= H watches with timestamp
  < t (a watch at the same second is not "earlier"), and the last <= H search tokens before
  t - ``search_lag_s`` (§3.4: searches just before a watch are withheld; 0 = before t).
  This is "predicting the next watch" of fig. 5b.
- Unordered logs (the ml-1m fold files): there is no "earlier", so a label is "a held-out watch"
  predicted from the others (fig. 5a), never from itself. Example age is off. Two ways to hold out:
  - "prefix": each epoch shuffles every user's watches, and a label's history is the <= H watches
    before it in that random order: one label per context, histories of 0..H watches.
  - "holdout": each epoch keeps every watch in the user's input bag with probability p (at most H
    of them, drawn at random) and makes the others the labels of that one bag, which is scored
    once for all of them (the denoising set-up of Mult-DAE). The bags are then about as full as
    the all-watches bag of serving, where "prefix" trains mostly on short ones.
- At most ``max_examples_per_user`` labels per user, drawn afresh each epoch, so a few heavy users
  do not dominate the loss (§3.4).
- Example age = end of the training window - label time; 0 at serving (§3.3). The model sees its
  CDF over the training watches (``Featurizer.example_age``), so no input depends on the unit or
  the span of the timestamps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from ytdnn.config import Config
from ytdnn.samples.sharding import Shard
from ytdnn.samples.streams import EventStreams, Featurizer, windows


@dataclasses.dataclass(frozen=True)
class ExampleConfig(Config):
    max_watch_history: int = 50  # paper §3.5: the 50 most recent watches
    max_search_history: int = 50  # and the 50 most recent search tokens
    # Paper §3.4, withholding what the classifier would exploit unrealistically: searches made
    # less than this many seconds before a label stay out of its bag, so the model cannot learn
    # to replay a query made seconds before the watch, when serving's bag is often days old.
    # Ordered logs only. 0 = off: on the synthetic worlds a lag of 1 h or 1 d removed the replay
    # (training loss) but moved validation MAP by less than its noise (bench/results/paper_search.md).
    search_lag_s: int = 0
    # Not in the paper: a second, short bag of the last few watches (same embedding table, fed
    # separately, as §4.1 shares tables) so the tower sees recency the 50-mean dilutes. 0 = off.
    max_recent_watches: int = 0
    max_examples_per_user: int | None = 200  # §3.4; None = every watch is a label
    # Unordered logs only (module docstring): "prefix" or "holdout". With "holdout", each watch
    # stays in the input bag with probability holdout_keep, and max_examples_per_user caps the
    # labels of one bag; holdout_weighting "label" weighs every label alike (heavy users count
    # more), "user" gives each user's labels a total weight of 1.
    unordered_mode: str = "prefix"
    holdout_keep: float = 0.5
    holdout_weighting: str = "label"
    # Leave each user's kept watches out of the softmax of its held-out labels, as evaluation
    # leaves the watched items out of the ranking: they are no negatives.
    holdout_exclude_kept: bool = False

    def validate(self) -> None:
        if self.max_watch_history < 1 or self.max_search_history < 0 or self.max_recent_watches < 0:
            raise ValueError("max_watch_history must be >= 1 and max_search_history >= 0")
        if self.search_lag_s < 0:
            raise ValueError(f"search_lag_s must be >= 0, got {self.search_lag_s}")
        if self.max_examples_per_user is not None and self.max_examples_per_user < 1:
            raise ValueError("max_examples_per_user must be None or >= 1")
        if self.unordered_mode not in ("prefix", "holdout"):
            raise ValueError(f"unordered_mode must be 'prefix' or 'holdout', got {self.unordered_mode!r}")
        if not 0.0 < self.holdout_keep < 1.0:
            raise ValueError(f"holdout_keep must be in (0, 1), got {self.holdout_keep}")
        if self.holdout_weighting not in ("label", "user"):
            raise ValueError(f"holdout_weighting must be 'label' or 'user', got {self.holdout_weighting!r}")


@dataclasses.dataclass
class CandidateBatch:
    """One batch of B user contexts, as EmbeddingBag inputs (no padding rows to mask).

    watch_ids [Nw], watch_offsets [B]; search_ids [Ns], search_offsets [B];
    user_categorical [B, C] int64; user_continuous [B, Fc] float32; example_age [B] float32
    (normalized: ``Featurizer.example_age``); users [B] int64 rows; labels [B] int64 item ids, or None at serving. Holdout
    batches have L >= B labels: labels [L], label_rows [L] (the context of each label) and
    label_weights [L] (None = all 1); excluded_rows, excluded_ids [X] (row, item) pairs that are
    not in the softmax of that row's labels, when configured.
    """

    watch_ids: torch.Tensor
    watch_offsets: torch.Tensor
    search_ids: torch.Tensor
    search_offsets: torch.Tensor
    user_categorical: torch.Tensor
    user_continuous: torch.Tensor
    example_age: torch.Tensor
    users: torch.Tensor  # [B] user rows of the streams
    labels: torch.Tensor | None = None
    recent_ids: torch.Tensor | None = None  # [Nr], with recent_offsets [B], when configured
    recent_offsets: torch.Tensor | None = None
    label_rows: torch.Tensor | None = None  # [L] with several labels per context, else None
    label_weights: torch.Tensor | None = None  # [L] | None
    excluded_rows: torch.Tensor | None = None  # [X] context rows and
    excluded_ids: torch.Tensor | None = None  # [X] item ids left out of that row's softmax

    def __len__(self) -> int:
        return len(self.watch_offsets)


def assemble_batch(
    streams: EventStreams,
    cfg: ExampleConfig,
    users: np.ndarray,
    watch_stream: np.ndarray,
    watch_end: np.ndarray,
    token_end: np.ndarray,
    example_age: np.ndarray,
    labels: np.ndarray | None,
) -> CandidateBatch:
    """Gather the windows of B examples. users, watch_end, token_end, example_age (normalized,
    ``Featurizer.example_age``): [B]."""
    watch_ids, watch_offsets = windows(watch_stream, streams.watch_offsets[users], watch_end, cfg.max_watch_history)
    search_ids, search_offsets = windows(streams.tokens, streams.token_offsets[users], token_end, cfg.max_search_history)
    recent = None
    if cfg.max_recent_watches:
        recent = windows(watch_stream, streams.watch_offsets[users], watch_end, cfg.max_recent_watches)
    return CandidateBatch(
        watch_ids=torch.from_numpy(watch_ids),
        watch_offsets=torch.from_numpy(watch_offsets),
        search_ids=torch.from_numpy(search_ids),
        search_offsets=torch.from_numpy(search_offsets),
        user_categorical=torch.from_numpy(streams.user_categorical[users]),
        user_continuous=torch.from_numpy(streams.user_continuous[users]),
        example_age=torch.from_numpy(np.asarray(example_age, dtype=np.float32)),
        users=torch.from_numpy(np.asarray(users, dtype=np.int64)),
        labels=None if labels is None else torch.from_numpy(labels),
        recent_ids=None if recent is None else torch.from_numpy(recent[0]),
        recent_offsets=None if recent is None else torch.from_numpy(recent[1]),
    )


def serving_batch(streams: EventStreams, cfg: ExampleConfig, users: np.ndarray, age: float = 0.0) -> CandidateBatch:
    """Features of users [B] "now": their whole stream is history and the example age is 0,
    which the model sees as ``age`` (its normalized value, ``Featurizer.serving_age``)."""
    users = np.asarray(users, dtype=np.int64)
    if not streams.ordered:
        # no "most recent" in an unordered log: the bag is all of the user's watches, whose mean
        # is what the random training subsets average to
        cfg = cfg.replace(max_watch_history=int(np.diff(streams.watch_offsets).max(initial=1)) or 1)
    return assemble_batch(
        streams, cfg, users, streams.watch_items,
        watch_end=streams.watch_offsets[users + 1],
        token_end=streams.token_offsets[users + 1],
        example_age=np.full(len(users), age, np.float32),
        labels=None,
    )


class CandidateExamples:
    """The training examples over ``streams``: every labelled watch with a known item id.

    ``featurizer``: the one that encoded ``streams``; it gives the end of the training window and
    the normalization of the example age. Without it every example age is 0.
    """

    def __init__(self, streams: EventStreams, cfg: ExampleConfig, featurizer: Featurizer | None = None):
        self.streams = streams
        self.cfg = cfg
        users = streams.watch_users()
        # labels out of the item vocabulary cannot be predicted: they stay history, never labels
        self.label_positions = np.flatnonzero(streams.watch_items > 0)  # [E] positions in the stream
        self.label_users = users[self.label_positions]
        if streams.ordered:
            key = _time_key(streams)
            # history ends at the user's first watch at the label's second: strictly earlier only
            watch_key = key(users, streams.watch_times)
            self.history_end = np.searchsorted(watch_key, watch_key[self.label_positions], side="left")
            token_users = np.repeat(np.arange(streams.num_users), np.diff(streams.token_offsets))
            token_key = key(token_users, streams.token_times)
            # searches strictly before (label time - lag), never before the user's first one
            cut = key(self.label_users, streams.watch_times[self.label_positions] - cfg.search_lag_s)
            self.token_end = np.maximum(np.searchsorted(token_key, cut, side="left"),
                                        streams.token_offsets[self.label_users])
        self.example_age = np.zeros(len(self.label_positions), np.float32)  # [E] normalized
        if featurizer is not None and streams.ordered:
            seconds = featurizer.window_end_ - streams.watch_times[self.label_positions].astype(np.float64)
            self.example_age = featurizer.example_age(seconds)

    def __len__(self) -> int:
        return len(self.label_positions)

    def epoch_selection(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of this epoch's examples: <= max_examples_per_user per user, shuffled. [E']"""
        order = rng.permutation(len(self))
        cap = self.cfg.max_examples_per_user
        if cap is not None:
            by_user = order[np.argsort(self.label_users[order], kind="stable")]
            starts = np.searchsorted(self.label_users[by_user], self.label_users[by_user], side="left")
            keep = by_user[np.arange(len(by_user)) - starts < cap]
            order = keep[rng.permutation(len(keep))]
        return order

    @property
    def holdout(self) -> bool:
        return not self.streams.ordered and self.cfg.unordered_mode == "holdout"

    def num_examples_per_epoch(self) -> int:
        """Examples (contexts) of one epoch; for holdout, the expected number of users with a label."""
        cap = self.cfg.max_examples_per_user
        if self.holdout:
            labelable = np.bincount(self.label_users, minlength=self.streams.num_users)
            return round(float((1.0 - self.cfg.holdout_keep ** labelable[labelable > 0]).sum()))
        if cap is None:
            return len(self)
        return int(np.minimum(np.bincount(self.label_users), cap).sum())

    def batches(self, batch_size: int, rng: np.random.Generator, shard: Shard | None = None) -> Iterator[CandidateBatch]:
        """One epoch of shuffled batches. For unordered logs the users' watches are reshuffled.
        ``shard``: this process's part of each global batch of ``batch_size`` (``Shard.cut``)."""
        shard = shard or Shard()
        if self.holdout:
            yield from self._holdout_batches(batch_size, rng, shard)
            return
        selection = self.epoch_selection(rng)
        watch_stream, history_end, token_end = self._epoch_windows(rng)
        for idx in shard.cut(selection, batch_size):
            pos = self.label_positions[idx]
            yield assemble_batch(
                self.streams, self.cfg, self.label_users[idx], watch_stream,
                watch_end=history_end[idx], token_end=token_end[idx],
                example_age=self.example_age[idx], labels=self.streams.watch_items[pos],
            )

    def _epoch_windows(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.streams
        if s.ordered:
            return s.watch_items, self.history_end, self.token_end
        # a random order within each user: the label's history is what precedes it in this order
        users = s.watch_users()
        perm = np.lexsort((rng.random(len(users)), users))
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        token_end = s.token_offsets[self.label_users + 1]  # unordered searches: all of them
        return s.watch_items[perm], inverse[self.label_positions], token_end

    def _holdout_batches(self, batch_size: int, rng: np.random.Generator, shard: Shard) -> Iterator[CandidateBatch]:
        """Batches of B users: each one's bag of kept watches, and its L_u held-out labels."""
        s, cfg = self.streams, self.cfg
        users = s.watch_users()  # [W], sorted
        kept = rng.random(len(users)) < cfg.holdout_keep  # [W]
        # within each user, the kept watches first (in random order), then the held-out ones: the
        # bag is a prefix of at most H of the kept, so a label is never in its own bag
        perm = np.lexsort((rng.random(len(users)), ~kept, users))
        stream, kept = s.watch_items[perm], kept[perm]
        num_kept = np.bincount(users, weights=kept, minlength=s.num_users).astype(np.int64)  # [U]
        bag_end = s.watch_offsets[:-1] + np.minimum(num_kept, cfg.max_watch_history)  # [U]
        label_pos = np.flatnonzero(~kept & (stream > 0))  # [L'] out-of-vocabulary ids are no labels
        label_users = users[label_pos]
        if cfg.max_examples_per_user is not None:  # the first labels of a random order: a random draw
            rank = np.arange(len(label_pos)) - np.searchsorted(label_users, label_users, side="left")
            keep = rank < cfg.max_examples_per_user
            label_pos, label_users = label_pos[keep], label_users[keep]
        num_labels = np.bincount(label_users, minlength=s.num_users)  # [U]
        label_start = np.r_[0, np.cumsum(num_labels)[:-1]]  # [U] into label_pos
        contexts = rng.permutation(np.flatnonzero(num_labels))
        span = int(stream.max(initial=0)) + 1  # (row, item) keys of the exclusions, once per epoch
        for u in shard.cut(contexts, batch_size):  # [B]
            pos, _ = windows(label_pos, label_start[u], label_start[u] + num_labels[u], None)  # [L]
            batch = assemble_batch(
                s, cfg, u, stream, watch_end=bag_end[u], token_end=s.token_offsets[u + 1],
                example_age=np.zeros(len(u), np.float32), labels=stream[pos],
            )
            rows = np.repeat(np.arange(len(u)), num_labels[u])  # [L]
            batch.label_rows = torch.from_numpy(rows)
            if cfg.holdout_exclude_kept:
                batch.excluded_rows, batch.excluded_ids = _kept_not_labels(
                    stream, s.watch_offsets[u], num_kept[u], rows, stream[pos], span)
            if cfg.holdout_weighting == "user":
                batch.label_weights = torch.from_numpy(np.repeat(1.0 / num_labels[u], num_labels[u]).astype(np.float32))
            yield batch


def _kept_not_labels(stream, starts, num_kept, label_rows, labels, span: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [X], ids [X]) of the B users' kept watches, less the items that are also one of that
    row's labels (a repeated watch held out once and kept once stays a positive, never -inf).

    starts, num_kept: [B]; label_rows, labels: [L]; span: more than the largest item id.
    """
    ids, _ = windows(stream, starts, starts + num_kept, None)  # [X']
    rows = np.repeat(np.arange(len(starts)), num_kept)  # [X']
    keep = ~np.isin(rows * span + ids, label_rows * span + labels)
    return torch.from_numpy(rows[keep]), torch.from_numpy(ids[keep])


def _time_key(streams: EventStreams):
    """A sortable int64 key of (user, time) shared by the watch and the token streams."""
    times = np.concatenate([streams.watch_times, streams.token_times])
    low = int(times.min(initial=0))
    span = int(times.max(initial=0)) - low + 1
    return lambda users, t: users.astype(np.int64) * span + (t - low)
