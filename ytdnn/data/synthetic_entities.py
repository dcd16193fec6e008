"""The static side of the synthetic world: topics, users, channels, items and the query vocabulary.

Every array here is ground truth the generator samples events from; ``Truth`` holds them so the
world can score any (user, item, time) afterwards. Shapes: U users, I items, C channels, K topics,
m = topics_per_user, d = style_dim, V vocabulary tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ytdnn.data.synthetic_config import AGE_GROUP_EDGES, DAY, DEVICES, GEOS, WorldConfig

GENERIC_WORDS = ("how", "to", "best", "new", "video", "live", "review", "top", "full", "funny")
CLICKBAIT_WORDS = ("shocking", "unbelievable", "insane", "secret", "omg")
_CONSONANTS = np.array(list("bdfgklmnprstvz"))
_VOWELS = np.array(list("aeiou"))
_TOPIC_SPACE_DIM = 8


@dataclass(eq=False)  # holds arrays: compare fields explicitly
class Truth:
    """Ground-truth arrays (saved as .npy, so numbers and fixed-width strings only)."""

    topic_centres: np.ndarray  # [K, 8] float64; topics of a category lie close together
    topic_category: np.ndarray  # [K] int64
    user_topics: np.ndarray  # [U, m] int64, the user's topics, main topic first
    user_topic_weights: np.ndarray  # [U, m] float64, Dirichlet weights, descending
    user_style: np.ndarray  # [U, d] float32, unit vectors
    user_language: np.ndarray  # [U] int64, index into languages
    user_geo: np.ndarray  # [U] int64
    user_age: np.ndarray  # [U] float64 (the table hides some)
    user_gender: np.ndarray  # [U] int64, 0 = f, 1 = m
    user_device: np.ndarray  # [U] int64, index into DEVICES
    user_join_time: np.ndarray  # [U] float64 seconds
    user_activity: np.ndarray  # [U] float64, relative session rate
    channel_topic: np.ndarray  # [C] int64
    channel_language: np.ndarray  # [C] int64
    item_channel: np.ndarray  # [I] int64
    item_topic: np.ndarray  # [I] int64, the channel's topic
    item_language: np.ndarray  # [I] int64, the channel's language
    item_upload_time: np.ndarray  # [I] int64 seconds; negative = back catalogue
    item_popularity: np.ndarray  # [I] float64 > 0
    item_duration: np.ndarray  # [I] float64 seconds
    item_clickbait: np.ndarray  # [I] float64
    item_style: np.ndarray  # [I, d] float32, unit vectors
    item_episode: np.ndarray  # [I] int64, 1-based rank of the upload within its channel
    item_next_in_channel: np.ndarray  # [I] int64, the channel's next upload, -1 for the last
    languages: np.ndarray  # [L] str
    vocabulary: np.ndarray  # [V] str, query/title words
    token_topic: np.ndarray  # [V] int64, topic of a topic word, else -1
    token_category: np.ndarray  # [V] int64, category of a topic or category word, else -1

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_truth(cfg: WorldConfig, rng: np.random.Generator) -> Truth:
    """Draw topics, users, channels, items and words, in that order (fixed for determinism)."""
    languages = np.array(sorted({lang for _, lang, _ in GEOS[: cfg.num_geos]} | {"en"}))
    centres, category = _topics(cfg, rng)
    users = _users(cfg, rng, languages)
    users.update(_user_interests(cfg, rng, users))
    channels = _channels(cfg, rng, users, len(languages))
    items = _items(cfg, rng, channels)
    vocab = _vocabulary(cfg, rng, category)
    return Truth(
        topic_centres=centres,
        topic_category=category,
        languages=languages,
        **users,
        **channels,
        **items,
        **vocab,
    )


def _topics(cfg: WorldConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Every category gets at least one topic; a topic sits near its category's centre, so
    # "neighbour topic" drift in sessions mostly stays inside a category.
    category = np.concatenate(
        [
            np.arange(cfg.num_categories),
            rng.integers(0, cfg.num_categories, cfg.num_topics - cfg.num_categories),
        ]
    )
    category = np.sort(category)
    cat_centres = rng.normal(size=(cfg.num_categories, _TOPIC_SPACE_DIM))
    centres = cat_centres[category] + 0.5 * rng.normal(size=(cfg.num_topics, _TOPIC_SPACE_DIM))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True), category.astype(np.int64)


def _users(cfg: WorldConfig, rng: np.random.Generator, languages: np.ndarray) -> dict:
    u = cfg.num_users
    weights = np.array([w for _, _, w in GEOS[: cfg.num_geos]])
    geo = rng.choice(cfg.num_geos, size=u, p=weights / weights.sum())
    geo_language = np.searchsorted(languages, [lang for _, lang, _ in GEOS[: cfg.num_geos]])
    english = np.searchsorted(languages, "en")
    language = np.where(rng.random(u) < 0.85, geo_language[geo], english)
    age = np.clip(13.0 + rng.lognormal(np.log(16.0), 0.6, size=u), 13.0, 85.0).round()
    gender = rng.integers(0, 2, size=u)
    # Young users lean to mobile, older ones to desktop and tv.
    old = (age > 40).astype(float)[:, None]
    device_p = (1 - old) * np.array([0.7, 0.15, 0.05, 0.1]) + old * np.array([0.35, 0.35, 0.2, 0.1])
    device = (rng.random(u)[:, None] > np.cumsum(device_p, axis=1)).sum(axis=1)
    late = rng.random(u) < cfg.late_user_share
    join = np.where(late, rng.uniform(0, 0.9 * cfg.window_s, size=u), 0.0)
    activity = rng.lognormal(0.0, 1.0, size=u)
    return {
        "user_geo": geo.astype(np.int64),
        "user_language": language.astype(np.int64),
        "user_age": age,
        "user_gender": gender.astype(np.int64),
        "user_device": np.minimum(device, len(DEVICES) - 1).astype(np.int64),
        "user_join_time": join,
        "user_activity": activity,
    }


def _user_interests(cfg: WorldConfig, rng: np.random.Generator, users: dict) -> dict:
    # The topic prior is shifted by geo, age group, gender and device, so demographics predict
    # interests (the cold-start signal of paper §3.3).
    k, s = cfg.num_topics, cfg.demographic_strength
    age_group = np.searchsorted(AGE_GROUP_EDGES, users["user_age"], side="right")
    logits = (
        rng.normal(0.0, 0.5, size=k)
        + s * rng.normal(0.0, 1.0, size=(cfg.num_geos, k))[users["user_geo"]]
        + s * rng.normal(0.0, 0.8, size=(len(AGE_GROUP_EDGES) + 1, k))[age_group]
        + s * rng.normal(0.0, 0.6, size=(2, k))[users["user_gender"]]
        + s * rng.normal(0.0, 0.3, size=(len(DEVICES), k))[users["user_device"]]
    )
    # Gumbel top-m: m distinct topics per user drawn from softmax(logits), best first.
    perturbed = logits + rng.gumbel(size=logits.shape)
    m = cfg.topics_per_user
    top = np.argpartition(-perturbed, m - 1, axis=1)[:, :m]
    best_first = np.argsort(-np.take_along_axis(perturbed, top, axis=1), axis=1)
    topics = np.take_along_axis(top, best_first, axis=1)
    weights = -np.sort(-rng.gamma(1.0, size=topics.shape), axis=1)
    style = rng.normal(size=(cfg.num_users, cfg.style_dim))
    return {
        "user_topics": topics.astype(np.int64),
        "user_topic_weights": weights / weights.sum(axis=1, keepdims=True),
        "user_style": (style / np.linalg.norm(style, axis=1, keepdims=True)).astype(np.float32),
    }


def _channels(cfg: WorldConfig, rng: np.random.Generator, users: dict, num_languages: int) -> dict:
    k = cfg.num_topics
    # Creators follow their audience: topic demand and the topic's audience languages.
    demand = np.zeros((k, num_languages))
    np.add.at(
        demand, (users["user_topics"], users["user_language"][:, None]), users["user_topic_weights"]
    )
    demand += 1e-3
    topic_p = demand.sum(axis=1) / demand.sum()
    topic = np.concatenate([np.arange(k), rng.choice(k, size=cfg.num_channels - k, p=topic_p)])
    lang_cdf = np.cumsum(demand / demand.sum(axis=1, keepdims=True), axis=1)[topic]
    language = (rng.random(cfg.num_channels)[:, None] > lang_cdf).sum(axis=1)
    return {
        "channel_topic": topic.astype(np.int64),
        "channel_language": np.minimum(language, num_languages - 1).astype(np.int64),
    }


def _items(cfg: WorldConfig, rng: np.random.Generator, channels: dict) -> dict:
    c, n = cfg.num_channels, cfg.num_items
    productivity = rng.lognormal(0.0, 1.0, size=c)
    channel = np.concatenate(
        [np.arange(c), rng.choice(c, size=n - c, p=productivity / productivity.sum())]
    )
    back = rng.random(n) < cfg.back_catalog_share
    upload = np.where(
        back,
        -rng.uniform(0, cfg.back_catalog_days * DAY, size=n),
        rng.uniform(0, cfg.window_s, size=n),
    )
    # Item k (< num_topics) is channel k's, whose topic is k: put it in the back catalogue so
    # every topic has something to watch from the first second.
    first = upload[: cfg.num_topics]
    first[first > 0] = -rng.uniform(
        0, max(cfg.back_catalog_days * DAY, 1.0), size=(first > 0).sum()
    )
    upload = np.floor(upload).astype(np.int64)
    channel_pop = rng.lognormal(0.0, cfg.popularity_sigma, size=c)
    channel_duration = rng.lognormal(np.log(cfg.median_duration_s), 0.8, size=c)
    channel_bait = rng.normal(0.0, 0.8 * cfg.clickbait_sigma, size=c)
    channel_style = rng.normal(size=(c, cfg.style_dim))
    style = channel_style[channel] + 0.3 * rng.normal(size=(n, cfg.style_dim))
    duration = channel_duration[channel] * rng.lognormal(0.0, 0.3, size=n)
    episode, following = _series(channel, upload)
    return {
        "item_channel": channel.astype(np.int64),
        "item_topic": channels["channel_topic"][channel],
        "item_language": channels["channel_language"][channel],
        "item_upload_time": upload,
        "item_popularity": channel_pop[channel] * rng.lognormal(0.0, 0.7, size=n),
        "item_duration": np.clip(np.round(duration), 15.0, 3 * 3600.0),
        "item_clickbait": channel_bait[channel]
        + rng.normal(0.0, 0.6 * cfg.clickbait_sigma, size=n),
        "item_style": (style / np.linalg.norm(style, axis=1, keepdims=True)).astype(np.float32),
        "item_episode": episode,
        "item_next_in_channel": following,
    }


def _series(channel: np.ndarray, upload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A channel's items in upload order form a series: episode numbers and the next episode."""
    order = np.lexsort((np.arange(len(channel)), upload, channel))
    ch = channel[order]
    first = np.r_[True, ch[1:] != ch[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(ch)), 0))
    episode = np.empty(len(ch), np.int64)
    episode[order] = np.arange(len(ch)) - start + 1
    following = np.full(len(ch), -1, np.int64)
    same = ch[1:] == ch[:-1]
    following[order[:-1][same]] = order[1:][same]
    return episode, following


