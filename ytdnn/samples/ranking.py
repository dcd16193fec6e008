"""Ranking examples (paper §4): one row per impression, features from strictly earlier events.

An impression (user, item, time t) becomes:

- the impressed item's id, the bag of the user's last <= H watches before t and the last watch
  alone, all in the ranker's item id space (one embedding table, each fed separately, §4.1);
- the user's categorical / continuous features, the item's categoricals and category bag (the
  users' and items' extra columns among them: features/users.py, features/items.py; an item's
  extra numbers and lists join the continuous and binary features, features/ranking.py);
- continuous features, raw here and normalised later by the ranker's quantile normalizer, each
  named and computed in one table (features/ranking.py ``CONTINUOUS``): the candidate generator's
  score and rank for the user's history before t (``candidate_features``, whose rank serving
  computes alike: ``corpus_ranks``), the time since the user's last watch, the number of earlier
  impressions of this item to this user (churn), the time since the upload, and the user's
  earlier watches from the item's channel and of the item itself;
- the label (clicked) and the weight (watch time if clicked, else 1; §4.2).

"Strictly earlier" is one rule everywhere: an event at the impression's own second is not history.
Everything is vectorized over impressions; nothing loops per event in Python.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from ytdnn.retrieval.generator import logits
from ytdnn.samples.candidate import assemble_batch
from ytdnn.samples.sharding import Shard
from ytdnn.samples.streams import EventStreams, window_positions, windows

# "Time since" of something that never happened: longer than any real gap in any time unit
# (2**62 s, ms, µs or even ns is more than a century), so no input depends on the timestamps' unit.
NEVER = float(2**62)
# The window of "item_watches_recent", as a share of the training log's span: the item's trend,
# not its lifetime. 1/30 is a week on ml-100k's 7 months; a share, not a number of days, keeps the
# feature the same when the time axis is stretched.
RECENT_SHARE = 1 / 30


@dataclasses.dataclass
class RankingBatch:
    """B impressions as model inputs (bags as EmbeddingBag ids + offsets, no padding rows).

    items [B] ranker item ids; watch_ids [Nw] + watch_offsets [B] (last <= H watches);
    last_ids [Nl] + last_offsets [B] (the last watch, 0 or 1 id); user_categorical [B, Cu];
    user_continuous [B, Fu]; item_categorical [B, Ci]; category_ids [Nc] + category_offsets [B];
    continuous [B, Fc] normalised; labels, weights [B] float32 (None at serving); prior [B] the
    candidate generator's raw logit of the item (the ranker's optional skip input), or [B, 1 + S]
    with each candidate source's raw score after it (RankerConfig.source_skips).
    row_context: None, or [B] row of each impression in the user-side inputs (bags and user
    features), which then hold one row per distinct (user, history) context instead of B: at
    serving, 500 candidates share one user's bags.
    """

    items: torch.Tensor
    watch_ids: torch.Tensor
    watch_offsets: torch.Tensor
    last_ids: torch.Tensor
    last_offsets: torch.Tensor
    user_categorical: torch.Tensor
    user_continuous: torch.Tensor
    item_categorical: torch.Tensor
    category_ids: torch.Tensor
    category_offsets: torch.Tensor
    continuous: torch.Tensor
    labels: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    row_context: torch.Tensor | None = None
    prior: torch.Tensor | None = None
    pages: torch.Tensor | None = None  # [B] page ids (training only: the page softmax's groups)

    def __len__(self) -> int:
        return len(self.items)


@dataclasses.dataclass
class FeatureTables:
    """Per-user and per-item arrays a batch gathers from.

    history [W] ranker item ids of the streams' watches, watch_offsets [U + 1];
    user_categorical [U, Cu], user_continuous [U, Fu] (the streams'); item_categorical [V, Ci],
    category_ids [M], category_offsets [V + 1] (the ranker's item features).
    """

    history: np.ndarray
    watch_offsets: np.ndarray
    user_categorical: np.ndarray
    user_continuous: np.ndarray
    item_categorical: np.ndarray
    category_ids: np.ndarray
    category_offsets: np.ndarray


def assemble_ranking_batch(
    tables: FeatureTables, max_history: int, users: np.ndarray, items: np.ndarray,
    watch_end: np.ndarray, continuous: np.ndarray,
    labels: np.ndarray | None = None, weights: np.ndarray | None = None, share_contexts: bool = False,
    prior: np.ndarray | None = None, pages: np.ndarray | None = None,
) -> RankingBatch:
    """Gather B rows. users, items, watch_end [B]; continuous [B, Fc] float32; prior [B].

    share_contexts: build the user-side inputs once per distinct (user, watch_end) and set
    ``row_context`` (worth it when many rows share a user, as candidates at serving do).
    """
    row_context = None
    if share_contexts:
        first, row_context = group_rows(users, watch_end)
        first = first[np.argsort(row_context[first])]  # context c's first row
        users, watch_end = users[first], watch_end[first]
    start = tables.watch_offsets[users]
    watch_ids, watch_offsets = windows(tables.history, start, watch_end, max_history)
    last_ids, last_offsets = windows(tables.history, start, watch_end, 1)
    category_ids, category_offsets = windows(
        tables.category_ids, tables.category_offsets[items], tables.category_offsets[items + 1], None
    )

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    return RankingBatch(
        items=t(items.astype(np.int64)), watch_ids=t(watch_ids), watch_offsets=t(watch_offsets),
        last_ids=t(last_ids), last_offsets=t(last_offsets),
        user_categorical=t(tables.user_categorical[users]), user_continuous=t(tables.user_continuous[users]),
        item_categorical=t(tables.item_categorical[items]),
        category_ids=t(category_ids), category_offsets=t(category_offsets),
        continuous=t(continuous.astype(np.float32)),
        labels=None if labels is None else t(labels.astype(np.float32)),
        weights=None if weights is None else t(weights.astype(np.float32)),
        row_context=None if row_context is None else t(row_context),
        prior=None if prior is None else t(prior.astype(np.float32)),
        pages=None if pages is None else t(pages.astype(np.int64)),
    )


@dataclasses.dataclass
class RankingExamples:
    """N training impressions with their features; ``batches`` yields shuffled RankingBatches.

    users [N] stream rows; items [N] ranker ids; watch_end [N] where each history ends in the
    streams; continuous [N, Fc] normalised; labels [N] 0/1; weights [N]; pages [N] page ids;
    prior [N] the generator's raw logits.
    """

    tables: FeatureTables
    max_history: int
    users: np.ndarray
    items: np.ndarray
    watch_end: np.ndarray
    continuous: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    pages: np.ndarray
    prior: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, idx: np.ndarray) -> RankingBatch:
        return assemble_ranking_batch(
            self.tables, self.max_history, self.users[idx], self.items[idx], self.watch_end[idx],
            self.continuous[idx], self.labels[idx], self.weights[idx], prior=self.prior[idx],
            pages=self.pages[idx],
        )

    def batches(self, batch_size: int, rng: np.random.Generator, shard: Shard | None = None,
                by_page: bool = False) -> Iterator[RankingBatch]:
        """One epoch in random order; ``shard``: this process's part of each global batch.
        by_page: pages in random order, each page's rows together (a page cut by a batch's end
        goes on in the next), for losses over pages."""
        order = rng.permutation(len(self))
        if by_page:
            distinct, page = np.unique(self.pages, return_inverse=True)
            order = order[np.argsort(rng.permutation(len(distinct))[page[order]], kind="stable")]
        for idx in (shard or Shard()).cut(order, batch_size):
            yield self.batch(idx)


# ---- "strictly earlier" counts ------------------------------------------------------------------


def earlier_events(
    event_keys: np.ndarray, event_times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the events with its key strictly before its time: how many, and the last time.

    event_keys, event_times [E]; query_keys, query_times [Q] (int64) -> counts int64 [Q],
    last float64 [Q] (NaN where the count is 0). The events' keys and times are replaced by their
    dense ranks, so one int64 (key, time) code sorts both whatever their range; a query finds its
    codes by binary search. Only the E events are sorted, never the Q queries: at serving Q is a
    page of hundreds of candidates per user against a history of tens of events.
    """
    counts = np.zeros(len(query_keys), np.int64)
    last = np.full(len(query_keys), np.nan)
    if len(event_keys) == 0 or len(query_keys) == 0:
        return counts, last
    keys, key_code = np.unique(event_keys, return_inverse=True)  # [K], [E]
    time_values, time_code = np.unique(event_times, return_inverse=True)  # [T], [E]
    span = len(time_values) + 1  # a query's time code may be T: after every event
    events = np.sort(key_code.astype(np.int64) * span + time_code)  # [E]
    key_start = np.r_[0, np.cumsum(np.bincount(key_code, minlength=len(keys)))]  # [K + 1] in events
    q_key = np.searchsorted(keys, query_keys)  # [Q] the query key's rank, where it is an event key
    found = keys[np.minimum(q_key, len(keys) - 1)] == query_keys
    q_time = np.searchsorted(time_values, query_times, side="left")  # event times strictly before
    below = np.searchsorted(events, q_key * span + q_time, side="left")  # (key, time) < query's
    counts[found] = (below - key_start[q_key])[found]
    has = counts > 0
    last[has] = time_values[events[below[has] - 1] % span]
    return counts, last


def user_events(offsets: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every event of the distinct ``users`` in a CSR stream, and each one's user.

    offsets [U + 1]; users [Q] -> (positions [E], user rows [E]). At serving this keeps the work
    to the few users asked about instead of the whole log.
    """
    distinct = np.unique(users)
    positions, _ = window_positions(offsets[distinct], offsets[distinct + 1], None)
    return positions, np.repeat(distinct, offsets[distinct + 1] - offsets[distinct])


# ---- the candidate generator's view ---------------------------------------------------------------


def group_rows(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of equal-length int columns: (first row of each group [G], group of each row [N])."""
    order = np.lexsort(columns[::-1])
    sorted_cols = [c[order] for c in columns]
    new = np.ones(len(order), bool)
    if len(order):
        new[1:] = np.any([np.diff(c) != 0 for c in sorted_cols], axis=0)
    group_sorted = np.cumsum(new) - 1
    inverse = np.empty(len(order), np.int64)
    inverse[order] = group_sorted
    return order[new], inverse


@torch.no_grad()
def candidate_features(
    generator, streams: EventStreams, users: np.ndarray, watch_end: np.ndarray, token_end: np.ndarray,
    gen_items: np.ndarray, contexts_per_chunk: int = 256, rows_per_chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """The generator's logit and corpus rank (1 = best) of each impressed item, for the user's
    history ending at watch_end / token_end, example age 0, as a live system would have scored it.

    users, watch_end, token_end, gen_items [Q] (generator ids, 0 = unknown to it) -> score,
    rank float64 [Q]. An unknown item gets the context's lowest score and the last rank.
    Impressions sharing a context (a page) share one user vector.
    """
    model = generator.model_.eval()
    first, context = group_rows(users, watch_end, token_end)  # [G], [Q]
    order = np.argsort(context, kind="stable")
    bounds = np.searchsorted(context[order], np.arange(0, len(first) + contexts_per_chunk, contexts_per_chunk))
    score, rank = np.zeros(len(users)), np.zeros(len(users))
    for c0, (a, b) in enumerate(itertools.pairwise(bounds)):
        ctx = first[c0 * contexts_per_chunk : (c0 + 1) * contexts_per_chunk]
        if not len(ctx):
            break
        batch = assemble_batch(streams, generator.example_cfg, users[ctx], streams.watch_items,
                               watch_end[ctx], token_end[ctx], np.full(len(ctx), generator.featurizer_.serving_age), None)
        full = logits(model.user_vector(batch), model).numpy()  # [C, V] u · v + b
        full[:, 0] = np.inf  # padding: excluded from ranks and minima below
        lowest = full.min(axis=1)  # [C] (finite: real items only)
        full[:, 0] = -np.inf
        for r0 in range(a, b, rows_per_chunk):
            rows = order[r0 : min(b, r0 + rows_per_chunk)]
            local = context[rows] - c0 * contexts_per_chunk  # [R]
            items = gen_items[rows]
            known = items > 0
            s = np.where(known, full[local, items], lowest[local])  # [R] float32
            score[rows] = s
            rank[rows] = np.where(known, corpus_ranks(full, local, s), full.shape[1] - 1)
    return score, rank


def corpus_ranks(pool: np.ndarray, context: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The candidate rank, one definition for the pages a ranker learns from and the candidates
    it serves: 1 + how many real catalogue items score strictly above (1 = the best).

    pool float [C, P]: per context (a user's history) the scores of the items that may score
    above, -inf for none (the padding id 0 and empty slots, never counted): every item's, or at
    serving from an exact index the retrieved list's and the watched items', which hold every
    item above any retrieved one. context [R]: each score's row of pool; scores [R] -> float64 [R].
    Two exact ways to count, by cost: a comparison with the whole row (few scores per context,
    as on training pages), or a binary search in the sorted row (hundreds, as at serving).
    """
    pool, context, scores = np.asarray(pool), np.asarray(context, np.int64), np.asarray(scores)
    if pool.dtype == np.float32 and scores.dtype != np.float32 and np.array_equal(scores.astype(np.float32), scores):
        scores = scores.astype(np.float32)  # float32 values: compared alike, without widening the pool
    width, contexts = pool.shape[1], np.count_nonzero(np.bincount(context, minlength=len(pool)))
    if len(scores) <= contexts * np.log2(max(width, 2)):  # R * P comparisons cost less than the sorts
        return 1.0 + np.count_nonzero(pool[context] > scores[:, None], axis=1)
    above = np.empty(len(scores), np.int64)
    order = np.argsort(context, kind="stable")
    bounds = np.searchsorted(context[order], np.arange(len(pool) + 1))
    for c, (a, b) in enumerate(itertools.pairwise(bounds)):
        if a < b:
            rows = order[a:b]
            above[rows] = width - np.searchsorted(np.sort(pool[c]), scores[rows], side="right")
    return 1.0 + above


def history_end(offsets: np.ndarray, event_times: np.ndarray, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Where each user's events strictly before ``times`` end in a stream sorted by (user, time).

    offsets [U + 1]; event_times [E]; users, times [Q] -> positions [Q] in [offsets[u], offsets[u + 1]].
    """
    values, code = np.unique(np.concatenate([event_times, times]), return_inverse=True)
    span = max(len(values), 1)
    event_users = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    events = event_users * span + code[: len(event_times)]  # sorted: the stream is (user, time) ordered
    return np.searchsorted(events, users * span + code[len(event_times) :], side="left").astype(np.int64)
