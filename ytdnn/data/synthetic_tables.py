"""Turn the world's events and entities into the canonical tables (ytdnn.data.schema).

Times become int64 seconds since the world start (floored; a user's events are >= 1 s apart, so
flooring keeps their order), everything at or after the window end is cut, and rows are sorted by
(timestamp, user_id). Page ids are numbered in the order the pages appear.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import Dataset
from ytdnn.data.synthetic_config import DEVICES, GEOS, WorldConfig
from ytdnn.data.synthetic_entities import CLICKBAIT_WORDS, Truth
from ytdnn.data.synthetic_sessions import Events

QUERY_TOKEN_P = (0.35, 0.45, 0.2)  # a query has 1, 2 or 3 tokens
TOKEN_KIND_P = (0.7, 0.15, 0.15)  # later tokens: topic word, category word, generic word


def build_dataset(
    cfg: WorldConfig, truth: Truth, events: Events, rng: np.random.Generator
) -> tuple[Dataset, np.ndarray]:
    """The five tables, and each kept watch's source code (aligned with the watches rows)."""
    user = events.session_user
    watch, imp = events.watch, events.impression
    keep_watch, keep_imp = _kept_rows(cfg, events)
    w_user = user[watch["session"][keep_watch].astype(np.int64)]
    w_time = np.floor(watch["time"][keep_watch]).astype(np.int64)
    order = np.argsort(w_time * cfg.num_users + w_user, kind="stable")  # (timestamp, user_id)
    rows = keep_watch[order]
    watches = pa.table(
        {
            "user_id": w_user[order],
            "item_id": watch["item"][rows].astype(np.int64),
            "timestamp": w_time[order],
            "watch_time": watch["watch_time"][rows].astype(np.float64),
        }
    )
    dataset = Dataset(
        watches=watches,
        searches=_searches(cfg, truth, events, rng),
        impressions=_impressions(cfg, imp, keep_imp, user),
        users=_users(cfg, truth, rng),
        items=_items(cfg, truth),
        name=f"synthetic-{cfg.seed}",
    )
    return dataset, watch["source"][rows].astype(np.int8)


def _kept_rows(cfg: WorldConfig, events: Events) -> tuple[np.ndarray, np.ndarray]:
    """Rows of watches and impressions before the window end; a page goes whole, with the
    watches it led to."""
    w, imp, watch = cfg.window_s, events.impression, events.watch
    pages = imp["page"].astype(np.int64)
    num_pages = int(pages.max()) + 1 if len(pages) else 0
    late = np.zeros(num_pages, bool)
    late[pages[imp["time"] >= w]] = True
    watch_page = watch["page"].astype(np.int64)
    on_page = watch_page >= 0  # a block of users may have no page at all: then none is
    late[watch_page[on_page & (watch["time"] >= w)]] = True
    from_late_page = np.zeros(len(watch_page), bool)
    from_late_page[on_page] = late[watch_page[on_page]]
    keep_watch = (watch["time"] < w) & ~from_late_page
    return np.flatnonzero(keep_watch), np.flatnonzero(~late[pages])


def _impressions(
    cfg: WorldConfig, imp: dict, keep: np.ndarray, session_user: np.ndarray
) -> pa.Table:
    user = session_user[imp["session"][keep].astype(np.int64)]
    time = np.floor(imp["time"][keep]).astype(np.int64)
    # (timestamp, user_id), slot order kept within a page: one page per user and second.
    order = np.argsort(time * cfg.num_users + user, kind="stable")
    rows = keep[order]
    page = imp["page"][rows]
    new_page = np.r_[True, page[1:] != page[:-1]] if len(page) else np.zeros(0, bool)
    return pa.table(
        {
            "user_id": user[order].astype(np.int64),
            "item_id": imp["item"][rows].astype(np.int64),
            "timestamp": time[order],
            "clicked": imp["clicked"][rows].astype(bool),
            "watch_time": imp["watch_time"][rows].astype(np.float64),
            "page_id": np.cumsum(new_page) - 1,  # pages numbered in order of appearance
        }
    )


def _searches(cfg: WorldConfig, truth: Truth, events: Events, rng: np.random.Generator) -> pa.Table:
    s = events.search
    keep = s["time"] < cfg.window_s
    user = events.session_user[s["session"][keep].astype(np.int64)]
    time = np.floor(s["time"][keep]).astype(np.int64)
    tokens = _query_tokens(cfg, truth, s["topic"][keep].astype(np.int64), rng)
    order = np.lexsort((user, time))
    return pa.table(
        {
            "user_id": user[order].astype(np.int64),
            "timestamp": time[order],
            "query": _join(truth.vocabulary, tokens[order]),
        }
    )


