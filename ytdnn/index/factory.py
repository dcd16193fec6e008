"""IndexConfig: which index serves the candidate generator, as a JSON-round-tripping config."""

from __future__ import annotations

from dataclasses import dataclass

from ytdnn.config import Config
from ytdnn.index.approximate import HNSWIndex, IVFIndex
from ytdnn.index.base import FaissIndex
from ytdnn.index.exact import ExactIndex


@dataclass(frozen=True)
class IndexConfig(Config):
    # IVF measured best on 1M items (bench/index_speed.py): recall@100 0.96 at 17x exact speed;
    # HNSW's inner-product graph stayed below 0.8 recall@100 on popularity-scaled item vectors.
    kind: str = "ivf"  # "exact" | "ivf" | "hnsw"
    nlist: int | None = None  # IVF cells; None = 2·sqrt(M), at most M / 39
    nprobe: int = 64  # IVF cells scanned per query
    m: int = 32  # HNSW graph degree
    ef_construction: int = 128
    ef_search: int = 128

    def validate(self) -> None:
        if self.kind not in FaissIndex.registry:
            raise ValueError(
                f"index kind must be one of {sorted(FaissIndex.registry)}, got {self.kind!r}"
            )


def make_index(config: IndexConfig) -> FaissIndex:
    """An unbuilt index of ``config.kind`` with the config's settings for that kind."""
    if config.kind == "exact":
        return ExactIndex()
    if config.kind == "hnsw":
        return HNSWIndex(config.m, config.ef_construction, config.ef_search)
    return IVFIndex(config.nlist, config.nprobe)
