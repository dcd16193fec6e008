"""Exact maximum-inner-product search: the reference every other index is tested against."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from ytdnn.index.base import FaissIndex


class ExactIndex(FaissIndex):
    """Brute force over all items (faiss ``IndexFlatIP``): O(M·d) per query, exact top-k.

    Fine for tests and for corpora up to ~100k items; beyond that use an approximate index.
    """

    kind = "exact"

    @property
    def is_exact(self) -> bool:
        return True

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def _new_faiss_index(self, vectors: np.ndarray) -> faiss.Index:
        return faiss.IndexFlatIP(vectors.shape[1])


BruteForceIndex = ExactIndex  # the name STYLE.md uses
