"""Training from prepared shards (`ytdnn prepare`): candidate batches streamed from Parquet row
groups, so a log larger than memory trains.

Every epoch visits the row groups of all shards in a new random order, and mixes their rows in a
shuffle buffer: rows accumulate until the buffer holds ``buffer_size`` of them, are permuted,
and all but the last half buffer leave as batches (the rest waits to mix with the next row
groups). Memory is then about one buffer plus one row group, whatever the size of the log. All
randomness comes from the torch.Generator of the epoch (the loop seeds it from (seed, epoch)), so
a run is deterministic and a resumed one sees the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset

from ytdnn.samples.candidate import CandidateBatch
from ytdnn.samples.prepared import batch_from_rows
from ytdnn.samples.sharding import Shard
from ytdnn.samples.streams import Featurizer


class ShardStream(IterableDataset):
    """CandidateBatches of ``batch_size`` examples from Parquet ``shards`` of
    ``candidate_example_rows``; ``featurizer`` normalizes the example age.

    ``epoch(generator)`` is one epoch; iterating the dataset is one epoch seeded with ``seed``.
    ``shard``: this process's part of a data-parallel job (its files, ``Shard.files``).
    """

    def __init__(self, shards: Sequence[str | Path], featurizer: Featurizer, batch_size: int,
                 buffer_size: int = 65_536, seed: int = 0, shard: Shard | None = None):
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("batch_size and buffer_size must be >= 1")
        self.files = (shard or Shard()).files(sorted(Path(s) for s in shards))
        self.featurizer, self.batch_size, self.buffer_size, self.seed = featurizer, batch_size, buffer_size, seed
        self.row_groups = [(f, g) for f in self.files for g in range(pq.ParquetFile(f).num_row_groups)]

    def __len__(self) -> int:
        """Examples per epoch (from the files' footers)."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def __iter__(self) -> Iterator[CandidateBatch]:
        return self.epoch(torch.Generator().manual_seed(self.seed))

    def epoch(self, generator: torch.Generator) -> Iterator[CandidateBatch]:
        """One pass over every example, in an order drawn from ``generator``."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        keep = self.buffer_size // 2  # rows left in the buffer to mix with the next row groups
        buffer: list[pa.Table] = []
        held = 0
        for i in rng.permutation(len(self.row_groups)):
            path, group = self.row_groups[i]
            table = pq.ParquetFile(path).read_row_group(group)
            buffer.append(table)
            held += table.num_rows
            if held >= self.buffer_size:
                mixed = _shuffled(buffer, rng)
                ready = (held - keep) // self.batch_size * self.batch_size
                yield from self._batches(mixed.slice(0, ready))
                buffer, held = [mixed.slice(ready)], held - ready
        if held:
            yield from self._batches(_shuffled(buffer, rng))

    def _batches(self, rows: pa.Table) -> Iterator[CandidateBatch]:
        for start in range(0, rows.num_rows, self.batch_size):
            yield batch_from_rows(rows.slice(start, self.batch_size), self.featurizer)


def _shuffled(tables: list[pa.Table], rng: np.random.Generator) -> pa.Table:
    """The rows of ``tables`` in a random order, as one table."""
    table = pa.concat_tables(tables).combine_chunks()
    return table.take(pa.array(rng.permutation(table.num_rows)))
