"""Seeding an event store with a model's training history.

``Recommender.recommend_batch(..., histories=...)`` replaces the training log with the histories
read from the store, so a store that starts empty would make every known user look brand new. A
new store is therefore seeded once, when it is created, with the events the model was trained on:

- from the canonical tables (``data_dir`` holding watches/searches Parquet, exact: original item
  ids, raw queries and watch times), or
- from the model itself (``training_events``), which keeps every user's encoded streams. That is
  exact for watches up to two details: an item the vocabulary truncated away comes back as one
  placeholder id that is equally out of vocabulary, and watch times are not kept (null). Searches
  are rebuilt from their tokens: the unigrams of each (user, timestamp) joined by spaces, which
  re-tokenize to the same unigrams and bigrams unless two queries shared a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.serve.events import EventStore, IdType


def oov_placeholder(vocab) -> int | str:
    """An item id the vocabulary does not hold (it encodes to OOV): -1, -2, ... or "<oov>"."""
    candidate: int | str = -1 if vocab.token_type_ == "int" else "<oov>"
    while candidate in vocab:
        candidate = candidate - 1 if isinstance(candidate, int) else candidate + "_"
    return candidate


def training_events(generator) -> tuple[pa.Table, pa.Table | None]:
    """The generator's training history as canonical (watches, searches) tables.

    watches: user_id, item_id, timestamp; searches: user_id, timestamp, query,
    or None when the model saw no searches. Rows are grouped by user, oldest first.
    """
    f, s = generator.featurizer_, generator.streams_
    users = f.users_.token_array  # row r -> users[r - 1]
    watch_rows = s.watch_users()  # [W]
    user_ids = users.take(pa.array(np.maximum(watch_rows - 1, 0)))
    items = f.items_.token_array
    known = s.watch_items > 0
    item_ids = items.take(pa.array(np.maximum(s.watch_items - 1, 0)))
    if not known.all():
        placeholder = pa.scalar(oov_placeholder(f.items_), items.type)
        item_ids = pc.if_else(pa.array(known), item_ids, placeholder)
    watches = pa.table({  # no watch_time: the streams do not keep it (an optional column)
        "user_id": user_ids, "item_id": item_ids, "timestamp": pa.array(s.watch_times, pa.int64()),
    })
    return watches, _searches(f, s, users)


def _searches(f, s, users: pa.Array) -> pa.Table | None:
    if f.tokens_ is None or len(s.tokens) == 0:
        return None
    token_rows = np.repeat(np.arange(s.num_users), np.diff(s.token_offsets))  # [T]
    words = f.tokens_.token_array.take(pa.array(np.maximum(s.tokens - 1, 0)))
    keep = (s.tokens > 0) & ~pc.match_substring(words, " ").to_numpy(zero_copy_only=False)
    rows, times, words = token_rows[keep], s.token_times[keep], words.filter(pa.array(keep))
    if len(rows) == 0:
        return None
    # one query per (user, timestamp): the streams are sorted by both, so a query is a run
    starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (times[1:] != times[:-1])])
    offsets = pa.array(np.r_[starts, len(rows)].astype(np.int32))
    queries = pc.binary_join(pa.ListArray.from_arrays(offsets, words), " ")
    return pa.table({
        "user_id": users.take(pa.array(rows[starts] - 1)),
        "timestamp": pa.array(times[starts], pa.int64()), "query": queries,
    })


def data_events(data_dir: str | Path) -> tuple[pa.Table, pa.Table | None]:
    """(watches, searches) of a directory of canonical tables (``ytdnn.data.schema.Dataset``)."""
    from ytdnn.data.schema import Dataset

    dataset = Dataset.load(data_dir)
    return dataset.watches, dataset.searches


def open_event_store(path: str | Path | None, recommender, data_dir: str | Path | None = None,
                     seed: bool = True) -> tuple[EventStore, dict[str, int]]:
    """The event store at ``path`` (SQLite, created if absent; None = in memory) -> (store, seeded).

    A store created here is seeded (unless ``seed`` is False) from ``data_dir`` when given, else
    from the model's own training history; ``seeded`` counts the rows added ({} when the store
    already existed). The store's id type follows the model's user and item ids.
    """
    from ytdnn.serve.events import InMemoryEventStore
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    id_type = model_id_type(recommender)
    if path is None:
        store, created = InMemoryEventStore(id_type=id_type), True
    else:
        path = Path(path)
        created = not path.exists()
        store = SQLiteEventStore(path, id_type=id_type)
    seeded: dict[str, int] = {}
    if created and seed:
        try:
            watches, searches = data_events(data_dir) if data_dir else training_events(recommender.candidates)
            seeded = store.bulk_load(watches, searches)
        except BaseException:  # a half-made store would pass for a seeded one next time
            store.close()
            if path is not None:
                for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    leftover.unlink(missing_ok=True)
            raise
    return store, seeded


def model_id_type(recommender) -> IdType | None:
    """The store's id type: the model's, when its users and items share one ("int" or "str"),
    else None (ids kept as given; the app converts each id to its own space's type first)."""
    f = recommender.candidates.featurizer_
    users, items = f.users_.token_type_, f.items_.token_type_
    return users if users == items else None
