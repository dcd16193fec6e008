"""Candidate examples (and the ranker's built pages) as Arrow rows: what `ytdnn prepare` writes as
Parquet shards, and training reads back as ``CandidateBatch``es (the pages: as impressions).

One function, ``candidate_example_rows``, turns the events of a set of whole users into their
examples with the in-memory code (``Featurizer.streams``, ``CandidateExamples``,
``assemble_batch``). The local engine calls it on hash buckets of users, the Spark engine inside
``mapInArrow`` on partitions grouped by user, so the two engines cannot drift apart.

The per-user cap (§3.4) is drawn once, with a seed: every example gets a key, a hash of (seed,
user id, its position in the user's time-ordered watches), and each user keeps the ``cap`` with
the smallest keys. The key depends on nothing but the user's own events, so the same examples are
kept however the users are split into partitions. Shards hold the rows in key order: a
pseudo-random order that a shuffle buffer then mixes further.

A row (one example):

    user_id             the user's id as in the logs (int64 or string)
    label               int64, item vocabulary id of the watch to predict
    watch_ids           list<int64>, the last <= max_watch_history watches strictly before it
    search_ids          list<int64>, the last <= max_search_history search tokens before it
    recent_ids          list<int64>, the last <= max_recent_watches watches (when configured)
    user_categorical    list<int64> [C], user_continuous list<float32> [Fc]
    example_age_seconds float64, end of the training window - label time (normalized at training
                        time by ``Featurizer.example_age``, so the shards do not depend on the
                        quantile sketch)
    key                 int64, the seeded hash that drew the cap
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from ytdnn.features.vocab import ARROW_TYPES
from ytdnn.samples.candidate import CandidateBatch, CandidateExamples, ExampleConfig, assemble_batch
from ytdnn.samples.impressions import ImpressionConfig, impressions_from_candidates
from ytdnn.samples.keys import id_hashes, smallest_per_group, user_keys
from ytdnn.samples.streams import EventStreams, Featurizer

USER_FEATURE_COLUMNS = ("user_id", "user_categorical", "user_continuous")


def example_schema(featurizer: Featurizer, cfg: ExampleConfig) -> pa.Schema:
    """The Arrow schema of ``candidate_example_rows``'s tables."""
    fields = [
        pa.field("user_id", ARROW_TYPES[featurizer.users_.token_type_]),
        pa.field("label", pa.int64()),
        pa.field("watch_ids", pa.list_(pa.int64())),
        pa.field("search_ids", pa.list_(pa.int64())),
    ]
    if cfg.max_recent_watches:
        fields.append(pa.field("recent_ids", pa.list_(pa.int64())))
    fields += [
        pa.field("user_categorical", pa.list_(pa.int64())),
        pa.field("user_continuous", pa.list_(pa.float32())),
        pa.field("example_age_seconds", pa.float64()),
        pa.field("key", pa.int64()),
    ]
    return pa.schema(fields)


def user_feature_rows(featurizer: Featurizer, users: pa.Table | None) -> pa.Table:
    """A users table [U rows] -> user_id, user_categorical list [C], user_continuous list [Fc]:
    the encoded features, one row per user (``UserFeatureEncoder.transform``)."""
    id_type = ARROW_TYPES[featurizer.users_.token_type_]
    if users is None or not len(users):
        return pa.table({"user_id": pa.array([], id_type),
                         "user_categorical": pa.array([], pa.list_(pa.int64())),
                         "user_continuous": pa.array([], pa.list_(pa.float32()))})
    categorical, continuous = featurizer.user_features_.transform(users)  # [U, C], [U, Fc]
    return pa.table({
        "user_id": users.column("user_id").cast(id_type),
        "user_categorical": fixed_lists(categorical, pa.int64()),
        "user_continuous": fixed_lists(continuous, pa.float32()),
    })


def partition_streams(featurizer: Featurizer, watches: pa.Table, searches: pa.Table | None,
                      user_features: pa.Table) -> tuple[Featurizer, EventStreams]:
    """(``featurizer`` restricted to the users of these tables, their streams): the events of a set
    of whole users, their features already encoded (``user_feature_rows``)."""
    id_type = ARROW_TYPES[featurizer.users_.token_type_]
    ids = pa.chunked_array([chunk for t in (watches, searches, user_features) if t is not None
                            for chunk in t.column("user_id").cast(id_type).chunks], id_type)
    part = featurizer.for_users(ids)  # rows 1..U' of these users only
    streams = part.streams(watches, searches, None)
    rows = part.users_.encode(user_features.column("user_id"))  # [U''], 0 = not a user here
    known = rows > 0
    if known.any():
        streams.user_categorical[rows[known]] = list_matrix(user_features.column("user_categorical"), np.int64)[known]
        streams.user_continuous[rows[known]] = list_matrix(user_features.column("user_continuous"), np.float32)[known]
    return part, streams


def page_rows(generator, cfg: ImpressionConfig, watches: pa.Table, searches: pa.Table | None,
              user_features: pa.Table) -> pa.Table:
    """The ranker's built pages of the users in ``watches`` (whole users, as
    ``candidate_example_rows``): the impressions table ``impressions_from_candidates`` builds for
    them in memory, page ids the pages' keys. generator: a fitted CandidateGenerator (its history
    is not needed)."""
    part, streams = partition_streams(generator.featurizer_, watches, searches, user_features)
    return impressions_from_candidates(generator.with_streams(part, streams), watches, cfg, streams=streams,
                                       keyed_pages=True)