def _vocabulary(cfg: WorldConfig, rng: np.random.Generator, category: np.ndarray) -> dict:
    k, c = cfg.num_topics, cfg.num_categories
    n_topic, n_cat = k * cfg.words_per_topic, c * cfg.words_per_category
    words = _pseudo_words(rng, n_topic + n_cat)
    vocabulary = np.concatenate([words, np.array(GENERIC_WORDS)])
    token_topic = np.full(len(vocabulary), -1, np.int64)
    token_topic[:n_topic] = np.repeat(np.arange(k), cfg.words_per_topic)
    token_category = np.full(len(vocabulary), -1, np.int64)
    token_category[:n_topic] = category[token_topic[:n_topic]]
    token_category[n_topic : n_topic + n_cat] = np.repeat(np.arange(c), cfg.words_per_category)
    return {"vocabulary": vocabulary, "token_topic": token_topic, "token_category": token_category}


def _pseudo_words(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct pronounceable lowercase words of 2-4 syllables, e.g. 'kamivo'."""
    words: list[str] = []
    seen = set(GENERIC_WORDS) | set(CLICKBAIT_WORDS) | {"part"}
    while len(words) < count:
        n = 2 * (count - len(words)) + 16
        syllables = rng.integers(2, 5, size=n)
        cons = _CONSONANTS[rng.integers(0, len(_CONSONANTS), size=(n, 4))]
        vows = _VOWELS[rng.integers(0, len(_VOWELS), size=(n, 4))]
        parts = np.char.add(cons, vows)
        parts[np.arange(4)[None, :] >= syllables[:, None]] = ""
        for word in ("".join(row) for row in parts):  # a few thousand words at most
            if word not in seen:
                seen.add(word)
                words.append(word)
    return np.array(words[:count])
