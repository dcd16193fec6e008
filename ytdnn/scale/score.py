"""`ytdnn score`: every user's vector, every item's vector, or every user's top-k two-stage
recommendations of a model directory, as Parquet.

Users are scored in partitions. A partition holds its users' rows of the model's history
(``history_rows``: encoded watches, searches and features, one row per user), and
``score_partition`` scores them with a generator that sees only those users
(``CandidateGenerator.with_streams``): the same code as serving (``user_vectors``,
``Recommender.recommend_batch``). The local engine runs it on chunks of users in this process,
the Spark engine (``ytdnn.scale.spark_score``) inside ``mapInArrow``, the model loaded once per
partition without the training history (``Recommender.load(history=False)``), so the outputs are the same.

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
from ytdnn.samples.prepared import fixed_lists, list_matrix
from ytdnn.samples.streams import EventStreams

WHAT = ("users", "items", "recommendations")
USERS_PER_PARTITION = 50_000  # local engine's chunk, and the Spark engine's partition size
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


def score_partition(rec: Recommender, what: str, rows: pa.Table, k: int = 10, batch_size: int = 256) -> pa.Table:
    """Score the users of ``history_rows`` rows [U']: their vectors, or their top k."""
    gen = _partition_generator(rec.candidates, rows)
    user_ids = rows.column("user_id")
    if what == "users":
        vectors = gen.user_vectors(gen.user_rows(user_ids))  # [U', d]
        return pa.table({"user_id": user_ids, "vector": fixed_lists(vectors, pa.float32())})
    part = Recommender(gen, rec.ranker, rec.num_candidates, rec.settings)
    ids, out = user_ids.to_pylist(), []
    for a in range(0, len(ids), batch_size):
        out += part.recommend_batch(ids[a : a + batch_size], k)
    lengths = [len(r.item_ids) for r in out]
    return pa.table({
        "user_id": user_ids.take(pa.array(np.repeat(np.arange(len(out)), lengths), pa.int64())),
        "rank": pa.array(np.concatenate([np.arange(1, n + 1) for n in lengths] or [[]]).astype(np.int32)),
        "item_id": pa.array(np.concatenate([r.item_ids for r in out] or [[]]).tolist(),
                            ARROW_TYPES[gen.featurizer_.items_.token_type_]),
        "score": pa.array(np.concatenate([r.scores for r in out] or [[]]).astype(np.float64)),
    })


def score_local(model: str | Path, what: str, out: str | Path, k: int = 10) -> int:
    """Write ``what`` of a model directory to the Parquet file ``out``; returns its rows."""
    rec = Recommender.load(model, history=what != "items")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if what == "items":
        table = item_vectors(rec)
        pq.write_table(table, out)
        return table.num_rows
    writer, total = None, 0
    for rows in history_rows(rec.candidates):
        table = score_partition(rec, what, rows, k)
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        total += table.num_rows
    if writer is None:
        raise ValueError(f"{model} has no users to score")
    writer.close()
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
