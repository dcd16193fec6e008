"""Impressions for logs that have none (MovieLens): what the live system would have shown.

A request is a moment t in a user's log: t is the time of one of the user's watches that has at
least one strictly earlier watch. The page shown at t is the candidate generator's top
``num_candidates`` for the history strictly before t (example age 0, items already watched before
t left out). An item of the page is clicked when the user watches it among the next ``horizon``
watches from t on (t's own watch included), and its watch time is that watch's ``watch_time``
(MovieLens: the rating, the proxy of how much the user liked it; 1 when the log has none). The
rest of the page are the negatives. Each user gets at most ``requests_per_user`` random requests,
drawn among the user's last ``last_watches`` watches when that is set.

Leakage: a generator trained on the same watches has learned the positives as labels, so its
score is sharper on training pages than it will be when serving, and a ranker learns to trust it
too much. Stacking avoids that: train a generator without each user's last n watches, build the
pages with it at requests among those last n (``last_watches=n``), train the ranker on them, and
serve it behind the generator trained on everything. ``pipeline.fit_ranker`` does this whenever
``last_watches`` is set; ``stacking_generator`` trains the generator that never saw them (on
``drop_last_watches``).

A log with impressions of its own (the synthetic world) can still learn from built pages
(``source``): its logged pages come from whatever policy served them then, while the ranker will
order the candidate generator's top N, the pages that built impressions reproduce.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import torch

from ytdnn.config import Config
from ytdnn.data.schema import IMPRESSIONS, DataError, validate_table
from ytdnn.features.vocab import ARROW_TYPES
from ytdnn.retrieval.base import Context
from ytdnn.retrieval.blend import blend
from ytdnn.retrieval.generator import logits
from ytdnn.samples.candidate import assemble_batch
from ytdnn.samples.keys import id_hashes, mix, smallest_per_group, unit_interval, user_keys
from ytdnn.samples.ranking import history_end
from ytdnn.samples.streams import window_positions, windows

SOURCES = ("auto", "logged", "built", "both")
REQUESTS = 1  # the requests' purpose of ``samples.keys.user_keys`` (the examples' cap is 0)


@dataclasses.dataclass(frozen=True)
class ImpressionConfig(Config):
    num_candidates: int = 100  # the page: the generator's top N at the request
    horizon: int = 10  # clicked = watched among the next `horizon` watches
    requests_per_user: int = 20  # a few requests per user, so heavy users do not dominate
    # Keep every positive of the page but only this many random negatives (None = all): a page
    # as deep as serving ranks (500) stays affordable, and uniform subsampling scales every
    # item's learned odds alike, so the order is unchanged. (Keeping the top of the page whole
    # instead biases the rank feature: on ml-100k validation it halved NDCG@10.)
    negatives_per_page: int | None = None
    # Requests only among each user's last n watches (None = any): with a generator trained
    # without them, the generator's score on the positives is not memorised (stacking).
    last_watches: int | None = None
    # Unordered logs only (no timestamps; samples/holdout_pages.py): the share of each user's
    # distinct items held out as the page's positives (at least 1, at most all but one).
    holdout: float = 0.2
    # What the ranker learns from: "logged" (the log's impressions), "built" (pages built as
    # above), "both", or "auto": logged when the log has impressions, else built.
    source: str = "auto"
    # Built pages only: train this many rankers on pages drawn with seeds seed, seed + 1, ... and
    # serve them as one (ranking.RankerBag). On ml-100k, 5 turned +3..+10% into +12% on
    # validation, at 5x the ranker's serving cost.
    samples: int = 1
    seed: int = 0  # draws the requests and the kept negatives of the built pages

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if min(self.num_candidates, self.horizon, self.requests_per_user, self.samples) < 1:
            raise ValueError("num_candidates, horizon, requests_per_user and samples must be >= 1")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout!r}")
        for name in ("negatives_per_page", "last_watches"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be None or >= 1")


def impressions_from_candidates(generator, watches: pa.Table, cfg: ImpressionConfig | None = None,
                                searches: pa.Table | None = None, users: pa.Table | None = None,
                                requests_per_chunk: int = 512, sources=None, keyed_pages: bool = False,
                                streams=None) -> pa.Table:
    """An impressions table (canonical schema) built from ``watches`` with a fitted generator.

    The requests and the kept negatives are drawn with seeded keys of each user's own events
    (``samples.keys``): a user's pages are the same whichever other users are built with it, so
    ``ytdnn prepare`` can build them partition by partition.

    sources: the candidate sources of a blend (``retrieval.blend``), the generator's own first: a
    page is then the generator's top N followed by what each other source adds of its top n_s,
    as the pipeline serves them. keyed_pages: page ids are the pages' int64 keys, unique across
    partitions, instead of 0..R-1. streams: the logs' streams when already encoded
    (``samples.prepared.page_rows``); else ``searches`` and ``users`` are encoded with ``watches``."""
    cfg = cfg or ImpressionConfig()
    if watches.column("timestamp").null_count or not generator.featurizer_.ordered_:
        raise DataError("building impressions needs timestamped watches", column="timestamp")
    if streams is None:
        streams = generator.featurizer_.streams(watches, searches, users)
    watch_time = _stream_watch_times(generator, watches, streams)  # [W] aligned with the streams
    user_hash = np.r_[np.uint64(0), id_hashes(generator.featurizer_.users_.tokens_)]  # [U + 1]
    requests, keys = _requests(streams, user_hash, cfg)  # [R] stream positions, their keys
    req_users = streams.watch_users()[requests]
    times = streams.watch_times[requests]
    hist_end = history_end(streams.watch_offsets, streams.watch_times, req_users, times)
    token_end = history_end(streams.token_offsets, streams.token_times, req_users, times)
    pages = []
    for a in range(0, len(requests), requests_per_chunk):
        sl = slice(a, a + requests_per_chunk)
        top = _top_candidates(generator, streams, req_users[sl], hist_end[sl], token_end[sl], cfg.num_candidates)
        if sources:  # sources[0] is the generator itself, whose list is ``top``
            ctx = Context(streams, req_users[sl], hist_end[sl], token_end[sl], times[sl])
            top = blend(sources, ctx, [top] + [None] * (len(sources) - 1))[0]
        pages.append(top)
    candidates = stack_pages(pages, cfg.num_candidates)  # [R, N]
    clicked, seconds = _clicks(streams, watch_time, req_users, hist_end, candidates, cfg.horizon)
    return page_table(generator.featurizer_, req_users, times, candidates, clicked, seconds, cfg,
                      "<impressions from candidates>", keys, keyed_pages)


def stack_pages(pages: list[np.ndarray], width: int) -> np.ndarray:
    """Chunks of pages [R_i, N_i] (ids, 0 = empty slot) -> one [R, max N_i] array, padded with 0
    (a blend's pages differ in width); [0, width] when there are none."""
    width = max((p.shape[1] for p in pages), default=width)
    if not pages:
        return np.zeros((0, width), np.int64)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in pages])


