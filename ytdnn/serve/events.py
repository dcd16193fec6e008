"""Event store: the fresh history that ``recommend`` reads at request time.

A posted watch must change that user's very next recommendation, so the serving layer does not
read history from the training tables: it reads it from an ``EventStore``, which the HTTP layer
writes to on ``POST /events``. Two implementations pass one contract test
(tests/serve/test_events.py): ``InMemoryEventStore`` (tests, and the reference) and
``SQLiteEventStore`` (a WAL-mode file, safe from many threads; in ``events_sqlite``). Another
backend (Redis, say) subclasses ``EventStore`` and runs the same contract.

Events (the canonical tables' columns, DESIGN.md):
- ``Watch(user_id, item_id, timestamp, watch_time=None)``; ``watch_time`` is seconds (or a proxy),
  never negative, and optional as in the watches table.
- ``Search(user_id, timestamp, query)``.
Histories come back oldest first, most recent last, ties in timestamp kept in insertion order, so
``[w.item_id for w in store.watches(user, limit=50)]`` is the model's last-50 watch history.

Ids: the model's ids are all int or all str per id space (features/vocab.py). A store is created
with ``id_type``: "int" or "str" fixes the type and converts unambiguous values on the way in
(``"12"`` -> 12 for an int store, which is what an HTTP path parameter needs; 12 -> ``"12"`` for a
str store); ``None`` keeps every id exactly as given, so 1 and ``"1"`` are two different users.
An item id the model has never seen is simply stored: the model maps it to OOV when it reads it.
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import SEARCHES, WATCHES, TableSchema, validate_table
from ytdnn.features.vocab import ARROW_TYPES, TokenType

IdType = TokenType  # a store keeps ids as the model's vocabularies do
Id = int | str
DEFAULT_LIMIT = 50  # the model's history length (paper §3.3: the last 50 watches and searches)
_INT_TEXT = re.compile(r"[+-]?\d+")


class Watch(NamedTuple):
    """One watch event; a plain tuple, so a batch of them goes straight into ``executemany``."""

    user_id: Id
    item_id: Id
    timestamp: int
    watch_time: float | None = None


class Search(NamedTuple):
    """One search event (the raw query; the tokenizer runs at request time)."""

    user_id: Id
    timestamp: int
    query: str


@dataclass(frozen=True)
class History:
    """A user's events, each list oldest first; what ``GET /users/{id}/history`` returns."""

    user_id: Id
    watches: list[Watch] = field(default_factory=list)
    searches: list[Search] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"user_id", "watches": [{...}], "searches": [{...}]}``."""
        return {
            "user_id": self.user_id,
            "watches": [w._asdict() for w in self.watches],
            "searches": [s._asdict() for s in self.searches],
        }


class EventError(ValueError):
    """A bad event in a batch; names the table, the event's 0-based index and the field."""

    def __init__(
        self, message: str, *, table: str, index: int | None = None, field: str | None = None
    ):
        self.table, self.index, self.field = table, index, field
        where = table + (f"[{index}]" if index is not None else "") + (f".{field}" if field else "")
        super().__init__(f"{where}: {message}")


# ---- validation ----------------------------------------------------------------------------------


def coerce_id(value: Any, id_type: IdType | None) -> Id:
    """``value`` as a stored id: int or str (NumPy scalars unwrapped), converted to ``id_type``."""
    if isinstance(value, np.integer | np.str_):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an int or str id, got {value!r} ({type(value).__name__})")
    if id_type == "int" and isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise ValueError(f"expected an int id, got {value!r}")
        value = int(value)
    if isinstance(value, int):
        _check_int64(value)
    return str(value) if id_type == "str" else value


def _check_int64(value: int) -> None:
    # the tables' int type, and the widest integer SQLite stores
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit in int64")


def _timestamp(value: Any) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int (seconds), got {value!r} ({type(value).__name__})")
    _check_int64(value)
    return value


def _watch_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"expected a number >= 0, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return value


