"""`ytdnn score`: every user's vector, every item's vector, or every user's top-k two-stage
recommendations of a model directory, as Parquet.

Users are scored in partitions, each by a generator that sees only its users' history
(``CandidateGenerator.with_streams``), with the same code as serving (``user_vectors``,
``Recommender.recommend_batch`` on the fast path): ``score_users``, which both engines call, so
their outputs are the same. A partition's history comes from one of two places:

- the logs the model was trained on (``--data``): ``score_logs`` encodes the partition's own
  events (every watch, search and user row of its users) with the model's featurizer. Nothing
  reads the model's whole history (history.npz). The users scored are those of the logs that the
  model's user vocabulary holds (on the training logs: every user the model knows); others are
  skipped.
- the model directory's history.npz: ``history_rows`` cuts it into rows (one per user: encoded
  watches, searches and features), ``score_partition`` scores them. The Spark engine
  (``ytdnn.scale.spark_score``) then stages those rows on the driver.

The local engine runs the partitions in this process, the Spark engine inside ``mapInArrow``,
the model loaded once per partition without the training history (``Recommender.load(history=False)``).

Outputs (one Parquet file, or a folder of part files from Spark):
    users            user_id, vector list<float32> [d]
    items            item_id, vector list<float32> [d] (+ bias float32 when the model has one)
    recommendations  user_id, rank int32 (1 = best), item_id, score float64
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.features.vocab import ARROW_TYPES
from ytdnn.pipeline import Recommender
from ytdnn.samples.prepared import fixed_lists, list_matrix, partition_streams, user_feature_rows
from ytdnn.samples.streams import EventStreams
from ytdnn.scale.prepare import _split, load_example_tables

WHAT = ("users", "items", "recommendations")
USERS_PER_PARTITION = 50_000  # local engine's chunk, and the Spark engine's partition size
# (user, candidate) rows the ranker featurizes per recommend_batch call: its feature arrays grow
# with the batch, and past a few 10k rows each pass over them falls out of the CPU caches
BATCH_ROWS = 32_768
_LISTS = ("watch_items", "watch_times", "tokens", "token_times")


def item_vectors(rec: Recommender) -> pa.Table:
    """Every item of the vocabulary (ids 1..V-1): item_id, vector [d], and bias when there is one."""
    gen = rec.candidates
    with torch.no_grad():
        vectors = gen.model_.item_vectors().detach().numpy()[1:]  # [V - 1, d]
        bias = gen.model_.item_biases()
    columns = {"item_id": gen.featurizer_.items_.token_array, "vector": fixed_lists(vectors, pa.float32())}
    if bias is not None:
        columns["bias"] = pa.array(bias.detach().numpy()[1:], pa.float32())
    return pa.table(columns)


def output_schema(gen: CandidateGenerator, what: str) -> pa.Schema:
    """The schema of ``score_users``'s tables for ``what`` ("users" or "recommendations")."""
    user_id = pa.field("user_id", ARROW_TYPES[gen.featurizer_.users_.token_type_])
    if what == "users":
        return pa.schema([user_id, pa.field("vector", pa.list_(pa.float32()))])
    return pa.schema([user_id, pa.field("rank", pa.int32()),
                      pa.field("item_id", ARROW_TYPES[gen.featurizer_.items_.token_type_]),
                      pa.field("score", pa.float64())])


