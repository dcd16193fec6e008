"""Exact, loop-free draws of items by popularity x freshness within segments of the catalogue.

A segment is a topic, or a (topic, language) pair. At time t an item i of the segment weighs

    w_i(t) = pop_i * fresh(t - upload_i),   fresh(age) = beta + (1 - beta) exp(-age / tau)

for age >= 0 and 0 before the upload. The evergreen part beta * pop_i does not depend on t, so
prefix sums over the segment's items in upload order give its mass and inverse CDF at any t with
one binary search. The spike part pop_i exp(-(t - upload_i) / tau) factors the same way as
exp((t0 - t) / tau) * E_b * pop_i exp((upload_i - s_b) / tau) inside time blocks b that start at
s_b, with E_b = exp((s_b - t0) / tau). Blocks are 10 tau long, so the within-block weights span
at most e^10 and one global cumulative sum over all segments keeps every weight well above
rounding; the masses of whole blocks are tabulated per segment. No Python loop over segments.
"""

from __future__ import annotations

import numpy as np

from ytdnn.data.synthetic_config import DAY, WorldConfig
from ytdnn.data.synthetic_entities import Truth

BLOCK_TAUS = 10.0  # block length in units of tau


class SegmentSampler:
    """Segments: topic k is segment k; (topic k, language l) is K + k * L + l."""

    def __init__(self, truth: Truth, cfg: WorldConfig):
        self.tau, self.beta = cfg.freshness_days * DAY, cfg.evergreen
        self.t0 = cfg.window_s / 2  # keeps exp((s_b - t0) / tau) and exp((t0 - t) / tau) finite
        self.num_topics, self.num_languages = cfg.num_topics, len(truth.languages)
        num_items = len(truth.item_topic)
        pair = cfg.num_topics + truth.item_topic * self.num_languages + truth.item_language
        segment = np.concatenate([truth.item_topic, pair])  # every item once per segmentation
        item = np.concatenate([np.arange(num_items), np.arange(num_items)])
        upload = truth.item_upload_time[item]
        order = np.lexsort((item, upload, segment))
        self.item, segment, upload = item[order], segment[order], upload[order]
        self.num_segments = cfg.num_topics * (1 + self.num_languages)
        self.up_min = int(upload.min())
        self.span = int(upload.max()) - self.up_min + 2  # offsets of uploads lie in [0, span - 2]
        self.key = segment * self.span + (upload - self.up_min)  # sorted, int64
        self.seg_start = np.searchsorted(segment, np.arange(self.num_segments + 1))
        # first upload of each segment (+inf if empty): whether a segment has items at t
        self.first_upload = np.full(self.num_segments, np.inf)
        nonempty = self.seg_start[:-1] < self.seg_start[1:]
        self.first_upload[nonempty] = upload[self.seg_start[:-1][nonempty]]
        pop = truth.item_popularity[self.item]
        self.cum_evergreen = np.r_[0.0, np.cumsum(pop)]
        self._blocks(upload, pop)
        self.by_upload = np.argsort(truth.item_upload_time, kind="stable")
        self.sorted_uploads = truth.item_upload_time[self.by_upload]

    def _blocks(self, upload: np.ndarray, pop: np.ndarray) -> None:
        self.block_len = BLOCK_TAUS * self.tau
        self.num_blocks = int((upload.max() - self.up_min) // self.block_len) + 1
        starts = self.up_min + self.block_len * np.arange(self.num_blocks)
        self.block_scale = np.exp((starts - self.t0) / self.tau)  # E_b
        block = ((upload - self.up_min) // self.block_len).astype(np.int64)
        self.cum_spike = np.r_[0.0, np.cumsum(pop * np.exp((upload - starts[block]) / self.tau))]
        bounds = np.minimum(np.arange(self.num_blocks + 1) * self.block_len, self.span - 1)
        # block_index[s, b]: first position of segment s in block >= b; [S, B + 1]
        self.block_index = np.searchsorted(
            self.key,
            np.arange(self.num_segments)[:, None] * self.span + bounds[None, :].astype(np.int64),
        )
        whole = self.cum_spike[self.block_index[:, 1:]] - self.cum_spike[self.block_index[:, :-1]]
        # block_prefix[s, b]: spike mass (in t0 units) of segment s's blocks before b; [S, B + 1]
        self.block_prefix = np.concatenate(
            [np.zeros((self.num_segments, 1)), np.cumsum(whole * self.block_scale, axis=1)], axis=1
        )

    def segments(self, topics: np.ndarray, languages: np.ndarray | None = None) -> np.ndarray:
        """Segment ids of topics, or of (topic, language) pairs. Broadcast."""
        if languages is None:
            return np.asarray(topics)
        return self.num_topics + np.asarray(topics) * self.num_languages + np.asarray(languages)

    def freshness(self, age: np.ndarray) -> np.ndarray:
        """fresh(age), 0 before the upload. age: any shape, seconds."""
        age = np.asarray(age, dtype=np.float64)
        spike = np.exp(-np.maximum(age, 0.0) / self.tau)
        return np.where(age >= 0, self.beta + (1 - self.beta) * spike, 0.0)

    def _masses(self, seg: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Per row: the segment's positions, evergreen and spike masses at t. seg, t: [n]."""
        offset = np.clip(np.floor(t - self.up_min), -1, self.span - 2).astype(np.int64)
        end = np.searchsorted(self.key, seg * self.span + offset, side="right")
        start = self.seg_start[seg]
        block = np.clip((t - self.up_min) // self.block_len, 0, self.num_blocks - 1).astype(
            np.int64
        )
        block_lo = self.block_index[seg, block]
        prefix = self.block_prefix[seg, block]  # whole blocks before t's
        partial = self.block_scale[block] * (self.cum_spike[end] - self.cum_spike[block_lo])
        scale = np.exp((self.t0 - np.maximum(t, self.up_min)) / self.tau)
        evergreen = self.beta * (self.cum_evergreen[end] - self.cum_evergreen[start])
        spike = (1 - self.beta) * scale * (prefix + partial)
        return {
            "seg": seg,
            "start": start,
            "end": end,
            "block": block,
            "prefix": prefix,
            "scale": scale,
            "evergreen": evergreen,
            "spike": spike,
        }

    def normalizer(self, seg: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Z_s(t): sum of w_i(t) over segment s's items. seg, t: broadcast."""
        seg, t = np.broadcast_arrays(np.asarray(seg, np.int64), np.asarray(t, np.float64))
        m = self._masses(seg.ravel(), t.ravel())
        return (m["evergreen"] + m["spike"]).reshape(seg.shape)

    def sample(self, seg: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per row from segment seg[j] at time t[j], by w_i(t); -1 if it is empty.

        seg, t: [n] -> [n] int64 item ids. Inverse CDF: evergreen part, then spike blocks.
        """
        m = self._masses(seg, t)
        n = len(seg)
        u = rng.random(n) * (m["evergreen"] + m["spike"])
        use_spike = u >= m["evergreen"]
        pos = np.empty(n, np.int64)
        # Evergreen: position in the segment's prefix sums of pop.
        ev = ~use_spike
        target = self.cum_evergreen[m["start"][ev]] + u[ev] / self.beta
        pos[ev] = np.searchsorted(self.cum_evergreen, target, side="right") - 1
        lo, hi = m["start"].copy(), m["end"].copy()
        # Spike: v in [0, prefix + partial) in t0 units; find its block, then the item.
        sp = np.flatnonzero(use_spike)
        v = (u[sp] - m["evergreen"][sp]) / ((1 - self.beta) * m["scale"][sp])
        s_seg, s_blk = m["seg"][sp], m["block"][sp]
        inner = v < m["prefix"][sp]  # falls in a whole block before t's
        whole_blk = (v[:, None] >= self.block_prefix[s_seg, 1:]).sum(axis=1)
        blk = np.where(inner, np.minimum(whole_blk, s_blk), s_blk)
        lo[sp] = self.block_index[s_seg, blk]
        hi[sp] = np.where(inner, self.block_index[s_seg, blk + 1], m["end"][sp])
        within = (v - self.block_prefix[s_seg, blk]) / self.block_scale[blk]
        pos[sp] = np.searchsorted(self.cum_spike, self.cum_spike[lo[sp]] + within, side="right") - 1
        pos = np.clip(pos, lo, np.maximum(hi - 1, lo))
        return np.where(m["end"] > m["start"], self.item[np.minimum(pos, len(self.item) - 1)], -1)

    def sample_uploaded(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniformly random items among those uploaded by t. t: [n] -> [n] item ids."""
        n = np.searchsorted(self.sorted_uploads, t, side="right")
        pos = np.minimum((rng.random(len(t)) * n).astype(np.int64), np.maximum(n - 1, 0))
        return self.by_upload[pos]
