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

Seeding is atomic. A new SQLite store is built under a temporary name beside its path
(``.<name>.seeding-<pid>``), seeded, marked (``meta.seed``: what it was seeded with) and only then
linked into place, so a store at the path is always a finished one, whenever the process is
killed. On the next start, a temporary store left by a dead process is removed, and a store at
the path that holds no events and no mark (an older version's seeding that did not finish) is
rebuilt; both with a log line.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.serve.events import EventStore, IdType

log = logging.getLogger("ytdnn.serve")
SEED_MARK = "seed"  # meta key of a finished store: JSON {"seeded": {table: rows}, "source": ...}
STORE_FILE = "events.sqlite"  # the server's event store, in the model directory unless told otherwise


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
    already existed). The store's id type follows the model's user and item ids. Creation is
    atomic (see the module docstring).
    """
    from ytdnn.serve.events import InMemoryEventStore
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    id_type = model_id_type(recommender)
    if path is None:
        store = InMemoryEventStore(id_type=id_type)
        return store, (_seed(store, recommender, data_dir) if seed else {})
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise ValueError(f"event store {path}: {'a directory' if path.is_dir() else 'its folder does not exist'}; "
                         "give the path of a SQLite file")
    _remove_leftovers(path)
    try:
        if path.exists():
            store = SQLiteEventStore(path, id_type=id_type)
            if _finished(store):
                return store, {}
            store.close()
            _unlink_store(path)
        seeded = _build(path, id_type, recommender, data_dir, seed)
        return SQLiteEventStore(path, id_type=id_type), seeded
    except sqlite3.DatabaseError as err:  # not a database, locked, unreadable
        raise ValueError(f"event store {path}: {err}") from None


def _seed(store: EventStore, recommender, data_dir: str | Path | None) -> dict[str, int]:
    if data_dir:
        watches, searches = data_events(data_dir)
        _check_matches(watches, recommender.candidates.featurizer_, data_dir)
    else:
        watches, searches = training_events(recommender.candidates)
    return store.bulk_load(watches, searches)


def _check_matches(watches: pa.Table, featurizer, data_dir: str | Path) -> None:
    """A store is seeded once: a log that is not the model's (other id types, or not one user or
    item in common) would replace every known user's history for good, so it is refused."""
    for column, vocab in (("user_id", featurizer.users_), ("item_id", featurizer.items_)):
        ids = watches.column(column)
        kind = "int" if pa.types.is_integer(ids.type) else "str"
        if kind != vocab.token_type_:
            raise ValueError(f"--data {data_dir}: its {column}s are {kind}s, the model's are {vocab.token_type_}s: "
                             "seed the store from the log the model was trained on")
    known = [int((featurizer.users_.encode(watches.column("user_id")) > 0).sum()),
             int((featurizer.items_.encode(watches.column("item_id")) > 0).sum())]
    if len(watches) and not any(known):
        raise ValueError(f"--data {data_dir}: none of its {len(watches):,} watches has a user or an item the "
                         "model knows: seed the store from the log the model was trained on")


def _finished(store) -> bool:
    """Whether an existing store at its path is a finished one (else it is to be rebuilt)."""
    if store.get_meta(SEED_MARK) is not None:
        return True
    counts = store.count()
    if counts["watches"] or counts["searches"]:  # an older version's store: its seeding was one
        # transaction, all or nothing, so holding events it is finished; marked so from now on
        log.info("event store %s has no seeding mark but holds %s: kept", store.path, counts)
        store.set_meta(SEED_MARK, json.dumps({"seeded": {}, "source": "adopted"}))
        return True
    log.warning("event store %s holds no events and no seeding mark: a seeding that did not "
                "finish; rebuilding it", store.path)
    return False


def _build(path: Path, id_type, recommender, data_dir, seed: bool) -> dict[str, int]:
    """Create the store at ``path``: seeded and marked under a temporary name, then linked."""
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    building = path.with_name(f".{path.name}.seeding-{os.getpid()}")
    _unlink_store(building)
    try:
        store = SQLiteEventStore(building, id_type=id_type)
        try:
            seeded = _seed(store, recommender, data_dir) if seed else {}
            source = None if not seed else str(data_dir) if data_dir else "model"
            store.set_meta(SEED_MARK, json.dumps({"seeded": seeded, "source": source}))
        finally:
            store.close()
        _self_contained(building)
        if not path.exists():  # a -wal or -shm without its database would be replayed into ours
            _unlink_store(path)
        _put_in_place(building, path)
    finally:
        _unlink_store(building)
    return seeded


def _self_contained(database: Path) -> None:
    """Fold the write-ahead log into the database file, so that the file alone is the store
    (the store turns WAL back on when it opens it), and flush it to disk."""
    conn = sqlite3.connect(database)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    with database.open("rb") as f:
        os.fsync(f.fileno())


def _put_in_place(building: Path, path: Path) -> None:
    """Link ``building`` at ``path`` unless a store appeared there meanwhile (another process's,
    which is then the one used); replace on a file system without hard links."""
    try:
        os.link(building, path)
    except FileExistsError:
        log.warning("event store %s was created by another process meanwhile; using it", path)
    except OSError:
        os.replace(building, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new name survives a power loss too
    finally:
        os.close(directory)


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary stores of seedings whose process is gone (killed while seeding)."""
    prefix = f".{path.name}.seeding-"
    for leftover in path.parent.glob(glob.escape(prefix) + "*"):
        pid = leftover.name[len(prefix):].split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            if leftover.name[len(prefix):].isdigit():  # the database itself, not its -wal/-shm
                log.warning("removing %s: a seeding of %s that did not finish", leftover, path)
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _unlink_store(database: Path) -> None:
    for name in (database, *(Path(f"{database}{s}") for s in ("-wal", "-shm", "-journal"))):
        name.unlink(missing_ok=True)


def model_id_type(recommender) -> IdType | None:
    """The store's id type: the model's, when its users and items share one ("int" or "str"),
    else None (ids kept as given; the app converts each id to its own space's type first)."""
    f = recommender.candidates.featurizer_
    users, items = f.users_.token_type_, f.items_.token_type_
    return users if users == items else None
