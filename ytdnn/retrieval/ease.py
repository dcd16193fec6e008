"""EASE (Steck, WWW 2019) as a candidate source: score = X_u · B over the users' distinct watches.

The weights are those of the evaluation baseline (``ytdnn.eval.baselines.EASE``: G = X^T X + l2 I,
P = G^-1, B_ij = -P_ij / P_jj, B_jj = 0), fitted here on the training streams' distinct
(user, item) pairs; this module only maps the catalogue onto the items EASE keeps.

Why a cap (``max_items``): B is a dense [I, I] matrix obtained by inverting the dense [I, I] Gram
matrix, so memory grows as I^2 and time as I^3. At 20,000 items the Gram matrix, its inverse and B
take 1.6 GB each in float32 and the inversion ~1 minute on a few cores; at 1M items it would take
4 TB. Only the ``max_items`` catalogue ids with the most distinct users get rows and columns in B;
the others score -inf and are never retrieved (their few watches still count in no user's row).

Saved as a directory: config.json (kind "ytdnn.source.ease") and ease.safetensors holding
``weights`` [I, I] float32 and ``items`` [I] int64 (the kept catalogue ids, ascending).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ytdnn.config import Config
from ytdnn.eval.baselines import EASE, EASEConfig
from ytdnn.eval.interactions import Interactions
from ytdnn.features import check_fitted
from ytdnn.modeldir import ModelDir, readable_as_folder
from ytdnn.retrieval.base import (
    Context,
    check_exclude,
    check_items,
    check_k,
    check_streams,
    dense_block,
    distinct_pairs,
    top_k,
    write_config,
)
from ytdnn.samples.streams import EventStreams

KIND = "ytdnn.source.ease"
FORMAT_VERSION = 1
WEIGHTS = "ease.safetensors"


@dataclass(frozen=True)
class EASESourceConfig(Config):
    l2: float = 500.0  # the L2 penalty lambda, Steck's default order of magnitude (baselines.L2_GRID)
    max_items: int = 20_000  # items modelled, the most watched: the I x I inverse is dense
    # "float32" or "float64": float32 halves the memory of the inverse; G >= l2 I keeps it well conditioned
    dtype: str = "float32"
    chunk_users: int = 4096  # users per block when accumulating X^T X

    def validate(self) -> None:
        EASEConfig(l2=self.l2, dtype=self.dtype, chunk_users=self.chunk_users)  # its checks
        if self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}")
        if self.chunk_users < 1:
            raise ValueError(f"chunk_users must be >= 1, got {self.chunk_users}")


@dataclass
class IndicatorRows:
    """B users' item-indicator rows over the kept items, as pairs: rows [N] (0..B-1) and cols [N]
    (positions in ``items_``), distinct, sorted by (row, col)."""

    rows: np.ndarray
    cols: np.ndarray
    batch: int

    def __len__(self) -> int:
        return self.batch


class EASESource:
    """EASE over the top ``cfg.max_items`` catalogue ids by distinct users.

    Fitted: ``items_`` int64 [I] kept catalogue ids (ascending), ``weights_`` float32 [I, I] (B),
    ``num_items`` (the catalogue size V). State: ``IndicatorRows``; score = X · B.
    """

    name = "ease"

    def __init__(self, cfg: EASESourceConfig | None = None):
        self.cfg = cfg or EASESourceConfig()

    def fit(self, streams: EventStreams, num_items: int) -> EASESource:
        """Fit on each user's distinct watched items of ``streams`` (catalogue ids < num_items)."""
        check_streams(streams, num_items)
        users, items = distinct_pairs(streams, np.arange(streams.num_users), streams.watch_offsets[1:])
        counts = np.bincount(items, minlength=num_items)  # [V] distinct users per item
        counts[0] = 0
        # most users first, ties to the lower id; never-watched items have nothing to learn from
        by_count = np.lexsort((np.arange(num_items), -counts))
        kept = np.sort(by_count[: self.cfg.max_items])
        kept = kept[counts[kept] > 0]
        position = np.full(num_items, -1, np.int64)
        position[kept] = np.arange(len(kept))
        cols = position[items]
        inside = cols >= 0
        interactions = Interactions.from_pairs(users[inside], cols[inside], streams.num_users, len(kept))
        ease = EASE(EASEConfig(l2=self.cfg.l2, dtype=self.cfg.dtype, chunk_users=self.cfg.chunk_users))
        weights = ease.fit(interactions, streams.num_users, len(kept)).weights_  # [I, I]
        return self._set(kept, weights.numpy(), num_items)

    def _set(self, items: np.ndarray, weights: np.ndarray, num_items: int) -> EASESource:
        self.items_ = np.asarray(items, np.int64)
        self.weights_ = np.ascontiguousarray(weights, dtype=np.float32)
        self.num_items = int(num_items)
        self.position_ = np.full(num_items, -1, np.int64)  # [V] catalogue id -> row of B, -1 = none
        self.position_[self.items_] = np.arange(len(self.items_))
        return self

    # ---- state --------------------------------------------------------------------------------

    def encode(self, ctx: Context) -> IndicatorRows:
        """The distinct kept items of each history up to ``ctx.watch_end``."""
        check_fitted(self, "weights_")
        rows, items = distinct_pairs(ctx.streams, ctx.rows, ctx.watch_end)
        if len(items) and items.max() >= self.num_items:
            raise ValueError(f"the context's streams hold item ids up to {items.max()}, "
                             f"outside this source's catalogue of {self.num_items}")
        cols = self.position_[items]
        inside = cols >= 0
        return IndicatorRows(rows[inside], cols[inside], len(ctx))

    # ---- retrieval ----------------------------------------------------------------------------

    def _kept_scores(self, state: IndicatorRows, lo: int, hi: int) -> np.ndarray:
        """X[lo:hi] · B -> float32 [hi - lo, I]: sums of the rows of B of each user's items."""
        a, b = np.searchsorted(state.rows, [lo, hi])
        x = torch.sparse_coo_tensor(  # [hi - lo, I]
            torch.from_numpy(np.stack([state.rows[a:b] - lo, state.cols[a:b]])),
            torch.ones(b - a, dtype=torch.float32), (hi - lo, len(self.items_)),
            check_invariants=False,  # distinct in-range pairs by construction (encode)
        )
        return torch.sparse.mm(x, torch.from_numpy(self.weights_)).numpy()

    def retrieve(self, state: IndicatorRows, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k of X · B over the kept items -> (ids int64 [B, k], scores float32 [B, k])."""
        check_fitted(self, "weights_")
        k = check_k(k)
        exclude = check_exclude(exclude, len(state))
        ids = np.zeros((len(state), k), np.int64)
        scores = np.full((len(state), k), -np.inf, np.float32)
        block = dense_block(self.num_items)
        for lo in range(0, len(state), block):
            hi = min(lo + block, len(state))
            dense = np.full((hi - lo, self.num_items), -np.inf, np.float32)  # [b, V]
            dense[:, self.items_] = self._kept_scores(state, lo, hi)
            ids[lo:hi], scores[lo:hi] = top_k(dense, k, None if exclude is None else exclude[lo:hi])
        return ids, scores

    def score(self, state: IndicatorRows, items: np.ndarray) -> np.ndarray:
        """items int64 [B, n] -> float32 [B, n] = (X · B)[b, item]; -inf for id 0 and items
        outside the kept ones."""
        check_fitted(self, "weights_")
        items = check_items(items, self.num_items, len(state))
        cols = self.position_[items]  # [B, n], -1 = not kept
        if len(self.items_) <= 8 * items.shape[1]:
            # few kept items for many candidates: X · B densely (one sparse product), then pick
            # the candidates; on ml-100k pages (1.6k items, ~600 candidates) 5x the gather below
            out = np.concatenate([np.take_along_axis(self._kept_scores(state, lo, min(lo + 4096, len(state))),
                                                     np.maximum(cols[lo : lo + 4096], 0), axis=1)
                                  for lo in range(0, len(state), 4096)]) if len(state) else \
                np.zeros(items.shape, np.float32)
        else:
            gathered = self.weights_[state.cols[:, None], np.maximum(cols[state.rows], 0)]  # [N, n]
            summed = torch.zeros(items.shape, dtype=torch.float32)
            summed.index_add_(0, torch.from_numpy(state.rows), torch.from_numpy(gathered))
            out = summed.numpy()
        out[cols < 0] = -np.inf
        return out

    # ---- model directory ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        check_fitted(self, "weights_")
        directory = write_config(directory, KIND, FORMAT_VERSION, self.num_items, self.cfg)
        save_file({"weights": self.weights_, "items": self.items_}, str(directory / WEIGHTS))
        readable_as_folder(directory / WEIGHTS)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EASESource:
        """A directory written by ``save``; ModelDirError (a ValueError) naming the file on failure."""
        md = ModelDir(directory, "EASE source")
        with md.loading():
            config = md.config(_SCHEMA, KIND, FORMAT_VERSION)
            arrays = load_file(str(md.weights(WEIGHTS)))
            if set(arrays) != {"weights", "items"}:
                raise md.error(f"holds tensors {sorted(arrays)}, not ['items', 'weights']")
            items, weights, v = arrays["items"], arrays["weights"], config["num_items"]
            n = len(items)
            if (items.dtype != np.int64 or items.ndim != 1 or weights.shape != (n, n)
                    or weights.dtype != np.float32):
                raise md.error(f"items {items.dtype}{list(items.shape)} and weights "
                               f"{weights.dtype}{list(weights.shape)} are not int64 [I] and float32 [I, I]")
            if n and (items.min() < 1 or items.max() >= v or (np.diff(items) <= 0).any()):
                raise md.error(f"items are not ascending catalogue ids in 1..{v - 1}")
            if v < 2:
                raise md.error(f"num_items {v} is below 2")
            if not np.isfinite(weights).all():
                raise md.error("weights hold NaN or infinite values")
            return cls(config["config"])._set(items, weights, v)


_SCHEMA = {"format_version": int, "kind": str, "num_items": int, "config": EASESourceConfig}
