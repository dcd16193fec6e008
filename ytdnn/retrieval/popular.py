"""Fresh and popular items as a candidate source: the same list for everybody, minus exclusions.

The serving fallback (``ytdnn.serve.popular.PopularItems``) generalised: every watch of the
training streams counts ``2 ** (-age / half_life)``, age = window end - watch time (clipped at 0),
with the half-life a *share* of the training log's span (``half_life_share``, default 1/30 like
``samples.ranking.RECENT_SHARE``: a week on ml-100k's 7 months) rather than a fixed number of days,
so the source behaves alike whatever the unit and span of the timestamps. An unordered log (or one
whose watches all share one second) has no age: every watch counts 1, plain popularity.

``fit(streams, num_items, window=None)``: window (start, end) seconds, by default the first and
last watch time of the streams, which for a generator's training streams is the featurizer's
window; ``from_generator(generator)`` fits on ``generator.streams_`` with
``featurizer_.window_start_ / window_end_``. Only items with at least one watch are nominated.

Saved as a directory: config.json (kind "ytdnn.source.popular", the window) and popular.npz
(``counts`` [V] float64, the decayed counts; loaded with allow_pickle=False).
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
    write_config,
)
from ytdnn.samples.streams import EventStreams

KIND = "ytdnn.source.popular"
FORMAT_VERSION = 1
ARRAYS = "popular.npz"


@dataclass(frozen=True)
class PopularConfig(Config):
    # half-life of a watch's weight, as a share of the training window (end - start)
    half_life_share: float = 1 / 30

    def validate(self) -> None:
        if not self.half_life_share > 0:
            raise ValueError(f"half_life_share must be > 0, got {self.half_life_share}")


def decayed_counts(streams: EventStreams, num_items: int, window: tuple[int, int], share: float) -> np.ndarray:
    """float64 [V]: each item's watches weighted 2 ** (-age / (share * span)); 1 each when the
    streams are unordered or the window spans no time."""
    start, end = window
    half_life = share * (end - start)
    if streams.ordered and half_life > 0:
        age = np.maximum(end - streams.watch_times, 0).astype(np.float64)  # [W] seconds
        weight = np.exp2(-age / half_life)
    else:
        weight = np.ones(len(streams.watch_items))
    counts = np.bincount(streams.watch_items, weights=weight, minlength=num_items)
    counts[0] = 0.0
    return counts


class PopularSource:
    """Decayed watch counts, best first (ties to the lower id); the same list for every user.

    Fitted: ``counts_`` float64 [V] (id 0 counts 0), ``order_`` int64 [M] the ids with a positive
    count, best first, ``window_`` (start, end), ``num_items``. State: the number of users.
    """

    name = "popular"

    def __init__(self, cfg: PopularConfig | None = None):
        self.cfg = cfg or PopularConfig()

    def fit(self, streams: EventStreams, num_items: int, window: tuple[int, int] | None = None) -> PopularSource:
        check_streams(streams, num_items)
        if window is None:
            times = streams.watch_times
            window = (int(times.min(initial=0)), int(times.max(initial=0))) if len(times) else (0, 0)
        if window[1] < window[0]:
            raise ValueError(f"window must be (start, end) with start <= end, got {window}")
        counts = decayed_counts(streams, num_items, window, self.cfg.half_life_share)
        return self._set(counts, (int(window[0]), int(window[1])))

    @classmethod
    def from_generator(cls, generator, cfg: PopularConfig | None = None) -> PopularSource:
        """Fit on a fitted CandidateGenerator's training streams and window."""
        f = generator.featurizer_
        return cls(cfg).fit(generator.streams_, f.num_items, (f.window_start_, f.window_end_))

    def _set(self, counts: np.ndarray, window: tuple[int, int]) -> PopularSource:
        self.counts_ = np.asarray(counts, np.float64)
        self.num_items = len(self.counts_)
        self.window_ = window
        scores = self.counts_.astype(np.float32)  # ranked as retrieve reports them
        ranked = 1 + np.lexsort((np.arange(1, self.num_items), -scores[1:]))  # ties: the lower id
        self.order_ = ranked[scores[ranked] > 0].astype(np.int64)
        return self

    # ---- state --------------------------------------------------------------------------------

    def encode(self, ctx: Context) -> int:
        """The list is everybody's: the state is only the number of users B."""
        check_fitted(self, "counts_")
        return len(ctx)

    # ---- retrieval ----------------------------------------------------------------------------

    def retrieve(self, state: int, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first k of ``order_`` per user that the user does not exclude -> (ids int64 [B, k],
        scores float32 [B, k]); without dense [B, V] scores, so a 1M catalogue costs O(B (k + E))."""
        check_fitted(self, "counts_")
        k = check_k(k)
        batch = int(state)
        exclude = check_exclude(exclude, batch)
        longest = 0 if exclude is None else max((len(e) for e in exclude), default=0)
        head = self.order_[: k + longest]  # [m]: enough to fill k after any user's exclusions
        keep = np.ones((batch, len(head)), bool)
        if exclude is not None and longest:
            rows = np.repeat(np.arange(batch), [len(e) for e in exclude])
            ids = np.concatenate(exclude)
            position = np.full(self.num_items, -1, np.int64)
            position[head] = np.arange(len(head))
            inside = (ids > 0) & (ids < self.num_items)
            at = position[ids[inside]]
            keep[rows[inside][at >= 0], at[at >= 0]] = False
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept first, in list order
        ids = np.where(np.take_along_axis(keep, order, axis=1), head[order], 0) if len(head) else \
            np.zeros((batch, 0), np.int64)
        ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1]))).astype(np.int64)
        scores = np.where(ids > 0, self.counts_[ids], -np.inf).astype(np.float32)
        return ids, scores

    def score(self, state: int, items: np.ndarray) -> np.ndarray:
        """items int64 [B, n] -> float32 [B, n] decayed counts; -inf for id 0."""
        check_fitted(self, "counts_")
        items = check_items(items, self.num_items, int(state))
        out = self.counts_[items].astype(np.float32)
        out[items == 0] = -np.inf
        return out

    # ---- model directory ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        check_fitted(self, "counts_")
        directory = write_config(directory, KIND, FORMAT_VERSION, self.num_items, self.cfg,
                                 window=list(self.window_))
        np.savez(directory / ARRAYS, counts=self.counts_)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PopularSource:
        """A directory written by ``save``; ModelDirError (a ValueError) naming the file on failure."""
        md = ModelDir(directory, "popular source")
        with md.loading():
            config = md.config(_SCHEMA, KIND, FORMAT_VERSION)
            v, window = config["num_items"], config["window"]
            with np.load(md.file(ARRAYS), allow_pickle=False) as arrays:
                if arrays.files != ["counts"]:
                    raise md.error(f"holds arrays {sorted(arrays.files)}, not counts")
                counts = arrays["counts"]
            if v < 2 or counts.dtype != np.float64 or counts.shape != (v,):
                raise md.error(f"counts are {counts.dtype}{list(counts.shape)}, not float64 [{v}] (v >= 2)")
            if not (np.isfinite(counts).all() and (counts >= 0).all() and counts[0] == 0):
                raise md.error("counts are not finite, non-negative and 0 for id 0")
            if len(window) != 2 or window[1] < window[0]:
                raise md.error(f"window {list(window)} is not [start, end] with start <= end")
            return cls(config["config"])._set(counts, (window[0], window[1]))


_SCHEMA = {"format_version": int, "kind": str, "num_items": int, "window": tuple[int, ...],
           "config": PopularConfig}
