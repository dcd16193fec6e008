"""Approximate maximum-inner-product search for large corpora (paper §3: any ANN method will do).

Two faiss families behind the same ``Index`` contract as ``ExactIndex``; ``recall_at_k`` measures
either against the exact oracle. bench/index_speed.py compares their settings on 1M items.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from ytdnn.index.base import FaissIndex, Index


class HNSWIndex(FaissIndex):
    """Hierarchical navigable small-world graph (faiss ``IndexHNSWFlat``, inner-product metric).

    m: graph degree (memory ~ M·(d + 2m) floats); ef_construction: beam width while building
    (higher = better graph, slower build); ef_search: beam width per query (higher = better recall,
    slower search; raised to k automatically when k is larger).
    Inner product is not a metric, and on item vectors whose norms grow with popularity the graph
    leaves parts of the corpus hard to reach: on the 1M benchmark recall@100 stayed at 0.66-0.76
    (ef_search 128-512), so ``IVFIndex`` is the default. Building with several faiss threads may
    give slightly different graphs from run to run.
    """

    kind = "hnsw"

    def __init__(self, m: int = 32, ef_construction: int = 128, ef_search: int = 128) -> None:
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(
                f"need m >= 2, ef_construction >= 1, ef_search >= 1; got {m}, {ef_construction}, {ef_search}"
            )
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search

    @property
    def is_exact(self) -> bool:
        return False

    @property
    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def _new_faiss_index(self, vectors: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(vectors.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _prepare_search(self) -> None:
        self.faiss_index_.hnsw.efSearch = self.ef_search


class IVFIndex(FaissIndex):
    """Inverted file over k-means cells (faiss ``IndexIVFFlat``, inner-product metric).

    nlist: number of cells; None picks 2·sqrt(M), capped at M / 39 so every cell gets the ~39
    training points faiss asks for. nprobe: cells scanned per query (capped at nlist).
    The defaults measured best on 1M popularity-scaled vectors (bench/index_speed.py): 2·sqrt(M)
    cells with nprobe=64 (3% of the corpus scanned) gave recall@100 0.96-0.97 at 17-19x exact speed,
    better than 4096 cells with nprobe=128 (0.96 at 13x), and k-means over fewer cells builds 4x
    faster.
    A query scans about 32·sqrt(M) vectors, so small corpora are searched almost exhaustively.
    """

    kind = "ivf"

    def __init__(self, nlist: int | None = None, nprobe: int = 64) -> None:
        if (nlist is not None and nlist < 1) or nprobe < 1:
            raise ValueError(f"need nlist >= 1 (or None) and nprobe >= 1; got {nlist}, {nprobe}")
        self.nlist = nlist
        self.nprobe = nprobe

    @property
    def is_exact(self) -> bool:
        return False

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe}

    def _new_faiss_index(self, vectors: np.ndarray) -> faiss.Index:
        num_items, dim = vectors.shape
        nlist = self.nlist or max(1, min(round(2 * math.sqrt(num_items)), num_items // 39))
        if nlist > num_items:
            raise ValueError(f"nlist={nlist} cells need at least as many vectors, got {num_items}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # faiss's default, made explicit: builds are reproducible
        index.train(vectors)
        return index

    def _prepare_search(self) -> None:
        self.faiss_index_.nprobe = min(self.nprobe, self.faiss_index_.nlist)

    @property
    def num_cells(self) -> int:
        """The number of cells of the built index (``nlist``, or the one None picked)."""
        self._check_built()
        return self.faiss_index_.nlist


def recall_at_k(approximate: Index, exact: Index, queries: np.ndarray, k: int) -> float:
    """Share of the exact top-k ids that ``approximate`` also returns in its top k: [Q, d] -> float."""
    _, truth = exact.search(queries, k)
    _, found = approximate.search(queries, k)
    hits = sum(len(np.intersect1d(t[t >= 0], f[f >= 0])) for t, f in zip(truth, found))
    return hits / max(1, int((truth >= 0).sum()))
