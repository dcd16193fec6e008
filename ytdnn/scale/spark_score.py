"""The Spark engine of `ytdnn score`: ``score_users`` inside ``mapInArrow``.

What runs where:
- driver: loads the model without its training history (vocabularies and weights) for the
  output's schema and the number of partitions; item vectors are scored on the driver (a few MB
  for 1M items). Given the logs (``data``), it only plans the job: it reads no history.
  Without them, it reads the model's history once and writes it as per-user rows
  (``history_rows``) to a staging Parquet folder beside the output (~8 GB for 10M users of 50
  watches: ``data`` avoids it).
- executors: the model directory reaches them through ``SparkContext.addFile`` (Spark's file
  broadcast: item vectors and index included); each partition loads it once, without the
  training history (``Recommender.load(history=False)``), and scores only the users it holds.
  Given the logs, a partition holds every event of its users (events repartitioned by user id,
  as ``prepare_spark`` does) and builds their history from them (``score_logs``); otherwise it
  reads their staged rows (``score_partition``).
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
    output_schema,
    score_logs,
    score_partition,
)
from ytdnn.scale.spark import (
    _by_kind,
    _events,
    _id_type,
    _read,
    arrow_only,
    spark_schema,
)


def score_spark(spark, model: str | Path, what: str, out: str | Path, k: int = 10,
                users_per_partition: int = USERS_PER_PARTITION, timings: dict | None = None,
                data: str | Path | None = None) -> int:
    """Write ``what`` ("users", "items", "recommendations") of a model directory as a Parquet
    folder ``out``; returns the number of rows written. data: the canonical logs the model was
    trained on, from which the executors build their users' history (users the model does not
    know are skipped); without them the driver stages the model's history. ``timings``, when
    given, receives the driver's serial part: {"driver_s": seconds before the executors score}."""
    from pyspark import SparkFiles

    start = time.perf_counter()
    model, out = Path(model).resolve(), Path(out)
    if what == "items":
        table = item_vectors(Recommender.load(model, history=False))
        with arrow_only():
            spark.createDataFrame(table).coalesce(1).write.mode("overwrite").parquet(str(out))
        return table.num_rows
    staging = None
    try:
        if data is None:
            rec = Recommender.load(model)
            staging = Path(tempfile.mkdtemp(prefix="ytdnn-history-", dir=out.parent if out.parent.exists() else None))
            users, score_part = _staged_history(spark, rec, staging, users_per_partition), score_partition
        else:
            rec = Recommender.load(model, history=False)
            users, score_part = _events_by_user(spark, rec, Path(data), users_per_partition), _score_events
        schema = spark_schema(output_schema(rec.candidates, what))
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
            yield from score_part(scorer, what, pa.Table.from_batches(batches), k).to_batches()

        with arrow_only():
            users.mapInArrow(score, schema).write.mode("overwrite").parquet(str(out))
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in out.glob("*.parquet"))


def _staged_history(spark, rec: Recommender, staging: Path, users_per_partition: int):
    """The model's history as per-user rows, written to ``staging`` and read back as a DataFrame."""
    for i, rows in enumerate(history_rows(rec.candidates, users_per_partition)):
        pq.write_table(rows, staging / f"part-{i:05d}.parquet")
    users = spark.read.parquet(str(staging))
    cores = spark.sparkContext.defaultParallelism
    if users.rdd.getNumPartitions() < cores:  # few users: spread them over every core (a small shuffle)
        users = users.repartition(cores)
    return users


def _events_by_user(spark, rec: Recommender, data: Path, users_per_partition: int):
    """Every watch, search and encoded user row of the logs in ``data`` (``_events``), in
    partitions of about ``users_per_partition`` of the model's users, each holding every event of
    its users."""
    featurizer = rec.candidates.featurizer_
    shipped = featurizer.for_users(pa.array([], _id_type(featurizer)))  # no user vocabulary to ship
    events = _events(_read(spark, data), shipped)
    num_users = len(featurizer.users_) - 1
    partitions = max(-(-num_users // users_per_partition), spark.sparkContext.defaultParallelism)
    return events.repartition(partitions, "user_id")


def _score_events(rec: Recommender, what: str, events: pa.Table, k: int) -> pa.Table:
    """``score_logs`` of one partition of ``_events`` rows (every event of its users)."""
    return score_logs(rec, what, *_by_kind(events), k=k)
