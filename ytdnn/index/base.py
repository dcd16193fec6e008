"""The nearest-neighbour index contract (paper §3: serving is top-k by inner product v_i · u).

Every index implements ``Index``: ``build(vectors, ids) -> self``; ``search(queries, k, exclude) ->
(scores, ids)``; ``is_exact``; ``save(path)`` / ``load(path)``. ``FaissIndex`` implements all of it
on top of one faiss index; subclasses only say which faiss index to make and how to tune its search.

Exclusion (e.g. a user's already-watched items) is done by over-fetching: a query that excludes E
ids asks faiss for k + E results, drops the excluded ones and keeps the first k. This is exact for an
exact index however many excluded items sit at the top. Queries are grouped by their number of
exclusions rounded up to a power of two, so one heavy user does not make every query of the batch
fetch thousands. A
per-query faiss ``IDSelector`` would avoid the over-fetch but needs one faiss call per query.

A saved index is a directory of ``index.faiss`` (faiss.write_index), ``ids.npy`` (loaded with
allow_pickle=False) and ``index.json`` (kind and parameters): loading never unpickles anything.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import faiss
import numpy as np

from ytdnn.modeldir import ModelDir, check_config

FORMAT_VERSION = 1
# index.json
_META_SCHEMA = {"format": int, "kind": str, "params": dict, "dim": int, "num_items": int}
PAD_ID = -1  # ids returned when fewer than k items remain after exclusion
PAD_SCORE = -np.inf

Exclude = Sequence[Sequence[int] | np.ndarray | None] | None


@runtime_checkable
class Index(Protocol):
    """Top-k maximum-inner-product search over item vectors."""

    @property
    def is_exact(self) -> bool: ...

    def build(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> Self:
        """vectors: [M, d] float; ids: [M] int64 >= 0, unique (default 0..M-1). Returns self."""

    def search(
        self, queries: np.ndarray, k: int, exclude: Exclude = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries: [Q, d]; exclude: Q arrays of ids (or None). -> scores [Q, k] float32, ids [Q, k]
        int64, best first, padded with score -inf / id -1 when fewer than k items remain."""

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Self: ...