def score_users(rec: Recommender, what: str, gen: CandidateGenerator, user_ids: pa.Array, k: int = 10) -> pa.Table:
    """The vectors, or the top k, of users [U'] whose history ``gen`` (``rec.candidates`` serving
    one partition: ``with_streams``) holds; rows in the order of ``user_ids``. The one scoring
    function of both engines."""
    schema = output_schema(gen, what)
    user_ids = user_ids.cast(schema.field("user_id").type)  # Spark may hand strings as large_string
    if what == "users":
        vectors = gen.user_vectors(gen.user_rows(user_ids))  # [U', d]
        return pa.table([user_ids, fixed_lists(vectors, pa.float32())], schema=schema)
    # the fast path ranks with each item's share of the ranker's first layer precomputed: the
    # same lists, scores equal to ~1e-6 relative (Recommender)
    part = Recommender(gen, rec.ranker, rec.num_candidates, rec.settings, fast_path=True, sources=rec.sources)
    ids, out = user_ids.to_pylist(), []
    batch_size = max(1, BATCH_ROWS // (max(rec.num_candidates, k) + sum(n for _, n in rec.sources)))
    for a in range(0, len(ids), batch_size):
        out += part.recommend_batch(ids[a : a + batch_size], k)
    lengths = np.array([len(r.item_ids) for r in out], np.int64)
    return pa.table([
        user_ids.take(pa.array(np.repeat(np.arange(len(out)), lengths), pa.int64())),
        pa.array(np.concatenate([np.arange(1, n + 1) for n in lengths] or [[]]).astype(np.int32)),
        pa.array(np.concatenate([r.item_ids for r in out] or [[]]).tolist(), schema.field("item_id").type),
        pa.array(np.concatenate([r.scores for r in out] or [[]]).astype(np.float64)),
    ], schema=schema)


def score_logs(rec: Recommender, what: str, watches: pa.Table, searches: pa.Table | None,
               user_features: pa.Table, k: int = 10) -> pa.Table:
    """Score the users of a partition of the logs that the model knows, from their events:
    watches and searches (every one of each user's: whole users), user_features
    (``user_feature_rows`` of the users table). Users unknown to the model are skipped; rows come
    in the order of the model's user vocabulary."""
    gen = rec.candidates
    featurizer, streams = partition_streams(gen.featurizer_, watches, searches, user_features)
    users = featurizer.users_.token_array
    known = gen.featurizer_.users_.encode(users)  # [U'] the model's rows, 0 = unknown
    order = np.argsort(known, kind="stable")[np.count_nonzero(known == 0):]
    return score_users(rec, what, gen.with_streams(featurizer, streams), users.take(pa.array(order)), k)


def log_partitions(gen: CandidateGenerator, data: str | Path, users_per_chunk: int = USERS_PER_PARTITION
                   ) -> Iterator[tuple[pa.Table, pa.Table | None, pa.Table]]:
    """The logs of a data directory as ``score_logs`` takes them, in chunks of the model's users
    (row order): (watches, searches or None, user features). Rows of users the model does not
    know are left out."""
    dataset = load_example_tables(data)
    num_users = len(gen.featurizer_.users_) - 1
    num_chunks = max(-(-num_users // users_per_chunk), 1)
    chunk_of = np.r_[num_chunks, np.arange(num_users) // users_per_chunk]  # unknown users: past the last
    features = user_feature_rows(gen.featurizer_, dataset.users)
    parts = [_split(t, gen.featurizer_, chunk_of, num_chunks) for t in (dataset.watches, dataset.searches, features)]
    for c in range(num_chunks):
        yield tuple(p[c] if p is not None else None for p in parts)


def history_rows(gen: CandidateGenerator, users_per_chunk: int = USERS_PER_PARTITION) -> Iterator[pa.Table]:
    """The model's history, one row per known user, in chunks: user_id, watch_items, watch_times,
    tokens, token_times (lists, oldest first), user_categorical [C], user_continuous [Fc]."""
    s, users = gen.streams_, gen.featurizer_.users_.token_array  # users[r - 1] is row r
    for first in range(1, s.num_users, users_per_chunk):
        rows = np.arange(first, min(first + users_per_chunk, s.num_users))
        columns = {"user_id": users[first - 1 : rows[-1]]}
        for name, values, offsets in (("watch_items", s.watch_items, s.watch_offsets),
                                      ("watch_times", s.watch_times, s.watch_offsets),
                                      ("tokens", s.tokens, s.token_offsets),
                                      ("token_times", s.token_times, s.token_offsets)):
            ends = offsets[first : rows[-1] + 2]
            columns[name] = pa.ListArray.from_arrays(pa.array(ends - ends[0], pa.int32()),
                                                     pa.array(values[ends[0] : ends[-1]], pa.int64()))
        columns["user_categorical"] = fixed_lists(s.user_categorical[rows], pa.int64())
        columns["user_continuous"] = fixed_lists(s.user_continuous[rows], pa.float32())
        yield pa.table(columns)


def score_partition(rec: Recommender, what: str, rows: pa.Table, k: int = 10) -> pa.Table:
    """Score the users of ``history_rows`` rows [U']: their vectors, or their top k."""
    return score_users(rec, what, _partition_generator(rec.candidates, rows), rows.column("user_id").combine_chunks(), k)


def score_local(model: str | Path, what: str, out: str | Path, k: int = 10, data: str | Path | None = None) -> int:
    """Write ``what`` of a model directory to the Parquet file ``out``; returns its rows.
    data: the canonical logs the model was trained on; the users' history is then built from them
    (``score_logs``) instead of read from the model (history.npz)."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a directory: the local engine writes one Parquet file (the spark engine, a folder)")
    rec = Recommender.load(model, history=what != "items" and data is None)
    out.parent.mkdir(parents=True, exist_ok=True)
    if what == "items":
        table = item_vectors(rec)
        pq.write_table(table, out)
        return table.num_rows
    if data is None:
        if not rec.candidates.keeps_history:
            out.unlink(missing_ok=True)
            raise ValueError(f"{model} keeps no history (trained from prepared shards without --data): every user "
                             "would get the same list; pass the logs with --data")
        tables = (score_partition(rec, what, rows, k) for rows in history_rows(rec.candidates))
    else:
        tables = (score_logs(rec, what, *logs, k=k) for logs in log_partitions(rec.candidates, data))
    total = 0
    with pq.ParquetWriter(out, output_schema(rec.candidates, what)) as writer:
        for table in tables:
            writer.write_table(table)
            total += table.num_rows
    if not total:
        out.unlink()
        raise ValueError(f"no user to score: {model} knows none" if data is None else
                         f"no user of {data} is known to the model {model}: are these the logs it was trained on?")
    return total


def _partition_generator(gen: CandidateGenerator, rows: pa.Table) -> CandidateGenerator:
    """``gen`` serving only the users of ``rows``: their streams, row r = the r-th of its own user
    vocabulary (row 0 the unknown user, empty)."""
    featurizer = gen.featurizer_.for_users(rows.column("user_id"))
    order = np.argsort(featurizer.users_.encode(rows.column("user_id")))  # rows in stream-row order
    rows = rows.take(pa.array(order))
    lists = {name: rows.column(name).combine_chunks() for name in _LISTS}

    def flat(name: str) -> np.ndarray:
        return lists[name].flatten().to_numpy(zero_copy_only=False).astype(np.int64)

    def offsets(name: str) -> np.ndarray:
        return np.r_[0, np.cumsum(_lengths(lists[name]))].astype(np.int64)

    streams = EventStreams(
        watch_items=flat("watch_items"), watch_times=flat("watch_times"), watch_offsets=np.r_[0, offsets("watch_items")],
        tokens=flat("tokens"), token_times=flat("token_times"), token_offsets=np.r_[0, offsets("tokens")],
        user_categorical=_with_row_zero(rows.column("user_categorical"), np.int64, gen),
        user_continuous=_with_row_zero(rows.column("user_continuous"), np.float32, gen),
        ordered=gen.featurizer_.ordered_,
    )
    return gen.with_streams(featurizer, streams)


def _lengths(lists: pa.ListArray) -> np.ndarray:
    """[N] lengths of a list array's rows."""
    return np.diff(lists.offsets.to_numpy()).astype(np.int64)


def _with_row_zero(column, dtype, gen: CandidateGenerator) -> np.ndarray:
    """[U', F] features with the unknown user's zero row on top -> [U' + 1, F]."""
    encoder = gen.featurizer_.user_features_
    width = len(encoder.categorical_) if dtype is np.int64 else encoder.num_continuous
    matrix = list_matrix(column, dtype).reshape(len(column), width)
    return np.concatenate([np.zeros((1, width), dtype), matrix])
