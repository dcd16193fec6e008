"""Rating examples: rated (user, item) pairs for the ranker and its rating heads, each one's
features drawn from the user's *other* ratings only, so a rating never enters its own bag.

- Unordered logs (no timestamps, the ml-1m fold files): fold holdout. Every user's ratings are
  split at random into ``folds`` groups; the ratings of group g are labels whose bag is the user's
  ratings outside g. The bags then hold (folds - 1) / folds of the user's ratings, near the
  all-ratings bag of serving, and every rating is a label once (the candidate generator's
  "holdout" examples do the same with one random half, paper fig. 5a).
- Ordered logs: the bag of a rating at time t is the user's last <= H ratings strictly before t,
  as every ranking example (§4).
- Negatives: per labelled rating, ``negatives_per_rating`` items the user never rated, drawn
  uniformly from the item vocabulary, in the same context: label 0, weight 1, no rating. The
  positives weigh their watch time (the rating where the log has none), §4.2, so exp(logit)
  stays the serving score of the logistic head.
- Rating inputs beside the ranker's own features: a rated bag (each bag item weighs its rating
  less the bag's mean, over the bag's size) and two continuous features of the bag, its mean
  rating and its size (``RATING_FEATURES``), which the ranker CDF-normalizes like the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from ytdnn.config import Config
from ytdnn.samples.ranking import FeatureTables, RankingBatch, assemble_ranking_batch, group_rows
from ytdnn.samples.sharding import Shard
from ytdnn.samples.streams import EventStreams, window_positions, windows

RATING_FEATURES = ("bag_mean_rating", "bag_size")  # then "autorec_rating" with RatingConfig.autorec_units
MAX_RATING_LEVELS = 20  # more distinct values than this is a continuous score: no class head


@dataclasses.dataclass(frozen=True)
class RatingConfig(Config):
    folds: int = 5  # unordered logs: a label's bag is its user's ratings outside its fold
    # unrated items per labelled rating, for the logistic head; what a user chose to rate helps
    # predict how (ml-1m validation RMSE: 1 -> 0.866, 3 -> 0.861; YouTubeDNN's docstring)
    negatives_per_rating: int = 3
    # Feed the candidate generator's score and rank of the pair. Off by default: the generator
    # was trained on these very ratings, so its score is sharper on them than on unseen pairs
    # (the leak ``samples.impressions`` explains), and computing it is most of batch_predict.
    candidate_features: bool = False
    # A rating autoencoder (I-AutoRec, models/autorec.py) with this many hidden units, whose
    # predicted rating of the pair is one more rating feature, out of fold in training (one
    # autoencoder per fold, and one on every rating for serving). 0 = none. Its weights are 2 x U x
    # units floats (U users), its batches dense [items, U].
    autorec_units: int = 0
    autorec_l2: float = 300.0  # λ of the paper's objective (ml-1m validation: 200-300 best)
    autorec_epochs: int = 30  # Adam with a cosine decay of autorec_lr over them
    autorec_lr: float = 3e-3
    # The expected rating served: (1 - w) x the ranker's heads + w x the autoencoder's own
    # rating. None: w is chosen after training on ``calibration_share`` of the rated rows, held
    # out of the ranker's labels. A fixed w is not robust: on ml-1m validation w 0 -> 0.8444 and
    # 0.5 -> 0.8335 (the ranker under-trusts the full autoencoder, having learned from ones fit
    # on 4/5 of the ratings), on a small planted log where the ranker is near exact 0.02 -> 0.54.
    autorec_weight: float | None = None
    calibration_share: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.negatives_per_rating < 0:
            raise ValueError(f"negatives_per_rating must be >= 0, got {self.negatives_per_rating}")
        if self.autorec_units < 0 or self.autorec_epochs < 1 or self.autorec_l2 < 0 or self.autorec_lr <= 0:
            raise ValueError("autorec_units >= 0, autorec_epochs >= 1, autorec_l2 >= 0 and autorec_lr > 0 needed")
        if self.autorec_weight is not None and not 0.0 <= self.autorec_weight <= 1.0:
            raise ValueError(f"autorec_weight must be None or in [0, 1], got {self.autorec_weight}")
        if not 0.0 < self.calibration_share < 1.0:
            raise ValueError(f"calibration_share must be in (0, 1), got {self.calibration_share}")


@dataclasses.dataclass
class RatedBatch(RankingBatch):
    """A RankingBatch with the rating inputs: rated_weights [Nw] one per watch_ids entry (the
    rated bag's per-item weights), ratings [B] float32 (NaN where unknown: negatives, serving)."""

    rated_weights: torch.Tensor | None = None
    ratings: torch.Tensor | None = None


class RatingLog:
    """The training ratings by (user row, item id) of the candidate generator's id spaces, so a
    history position of any stream finds its rating. A repeated pair keeps its mean rating.

    keys_ [P] sorted int64 user * num_items + item; values_ [P] float64; num_items: the id span.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, num_items: int):
        self.keys_, self.values_, self.num_items = keys, values, int(num_items)

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, num_items: int) -> RatingLog:
        """users, items, ratings [W] -> the log (mean rating per distinct pair)."""
        keys = users.astype(np.int64) * num_items + items.astype(np.int64)
        distinct, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        values = np.bincount(inverse, weights=ratings, minlength=len(distinct)) / counts
        return cls(distinct, values, num_items)

    def lookup(self, users: np.ndarray, items: np.ndarray, default: float = np.nan) -> np.ndarray:
        """The rating of each (user row, item id) pair [N]; ``default`` where there is none."""
        keys = np.asarray(users, np.int64) * self.num_items + np.asarray(items, np.int64)
        at = np.minimum(np.searchsorted(self.keys_, keys), max(len(self.keys_) - 1, 0))
        found = self.keys_[at] == keys if len(self.keys_) else np.zeros(len(keys), bool)
        return np.where(found, self.values_[at] if len(self.keys_) else default, default)

    def stream_ratings(self, streams: EventStreams) -> np.ndarray:
        """[W] the rating of every watch of ``streams`` (training user rows); NaN where unknown."""
        return self.lookup(streams.watch_users(), streams.watch_items)

    def means(self, by: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean rating and count per user row (by="user") or item id (by="item"), over the
        distinct pairs: (sums / counts [n], counts [n]), n the rows or ids seen."""
        ids = self.keys_ // self.num_items if by == "user" else self.keys_ % self.num_items
        size = int(ids.max(initial=-1)) + 1 if by == "user" else self.num_items
        counts = np.bincount(ids, minlength=size)
        sums = np.bincount(ids, weights=self.values_, minlength=size)
        return sums / np.maximum(counts, 1), counts


@dataclasses.dataclass
class ItemRatingBatch:
    """B items' rating vectors: ratings [B, U] float32 (0 where unobserved), observed [B, U] bool."""

    ratings: torch.Tensor
    observed: torch.Tensor

    @property
    def num_examples(self) -> int:
        return int(self.ratings.shape[0])


class ItemRatings:
    """A RatingLog by item (CSR over item ids), each item a vector over U user rows: what the
    rating autoencoder (models/autorec.py) trains on and encodes.

    users [P], values [P] float32 grouped by item; offsets [num_items + 1].
    """

    # dense [B, U] batches: at most this many entries (64 MiB of float32), so a log with many
    # users gets fewer items per batch
    MAX_BATCH_ENTRIES = 1 << 24

    def __init__(self, log: RatingLog, num_users: int):
        users, items = log.keys_ // log.num_items, log.keys_ % log.num_items
        order = np.lexsort((users, items))
        self.users, self.values = users[order], log.values_[order].astype(np.float32)
        self.offsets = np.searchsorted(items[order], np.arange(log.num_items + 1)).astype(np.int64)
        self.num_users, self.num_ratings = int(num_users), len(order)

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 1

    def max_batch_items(self) -> int:
        """The most items a dense batch may hold (MAX_BATCH_ENTRIES over the users)."""
        return max(1, self.MAX_BATCH_ENTRIES // max(self.num_users, 1))

    def batch(self, items: np.ndarray) -> ItemRatingBatch:
        """The dense rating vectors [B, U] of items [B]."""
        at, _ = window_positions(self.offsets[items], self.offsets[items + 1], None)
        rows = torch.from_numpy(np.repeat(np.arange(len(items)), self.offsets[items + 1] - self.offsets[items]))
        cols = torch.from_numpy(self.users[at])
        ratings = torch.zeros(len(items), self.num_users)
        observed = torch.zeros(len(items), self.num_users, dtype=torch.bool)
        ratings[rows, cols] = torch.from_numpy(self.values[at])
        observed[rows, cols] = True
        return ItemRatingBatch(ratings, observed)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[ItemRatingBatch]:
        """One epoch over the rated items, in random order, <= batch_size (and MAX_BATCH_ENTRIES)."""
        rated = np.flatnonzero(np.diff(self.offsets) > 0)
        step = min(batch_size, self.max_batch_items())
        order = rng.permutation(rated)
        for start in range(0, len(order), step):
            yield self.batch(order[start : start + step])


def blend_weight(ranked: np.ndarray, other: np.ndarray, truth: np.ndarray) -> float:
    """The w in [0, 1] whose (1 - w) x ranked + w x other [N] has the least squared error to
    truth [N] (least squares in one variable, clipped); 0 without rows or where they agree."""
    gap = np.asarray(other, np.float64) - ranked
    denominator = float(gap @ gap)
    if not len(gap) or denominator <= 0.0:
        return 0.0
    return float(np.clip((np.asarray(truth, np.float64) - ranked) @ gap / denominator, 0.0, 1.0))


def bag_inputs(ratings: np.ndarray, offsets: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Per bag b of a CSR run of ratings [Nw] (offsets [C], each run to the next / the end):
    (the rated bag's weights [Nw] = (r - mean_b) / size_b, features [C, 2] = (mean_b, size_b)).
    An empty bag has mean ``fill``; an unknown rating (NaN) counts as its bag's mean."""
    sizes = np.diff(np.append(offsets, len(ratings)))
    bag_of = np.repeat(np.arange(len(offsets)), sizes)
    known = ~np.isnan(ratings)
    n_known = np.bincount(bag_of[known], minlength=len(offsets))
    sums = np.bincount(bag_of[known], weights=ratings[known], minlength=len(offsets))
    mean = np.where(n_known > 0, sums / np.maximum(n_known, 1), fill)
    centred = np.where(known, ratings - mean[bag_of], 0.0)
    weights = centred / np.maximum(sizes, 1)[bag_of]
    return weights.astype(np.float32), np.stack([mean, sizes.astype(np.float64)], axis=1)


def context_rows(users: np.ndarray, watch_end: np.ndarray, share_contexts: bool) -> np.ndarray:
    """The rows the user-side inputs of ``assemble_ranking_batch`` are built from: each row's own,
    or (share_contexts) the first row of each distinct (user, watch_end), in context order."""
    if not share_contexts:
        return np.arange(len(users))
    first, row_context = group_rows(users, watch_end)
    return first[np.argsort(row_context[first])]


def assemble_rated_batch(
    tables: FeatureTables, history_ratings: np.ndarray, max_history: int, users: np.ndarray,
    items: np.ndarray, watch_end: np.ndarray, continuous: np.ndarray, labels=None, weights=None,
    ratings=None, share_contexts: bool = False, prior=None, fill: float = 0.0,
) -> RatedBatch:
    """``assemble_ranking_batch`` plus the rated bag's weights, gathered from history_ratings [W]
    (aligned with tables.history) over the same windows; ratings [B] (NaN = unknown)."""
    base = assemble_ranking_batch(tables, max_history, users, items, watch_end, continuous, labels,
                                  weights, share_contexts, prior)
    rows = context_rows(users, watch_end, share_contexts)
    bag, offsets = windows(history_ratings, tables.watch_offsets[users[rows]], watch_end[rows], max_history)
    rated_weights, _ = bag_inputs(bag, offsets, fill)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(RankingBatch)}
    return RatedBatch(**fields, rated_weights=torch.from_numpy(rated_weights),
                      ratings=None if ratings is None else torch.from_numpy(np.asarray(ratings, np.float32)))


def window_features(history_ratings: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    max_history: int, fill: float) -> np.ndarray:
    """RATING_FEATURES [Q, 2] of each query's bag (the last <= max_history of
    history_ratings[start:end]), computed once per distinct (start, end)."""
    first, group = group_rows(starts, ends)
    bag, offsets = windows(history_ratings, starts[first], ends[first], max_history)
    return bag_inputs(bag, offsets, fill)[1][group]


@dataclasses.dataclass
class HoldoutContexts:
    """The contexts of rating examples: bags as a CSR stream over C contexts.

    stream [S] positions into the rated log (its rows); offsets [C + 1]; context_user [C] the
    user row of each context; example_context [W] the context of every rated row's label;
    example_end [W] where that label's bag ends in ``stream``.
    """

    stream: np.ndarray
    offsets: np.ndarray
    context_user: np.ndarray
    example_context: np.ndarray
    example_end: np.ndarray


def holdout_contexts(users: np.ndarray, times: np.ndarray | None, num_users: int, folds: int,
                     rng: np.random.Generator) -> HoldoutContexts:
    """Bags of the rated rows users [W] (user rows), times [W] (None: unordered).

    Unordered: context u * folds + g holds user u's rows outside fold g, in random order, and a
    row of fold g ends its context. Ordered: context u holds u's rows by time, and a row's bag
    ends at u's first row at its second (strictly earlier only).
    """
    w = len(users)
    if times is None:
        fold = rng.integers(folds, size=w)  # [W]
        rows = np.repeat(np.arange(w), folds - 1)  # [W * (folds - 1)] every row, once per other fold
        other = (np.repeat(fold, folds - 1) + np.tile(np.arange(1, folds), w)) % folds
        context = users[rows].astype(np.int64) * folds + other
        stream = rows[np.lexsort((rng.random(len(rows)), context))]
        num_contexts = num_users * folds
        offsets = np.searchsorted(np.sort(context), np.arange(num_contexts + 1)).astype(np.int64)
        example_context = users.astype(np.int64) * folds + fold
        return HoldoutContexts(stream, offsets, np.arange(num_contexts) // folds, example_context,
                               offsets[example_context + 1])
    order = np.lexsort((times, users))
    offsets = np.searchsorted(users[order], np.arange(num_users + 1)).astype(np.int64)
    span = int(times.max(initial=0)) - int(times.min(initial=0)) + 1
    key = users.astype(np.int64) * span + (times - int(times.min(initial=0)))
    end = np.searchsorted(key[order], key, side="left").astype(np.int64)  # strictly earlier
    return HoldoutContexts(order, offsets, np.arange(num_users), users.astype(np.int64), end)


def draw_negatives(users: np.ndarray, log: RatingLog, per_row: int, num_items: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``per_row`` uniform items in 1..num_items - 1 for each of the rows users [W], leaving out
    items the user rated: (row index [N] of the positive each one shares a context with, item [N])."""
    rows = np.repeat(np.arange(len(users)), per_row)
    if not len(rows) or num_items < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    items = rng.integers(1, num_items, size=len(rows))
    unrated = np.isnan(log.lookup(users[rows], items))
    return rows[unrated], items[unrated]


@dataclasses.dataclass
class RatedExamples:
    """N training pairs with their features; ``batches`` yields shuffled RatedBatches.

    tables: the contexts' FeatureTables; history_ratings [S] aligned with tables.history;
    contexts, items, watch_end [N]; continuous [N, Fc] normalised; labels, weights, ratings [N]
    (ratings NaN for negatives); prior [N]; fill: the rating of an empty bag.
    """

    tables: FeatureTables
    history_ratings: np.ndarray
    max_history: int
    contexts: np.ndarray
    items: np.ndarray
    watch_end: np.ndarray
    continuous: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    ratings: np.ndarray
    prior: np.ndarray
    fill: float

    def __len__(self) -> int:
        return len(self.contexts)

    def take(self, idx: np.ndarray) -> RatedExamples:
        """The examples idx [M], with the same contexts' tables."""
        per_example = ("contexts", "items", "watch_end", "continuous", "labels", "weights", "ratings", "prior")
        return dataclasses.replace(self, **{name: getattr(self, name)[idx] for name in per_example})

    def batch(self, idx: np.ndarray) -> RatedBatch:
        return assemble_rated_batch(
            self.tables, self.history_ratings, self.max_history, self.contexts[idx], self.items[idx],
            self.watch_end[idx], self.continuous[idx], self.labels[idx], self.weights[idx],
            self.ratings[idx], share_contexts=True, prior=self.prior[idx], fill=self.fill)

    def batches(self, batch_size: int, rng: np.random.Generator, shard: Shard | None = None) -> Iterator[RatedBatch]:
        """One epoch: the contexts in random order, each one's examples together (in random
        order), cut every batch_size examples. A batch builds each context's bags once for all
        its examples (about 50 on ml-1m): most of a step's work when every example had its own."""
        group = self.contexts * (int(self.watch_end.max(initial=0)) + 1) + self.watch_end  # [N]
        distinct, inverse = np.unique(group, return_inverse=True)
        rank = rng.permutation(len(distinct))[inverse]  # [N] the random position of its context
        order = np.lexsort((rng.random(len(self)), rank))
        for idx in (shard or Shard()).cut(order, batch_size):  # ``shard``: this process's part
            yield self.batch(idx)