def as_float_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """[n, d] float array (numpy or torch) -> C-contiguous float32; clear errors otherwise."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} have dimension {x.shape[1]}, the index has {dim}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_ids(ids: Any, num_vectors: int) -> np.ndarray:
    if ids is None:
        return np.arange(num_vectors, dtype=np.int64)
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.shape != (num_vectors,):
        raise ValueError(f"ids must have shape ({num_vectors},), got {ids.shape}")
    if num_vectors and ids.min() < 0:
        raise ValueError(f"ids must be >= 0 ({PAD_ID} marks padding in results)")
    if len(np.unique(ids)) != num_vectors:
        raise ValueError("ids must be unique")
    return ids.astype(np.int64)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


class FaissIndex(ABC):
    """An ``Index`` on one faiss index over positions 0..M-1; ``ids_`` maps positions to ids."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[FaissIndex]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FaissIndex.registry[cls.kind] = cls

    @property
    @abstractmethod
    def is_exact(self) -> bool: ...

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor arguments, saved in index.json: ``type(self)(**params)`` recreates it."""

    @abstractmethod
    def _new_faiss_index(self, vectors: np.ndarray) -> faiss.Index:
        """An empty (trained if need be) faiss index for vectors [M, d] float32."""

    def _prepare_search(self) -> None:
        """Apply search-time settings (efSearch, nprobe) to ``faiss_index_``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def build(self, vectors: Any, ids: Any = None) -> Self:
        """vectors: [M, d] float; ids: [M] int >= 0, unique (default 0..M-1). Returns self."""
        vectors = as_float_matrix(vectors, "vectors")
        if len(vectors) == 0:
            raise ValueError("cannot build an index of 0 vectors")
        ids = _as_ids(ids, len(vectors))
        index = self._new_faiss_index(vectors)
        index.add(vectors)
        self._set_fitted(index, ids)
        return self

    def _set_fitted(self, index: faiss.Index, ids: np.ndarray) -> None:
        self.faiss_index_ = index
        self.ids_ = ids  # [M] int64, the id of each faiss position
        self.dim_ = index.d
        self._sorter = np.argsort(ids, kind="stable")  # [M]; ids_[_sorter] is sorted
        self._sorted_ids = ids[self._sorter]

    @property
    def num_items(self) -> int:
        self._check_built()
        return len(self.ids_)

    def _check_built(self) -> None:
        if not hasattr(self, "faiss_index_"):
            raise RuntimeError(
                f"{type(self).__name__} is not built: call build(vectors, ids) first"
            )

    def search(
        self, queries: Any, k: int, exclude: Exclude = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries: [Q, d] float; exclude: Q sequences of ids or None. Returns scores [Q, k]
        float32 and ids [Q, k] int64, best first, padded with -inf / -1."""
        self._check_built()
        queries = as_float_matrix(queries, "queries", dim=self.dim_)
        k = _check_k(k)
        num_queries, num_items = len(queries), self.num_items
        excluded_keys, num_excluded = self._excluded_keys(exclude, num_queries)  # [X], [Q]
        # extra results to fetch per query: its number of exclusions rounded up to a power of two,
        # so queries fall into few groups (one faiss call each)
        extra = np.where(num_excluded > 0, 2 ** np.ceil(np.log2(np.maximum(num_excluded, 1))), 0)
        fetch = np.minimum(k + extra.astype(np.int64), num_items)  # [Q]
        scores = np.full((num_queries, k), PAD_SCORE, dtype=np.float32)
        ids = np.full((num_queries, k), PAD_ID, dtype=np.int64)
        self._prepare_search()
        for size in np.unique(fetch):
            rows = np.flatnonzero(fetch == size)  # [R]
            # [R, size] each; position -1 where faiss found fewer than size
            found_scores, positions = self.faiss_index_.search(queries[rows], int(size))
            keep = positions >= 0
            if len(excluded_keys):
                keys = rows[:, None] * num_items + positions  # [R, size]
                # excluded_keys is sorted: a binary search per key, where np.isin sorts both
                # again (a third of the search's time at serving)
                at = np.searchsorted(excluded_keys, keys).clip(max=len(excluded_keys) - 1)
                keep &= excluded_keys[at] != keys
            # stable: kept results move to the front in faiss's best-first order
            order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # [R, min(k, size)]
            taken = np.take_along_axis(keep, order, axis=1)
            width = order.shape[1]
            scores[rows, :width] = np.where(
                taken, np.take_along_axis(found_scores, order, axis=1), PAD_SCORE
            )
            ids[rows, :width] = np.where(
                taken, self.ids_[np.take_along_axis(positions, order, axis=1).clip(0)], PAD_ID
            )
        return scores, ids

    def _excluded_keys(self, exclude: Exclude, num_queries: int) -> tuple[np.ndarray, np.ndarray]:
        """Unique keys row * M + position of every excluded id present in the index, [X] sorted,
        and the number of them per query [Q]."""
        num_items = self.num_items
        if exclude is None:
            return np.empty(0, np.int64), np.zeros(num_queries, np.int64)
        if len(exclude) != num_queries:
            raise ValueError(f"exclude has {len(exclude)} entries for {num_queries} queries")
        arrays = [np.asarray([] if e is None else e).reshape(-1) for e in exclude]
        for a in arrays:
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"exclude entries must be integer ids, got dtype {a.dtype}")
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        if lengths.sum() == 0:
            return np.empty(0, np.int64), np.zeros(num_queries, np.int64)
        flat = np.concatenate(arrays).astype(np.int64)  # [E]
        rows = np.repeat(np.arange(num_queries, dtype=np.int64), lengths)  # [E]
        where = np.searchsorted(self._sorted_ids, flat).clip(max=num_items - 1)
        present = self._sorted_ids[where] == flat  # ids absent from the index cost nothing
        keys = np.unique(rows[present] * num_items + self._sorter[where[present]])
        return keys, np.bincount(keys // num_items, minlength=num_queries)

    def save(self, path: str | Path) -> None:
        """Write index.faiss, ids.npy and index.json into the directory ``path``."""
        self._check_built()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.faiss_index_, str(path / "index.faiss"))
        np.save(path / "ids.npy", self.ids_, allow_pickle=False)
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "params": self.params,
            "dim": self.dim_,
            "num_items": self.num_items,
        }
        (path / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a directory written by ``save``. On ``FaissIndex`` itself, any kind is accepted.

        The files are confined to ``path`` and any failure is a ModelDirError (a ValueError)
        naming the directory and the file (ytdnn.modeldir).
        """
        md = ModelDir(path, what="index")
        with md.loading():
            try:
                meta = check_config(md.read_json("index.json"), _META_SCHEMA)
            except ValueError as err:
                raise md.error(str(err)) from err
            if meta["format"] != FORMAT_VERSION:
                raise md.error(f"unsupported index format {meta['format']!r}")
            kind = meta["kind"]
            if kind not in FaissIndex.registry:
                raise md.error(f"unknown index kind {kind!r}")
            target = FaissIndex.registry[kind]
            if cls is not FaissIndex and target is not cls:
                raise md.error(f"holds a {target.__name__}, not a {cls.__name__}")
            index = target(**meta["params"])
            ids = np.load(md.file("ids.npy"), allow_pickle=False)
            if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != meta["num_items"]:
                raise md.error(f"not {meta['num_items']} integer ids")
            faiss_index = faiss.read_index(str(md.file("index.faiss")))
            if faiss_index.ntotal != len(ids) or faiss_index.d != meta["dim"]:
                raise md.error(f"{faiss_index.ntotal} vectors of width {faiss_index.d}, where "
                               f"index.json and ids.npy say {len(ids)} of width {meta['dim']}")
            index._set_fitted(faiss_index, ids.astype(np.int64))
        return index


def load_index(path: str | Path) -> FaissIndex:
    """Load any saved index; its kind is read from index.json."""
    return FaissIndex.load(path)
