"""Ranker pages for unordered logs (no timestamps, the ml-1m fold files): a random holdout.

An unordered log has no "moment" to request a page at and no "next watches" to click, so the
pages of ``samples.impressions`` cannot be built. Instead, as ``samples.ratings`` does for rated
pairs, each user's items are split at random:

- held out: a share ``ImpressionConfig.holdout`` of the user's distinct items (at least 1, at
  most all but one; users with a single distinct item keep it and get no page), drawn with a
  numpy Generator seeded by ``ImpressionConfig.seed``; every watch of a held-out item goes;
- kept: the rest, the stacking generator's (and the stacking sources') whole training log, so
  no source has seen a page's positives (the leak ``samples.impressions`` explains).

One page per user with held-out items: what serving would show for the kept history, i.e. the
blend (``retrieval.blend``) of the stacking sources: the generator's top ``num_candidates`` and
each other source's top n_s, the kept items excluded. Clicked = the page's held-out items, whose
watch time is their ``watch_time`` (MovieLens: the rating; 1 when the log has none; an item
watched twice: its first row's); the rest are negatives, of which ``negatives_per_page`` are kept,
drawn with the page's key of (seed, user) (as ``samples.impressions``).

Time: every event of an unordered log is at time 0, so the pages are at time 1: the whole kept
history is "strictly earlier", as ``Ranker.fit_ratings`` takes it. Serving behind the generator
trained on everything asks at ``window_end_ + 1`` = 1 too, so the time features agree: seconds
since the last watch (of the channel, of the category) are 1 (or "never"), recent watches 0.

    kept, held = split_holdout(dataset.watches, cfg.holdout, cfg.seed)
    stacking = stacking_generator(generator, dataset, kept)   # samples.impressions
    pages = holdout_pages(stacking, held, cfg, sources)     # canonical impressions table
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ytdnn.retrieval.base import Context
from ytdnn.retrieval.blend import Sources, blend
from ytdnn.retrieval.generator import GeneratorSource
from ytdnn.samples.impressions import ImpressionConfig, page_table, stack_pages
from ytdnn.samples.keys import id_hashes, user_keys

PAGE_TIME = 1  # an unordered log's events are at 0: its pages (and serving) come just after


def split_holdout(watches: pa.Table, share: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """(kept, held) rows of ``watches``, each in the input's row order: per user, a random
    ``share`` of its distinct items (rounded, at least 1, at most all but one) is held out with
    all its watches. Users with one distinct item keep everything."""
    users = np.unique(watches.column("user_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    items = np.unique(watches.column("item_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    width = int(items.max(initial=0)) + 1
    pairs, pair_of = np.unique(users.astype(np.int64) * width + items, return_inverse=True)  # [P], [W]
    owner = pairs // width  # [P] the user of each distinct (user, item) pair, sorted by user
    distinct = np.bincount(owner, minlength=int(users.max(initial=-1)) + 1)  # [U] distinct items
    held_count = np.minimum(np.maximum(np.rint(share * distinct), 1), distinct - 1)  # [U]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pairs)), owner))  # random within each user
    start = np.cumsum(distinct) - distinct
    rank = np.empty(len(pairs), np.int64)
    rank[order] = np.arange(len(pairs)) - start[owner[order]]  # [P] random position within its user
    held = (rank < held_count[owner])[pair_of]  # [W]
    return watches.filter(pa.array(~held)), watches.filter(pa.array(held))


def holdout_pages(generator, held: pa.Table, cfg: ImpressionConfig | None = None,
                  sources: Sources | None = None, users_per_chunk: int = 512) -> pa.Table:
    """An impressions table (canonical schema), one page per user of ``held`` that ``generator``
    knows, at time ``PAGE_TIME``.

    generator: the stacking generator, fitted on the kept watches (its ``streams_`` are each
    user's history); held: the held-out watches (user_id, item_id, optional watch_time).
    sources: the blend ``[(GeneratorSource(generator), N), (source, n_s), ...]`` over the same
    kept log; None = the generator's top ``cfg.num_candidates`` alone."""
    cfg = cfg or ImpressionConfig()
    f, streams = generator.featurizer_, generator.streams_
    sources = sources or [(GeneratorSource(generator), cfg.num_candidates)]
    held_users = f.users_.encode(held.column("user_id"))  # [H] user rows, 0 = unknown
    held_items = f.items_.encode(held.column("item_id"))  # [H] catalogue ids, 0 = unknown
    seconds = (held.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float64)
               if "watch_time" in held.column_names else np.ones(len(held)))
    rows = np.unique(held_users[held_users > 0])  # [R] one page each
    pages = []
    for a in range(0, len(rows), users_per_chunk):
        ctx = Context.whole(streams, rows[a : a + users_per_chunk], PAGE_TIME)  # the kept history
        pages.append(blend(sources, ctx)[0])
    candidates = stack_pages(pages, cfg.num_candidates)  # [R, N]
    clicked, watch_time = _clicks(rows, candidates, held_users, held_items, seconds, f.num_items)
    keys = user_keys(cfg.seed, np.r_[np.uint64(0), id_hashes(f.users_.tokens_)][rows], np.zeros(len(rows)))
    return page_table(f, rows, np.full(len(rows), PAGE_TIME), candidates, clicked, watch_time, cfg,
                      "<holdout pages>", keys)


def _clicks(rows: np.ndarray, candidates: np.ndarray, held_users: np.ndarray, held_items: np.ndarray,
            seconds: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """clicked bool [R, N] (the candidate is one of the page's user's held-out items) and watch
    time [R, N] (that item's first held-out row's, 0 where not clicked). rows [R] sorted user
    rows; candidates [R, N]; held_users, held_items, seconds [H]."""
    known = (held_users > 0) & (held_items > 0)
    keys = held_users[known].astype(np.int64) * num_items + held_items[known]  # [H'] (user, item)
    distinct, first = np.unique(keys, return_index=True)
    if not len(distinct):
        return np.zeros(candidates.shape, bool), np.zeros(candidates.shape)
    queries = rows[:, None].astype(np.int64) * num_items + candidates  # [R, N]
    at = np.clip(np.searchsorted(distinct, queries), 0, len(distinct) - 1)
    clicked = (distinct[at] == queries) & (candidates > 0)
    return clicked, np.where(clicked, seconds[known][first[at]], 0.0)
