"""A seeded synthetic YouTube-like world: the canonical tables plus the ground truth behind them.

    world = generate(WorldConfig.preset("small", seed=3))
    world.dataset.watches                                  # user_id, item_id, timestamp, watch_time
    world.affinity(users[:, None], items[None, :], t)     # [B, I] true log watch propensity
    world.save("data/small")                               # Parquet tables + world.json + truth/*.npy

What is planted (details in the synthetic_* modules):

- users: a Dirichlet mixture over a few of K topics, whose prior is shifted by geo, age, gender
  and device (demographics predict interests: cold start); a taste (style) vector; a language;
  some join during the window;
- items: a channel (one topic, one language, a series in upload order), popularity, duration,
  clickbait, a style near the channel's; uploads before and all through the window, each one's
  draw spiking after upload and decaying as exp(-age / tau) to an evergreen floor;
- searches: queries of topic words shortly before a watch on the searched topic;
- sessions: the next watch follows the previous one (next episode, same or nearby topic);
- impression pages: clicks follow interest, freshness and clickbait; watch time follows interest
  and duration, and clickbait lowers it, so click-through and watch time rank differently.

The ground truth is exact: ``affinity`` is, up to a per-(user, time) constant, the log chance that
the user's next context-free watch at time t is the item; ``expected_watch_time`` is the watch time
an impression earns in expectation (click probability x expected watch time if clicked).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ytdnn.data import synthetic_behaviour as S
from ytdnn.data.schema import WORLD_FILES, Dataset
from ytdnn.data.synthetic_config import DAY, PRESETS, WorldConfig
from ytdnn.data.synthetic_entities import Truth, build_truth
from ytdnn.data.synthetic_sampler import SegmentSampler
from ytdnn.data.synthetic_sessions import SOURCES, simulate
from ytdnn.data.synthetic_tables import build_dataset

__all__ = ["DAY", "PRESETS", "SOURCES", "World", "WorldConfig", "generate"]

CONFIG_FILE = WORLD_FILES[0]
TOP_SCORES = ("affinity", "click_probability", "expected_watch_time")
TRUTH_DIR = WORLD_FILES[1]
_HERMITE = np.polynomial.hermite_e.hermegauss(32)  # nodes, weights for E[f(z)], z ~ N(0, 1)


def generate(config: WorldConfig, num_threads: int | None = None) -> World:
    """Build the world of ``config``; the same config (seed included) gives identical tables.

    ``num_threads`` (default: up to 2) only changes the speed, never the tables.
    """
    if num_threads is None:
        num_threads = min(2, os.cpu_count() or 1)
    rng = np.random.Generator(np.random.PCG64(config.seed))
    truth = build_truth(config, rng)
    sampler = SegmentSampler(truth, config)
    events = simulate(config, truth, sampler, rng, num_threads)
    dataset, source = build_dataset(config, truth, events, rng)
    world = World(config=config, dataset=dataset.validate(), truth=truth, watch_source=source)
    world.__dict__["sampler"] = sampler  # seed the cached property
    return world


@dataclass(eq=False)  # holds arrays: compare fields explicitly
class World:
    """The tables of a generated world and its ground truth.

    ``truth`` holds every latent array (``user_topics``, ``item_upload_time``, ``item_style``, ...,
    see ``synthetic_entities.Truth``); they are also readable as attributes of the world itself.
    ``watch_source[r]`` says how watch row r came about: an index into SOURCES.
    Ids are dense: user ids 0..num_users-1, item ids 0..num_items-1, index the truth arrays.
    """

    config: WorldConfig
    dataset: Dataset
    truth: Truth
    watch_source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    def __getattr__(self, name: str):
        if name.startswith("_") or "truth" not in self.__dict__:
            raise AttributeError(name)
        try:
            return getattr(self.__dict__["truth"], name)
        except AttributeError:
            raise AttributeError(f"World has no attribute {name!r}") from None

    @cached_property
    def sampler(self) -> SegmentSampler:
        return SegmentSampler(self.truth, self.config)

    # --- ground truth (all broadcast over users, items and t, like numpy operators)

    def freshness(self, item_ids, t) -> np.ndarray:
        """beta + (1 - beta) exp(-age / tau) with age = t - upload_time; 0 before the upload."""
        items, t = np.broadcast_arrays(self._items(item_ids), np.asarray(t, dtype=np.float64))
        return self.sampler.freshness(t - self.truth.item_upload_time[items])

    def interest(self, user_ids, item_ids) -> np.ndarray:
        """Time-free interest: log theta[u, topic(i)] + style taste - language penalty."""
        return S.interest(self.truth, self.config, self._users(user_ids), self._items(item_ids))

    def affinity(self, user_ids, item_ids, t) -> np.ndarray:
        """Log watch propensity of user u for item i at time t (seconds since the world start).

        Softmax over all items of a user's affinities at t is the exact chance that a
        context-free watch (e.g. a session's first) is that item; -inf before the upload.
        Up to a constant per (user, t): log theta[u, k] + log pop + log fresh(age) + style taste
        + log(lambda [same language] / Z_(k, language)(t) + (1 - lambda) / Z_k(t)), k the item's
        topic and Z the total pop * fresh of a segment at t (see ``synthetic_behaviour``).
        """
        return S.log_watch_propensity(
            self.truth, self.config, self.sampler, self._users(user_ids), self._items(item_ids), t
        )

    def click_probability(self, user_ids, item_ids, t) -> np.ndarray:
        """Chance that an impression at time t is clicked; 0 before the item's upload."""
        users, items, t = np.broadcast_arrays(
            self._users(user_ids), self._items(item_ids), np.asarray(t, dtype=np.float64)
        )
        logit = S.click_logit(self.truth, self.config, self.sampler, users, items, t)
        uploaded = t >= self.truth.item_upload_time[items]
        return np.where(uploaded, 1.0 / (1.0 + np.exp(-logit)), 0.0)

    def expected_watch_time_if_clicked(self, user_ids, item_ids) -> np.ndarray:
        """E[watch_time | click] = duration * E[sigmoid(completion logit + noise)], in seconds."""
        users, items = np.broadcast_arrays(self._users(user_ids), self._items(item_ids))
        mean = S.completion_logit(self.truth, self.config, users, items)
        nodes, weights = _HERMITE
        z = mean[..., None] + self.config.watch_noise * nodes  # [..., 32]
        completion = (weights / (1.0 + np.exp(-z))).sum(axis=-1) / weights.sum()
        return self.truth.item_duration[items] * completion

    def expected_watch_time(self, user_ids, item_ids, t) -> np.ndarray:
        """Expected seconds watched per impression at time t: P(click) * E[watch_time | click]."""
        return self.click_probability(user_ids, item_ids, t) * self.expected_watch_time_if_clicked(
            user_ids, item_ids
        )

    def top_items(
        self, user_ids, t, k: int, score: str = "affinity", batch_size: int = 256
    ) -> np.ndarray:
        """The true best k items per user at time t by ``score``: ``affinity`` (what they would
        watch), ``click_probability`` or ``expected_watch_time`` (what an impression earns).

        user_ids: [B] -> [B, k] item ids, best first.
        """
        if score not in TOP_SCORES:
            raise ValueError(f"score must be one of {TOP_SCORES}")
        users = self._users(user_ids).reshape(-1)
        items = np.arange(self.config.num_items)
        k = min(k, len(items))
        out = np.empty((len(users), k), np.int64)
        for a in range(0, len(users), batch_size):  # bounds memory at batch_size x num_items
            s = getattr(self, score)(users[a : a + batch_size, None], items[None, :], t)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
            out[a : a + batch_size] = np.take_along_axis(top, order, axis=1)
        return out

    def _users(self, ids) -> np.ndarray:
        return _check_ids(ids, self.config.num_users, "user")

    def _items(self, ids) -> np.ndarray:
        return _check_ids(ids, self.config.num_items, "item")

    # --- persistence (never pickles)

    def save(self, directory: str | Path) -> Path:
        """Tables as ``<table>.parquet``, the config as world.json, ground truth as truth/*.npy."""
        directory = self.dataset.save(directory)
        self.config.save(directory / CONFIG_FILE)
        truth_dir = directory / TRUTH_DIR
        truth_dir.mkdir(exist_ok=True)
        for name, values in {**self.truth.to_arrays(), "watch_source": self.watch_source}.items():
            np.save(truth_dir / f"{name}.npy", values, allow_pickle=False)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> World:
        """Read a world written by ``save``."""
        directory = Path(directory)
        config = WorldConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        arrays = {
            p.stem: np.load(p, allow_pickle=False) for p in (directory / TRUTH_DIR).glob("*.npy")
        }
        source = arrays.pop("watch_source")
        return cls(
            config=config,
            dataset=Dataset.load(directory, name=f"synthetic-{config.seed}"),
            truth=Truth(**arrays),
            watch_source=source,
        )


def _check_ids(ids, n: int, kind: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{kind} ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{kind} ids must lie in [0, {n})")
    return ids.astype(np.int64, copy=False)
