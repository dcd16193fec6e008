"""The Spark engine of `ytdnn score`: ``score_partition`` inside ``mapInArrow``.

What runs where:
- driver: reads the model's history once and writes it as per-user rows (``history_rows``) to a
  staging Parquet folder beside the output, which Spark reads back in partitions of about
  ``users_per_partition`` users; item vectors are scored on the driver (a few MB for 1M items).
- executors: the model directory reaches them through ``SparkContext.addFile`` (Spark's file
  broadcast: item vectors and index included); each partition loads it once, without the
  training history (``Recommender.load(history=False)``), and scores only the users it holds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ytdnn.pipeline import Recommender
from ytdnn.scale.score import (
    USERS_PER_PARTITION,
    history_rows,
    item_vectors,
    score_partition,
)
from ytdnn.scale.spark import arrow_only, spark_schema


def score_spark(spark, model: str | Path, what: str, out: str | Path, k: int = 10,
                users_per_partition: int = USERS_PER_PARTITION, timings: dict | None = None) -> int:
    """Write ``what`` ("users", "items", "recommendations") of a model directory as a Parquet
    folder ``out``; returns the number of rows written. ``timings``, when given, receives the
    driver's serial part: {"driver_s": seconds to load the model and stage the history}."""
    from pyspark import SparkFiles

    start = time.perf_counter()

    model, out = Path(model).resolve(), Path(out)
    if what == "items":
        table = item_vectors(Recommender.load(model, history=False))
        with arrow_only():
            spark.createDataFrame(table).coalesce(1).write.mode("overwrite").parquet(str(out))
        return table.num_rows
    rec = Recommender.load(model)
    staging = Path(tempfile.mkdtemp(prefix="ytdnn-history-", dir=out.parent if out.parent.exists() else None))
    try:
        for i, rows in enumerate(history_rows(rec.candidates, users_per_partition)):
            pq.write_table(rows, staging / f"part-{i:05d}.parquet")
        sample = score_partition(rec, what, rows.slice(0, 1), k)  # the output schema
        del rec  # the driver needs no model while the executors score
        if timings is not None:
            timings["driver_s"] = time.perf_counter() - start
        spark.sparkContext.addFile(str(model), recursive=True)
        name = model.name

        def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            batches = list(batches)
            if not batches:
                return
            scorer = Recommender.load(SparkFiles.get(name), history=False)  # once per partition
            yield from score_partition(scorer, what, pa.Table.from_batches(batches), k).to_batches()

        users = spark.read.parquet(str(staging))
        cores = spark.sparkContext.defaultParallelism
        if users.rdd.getNumPartitions() < cores:  # few users: spread them over every core (a small shuffle)
            users = users.repartition(cores)
        with arrow_only():
            scored = users.mapInArrow(score, spark_schema(sample.schema))
            scored.write.mode("overwrite").parquet(str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in out.glob("*.parquet"))
