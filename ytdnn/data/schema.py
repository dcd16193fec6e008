"""The canonical tables (DESIGN.md): column names and Arrow types are part of the public API.

Conventions every stage relies on:
- ``user_id`` / ``item_id`` are int64 or string; all tables of one dataset use the same type for
  each id space. The vocabularies map them to dense integers.
- ``timestamp`` and ``upload_time`` are int64 seconds (Unix time for real logs, seconds since the
  start of the world for the synthetic one). A watches table whose timestamps are all null has no
  order (the ml-1m fold files): ``has_timestamps`` tells.
- ``watch_time`` is float64 seconds, or a proxy such as a rating; it is never negative.
- ``categories`` is a list of strings (multivalent); every other feature column is scalar.
- Extra columns are allowed and kept (for example ``fold`` for the ml-1m fold files).

Extra columns of the feature tables (users, items) are features of the models, and their Arrow
type says which kind (``feature_kind``; ``validate_table`` casts them to these types):

- numeric: integers (-> int64), floats and decimals (-> float64), booleans, dates and timestamps
  (-> int64 Unix seconds). Normalized by their empirical CDF, with x̃² and √x̃ and a missing flag.
  NaN and null are missing; ±inf is an error. A code written in digits (a zip code read from CSV)
  is a number: give it as text to have it embedded.
- categorical: text (large and dictionary-encoded text -> string; an all-null column -> string).
  Embedded, one vocabulary per column (missing and rare values -> id 0).
- list: a list of text (or of integers, -> their decimal text). An averaged bag of the values.

Any other type (structs, maps, binary, lists of floats, nested lists) is an error naming the
column. CSV readers infer an extra column as int, else float, else text, so a list column comes
from Parquet or from a table built in Python.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ytdnn.modeldir import remove_entries

ID = "id"  # int64 or string, see the module docstring


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType | str  # ID for id columns
    required: bool = True
    nullable: bool = False
    all_or_none: bool = False  # nullable, but null on every row or on none, never on some


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # columns that must be unique together, if any
    features: bool = False  # extra columns are model features (module docstring), type-checked

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


WATCHES = TableSchema(
    "watches",
    (
        Column("user_id", ID),
        Column("item_id", ID),
        Column("timestamp", pa.int64(), nullable=True, all_or_none=True),  # null everywhere = unordered log
        Column("watch_time", pa.float64(), required=False),
    ),
)
SEARCHES = TableSchema(
    "searches",
    (
        Column("user_id", ID),
        Column("timestamp", pa.int64()),
        Column("query", pa.string()),
    ),
)
IMPRESSIONS = TableSchema(
    "impressions",
    (
        Column("user_id", ID),
        Column("item_id", ID),
        Column("timestamp", pa.int64()),
        Column("clicked", pa.bool_()),
        Column("watch_time", pa.float64()),
        Column("page_id", ID),
    ),
)
USERS = TableSchema(
    "users",
    (
        Column("user_id", ID),
        Column("age", pa.float64(), required=False, nullable=True),
        Column("gender", pa.string(), required=False, nullable=True),
        Column("geo", pa.string(), required=False, nullable=True),
        Column("device", pa.string(), required=False, nullable=True),
        Column("language", pa.string(), required=False, nullable=True),
        Column("occupation", pa.string(), required=False, nullable=True),
    ),
    key=("user_id",),
    features=True,
)
ITEMS = TableSchema(
    "items",
    (
        Column("item_id", ID),
        Column("upload_time", pa.int64(), required=False, nullable=True),
        Column("channel", pa.string(), required=False, nullable=True),
        Column("language", pa.string(), required=False, nullable=True),
        Column("categories", pa.list_(pa.string()), required=False, nullable=True),
        Column("title", pa.string(), required=False, nullable=True),
        Column("duration", pa.float64(), required=False, nullable=True),
    ),
    key=("item_id",),
    features=True,
)

SCHEMAS: dict[str, TableSchema] = {
    s.name: s for s in (WATCHES, SEARCHES, IMPRESSIONS, USERS, ITEMS)
}
TABLES = tuple(SCHEMAS)


class DataError(ValueError):
    """A malformed input. Names the file, the (1-based) line and the column where known.

    unit: what ``line`` counts, as the message says it: "line" in a text file, "row" in a
    Parquet file (which has no lines).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        unit: str = "line",
    ):
        self.file = None if file is None else str(file)
        self.line = line
        self.column = column
        where = ", ".join(
            part
            for part in (
                f"file {self.file}" if self.file else "",
                f"{unit} {line}" if line is not None else "",
                f"column {column!r}" if column else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


def _is_id_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def unix_seconds(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A timestamp or date column as int64 whole seconds (sub-second parts dropped), as every
    time column is stored."""
    return col.cast(pa.timestamp("s"), safe=False).cast(pa.int64())


def validate_table(table: pa.Table, schema: TableSchema, *, source: str | Path = "<table>") -> pa.Table:
    """Check ``table`` against ``schema``; return it with columns cast to the canonical types.

    Raises DataError naming the source, the first offending row (as a 1-based line of the table)
    and the column.
    """
    for name in schema.required:
        if name not in table.column_names:
            raise DataError(f"missing required column for table {schema.name!r}", file=source, column=name)
    columns = {}
    for name in table.column_names:
        col = table.column(name)
        if name not in schema.names:
            columns[name] = feature_column(col, name, source) if schema.features else col
            continue
        spec = schema.column(name)
        if spec.type == ID:
            if pa.types.is_integer(col.type):
                col = col.cast(pa.int64())
            elif pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            elif not _is_id_type(col.type):
                raise DataError(f"id column has type {col.type}; expected integer or string", file=source, column=name)
        elif col.type != spec.type:
            try:
                is_time = pa.types.is_timestamp(col.type) or pa.types.is_date(col.type)
                col = unix_seconds(col) if is_time and spec.type == pa.int64() else col.cast(spec.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataError(f"cannot read as {spec.type}: {err}", file=source, column=name) from None
        if col.null_count and (not spec.nullable or spec.all_or_none and col.null_count < len(col)):
            row = pc.index(pc.is_null(col), True).as_py()
            reason = (f"missing value ({col.null_count:,} of {len(col):,} rows have none; a log has it on every "
                      "row, or on none for an unordered log)") if spec.nullable else "missing value"
            raise DataError(reason, file=source, line=row + 1, column=name)
        columns[name] = col
    out = pa.table(columns)
    if "watch_time" in out.column_names:
        watch_time = out.column("watch_time")
        # nan and inf cast to float64, but no watch time is either; nan < 0 is false
        for bad, reason in (
            (pc.invert(pc.is_finite(watch_time)), "not a finite number"),
            (pc.less(watch_time, 0), "negative watch time"),
        ):
            if pc.any(bad).as_py():
                row = pc.index(bad, True).as_py()
                raise DataError(reason, file=source, line=row + 1, column="watch_time")
    if schema.key:
        _check_unique(out, schema.key, source)
    return out


NUMERIC, CATEGORICAL, LIST = "numeric", "categorical", "list"


def feature_kind(arrow_type: pa.DataType) -> str | None:
    """The kind of feature a column of a validated feature table is: NUMERIC, CATEGORICAL or LIST
    (module docstring); None for a type that is no feature (an id column, say)."""
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return NUMERIC
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return CATEGORICAL
    if pa.types.is_list(arrow_type) and pa.types.is_string(arrow_type.value_type):
        return LIST
    return None


def feature_column(col: pa.ChunkedArray, name: str, source: str | Path = "<table>") -> pa.ChunkedArray:
    """An extra column of a feature table cast to its kind's type (module docstring); DataError
    for a type that is no feature, or an infinite number (naming its 1-based row)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = t.value_type
        if pa.types.is_dictionary(value):
            value = value.value_type
        target = pa.list_(pa.string())
        if not (pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_integer(value)):
            target = None
    else:
        target = next((to for check, to in _SCALAR_FEATURE_TYPES.items() if check(t)), None)
    if target is None:
        raise DataError(
            f"a feature column must be numeric, text or a list of text; got {t}", file=source, column=name
        )
    try:
        col = unix_seconds(col) if pa.types.is_timestamp(t) or pa.types.is_date(t) else col.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataError(f"cannot read as {target}: {err}", file=source, column=name) from None
    if pa.types.is_floating(col.type):
        infinite = pc.is_inf(col)
        if pc.any(infinite).as_py():
            row = pc.index(infinite, True).as_py()
            raise DataError("not a finite number (NaN is missing, ±inf is an error)", file=source,
                            line=row + 1, column=name)
    return col


# Scalar types of feature columns -> the type they are read as (module docstring).
_SCALAR_FEATURE_TYPES = {
    pa.types.is_integer: pa.int64(),
    pa.types.is_floating: pa.float64(),
    pa.types.is_decimal: pa.float64(),
    pa.types.is_boolean: pa.bool_(),
    pa.types.is_timestamp: pa.int64(),
    pa.types.is_date: pa.int64(),
    pa.types.is_string: pa.string(),
    pa.types.is_large_string: pa.string(),
    pa.types.is_null: pa.string(),
}


def _check_unique(table: pa.Table, key: tuple[str, ...], source: str | Path) -> None:
    counts = table.group_by(list(key)).aggregate([([], "count_all")])
    dup = pc.greater(counts.column("count_all"), 1)
    if pc.any(dup).as_py():
        first = counts.filter(dup).slice(0, 1).to_pylist()[0]
        value = {k: first[k] for k in key}
        mask = None
        for k in key:
            eq = pc.equal(table.column(k), pa.scalar(value[k], table.column(k).type))
            mask = eq if mask is None else pc.and_(mask, eq)
        rows = pc.indices_nonzero(mask).to_pylist()
        raise DataError(
            f"duplicate key {value} (rows {[r + 1 for r in rows[:5]]})",
            file=source,
            line=rows[1] + 1,
            column=",".join(key),
        )


# A synthetic world's config and ground truth, written beside its tables (data.synthetic).
WORLD_FILES = ("world.json", "truth")


def clear_dataset(directory: Path) -> None:
    """Remove the canonical tables and world files of a dataset written in ``directory`` before,
    so that a dataset written there is not read mixed with an older one's tables."""
    remove_entries(directory, [f"{t}.parquet" for t in TABLES] + list(WORLD_FILES))


def has_timestamps(watches: pa.Table) -> bool:
    """False for logs without order, such as the ml-1m fold files."""
    ts = watches.column("timestamp")
    return ts.null_count < len(ts) or len(ts) == 0


@dataclass
class Dataset:
    """The canonical tables of one log. Only ``watches`` is required.

    ``skipped_rows`` lists the rows a reader skipped when asked to (``skip_bad_rows=True``); it
    is empty otherwise, because a reader never drops a row silently.
    """

    watches: pa.Table
    searches: pa.Table | None = None
    impressions: pa.Table | None = None
    users: pa.Table | None = None
    items: pa.Table | None = None
    name: str = "dataset"
    skipped_rows: list = field(default_factory=list)

    def tables(self) -> dict[str, pa.Table]:
        return {name: t for name in TABLES if (t := getattr(self, name)) is not None}

    def validate(self) -> Dataset:
        """Validate every table against its schema, and the id types across tables."""
        for name, table in self.tables().items():
            setattr(self, name, validate_table(table, SCHEMAS[name], source=f"<{self.name}.{name}>"))
        return self._check_id_types()

    def _check_id_types(self) -> Dataset:
        for id_col in ("user_id", "item_id"):
            types = {n: t.schema.field(id_col).type for n, t in self.tables().items() if id_col in t.column_names}
            if len(set(types.values())) > 1:
                raise DataError(f"{id_col} has different types across tables: {types}", column=id_col)
        return self

    def save(self, directory: str | Path) -> Path:
        """Write each table as ``<directory>/<table>.parquet``, replacing the dataset written
        there before (``clear_dataset``): no table of another dataset stays beside these."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        clear_dataset(directory)
        for name, table in self.tables().items():
            pq.write_table(table, directory / f"{name}.parquet")
        return directory

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> Dataset:
        """Read the Parquet tables written by ``save`` (or by hand) and validate them.

        Each file is read by ``readers.read_parquet``, so a bad value is a DataError naming the
        file, its row and column, exactly as there.
        """
        from ytdnn.data.readers import read_dataset, read_parquet  # readers imports this module

        directory = Path(directory)
        if not directory.is_dir():
            raise DataError("no watches.parquet: the data directory does not exist", file=directory)
        if not (directory / "watches.parquet").exists() and (directory / "watches.csv").exists():
            return read_dataset(directory, name=name)  # comma-separated tables of the same names
        if not (directory / "watches.parquet").exists():
            raise DataError("no watches.parquet in the data directory (nor a watches.csv)", file=directory)
        tables = {
            t: read_parquet(directory / f"{t}.parquet", t)
            for t in TABLES
            if (directory / f"{t}.parquet").exists()
        }
        watches = tables["watches"].column_names
        if "rating" in watches and "watch_time" not in watches:
            warnings.warn(f"{directory / 'watches.parquet'} has a 'rating' column and no 'watch_time': the rating "
                          "is not read; to weight the ranker's positives by it (as `ytdnn data movielens` does), "
                          "name the column watch_time", UserWarning, stacklevel=2)
        return cls(**tables, name=name or directory.name)._check_id_types()