def candidate_example_rows(featurizer: Featurizer, cfg: ExampleConfig, seed: int, watches: pa.Table,
                           searches: pa.Table | None, user_features: pa.Table) -> pa.Table:
    """The examples of the users in ``watches`` (all of each one's events: a whole user per call),
    capped at ``cfg.max_examples_per_user`` with ``seed``, in key order. [E rows]

    searches: those users' searches (others are ignored); user_features: ``user_feature_rows``
    of (at least) those users. ``featurizer``: fitted on the whole log (vocabularies, window).
    """
    if not featurizer.ordered_:
        raise ValueError("prepared examples need timestamped watches (an ordered log)")
    part, streams = partition_streams(featurizer, watches, searches, user_features)
    examples = CandidateExamples(streams, cfg)
    users = examples.label_users  # [E]
    position = examples.label_positions - streams.watch_offsets[users]  # [E] index in the user's watches
    user_hash = np.r_[np.uint64(0), id_hashes(part.users_.tokens_)]  # [U' + 1]
    key = user_keys(seed, user_hash[users], position)
    keep = smallest_per_group(users, key, cfg.max_examples_per_user)  # [E']
    idx = keep[np.argsort(key[keep], kind="stable")]
    batch = assemble_batch(
        streams, cfg, users[idx], streams.watch_items,
        watch_end=examples.history_end[idx], token_end=examples.token_end[idx],
        example_age=np.zeros(len(idx), np.float32),
        labels=streams.watch_items[examples.label_positions[idx]],
    )
    seconds = featurizer.window_end_ - streams.watch_times[examples.label_positions[idx]].astype(np.float64)
    columns = {
        "user_id": part.users_.token_array.take(pa.array(users[idx] - 1)),
        "label": pa.array(batch.labels.numpy()),
        "watch_ids": _lists(batch.watch_ids, batch.watch_offsets),
        "search_ids": _lists(batch.search_ids, batch.search_offsets),
    }
    if cfg.max_recent_watches:
        columns["recent_ids"] = _lists(batch.recent_ids, batch.recent_offsets)
    columns |= {
        "user_categorical": fixed_lists(batch.user_categorical.numpy(), pa.int64()),
        "user_continuous": fixed_lists(batch.user_continuous.numpy(), pa.float32()),
        "example_age_seconds": pa.array(seconds),
        "key": pa.array(key[idx]),
    }
    return pa.table(columns, schema=example_schema(featurizer, cfg))


def batch_from_rows(rows: pa.Table | pa.RecordBatch, featurizer: Featurizer) -> CandidateBatch:
    """B rows of ``candidate_example_rows`` -> the CandidateBatch that ``CandidateExamples.batches``
    would have built for them (the example age normalized by ``featurizer``)."""
    if isinstance(rows, pa.Table):
        rows = rows.combine_chunks().to_batches()[0] if rows.num_rows else pa.RecordBatch.from_pylist([], rows.schema)
    names = rows.schema.names
    watch_ids, watch_offsets = _csr(rows.column("watch_ids"))
    search_ids, search_offsets = _csr(rows.column("search_ids"))
    recent = _csr(rows.column("recent_ids")) if "recent_ids" in names else (None, None)
    seconds = rows.column("example_age_seconds").to_numpy()
    return CandidateBatch(
        watch_ids=watch_ids, watch_offsets=watch_offsets, search_ids=search_ids, search_offsets=search_offsets,
        user_categorical=torch.from_numpy(list_matrix(rows.column("user_categorical"), np.int64)),
        user_continuous=torch.from_numpy(list_matrix(rows.column("user_continuous"), np.float32)),
        example_age=torch.from_numpy(featurizer.example_age(seconds)),
        users=torch.zeros(rows.num_rows, dtype=torch.int64),  # rows of no in-memory streams
        labels=torch.from_numpy(rows.column("label").to_numpy().astype(np.int64)),
        recent_ids=recent[0], recent_offsets=recent[1],
    )


def _lists(values: torch.Tensor, offsets: torch.Tensor) -> pa.Array:
    """EmbeddingBag inputs (values [N], offsets [B]) -> a list array of B rows."""
    ends = np.r_[offsets.numpy(), len(values)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(ends), pa.array(values.numpy(), pa.int64()))


def fixed_lists(matrix: np.ndarray, kind: pa.DataType) -> pa.Array:
    """[B, F] -> a list array of B rows of F values."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1), kind))


def _csr(column: pa.Array | pa.ChunkedArray) -> tuple[torch.Tensor, torch.Tensor]:
    """A list column of B rows -> (values [N], offsets [B]) for EmbeddingBag."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]].astype(np.int64)
    return torch.from_numpy(values), torch.from_numpy(offsets[:-1] - offsets[0])


def list_matrix(column: pa.Array | pa.ChunkedArray, dtype) -> np.ndarray:
    """A list column of B rows of F values each -> [B, F]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    width = int(offsets[1] - offsets[0]) if len(column) else 0
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return np.array(values, dtype=dtype).reshape(len(column), width)