def _query_tokens(
    cfg: WorldConfig, truth: Truth, topics: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[n, 3] vocabulary indices, -1 padded: a topic word first, then topic/category/generic."""
    n = len(topics)
    n_topic_words = cfg.num_topics * cfg.words_per_topic
    n_cat_words = cfg.num_categories * cfg.words_per_category
    # Word popularity within a topic is skewed: low indices are the common words.
    topic_word = topics[:, None] * cfg.words_per_topic + (
        cfg.words_per_topic * rng.random((n, 3)) ** 2
    ).astype(np.int64)
    cat_word = (
        n_topic_words
        + truth.topic_category[topics][:, None] * cfg.words_per_category
        + rng.integers(0, cfg.words_per_category, size=(n, 3))
    )
    generic = (
        n_topic_words
        + n_cat_words
        + rng.integers(0, len(truth.vocabulary) - n_topic_words - n_cat_words, size=(n, 3))
    )
    kind = (rng.random((n, 3))[..., None] > np.cumsum(TOKEN_KIND_P)[:-1]).sum(axis=-1)
    kind[:, 0] = 0
    tokens = np.choose(kind, [topic_word, cat_word, generic])
    length = 1 + (rng.random(n)[:, None] > np.cumsum(QUERY_TOKEN_P)[:-1]).sum(axis=1)
    tokens = np.where(np.arange(3)[None, :] < length[:, None], tokens, -1)
    tokens[:, 1] = np.where(tokens[:, 1] == tokens[:, 0], -1, tokens[:, 1])  # no repeated word
    tokens[:, 2] = np.where(
        (tokens[:, 2] == tokens[:, 0]) | (tokens[:, 2] == tokens[:, 1]), -1, tokens[:, 2]
    )
    return tokens


def _join(words: np.ndarray, tokens: np.ndarray) -> pa.Array:
    """Rows of word indices (-1 = none) -> one space-joined string per row."""
    counts = (tokens >= 0).sum(axis=1)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    flat = pa.array(words).take(pa.array(tokens[tokens >= 0]))
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), flat), " ")


def _users(cfg: WorldConfig, truth: Truth, rng: np.random.Generator) -> pa.Table:
    n = cfg.num_users
    no_age = rng.random(n) < cfg.missing_demographics
    no_gender = rng.random(n) < cfg.missing_demographics
    geo_names = np.array([g for g, _, _ in GEOS[: cfg.num_geos]])
    gender = np.array(["f", "m"])[truth.user_gender]
    return pa.table(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "age": pa.array(truth.user_age, mask=no_age),
            "gender": pa.array(gender, mask=no_gender),
            "geo": geo_names[truth.user_geo],
            "device": np.array(DEVICES)[truth.user_device],
            "language": truth.languages[truth.user_language],
        }
    )


def _items(cfg: WorldConfig, truth: Truth) -> pa.Table:
    n = cfg.num_items
    width = len(str(cfg.num_channels - 1))
    channel = np.char.add("ch", np.char.zfill(truth.item_channel.astype(str), width))
    width = len(str(cfg.num_categories - 1))
    category = np.char.add(
        "cat", np.char.zfill(truth.topic_category[truth.item_topic].astype(str), width)
    )
    return pa.table(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "upload_time": truth.item_upload_time,
            "channel": channel,
            "language": truth.languages[truth.item_language],
            "categories": pa.ListArray.from_arrays(
                pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(category)
            ),
            "title": _titles(cfg, truth),
            "duration": truth.item_duration,
        }
    )


def _titles(cfg: WorldConfig, truth: Truth) -> pa.Array:
    """'[clickbait word] word word part N': two common words of the topic, episode number.

    Clickbait shows in the title for items with clickbait above one sigma, so a ranker can learn
    it from features.
    """
    n = cfg.num_items
    ids = np.arange(n)
    first = truth.item_topic * cfg.words_per_topic + (ids * 7 + truth.item_channel) % min(
        4, cfg.words_per_topic
    )
    second = truth.item_topic * cfg.words_per_topic + (ids * 3 + 1) % cfg.words_per_topic
    words = np.concatenate([np.array(CLICKBAIT_WORDS), truth.vocabulary, np.array(["part"])])
    bait = np.where(truth.item_clickbait > cfg.clickbait_sigma, ids % len(CLICKBAIT_WORDS), -1)
    offset = len(CLICKBAIT_WORDS)
    rows = np.stack([bait, first + offset, second + offset, np.full(n, len(words) - 1)], axis=1)
    titles = _join(words, rows)
    return pc.binary_join_element_wise(titles, pa.array(truth.item_episode.astype(str)), " ")
