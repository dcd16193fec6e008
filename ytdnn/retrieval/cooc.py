"""Item-to-item co-occurrence as a candidate source ("users who watched this then watched ...").

Fit (on the training streams, catalogue ids; id 0 and self-pairs never count):

- ordered logs: a pair {a, b} co-occurs in a user's stream when b is among the ``window`` watches
  that follow a (either direction: a then b and b then a count alike);
- unordered logs: every pair of the user's distinct items; a user with more than
  ``max_pairs_per_user`` pairs gets that many uniform draws instead (with replacement, from a
  numpy Generator seeded by ``seed``; repeats collapse), so no heavy user costs more than the cap.

n_ab is the number of *users* in whose stream {a, b} co-occurs (a user who alternates two items a
hundred times counts once), n_a the number of users who watched a; the similarity is the cosine
n_ab / sqrt(n_a n_b), in (0, 1]. Each item keeps its ``neighbours`` most similar items (ties to
the lower id), stored as CSR arrays sorted by (item, neighbour id).

State: each user's ``recent`` most recently watched distinct items (latest watch of each), with
weight ``decay ** r`` at recency position r (the last watch r = 0 weighs 1, the one before
``decay``, ...). An unordered log has no recency: every distinct item of the history, weight 1.
score(b) = sum_r w_r sim(r, b), 0 where no recent item links to b; ``retrieve`` nominates only
items with a positive score (the rest of the k slots are id 0 / -inf).

Saved as a directory: config.json (kind "ytdnn.source.cooc") and cooc.npz (indptr [V + 1],
neighbours [L] int64, similarity [L] float32; loaded with allow_pickle=False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ytdnn.config import Config
from ytdnn.features import check_fitted
from ytdnn.modeldir import ModelDir
from ytdnn.retrieval.base import (
    Context,
    check_exclude,
    check_items,
    check_k,
    check_streams,
    distinct_pairs,
    write_config,
)
from ytdnn.samples.streams import EventStreams, window_positions

KIND = "ytdnn.source.cooc"
FORMAT_VERSION = 1
ARRAYS = "cooc.npz"


@dataclass(frozen=True)
class CoocConfig(Config):
    window: int = 5  # ordered logs: b co-occurs with a when among the next `window` watches
    neighbours: int = 100  # most similar items kept per item
    recent: int = 10  # distinct recent watches that nominate
    decay: float = 0.8  # weight of recency position r: decay ** r (the 10th weighs 0.13)
    max_pairs_per_user: int = 10_000  # unordered logs: a 142-item user's pairs, then a sample
    seed: int = 0  # unordered logs: seeds the sample of a heavy user's pairs

    def validate(self) -> None:
        for name in ("window", "neighbours", "recent", "max_pairs_per_user"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")


@dataclass
class RecentItems:
    """B users' nominating items: rows [N] (0..B-1, sorted), items [N] catalogue ids, weights [N] float64."""

    rows: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    batch: int

    def __len__(self) -> int:
        return self.batch


