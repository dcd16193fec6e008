"""The Spark engine of `ytdnn prepare` (PySpark 4.x on Java 17): the same examples as the local
engine, computed on executors.

What runs where:
- driver: reads nothing but aggregates: the vocabularies' counts, the timestamps' sketch and the
  users table (one row per user) come back to it; it fits the Featurizer and writes prepare.json.
- executors: tokenize the searches, encode the users' features, and run
  ``candidate_example_rows`` on partitions that hold every event of their users (events
  repartitioned by user id), then write the shards. They get the featurizer without its user
  vocabulary (``Featurizer.for_users``): only the item and token vocabularies and the encoders.
  With a generator, a second pass builds the ranker's pages (``page_rows``) the same way, the
  generator's folder shipped to the executors (``SparkContext.addFile``).

Vocabularies and the window are exact (counts and min/max are exact aggregates). The example-age
quantiles come from Spark's ``percentile_approx`` (a Greenwald-Khanna sketch) in the same pass:
each cut point is a logged timestamp whose rank is within ``N / QUANTILE_ACCURACY`` of the exact
cut's (N = number of watches), so the fitted CDF is within 1 / QUANTILE_ACCURACY = 1e-5 of the
exact one at every cut. The local engine's are exact (linear interpolation between order
statistics). The shards store the raw example age in seconds, so the examples are the same either
way; only the age's normalization at training time differs, by at most that bound.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.schema import Dataset
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.text import tokenize_many
from ytdnn.features.users import UserFeatureEncoder
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import page_schema
from ytdnn.samples.prepared import (
    candidate_example_rows,
    example_schema,
    page_rows,
    user_feature_rows,
)
from ytdnn.samples.streams import Featurizer
from ytdnn.scale.prepare import EXAMPLE_TABLES, PAGES, PageJob, write_manifest

DEFAULT_MASTER = "local[2]"
QUANTILE_ACCURACY = 100_000  # percentile_approx's accuracy: rank error <= N / accuracy
_EVENTS = "user_id, kind, item_id, timestamp, query, user_categorical, user_continuous"
WATCH, SEARCH, USER = 0, 1, 2  # the kinds of rows in the per-user event stream


def spark_session(master: str = DEFAULT_MASTER, conf: dict[str, str] | None = None):
    """Start (or reuse) a SparkSession on ``master`` ("local[2]", "spark://host:7077", "yarn").

    The Python workers run this interpreter unless PYSPARK_PYTHON says otherwise (its
    environment has pyarrow, torch and ytdnn); on a cluster, install ytdnn on the executors.
    """
    with arrow_only():
        from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("ytdnn")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    if master.startswith("local") and "spark.sql.shuffle.partitions" not in (conf or {}):
        # Spark's 200 shuffle partitions are for clusters: two per local core (2x faster on tiny data)
        cores = master.partition("[")[2].rstrip("]").split(",")[0]
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() if cores in ("", "*") else int(cores))))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    with arrow_only():  # the session's start checks pandas too
        return builder.getOrCreate()


@contextmanager
def arrow_only() -> Iterator[None]:
    """PySpark warns on pandas >= 3 when its session starts and when a mapInArrow is declared,
    though Arrow UDFs never use pandas; silence exactly that warning (README: dependencies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        yield


def spark_type(kind: pa.DataType) -> str:
    """The Spark SQL type of an Arrow type of the example rows."""
    if pa.types.is_list(kind):
        return f"array<{spark_type(kind.value_type)}>"
    names = {pa.int64(): "bigint", pa.int32(): "int", pa.string(): "string", pa.float32(): "float",
             pa.float64(): "double", pa.bool_(): "boolean"}
    return names[kind]


def spark_schema(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} {spark_type(f.type)}" for f in schema)


def prepare_spark(spark, data: str | Path, out: str | Path, examples: ExampleConfig | None = None,
                  seed: int = 0, num_shards: int = 8, max_items: int | None = 1_000_000,
                  max_tokens: int | None = 1_000_000, pages: PageJob | None = None) -> dict:
    """``prepare_local``'s output, computed by ``spark`` from a canonical data directory."""
    cfg = examples or ExampleConfig()
    tables = _read(spark, Path(data))
    featurizer, rank_error = fit_featurizer(spark, tables, Featurizer(max_items, max_tokens))
    if not featurizer.ordered_:
        raise ValueError("prepared examples need timestamped watches (an ordered log)")
    shipped = featurizer.for_users(pa.array([], _id_type(featurizer)))  # no user vocabulary to ship
    events = _events(tables, shipped)
    folder = Path(out) / "candidates"

    def examples_of(watches: pa.Table, searches: pa.Table, users: pa.Table) -> pa.Table:
        return candidate_example_rows(shipped, cfg, seed, watches, searches, users)

    _write_per_user(events, num_shards, examples_of, example_schema(featurizer, cfg), folder,
                    {"parquet.block.size": 8 * 2**20})
    counts = [pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet"))]
    quantiles = {"method": "approximate (Spark percentile_approx)", "accuracy": QUANTILE_ACCURACY,
                 "rank_error": rank_error}
    built = _prepare_pages(spark, tables, pages, Path(out) / PAGES, num_shards) if pages else None
    return write_manifest(out, featurizer, cfg, seed, "spark", counts, quantiles, built)


def _prepare_pages(spark, tables: dict, job: PageJob, folder: Path, num_shards: int) -> dict:
    """Write the ranker's built pages (``page_rows``) under ``folder``; returns ``job.manifest``.
    The generator's folder reaches the executors through ``SparkContext.addFile``; each partition
    loads it once, without its history, and builds the pages of the users it holds."""
    from pyspark import SparkFiles

    generator = job.load()  # the driver needs its vocabularies (users' features, ids' types)
    shipped = generator.featurizer_.for_users(pa.array([], _id_type(generator.featurizer_)))
    events = _events(tables, shipped)  # the users' features encoded as the generator encodes them
    schema = page_schema(generator.featurizer_)
    del generator
    spark.sparkContext.addFile(str(job.generator), recursive=True)
    name, cfg = job.generator.name, job.impressions

    def pages_of(watches: pa.Table, searches: pa.Table, users: pa.Table) -> pa.Table:
        generator = CandidateGenerator.load(SparkFiles.get(name), history=False)  # once per partition
        return page_rows(generator, cfg, watches, searches, users)

    _write_per_user(events, num_shards, pages_of, schema, folder)
    return job.manifest([pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet"))])


def _write_per_user(events, num_shards: int, rows_of, schema: pa.Schema, folder: Path, options: dict | None = None):
    """Repartition ``events`` (``_events``) by user id into ``num_shards`` partitions, each holding
    every event of its users, and write ``rows_of(watches, searches, users)`` of each (called
    once per partition with watches) as Parquet under ``folder``."""
    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if batches:
            watches, searches, users = _by_kind(pa.Table.from_batches(batches))
            if watches.num_rows:
                yield from rows_of(watches, searches, users).to_batches()

    with arrow_only():
        writer = events.repartition(num_shards, "user_id").mapInArrow(apply, spark_schema(schema)).write.mode("overwrite")
        for key, value in (options or {}).items():
            writer = writer.option(key, value)
        writer.parquet(str(folder))


def _by_kind(events: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One partition's events -> its (watches, searches, encoded user features) tables."""
    kind = events.column("kind").to_numpy()
    watches, searches, users = (events.filter(pa.array(kind == k)) for k in (WATCH, SEARCH, USER))
    return watches, searches, users.select(["user_id", "user_categorical", "user_continuous"])


def fit_featurizer(spark, tables: dict, featurizer: Featurizer) -> tuple[Featurizer, int]:
    """Fit ``featurizer`` from aggregates over the whole log; returns it and the example-age
    quantiles' bound on rank error (in watches)."""
    from pyspark.sql import functions as F

    watches, searches, users = tables["watches"], tables.get("searches"), tables.get("users")
    items = _counted(watches.groupBy("item_id").count(), "item_id")
    user_ids = watches.select("user_id")
    if users is not None:
        user_ids = user_ids.unionByName(users.select("user_id"))
    user_counts = _counted(user_ids.groupBy("user_id").count(), "user_id")
    tokens = None
    if searches is not None:
        with arrow_only():
            token_rows = searches.select("query").mapInArrow(_tokens_of, "token string")
        counted = _counted(token_rows.groupBy("token").count(), "token")
        tokens = counted if len(counted[0]) else None
    q = Featurizer.AGE_QUANTILES
    probabilities = [k / q for k in range(q + 1)]
    # ages are (end - t): the quantile of -t at p plus the end, so one pass gives window and cuts
    stats = watches.agg(
        F.min("timestamp").alias("first"), F.max("timestamp").alias("last"), F.count("timestamp").alias("n"),
        F.percentile_approx(-F.col("timestamp"), probabilities, QUANTILE_ACCURACY).alias("cuts"),
    ).toArrow().to_pylist()[0]
    ordered = stats["n"] > 0
    age = None
    if ordered:
        age = QuantileNormalizer.from_cut_points(np.maximum.accumulate(stats["last"] + np.asarray(stats["cuts"], np.float64)))
    encoder = UserFeatureEncoder().fit(users.toArrow() if users is not None else None)
    featurizer.fit_counted(ordered, items, user_counts, tokens, encoder,
                           (stats["first"] or 0, stats["last"] or 0), age)
    return featurizer, int(np.ceil(stats["n"] / QUANTILE_ACCURACY))


def _tokens_of(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Queries -> their search tokens, one per row (``tokenize_many``: the local tokenizer)."""
    for batch in batches:
        tokens = tokenize_many(batch.column("query")).flatten()
        yield pa.RecordBatch.from_arrays([tokens.cast(pa.string())], names=["token"])


def _counted(df, column: str) -> tuple[pa.Array, np.ndarray]:
    """(distinct values, counts) of a group-by count; nulls are never tokens (Vocabulary.fit)."""
    table = df.where(df[column].isNotNull()).toArrow()
    return table.column(column), table.column("count").to_numpy()


def _read(spark, data: Path) -> dict:
    if not (data / "watches.parquet").exists():
        Dataset.load(data)  # the loader's own error: no watches.parquet in the data directory
    return {n: spark.read.parquet(str(data / f"{n}.parquet")) for n in EXAMPLE_TABLES if (data / f"{n}.parquet").exists()}


def _id_type(featurizer: Featurizer) -> pa.DataType:
    return pa.int64() if featurizer.users_.token_type_ == "int" else pa.string()


def _events(tables: dict, featurizer: Featurizer):
    """One DataFrame of every watch, search and encoded user, by kind (``_EVENTS``, and the
    watches' watch_time when they have one: the built pages' clicks carry it)."""
    from pyspark.sql import functions as F

    watches = tables["watches"]
    item = watches.schema["item_id"].dataType.simpleString()
    none = {"item_id": F.lit(None).cast(item), "timestamp": F.lit(None).cast("bigint"),
            "query": F.lit(None).cast("string"), "user_categorical": F.lit(None).cast("array<bigint>"),
            "user_continuous": F.lit(None).cast("array<float>"), "watch_time": F.lit(None).cast("double")}
    names = _EVENTS.split(", ") + (["watch_time"] if "watch_time" in watches.columns else [])

    def select(df, kind: int, **present):
        columns = {"user_id": F.col("user_id"), "kind": F.lit(kind)} | none | present
        return df.select(*[columns[name].alias(name) for name in names])

    events = select(watches, WATCH, item_id=F.col("item_id"), timestamp=F.col("timestamp").cast("bigint"),
                    watch_time=F.col("watch_time").cast("double") if "watch_time" in names else None)
    if "searches" in tables:
        events = events.unionByName(select(tables["searches"], SEARCH, timestamp=F.col("timestamp").cast("bigint"),
                                           query=F.col("query")))
    if "users" in tables:
        encoded_schema = f"user_id {spark_type(_id_type(featurizer))}, user_categorical array<bigint>, user_continuous array<float>"

        def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                yield from user_feature_rows(featurizer, pa.Table.from_batches([batch])).to_batches()

        with arrow_only():
            encoded = tables["users"].mapInArrow(encode, encoded_schema)
        events = events.unionByName(select(encoded, USER, user_categorical=F.col("user_categorical"),
                                           user_continuous=F.col("user_continuous")))
    return events