def page_table(featurizer, users: np.ndarray, times: np.ndarray, candidates: np.ndarray,
               clicked: np.ndarray, seconds: np.ndarray, cfg: ImpressionConfig, source: str,
               keys: np.ndarray, keyed_pages: bool = False) -> pa.Table:
    """The impressions table (canonical schema) of R pages: users, times [R] (user rows, seconds),
    candidates [R, N] catalogue ids, clicked and seconds [R, N], keys [R] the pages' seeded keys
    (``samples.keys``); every positive and the sampled negatives (``negatives_per_page``) of each
    page, page ids 0..R-1 (or the keys, with keyed_pages)."""
    keep = ((candidates > 0) & _sampled(clicked, candidates, keys, cfg)).ravel()
    page = np.repeat(np.arange(len(users)), candidates.shape[1])[keep]
    table = pa.table({
        "user_id": _decode(featurizer.users_, users[page]),
        "item_id": _decode(featurizer.items_, candidates.ravel()[keep]),
        "timestamp": pa.array(times[page], pa.int64()),
        "clicked": pa.array(clicked.ravel()[keep]),
        "watch_time": pa.array(seconds.ravel()[keep], pa.float64()),
        "page_id": pa.array(keys[page] if keyed_pages else page, pa.int64()),
    }, schema=page_schema(featurizer))
    return validate_table(table, IMPRESSIONS, source=source)


def page_schema(featurizer) -> pa.Schema:
    """The Arrow schema of ``page_table``'s tables."""
    return pa.schema([("user_id", ARROW_TYPES[featurizer.users_.token_type_]),
                      ("item_id", ARROW_TYPES[featurizer.items_.token_type_]), ("timestamp", pa.int64()),
                      ("clicked", pa.bool_()), ("watch_time", pa.float64()), ("page_id", pa.int64())])


