"""Candidate sources (paper §4, fig. 2): the narrow interface the ranker, the pipeline and the
server use, whatever nominates the candidates.

Every source works in one item id space, the *catalogue*: the candidate generator's item
vocabulary (``Featurizer.items_``: ids 1..V-1, 0 = unknown / empty slot). Histories reach a source
as the generator's ``EventStreams`` (the training log's, or a request's fresh ones), so a source
never decodes ids per request and every source sees the same history:

    ctx = Context.whole(streams, rows, now)       # users' histories up to now
    state = source.encode(ctx)                    # e.g. user vectors, item-indicator rows, ...
    ids, scores = source.retrieve(state, k, exclude)     # [B, k] catalogue ids, float32 scores
    scores = source.score(state, items)           # [B, n] for given catalogue ids

A context may end inside a user's stream (``watch_end`` / ``token_end``): the history strictly
before a training page's request, so pages built for the ranker see what serving would have.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ytdnn.samples.streams import EventStreams, window_positions


@dataclass
class Context:
    """B users' histories: rows [B] of ``streams``; the history of user b is its watches
    ``watch_offsets[rows[b]] .. watch_end[b]`` and tokens ``token_offsets[rows[b]] .. token_end[b]``;
    now [B] int64 seconds (the request's data time; 0 for unordered logs)."""

    streams: EventStreams
    rows: np.ndarray
    watch_end: np.ndarray
    token_end: np.ndarray
    now: np.ndarray

    @classmethod
    def whole(cls, streams: EventStreams, rows: np.ndarray, now: Any = 0) -> Context:
        """Every event of the rows is history (serving)."""
        rows = np.asarray(rows, np.int64)
        return cls(streams, rows, streams.watch_offsets[rows + 1], streams.token_offsets[rows + 1],
                   np.broadcast_to(np.asarray(now, np.int64), rows.shape).copy())

    def __len__(self) -> int:
        return len(self.rows)

    def watched(self) -> list[np.ndarray]:
        """B arrays: the distinct catalogue ids in each user's history."""
        s = self.streams
        return [np.unique(s.watch_items[a:b]) for a, b in zip(s.watch_offsets[self.rows], self.watch_end)]


@runtime_checkable
class Retriever(Protocol):
    """A fitted candidate source over the catalogue of ``num_items`` ids (0 = none).

    ``name``: how records, features and responses call it ("generator", "ease", ...).
    """

    name: str
    num_items: int

    def encode(self, ctx: Context) -> Any:
        """The users' state for ``retrieve`` and ``score`` (opaque to callers)."""

    def retrieve(self, state: Any, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k per user, best first -> (ids int64 [B, k], scores float32 [B, k]); slots past
        what the source can nominate hold id 0 and score -inf. ``exclude``: B arrays of ids never
        returned (the watched items). Ties are broken by the lower id."""

    def score(self, state: Any, items: np.ndarray) -> np.ndarray:
        """items int64 [B, n] catalogue ids -> float32 [B, n], the score ``retrieve`` ranks by;
        id 0 scores -inf."""

    def save(self, directory: Path) -> Path:
        """Write the fitted source into ``directory`` (JSON, .npz, safetensors: no pickle)."""


def check_k(k: Any) -> int:
    """``k`` as an int >= 1: TypeError for a non-integer, ValueError below 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def check_items(items: Any, num_items: int, batch: int) -> np.ndarray:
    """``items`` as int64 [batch, n] catalogue ids in 0..num_items-1; ValueError otherwise."""
    items = np.asarray(items)
    if items.ndim != 2 or items.shape[0] != batch:
        raise ValueError(f"items must be [{batch}, n] catalogue ids, got shape {items.shape}")
    if items.size and items.dtype.kind not in "iu":
        raise ValueError(f"items must be integer catalogue ids, got dtype {items.dtype}")
    items = items.astype(np.int64, copy=False)
    if items.size and not 0 <= items.min() <= items.max() < num_items:
        raise ValueError(f"items must be catalogue ids in 0..{num_items - 1}, "
                         f"got {items.min()}..{items.max()}")
    return items


def check_exclude(exclude: list | None, batch: int) -> list[np.ndarray] | None:
    """None, or ``batch`` entries (each None or ids) -> None or ``batch`` int64 arrays; ids
    outside the catalogue are kept (each source ignores what it cannot return)."""
    if exclude is None:
        return None
    if len(exclude) != batch:
        raise ValueError(f"exclude must have one entry per user ({batch}), got {len(exclude)} entries")
    return [np.zeros(0, np.int64) if e is None else np.asarray(e, np.int64).reshape(-1) for e in exclude]


def distinct_pairs(streams: EventStreams, rows: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (context, item) of the watches ``watch_offsets[rows[b]] .. end[b]``, item > 0:
    two [N] int64 arrays sorted by (context, item)."""
    positions, _ = window_positions(streams.watch_offsets[rows], end, None)
    context = np.repeat(np.arange(len(rows)), np.maximum(end - streams.watch_offsets[rows], 0))
    items = streams.watch_items[positions].astype(np.int64)
    keep = items > 0
    context, items = context[keep], items[keep]
    order = np.lexsort((items, context))
    context, items = context[order], items[order]
    new = np.ones(len(items), bool)
    new[1:] = (np.diff(context) != 0) | (np.diff(items) != 0)
    return context[new], items[new]


def check_streams(streams: EventStreams, num_items: int) -> None:
    """ValueError unless every watch is a catalogue id of 0..num_items-1."""
    if num_items < 2:
        raise ValueError(f"num_items must be >= 2 (id 0 plus one item), got {num_items}")
    w = streams.watch_items
    if len(w) and not 0 <= w.min() <= w.max() < num_items:
        raise ValueError(f"the streams hold item ids {w.min()}..{w.max()}, not catalogue ids "
                         f"0..{num_items - 1}")


def dense_block(num_items: int, most: int = 1024) -> int:
    """Users per block of a dense [b, V] score matrix: at most ``most``, and about 16M cells
    (64 MB of float32) however large the catalogue."""
    return max(1, min(most, (1 << 24) // max(num_items, 1)))


def top_k(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns of a dense score matrix: scores [B, V] (column = catalogue id, column 0
    never returned) -> (ids int64 [B, k], scores float32 [B, k]), ties to the lower id, -inf /
    id 0 past the finite scores. The one top-k of the dense sources (EASE, co-occurrence, popular)."""
    k = check_k(k)
    scores = np.array(scores, dtype=np.float32, copy=True)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [B, V] with V >= 1, got shape {scores.shape}")
    scores[:, 0] = -np.inf
    exclude = check_exclude(exclude, len(scores))
    if exclude is not None:
        rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
        ids = np.concatenate([np.zeros(0, np.int64), *exclude])
        inside = (ids >= 0) & (ids < scores.shape[1])  # ids outside the catalogue exclude nothing
        scores[rows[inside], ids[inside]] = -np.inf
    k_eff = min(k, scores.shape[1])
    # the k-th best score per row, then every column above it and the lowest ids equal to it:
    # exactly k_eff per row, and ties at the boundary go to the lower id
    kth = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1 : k_eff]  # [B, 1]
    above = scores > kth
    tied = scores == kth
    room = k_eff - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    ids = np.nonzero(chosen)[1].reshape(len(scores), k_eff)  # ascending ids per row
    values = np.take_along_axis(scores, ids, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")  # stable: equal scores keep the lower id first
    ids, values = np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)
    ids = np.where(np.isfinite(values), ids, 0).astype(np.int64)
    values = np.where(ids > 0, values, -np.inf).astype(np.float32)
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)))
        values = np.pad(values, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return ids, values


def write_config(directory: str | Path, kind: str, version: int, num_items: int, cfg: Any, **extra: Any) -> Path:
    """Create ``directory`` and write a source's config.json: its kind and format version, the
    catalogue size, its settings (a Config) and ``extra`` JSON values -> the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format_version": version, "kind": kind, "num_items": num_items, "config": cfg.to_dict(), **extra}
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