def _distinct(*columns: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct tuple of ``columns`` (all [N]), sorted by
    the tuple (last column first, as np.lexsort)."""
    if not len(columns[0]):
        return np.zeros(0, np.int64)
    order = np.lexsort(columns)
    new = np.ones(len(order), bool)
    new[1:] = np.any([np.diff(c[order]) != 0 for c in columns], axis=0)
    return order[new]


def _triangle(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair number t >= 0 -> (i, j), i < j, in the order (0, 1), (0, 2), (1, 2), (0, 3), ..."""
    j = np.floor((1 + np.sqrt(1 + 8 * t.astype(np.float64))) / 2).astype(np.int64)
    j -= j * (j - 1) // 2 > t  # float rounding, one step either way
    j += (j + 1) * j // 2 <= t
    return t - j * (j - 1) // 2, j


class CoocSource:
    """Co-occurrence neighbours of the recent watches (module docstring).

    Fitted: ``indptr_`` [V + 1], ``neighbours_`` [L] int64, ``similarity_`` [L] float32 (item a's
    neighbours are ``neighbours_[indptr_[a]:indptr_[a + 1]]``, ascending), ``num_items``.
    """

    name = "cooc"

    def __init__(self, cfg: CoocConfig | None = None):
        self.cfg = cfg or CoocConfig()

    def fit(self, streams: EventStreams, num_items: int) -> CoocSource:
        check_streams(streams, num_items)
        users, items = distinct_pairs(streams, np.arange(streams.num_users), streams.watch_offsets[1:])
        n_item = np.bincount(items, minlength=num_items).astype(np.float64)  # [V] users per item
        pair_users, a, b = self._pairs(streams, users, items)  # a < b, item ids > 0
        first = _distinct(b, a, pair_users)  # one per (user, pair)
        a, b = a[first], b[first]
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        start = np.flatnonzero(np.r_[True, (np.diff(a) != 0) | (np.diff(b) != 0)][: len(a)])
        count = np.diff(np.r_[start, len(a)])  # [P] n_ab: users per pair
        a, b = a[start], b[start]
        sim = count / np.sqrt(n_item[a] * n_item[b])  # [P] cosine of the user sets
        # both directions, then the best `neighbours` of each item (ties: the lower id)
        src, dst, sim = np.r_[a, b], np.r_[b, a], np.r_[sim, sim]
        order = np.lexsort((dst, -sim, src))
        src, dst, sim = src[order], dst[order], sim[order]
        rank = np.arange(len(src)) - np.searchsorted(src, src, side="left")
        keep = rank < self.cfg.neighbours
        src, dst, sim = src[keep], dst[keep], sim[keep]
        by_id = np.lexsort((dst, src))
        src, dst, sim = src[by_id], dst[by_id], sim[by_id]
        indptr = np.searchsorted(src, np.arange(num_items + 1), side="left").astype(np.int64)
        return self._set(indptr, dst.astype(np.int64), sim.astype(np.float32), num_items)

    def _pairs(self, streams: EventStreams, users: np.ndarray, items: np.ndarray):
        """(user [P], a [P], b [P]) with 0 < a < b: every co-occurrence of the fit rule."""
        if streams.ordered:
            watch_users = streams.watch_users()
            w = streams.watch_items
            parts = []
            for d in range(1, self.cfg.window + 1):  # a loop over offsets, not events
                same = watch_users[d:] == watch_users[:-d]
                parts.append((watch_users[d:][same], w[:-d][same], w[d:][same]))
            u = np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts])
            x = np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts]).astype(np.int64)
            y = np.concatenate([np.zeros(0, np.int64)] + [p[2] for p in parts]).astype(np.int64)
        else:  # pairs of distinct items within a user, capped by a uniform sample
            n = np.bincount(users, minlength=streams.num_users)  # [U] distinct items per user
            start = np.r_[0, np.cumsum(n)[:-1]]  # [U] into `items`
            total = n * (n - 1) // 2  # [U] pairs per user
            rng = np.random.default_rng(self.cfg.seed)
            cap = self.cfg.max_pairs_per_user
            full = total <= cap
            # users with few pairs: all of them; others: `cap` pair numbers drawn with replacement
            # (duplicates collapse below), so the cost is bounded by cap per user
            t_full = window_positions(np.zeros(int(full.sum()), np.int64), total[full], None)[0]
            u_full = np.repeat(np.flatnonzero(full), total[full])
            heavy = np.flatnonzero(~full)
            u_heavy = np.repeat(heavy, cap)
            t_heavy = np.floor(rng.random(len(u_heavy)) * total[u_heavy]).astype(np.int64)
            u = np.r_[u_full, u_heavy].astype(np.int64)
            i, j = _triangle(np.r_[t_full, t_heavy].astype(np.int64))
            x, y = items[start[u] + i], items[start[u] + j]
        keep = (x > 0) & (y > 0) & (x != y)
        u, x, y = u[keep], x[keep], y[keep]
        return u, np.minimum(x, y), np.maximum(x, y)

    def _set(self, indptr, neighbours, similarity, num_items: int) -> CoocSource:
        self.indptr_, self.neighbours_, self.similarity_ = indptr, neighbours, similarity
        self.num_items = int(num_items)
        owner = np.repeat(np.arange(num_items, dtype=np.int64), np.diff(indptr))
        self.keys_ = owner * num_items + neighbours  # [L] sorted: (item, neighbour) lookups
        return self

    # ---- state --------------------------------------------------------------------------------

    def encode(self, ctx: Context) -> RecentItems:
        """The last ``recent`` distinct watches before ``ctx.watch_end`` and their weights."""
        check_fitted(self, "indptr_")
        s = ctx.streams
        starts = s.watch_offsets[ctx.rows]
        positions, _ = window_positions(starts, ctx.watch_end, None)  # [N] every history event
        rows = np.repeat(np.arange(len(ctx)), np.maximum(ctx.watch_end - starts, 0))
        items = s.watch_items[positions].astype(np.int64)
        if len(items) and items.max() >= self.num_items:
            raise ValueError(f"the context's streams hold item ids up to {items.max()}, "
                             f"outside this source's catalogue of {self.num_items}")
        if not s.ordered:
            rows, items = rows[items > 0], items[items > 0]
            first = _distinct(items, rows)
            return RecentItems(rows[first], items[first], np.ones(len(first)), len(ctx))
        # the latest watch of each distinct item: per (row, item), the largest position
        order = np.lexsort((-positions, items, rows))
        rows, items, positions = rows[order], items[order], positions[order]
        latest = np.r_[True, (np.diff(rows) != 0) | (np.diff(items) != 0)][: len(rows)] & (items > 0)
        rows, items, positions = rows[latest], items[latest], positions[latest]
        order = np.lexsort((-positions, rows))  # per row, most recent first
        rows, items = rows[order], items[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")  # recency r
        keep = rank < self.cfg.recent
        return RecentItems(rows[keep], items[keep], self.cfg.decay ** rank[keep].astype(np.float64), len(ctx))

    # ---- retrieval ----------------------------------------------------------------------------

    def _links(self, state: RecentItems) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (row, item) pairs linked to the users' recent items, sorted, as one key
        row * V + item [L], and their scores sum_r w_r sim(r, item) float64 [L] (> 0)."""
        items = state.items
        positions, _ = window_positions(self.indptr_[items], self.indptr_[items + 1], None)
        length = np.diff(self.indptr_)[items]
        keys = np.repeat(state.rows, length) * self.num_items + self.neighbours_[positions]
        values = np.repeat(state.weights, length) * self.similarity_[positions]
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, np.bincount(inverse, values, minlength=len(distinct))

    def retrieve(self, state: RecentItems, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k of the positive scores -> (ids int64 [B, k], scores float32 [B, k]). Only the
        items linked to a user's recent ones can score, so this sorts those (about recent x
        neighbours per user) instead of a dense row of the catalogue."""
        check_fitted(self, "indptr_")
        k = check_k(k)
        exclude = check_exclude(exclude, len(state))
        keys, values = self._links(state)
        values = values.astype(np.float32)  # ranked in float32, as the scores are returned
        keep = values > 0
        if exclude is not None and sum(len(e) for e in exclude):
            owner = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
            banned = np.concatenate(exclude)
            inside = (banned > 0) & (banned < self.num_items)  # ids past the catalogue ban nothing
            keep &= ~np.isin(keys, owner[inside] * self.num_items + banned[inside])
        keys, values = keys[keep], values[keep]
        rows, items = keys // self.num_items, keys % self.num_items
        order = np.lexsort((items, -values, rows))  # per row: best first, ties to the lower id
        rows, items, values = rows[order], items[order], values[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        top = rank < k
        ids = np.zeros((len(state), k), np.int64)
        scores = np.full((len(state), k), -np.inf, np.float32)
        ids[rows[top], rank[top]] = items[top]
        scores[rows[top], rank[top]] = values[top]
        return ids, scores

    def score(self, state: RecentItems, items: np.ndarray) -> np.ndarray:
        """items int64 [B, n] -> float32 [B, n] = sum_r w_r sim(r, item); 0 without a link, -inf
        for id 0."""
        check_fitted(self, "indptr_")
        items = check_items(items, self.num_items, len(state))
        targets = items[state.rows]  # [N, n]
        keys = state.items[:, None] * self.num_items + targets
        at = np.minimum(np.searchsorted(self.keys_, keys), max(len(self.keys_) - 1, 0))
        found = (self.keys_[at] == keys) if len(self.keys_) else np.zeros(keys.shape, bool)
        sim = np.where(found, self.similarity_[at] if len(self.keys_) else 0.0, 0.0)
        out = np.zeros(items.shape)
        if len(state.rows):  # rows are sorted: one sum per run of a user's recent items
            starts = np.flatnonzero(np.r_[True, np.diff(state.rows) != 0])
            out[state.rows[starts]] = np.add.reduceat(state.weights[:, None] * sim, starts, axis=0)
        out = out.astype(np.float32)
        out[items == 0] = -np.inf
        return out

    # ---- model directory ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        check_fitted(self, "indptr_")
        directory = write_config(directory, KIND, FORMAT_VERSION, self.num_items, self.cfg)
        np.savez(directory / ARRAYS, indptr=self.indptr_, neighbours=self.neighbours_,
                 similarity=self.similarity_)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CoocSource:
        """A directory written by ``save``; ModelDirError (a ValueError) naming the file on failure."""
        md = ModelDir(directory, "co-occurrence source")
        with md.loading():
            config = md.config(_SCHEMA, KIND, FORMAT_VERSION)
            v = config["num_items"]
            with np.load(md.file(ARRAYS), allow_pickle=False) as arrays:
                if set(arrays.files) != {"indptr", "neighbours", "similarity"}:
                    raise md.error(f"holds arrays {sorted(arrays.files)}, not indptr, neighbours, similarity")
                indptr, neighbours, sim = arrays["indptr"], arrays["neighbours"], arrays["similarity"]
            if v < 2:
                raise md.error(f"num_items {v} is below 2")
            if (indptr.dtype != np.int64 or neighbours.dtype != np.int64 or sim.dtype != np.float32
                    or indptr.shape != (v + 1,) or neighbours.ndim != 1 or sim.shape != neighbours.shape):
                raise md.error(f"indptr, neighbours, similarity are not int64 [{v + 1}], int64 [L], float32 [L]")
            if indptr[0] != 0 or indptr[-1] != len(neighbours) or (np.diff(indptr) < 0).any():
                raise md.error("indptr is not the CSR offsets of the neighbours")
            if len(neighbours) and (neighbours.min() < 1 or neighbours.max() >= v):
                raise md.error(f"neighbours are not catalogue ids in 1..{v - 1}")
            if not (np.isfinite(sim).all() and (sim > 0).all()):
                raise md.error("similarity holds values that are not positive and finite")
            source = cls(config["config"])._set(indptr, neighbours, sim, v)
            if (np.diff(source.keys_) <= 0).any():
                raise md.error("neighbours are not ascending and distinct within each item")
            return source


_SCHEMA = {"format_version": int, "kind": str, "num_items": int, "config": CoocConfig}