def drop_last_watches(watches: pa.Table, n: int) -> pa.Table:
    """Each user's watches but the last n by (timestamp, item id), in the input's row order."""
    users = np.unique(watches.column("user_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    items = np.unique(watches.column("item_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    order = np.lexsort((items, watches.column("timestamp").to_numpy(), users))
    counts = np.bincount(users)
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return watches.filter(pa.array(position < counts[users] - n))


def stacking_generator(generator, dataset, watches: pa.Table):
    """A generator with ``generator``'s configs, trained on ``watches`` (the dataset's without
    what the pages will ask about: ``drop_last_watches``, or an unordered log's kept items,
    ``samples.holdout_pages``) and the dataset's other tables, for as many epochs as
    ``generator`` ran (no validation: it stops where that one did)."""
    from ytdnn.candidates import CandidateGenerator

    history = getattr(generator, "history_", None)
    epochs = history.best_epoch + 1 if history is not None and history.best_epoch is not None else None
    train = generator.train_cfg.replace(monitor=None, patience=None,
                                        max_epochs=epochs or generator.train_cfg.max_epochs)
    return CandidateGenerator(generator.model_cfg, generator.example_cfg, train,
                              generator.max_items, generator.max_tokens).fit(
        watches, dataset.searches, dataset.users, items=dataset.items)


def _stream_watch_times(generator, watches: pa.Table, streams) -> np.ndarray:
    """watch_time of every stream position [W], by re-deriving the streams' (user, time, item) order."""
    users = generator.featurizer_.users_.encode(watches.column("user_id"))
    times = watches.column("timestamp").to_numpy().astype(np.int64)
    item_rank = np.unique(watches.column("item_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    order = np.lexsort((item_rank, times, users))
    if not np.array_equal(generator.featurizer_.items_.encode(watches.column("item_id"))[order], streams.watch_items):
        raise AssertionError("watch order differs from the streams'")  # the streams' sort changed
    if "watch_time" not in watches.column_names:
        return np.ones(len(order))
    return watches.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float64)[order]


def _requests(streams, user_hash: np.ndarray, cfg: ImpressionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stream positions of the requests [R], <= requests_per_user per user, each with history, and
    their keys [R]: each user's eligible watches with the smallest keys of (seed, user, position).
    user_hash [U + 1] by user row (``samples.keys.id_hashes``)."""
    users = streams.watch_users()
    ends = history_end(streams.watch_offsets, streams.watch_times, users, streams.watch_times)
    eligible = (ends > streams.watch_offsets[users]) & (users > 0)
    if cfg.last_watches is not None:
        eligible &= np.arange(len(users)) >= streams.watch_offsets[users + 1] - cfg.last_watches
    eligible = np.flatnonzero(eligible)
    owner = users[eligible]
    keys = user_keys(cfg.seed, user_hash[owner], eligible - streams.watch_offsets[owner], purpose=REQUESTS)
    chosen = np.sort(smallest_per_group(owner, keys, cfg.requests_per_user))  # in stream order
    return eligible[chosen], keys[chosen]


@torch.no_grad()
def _top_candidates(generator, streams, users, hist_end, token_end, n: int) -> np.ndarray:
    """Generator ids [C, n] (0 = empty slot) of the top n for each request's earlier history."""
    model = generator.model_.eval()
    batch = assemble_batch(streams, generator.example_cfg, users, streams.watch_items, hist_end, token_end,
                           np.full(len(users), generator.featurizer_.serving_age), None)
    scores = logits(model.user_vector(batch), model)  # [C, V] u · v + b
    seen, offsets = windows(streams.watch_items, streams.watch_offsets[users], hist_end, None)
    rows = np.repeat(np.arange(len(users)), np.diff(np.append(offsets, len(seen))))
    scores[torch.from_numpy(rows), torch.from_numpy(seen)] = float("-inf")  # already watched
    scores[:, 0] = float("-inf")
    values, ids = torch.topk(scores, min(n, scores.shape[1]), dim=1)
    return torch.where(torch.isfinite(values), ids, 0).numpy()


def _clicks(streams, watch_time, users, hist_end, candidates, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """clicked bool [R, N] and watch time [R, N]: the candidate is among the next horizon watches."""
    stop = np.minimum(hist_end + horizon, streams.watch_offsets[users + 1])
    positions, offsets = window_positions(hist_end, stop, None)
    request = np.repeat(np.arange(len(users)), np.diff(np.append(offsets, len(positions))))
    width = int(max(candidates.max(initial=0), streams.watch_items.max(initial=0))) + 1
    next_keys, first = np.unique(request * width + streams.watch_items[positions], return_index=True)
    keys = np.arange(len(users))[:, None] * width + candidates  # [R, N]
    where = np.clip(np.searchsorted(next_keys, keys), 0, max(len(next_keys) - 1, 0))
    clicked = (len(next_keys) > 0) & (next_keys[where] == keys) & (candidates > 0)
    seconds = np.where(clicked, watch_time[positions[first[where]]] if len(first) else 0.0, 0.0)
    return clicked, seconds


def _sampled(clicked: np.ndarray, candidates: np.ndarray, keys: np.ndarray, cfg: ImpressionConfig) -> np.ndarray:
    """[R, N] True for every positive and for <= negatives_per_page negatives per page: those
    whose keys of (page key, item) are the smallest."""
    if cfg.negatives_per_page is None:
        return np.ones(clicked.shape, bool)
    with np.errstate(over="ignore"):
        noise = unit_interval(mix(keys.view(np.uint64)[:, None] + candidates.astype(np.uint64)))
    noise[clicked] = 2.0  # positives sort last among the keys
    order = np.argsort(noise, axis=1)
    chosen = np.zeros(clicked.shape, bool)
    np.put_along_axis(chosen, order[:, : cfg.negatives_per_page], True, axis=1)
    return chosen | clicked


def _decode(vocab, ids: np.ndarray) -> pa.Array:
    return vocab.token_array.take(pa.array(ids - 1))  # ids are never 0 here (unknown users / empty slots dropped)
