"""How users of the synthetic world choose, click and watch: the exact distributions.

Context-free watch (a session's first), drawn exactly: user u picks topic k from theta[u]; with
probability lambda = own_language_share (if topic k has items in u's language by t) looks among
those, else among all of k; takes an item i there by w_i(t) = pop_i * fresh_i(t); and keeps it
with probability exp(style_weight * (cos(style_u, style_i) - 1)), else starts over. So

    P(i | u, t) ∝ theta[u, k] * w_i(t) * (lambda [own] / Z_own(t) + (1 - lambda) / Z_k(t))
                  * exp(style_weight * cos(style_u, style_i)),

whose log is ``log_watch_propensity`` (Z: the segment's total w at t; lambda = 0 when Z_own = 0).

Impressions are clicked with sigmoid(``click_logit``); a watch lasts
duration * sigmoid(``completion_logit`` + noise). Clickbait raises the first and lowers the second.
"""

from __future__ import annotations

import numpy as np

from ytdnn.data.synthetic_config import WorldConfig
from ytdnn.data.synthetic_entities import Truth
from ytdnn.data.synthetic_sampler import SegmentSampler

CHUNK_ROWS = 1 << 16  # rows per sample_items pass


def style_cosine(truth: Truth, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """cos(style_u, style_i), broadcast."""
    return np.einsum("...d,...d->...", truth.user_style[users], truth.item_style[items])


def topic_weight(
    truth: Truth, cfg: WorldConfig, users: np.ndarray, topics: np.ndarray
) -> np.ndarray:
    """theta[u, k] (broadcast): the mixture weight plus the uniform exploration share."""
    own = truth.user_topics[users] == np.asarray(topics)[..., None]  # [..., m]
    mixture = (own * truth.user_topic_weights[users]).sum(axis=-1)
    return (1 - cfg.topic_exploration) * mixture + cfg.topic_exploration / cfg.num_topics


def interest(truth: Truth, cfg: WorldConfig, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Time-free interest (broadcast): log theta[u, topic(i)] + style taste - language penalty."""
    theta = topic_weight(truth, cfg, users, truth.item_topic[items])
    foreign = truth.user_language[users] != truth.item_language[items]
    return (
        np.log(theta)
        + cfg.style_weight * style_cosine(truth, users, items)
        - cfg.language_penalty * foreign
    )


def log_watch_propensity(
    truth: Truth,
    cfg: WorldConfig,
    sampler: SegmentSampler,
    users: np.ndarray,
    items: np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    """log P(context-free watch of i | u, t) + const(u, t); -inf before the upload. Broadcast."""
    users, items, t = np.broadcast_arrays(users, items, np.asarray(t, dtype=np.float64))
    topics, lang = truth.item_topic[items], truth.user_language[users]
    own = lang == truth.item_language[items]
    z_topic, z_own = _segment_masses(sampler, topics, lang, t)
    lam = np.where(z_own > 0, cfg.own_language_share, 0.0)
    tiny = np.finfo(float).tiny
    with np.errstate(divide="ignore"):
        log_w = np.log(truth.item_popularity[items]) + np.log(
            sampler.freshness(t - truth.item_upload_time[items])
        )
        log_segment = np.log(
            lam * own / np.maximum(z_own, tiny) + (1 - lam) / np.maximum(z_topic, tiny)
        )
    return (
        np.log(topic_weight(truth, cfg, users, topics))
        + log_w
        + log_segment
        + cfg.style_weight * style_cosine(truth, users, items)
    )


def _segment_masses(sampler, topics, languages, t):
    """Z_topic(t) and Z_(topic, language)(t) for broadcast arrays; computed once per pair."""
    flat_t = t.ravel()
    if flat_t.size and (flat_t == flat_t[0]).all():  # one time (e.g. scoring a catalogue)
        pairs, inverse = np.unique(topics * sampler.num_languages + languages, return_inverse=True)
        k, lang = pairs // sampler.num_languages, pairs % sampler.num_languages
        when = np.full(len(pairs), flat_t[0])
    else:
        k, lang, when, inverse = topics.ravel(), languages.ravel(), flat_t, np.arange(flat_t.size)
    z_topic = sampler.normalizer(sampler.segments(k), when)[inverse.reshape(-1)]
    z_own = sampler.normalizer(sampler.segments(k, lang), when)[inverse.reshape(-1)]
    return z_topic.reshape(topics.shape), z_own.reshape(topics.shape)


def draw_user_topics(
    truth: Truth, cfg: WorldConfig, users: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A topic per row from theta[u]: the user's mixture, or uniform with prob topic_exploration."""
    cdf = np.cumsum(truth.user_topic_weights[users], axis=1)  # [n, m]
    slot = (rng.random(len(users))[:, None] > cdf).sum(axis=1)
    own = truth.user_topics[users, np.minimum(slot, cdf.shape[1] - 1)]
    explore = rng.random(len(users)) < cfg.topic_exploration
    return np.where(explore, rng.integers(0, cfg.num_topics, size=len(users)), own)


def sample_items(
    truth: Truth,
    cfg: WorldConfig,
    sampler: SegmentSampler,
    users: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
    topics: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Items for users at times t: context-free watches, or watches of given topics.

    users, t, topics (-1 or None: drawn from theta with every proposal, which makes the draw
    exactly softmax(affinity)), exclude (an item not to repeat, -1 for none): [n] -> [n] ids.
    """
    n = len(users)
    topics = np.full(n, -1, np.int64) if topics is None else topics
    exclude = np.full(n, -1, np.int64) if exclude is None else exclude
    out = np.empty(n, np.int64)
    for a in range(0, n, CHUNK_ROWS):  # bounded temporaries: fewer page faults, warm caches
        part = slice(a, a + CHUNK_ROWS)
        out[part] = _rejection(
            truth, cfg, sampler, users[part], t[part], topics[part], exclude[part], rng
        )
    return out


def _rejection(truth, cfg, sampler, users, t, topics, exclude, rng, max_rounds: int = 12):
    """Rejection on the style factor. Round r proposes 1, 1, 2, 4, ... items per pending row
    (few rows are left by then) and keeps the first accepted; rows still pending after
    ``max_rounds`` (e.g. a topic whose only uploaded item is the excluded one) keep their last
    proposal.
    """
    out = np.full(len(users), -1, np.int64)
    pending = np.arange(len(users))
    for r in range(max_rounds):
        if len(pending) == 0:
            break
        proposals = 2 ** min(max(r - 1, 0), 9)
        rows = np.repeat(pending, proposals)  # [p * proposals], grouped by row
        cand = _propose(truth, cfg, sampler, users[rows], t[rows], topics[rows], rng)
        cos = style_cosine(truth, users[rows], cand)
        ok = rng.random(len(rows)) < np.exp(cfg.style_weight * (cos - 1.0))
        ok = (ok & (cand != exclude[rows])).reshape(-1, proposals)
        cand = cand.reshape(-1, proposals)
        done = ok.any(axis=1)
        out[pending] = cand[np.arange(len(pending)), np.where(done, ok.argmax(axis=1), -1)]
        pending = pending[~done]
    return out


def _propose(truth, cfg, sampler, users, t, topics, rng) -> np.ndarray:
    """One proposal per row: topic (given, or from theta if -1), then the user's language with
    prob lambda once the topic has items in it, then an item by popularity x freshness."""
    k = topics.copy()
    free = k < 0
    k[free] = draw_user_topics(truth, cfg, users[free], rng)
    own_seg = sampler.segments(k, truth.user_language[users])
    own = rng.random(len(users)) < cfg.own_language_share
    own &= sampler.first_upload[own_seg] <= t
    return sampler.sample(np.where(own, own_seg, k), t, rng)


def click_logit(
    truth: Truth, cfg: WorldConfig, sampler: SegmentSampler, users: np.ndarray, items: np.ndarray, t
) -> np.ndarray:
    """Log-odds that an impression of item i to user u at time t is clicked (broadcast).

    Interest and freshness draw clicks, and so does clickbait, which watch time does not reward.
    """
    age = np.asarray(t, dtype=np.float64) - truth.item_upload_time[items]
    spike = np.where(age >= 0, np.exp(-np.maximum(age, 0) / sampler.tau), 0.0)
    length = np.log(truth.item_duration[items] / cfg.median_duration_s)
    return (
        cfg.click_bias
        + cfg.click_interest_weight * interest(truth, cfg, users, items)
        + cfg.click_freshness_weight * spike
        + truth.item_clickbait[items]
        - cfg.click_duration_weight * length
    )


def completion_logit(
    truth: Truth, cfg: WorldConfig, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """Mean log-odds of the watched fraction of an item (broadcast); noise is added per watch."""
    return (
        cfg.watch_bias
        + cfg.watch_interest_weight * interest(truth, cfg, users, items)
        - cfg.watch_clickbait_penalty * truth.item_clickbait[items]
    )


def draw_watch_time(
    truth: Truth, cfg: WorldConfig, users: np.ndarray, items: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Seconds watched: duration * sigmoid(completion logit + noise), to 0.1 s. [n] -> [n]."""
    logit = completion_logit(truth, cfg, users, items) + cfg.watch_noise * rng.normal(
        size=len(users)
    )
    return np.round(truth.item_duration[items] / (1.0 + np.exp(-logit)), 1)
