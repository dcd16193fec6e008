"""Nearest-neighbour search over item vectors: exact (the oracle) and approximate (IVF, HNSW)."""

from ytdnn.index.approximate import HNSWIndex, IVFIndex, recall_at_k
from ytdnn.index.base import FaissIndex, Index, load_index
from ytdnn.index.exact import BruteForceIndex, ExactIndex
from ytdnn.index.factory import IndexConfig, make_index

__all__ = [
    "BruteForceIndex",
    "ExactIndex",
    "FaissIndex",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "IndexConfig",
    "load_index",
    "make_index",
    "recall_at_k",
]