def _query(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {value!r} ({type(value).__name__})")
    return value


def _fields(event: Any, kind: type[NamedTuple], table: str, index: int) -> dict[str, Any]:
    """The event's fields by name: from a Mapping (unknown keys refused) or a tuple."""
    names = kind._fields
    if isinstance(event, Mapping):
        unknown = sorted(set(event) - set(names), key=str)
        if unknown:
            raise EventError(
                f"unknown field(s) {unknown}; expected {list(names)}", table=table, index=index
            )
        values = dict(event)
    elif isinstance(event, tuple) and len(event) <= len(names):
        values = dict(zip(names, event))
    else:
        raise EventError(
            f"expected a mapping with fields {list(names)}, got {type(event).__name__}",
            table=table,
            index=index,
        )
    for name in names:
        if name not in values and name not in kind._field_defaults:
            raise EventError("missing required field", table=table, index=index, field=name)
    return {**kind._field_defaults, **values}


def _check(table: str, index: int, name: str, convert, value):
    try:
        return convert(value)
    except (TypeError, ValueError) as err:
        raise EventError(str(err), table=table, index=index, field=name) from None


def validate_watches(events: Iterable[Any], id_type: IdType | None = None) -> list[Watch]:
    """Watch tuples from mappings or tuples; EventError names the first bad event and field."""
    out = []
    to_id = functools.partial(coerce_id, id_type=id_type)
    for i, event in enumerate(events):
        f = _fields(event, Watch, "watches", i)
        out.append(
            Watch(
                _check("watches", i, "user_id", to_id, f["user_id"]),
                _check("watches", i, "item_id", to_id, f["item_id"]),
                _check("watches", i, "timestamp", _timestamp, f["timestamp"]),
                _check("watches", i, "watch_time", _watch_time, f["watch_time"]),
            )
        )
    return out


def validate_searches(events: Iterable[Any], id_type: IdType | None = None) -> list[Search]:
    """Search tuples from mappings or tuples; EventError names the first bad event and field."""
    out = []
    to_id = functools.partial(coerce_id, id_type=id_type)
    for i, event in enumerate(events):
        f = _fields(event, Search, "searches", i)
        out.append(
            Search(
                _check("searches", i, "user_id", to_id, f["user_id"]),
                _check("searches", i, "timestamp", _timestamp, f["timestamp"]),
                _check("searches", i, "query", _query, f["query"]),
            )
        )
    return out


def table_columns(
    table: pa.Table, schema: TableSchema, id_type: IdType | None, *, by_user: bool = False
) -> list[list]:
    """The event columns of a training table as Python lists, in ``Watch``/``Search`` field order.

    The table is validated against its canonical schema; ids are cast to ``id_type`` by Arrow
    (an int store refuses a non-numeric string id); a null timestamp is refused because a history
    needs an order. ``by_user``: rows sorted by (user_id, timestamp), ties kept in table order,
    which leaves every history unchanged but makes index inserts sequential.
    """
    if "timestamp" in table.column_names and table.column("timestamp").null_count:
        raise EventError("missing timestamp (a history needs an order)", table=schema.name,
                         index=pc.index(pc.is_null(table.column("timestamp")), True).as_py(), field="timestamp")
    table = validate_table(table, schema, source=f"<bulk_load {schema.name}>")
    kind = Watch if schema is WATCHES else Search
    columns: dict[str, pa.ChunkedArray] = {}
    for name in kind._fields:
        if name not in table.column_names:  # only watch_time is optional
            columns[name] = pa.chunked_array([pa.nulls(table.num_rows, pa.float64())])
            continue
        col = table.column(name)
        if name.endswith("_id") and id_type is not None:
            try:
                col = col.cast(ARROW_TYPES[id_type])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise EventError(
                    f"cannot read as {id_type} ids: {err}", table=schema.name, field=name
                ) from None
        columns[name] = col
    events = pa.table(columns)
    if by_user:
        events = events.append_column("row", pa.array(np.arange(events.num_rows)))
        order = [("user_id", "ascending"), ("timestamp", "ascending"), ("row", "ascending")]
        events = events.take(pc.sort_indices(events, sort_keys=order))
    return [events.column(name).to_pylist() for name in kind._fields]


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


# ---- the contract --------------------------------------------------------------------------------


class EventStore(abc.ABC):
    """Where the serving layer writes and reads fresh events. Safe to use from many threads.

    Writes take a batch; one call is one transaction: a batch with one bad event raises
    ``EventError`` and stores nothing. Reads return events oldest first (most recent last).
    """

    id_type: IdType | None

    @abc.abstractmethod
    def add_watches(self, events: Iterable[Watch | Mapping[str, Any]]) -> int:
        """Store a batch atomically; returns how many were stored."""

    @abc.abstractmethod
    def add_searches(self, events: Iterable[Search | Mapping[str, Any]]) -> int:
        """Store a batch atomically; returns how many were stored."""

    @abc.abstractmethod
    def watches(self, user_id: Id, limit: int | None = DEFAULT_LIMIT) -> list[Watch]:
        """The user's last ``limit`` watches (None = all), oldest first; [] for an unknown user."""

    @abc.abstractmethod
    def searches(self, user_id: Id, limit: int | None = DEFAULT_LIMIT) -> list[Search]:
        """The user's last ``limit`` searches (None = all), oldest first."""

    @abc.abstractmethod
    def count(self) -> dict[str, int]:
        """``{"watches": n, "searches": m}``: events stored in each table."""

    @abc.abstractmethod
    def missing_watches(self, events: Iterable[Watch | Mapping[str, Any]]) -> list[Watch]:
        """Those of ``events`` the store does not hold, counting duplicates (a multiset check)."""

    @abc.abstractmethod
    def missing_searches(self, events: Iterable[Search | Mapping[str, Any]]) -> list[Search]:
        """Those of ``events`` the store does not hold, counting duplicates."""

    @abc.abstractmethod
    def bulk_load(self, watches: pa.Table, searches: pa.Table | None = None) -> dict[str, int]:
        """Seed from canonical training tables in one transaction; returns rows added per table."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; the store is unusable afterwards."""

    def history(self, user_id: Id, limit: int | None = None) -> History:
        """Both of the user's histories (all events unless ``limit``), oldest first."""
        user_id = coerce_id(user_id, self.id_type)
        return History(user_id, self.watches(user_id, limit), self.searches(user_id, limit))

    def contains(self, watches: Iterable[Any] = (), searches: Iterable[Any] = ()) -> bool:
        """True if every given event (duplicates counted) is stored."""
        return not self.missing_watches(watches) and not self.missing_searches(searches)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the reference implementation ---------------------------------------------------------------


class InMemoryEventStore(EventStore):
    """Per-user lists kept sorted by (timestamp, arrival), behind one lock. Nothing persists."""

    def __init__(self, id_type: IdType | None = None) -> None:
        if id_type not in (None, "int", "str"):
            raise ValueError(f"id_type must be None, 'int' or 'str', got {id_type!r}")
        self.id_type = id_type
        self._lock = threading.Lock()
        self._arrival = itertools.count()  # breaks timestamp ties in insertion order
        # table -> user -> [(timestamp, arrival, event)], sorted
        self._tables: dict[str, defaultdict[Id, list]] = {
            "watches": defaultdict(list),
            "searches": defaultdict(list),
        }
        self._closed = False

    def _insert(self, table: str, events: Sequence[Watch | Search]) -> int:
        with self._lock:
            self._check_open()
            users = self._tables[table]
            touched = set()
            for event in events:  # validated already, so nothing below can fail halfway
                users[event.user_id].append((event.timestamp, next(self._arrival), event))
                touched.add(event.user_id)
            for user_id in touched:  # timsort: linear on a sorted list plus one sorted run
                users[user_id].sort()
        return len(events)

    def add_watches(self, events):
        return self._insert("watches", validate_watches(events, self.id_type))

    def add_searches(self, events):
        return self._insert("searches", validate_searches(events, self.id_type))

    def _last(self, table: str, user_id: Id, limit: int | None) -> list:
        _check_limit(limit)
        user_id = coerce_id(user_id, self.id_type)
        with self._lock:
            self._check_open()
            rows = self._tables[table].get(user_id, [])
            rows = rows if limit is None else rows[-limit:] if limit else []
            return [event for _, _, event in rows]

    def watches(self, user_id, limit=DEFAULT_LIMIT):
        return self._last("watches", user_id, limit)

    def searches(self, user_id, limit=DEFAULT_LIMIT):
        return self._last("searches", user_id, limit)

    def count(self):
        with self._lock:
            self._check_open()
            return {t: sum(map(len, users.values())) for t, users in self._tables.items()}

    def _missing(self, table: str, wanted: Sequence[Watch | Search]) -> list:
        missing = []
        with self._lock:
            self._check_open()
            for event, n in Counter(wanted).items():
                rows = self._tables[table].get(event.user_id, [])
                have = sum(1 for _, _, e in rows if e == event)
                missing.extend([event] * max(0, n - have))
        return missing

    def missing_watches(self, events):
        return self._missing("watches", validate_watches(events, self.id_type))

    def missing_searches(self, events):
        return self._missing("searches", validate_searches(events, self.id_type))

    def bulk_load(self, watches, searches=None):
        rows = {"watches": [Watch(*r) for r in zip(*table_columns(watches, WATCHES, self.id_type))]}
        if searches is not None:
            rows["searches"] = [
                Search(*r) for r in zip(*table_columns(searches, SEARCHES, self.id_type))
            ]
        return {table: self._insert(table, events) for table, events in rows.items()}

    def close(self):
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the event store is closed")


def __getattr__(name: str):
    # Lazy so that events_sqlite (which imports this module) can also be imported first.
    if name == "SQLiteEventStore":
        from ytdnn.serve.events_sqlite import SQLiteEventStore

        return SQLiteEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
