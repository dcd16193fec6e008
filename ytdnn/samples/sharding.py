"""Which part of the examples one training process reads: the data-parallel shard.

With N processes (``ytdnn.train.distributed``), every process draws the same shuffled epoch (the
shuffling generator is seeded from (seed, epoch) alone) and cuts it into the same global batches
of ``batch_size`` examples; process r keeps the r-th of N contiguous parts of each (contiguous, so
examples a sampler grouped by context stay together). The N parts of a step are therefore exactly
the global batch one process would have trained on, which is what makes N processes train the
model one process trains (tests/train/test_distributed.py).

Prepared example shards (files) are split the same way by ``Shard.files``: process r reads files
r, r + N, ... . Samples code takes a Shard and never asks torch.distributed itself, so it stays
below the training layer and a test can hand it any (index, count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` (torchrun's RANK of WORLD_SIZE); Shard() is the whole data."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in 0..{self.count - 1}, got {self.index}")

    def cut(self, order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """This shard's part of each global batch of ``order`` [E] cut every ``batch_size``:
        arrays of floor or ceil(batch_size / count) examples.

        A global batch with fewer examples than shards ends the epoch here for the shards it
        leaves empty; the training loop ends the epoch on every process when one runs out.
        """
        for start in range(0, len(order), batch_size):
            size = min(batch_size, len(order) - start)
            low, high = start + size * self.index // self.count, start + size * (self.index + 1) // self.count
            if low == high:
                return
            yield order[low:high]

    def files(self, paths: Sequence[T]) -> list[T]:
        """This shard's files of a sorted list of example shards (files r, r + N, ...)."""
        return list(paths[self.index :: self.count])
