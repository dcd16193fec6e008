"""CSV and Parquet files -> validated canonical tables (schema.py).

Every reader takes the same four steps, each vectorised (pyarrow / polars), so a million-row log
reads in about a second:

1. parse    pyarrow.csv reads every field as text. A line with the wrong number of fields is set
            aside with its line number rather than failing the whole read.
2. convert  each column becomes its canonical type. Only when a cast fails do we look for the
            values that failed (by bisection), so the happy path never loops in Python.
3. check    keys must be unique (users.user_id, items.item_id); this needs the whole table.
4. validate_table (schema.py) casts to the canonical Arrow types.

A problem in any step is a DataError naming the file, the 1-based line in that file (the row
number for Parquet) and the column. A reader never drops a row silently: with
``skip_bad_rows=True`` it skips the bad rows, records each as a BadRow (appended to ``skipped``
when given, or ``Dataset.skipped_rows``) and warns once with how many and which.

Text conventions: an empty field is a missing value (an empty list in a list column); numbers may
be padded with spaces; ids are int64 when every id in the column is an integer, else strings
(``ids="auto"``). A quoted value cannot span lines, so one line is one row; a quote left open is
an error even with ``skip_bad_rows``, since the lines it swallowed cannot be told apart.

Lines: a line ends at "\\n" or "\\r\\n"; a lone "\\r" is part of its line (blank space
around a number, a character in text). An empty line is not a row and is skipped in every layout
(files often end in one), but it is counted, so line numbers are the file's own. A line with a
byte that is not ``encoding`` text is one bad row, named with the field the byte is in; a header
line with one is an error. A watches file with no rows left is an error: an empty log is never
what a caller meant to read.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from ytdnn.data.lines import hide_lone_cr, load_text, record_lines, restore_cr, undecodable_row
from ytdnn.data.rows import BadRow, Problem, Rows, SkippedRowsWarning, Spec
from ytdnn.data.schema import ID, SCHEMAS, TABLES, DataError, Dataset, TableSchema

# pyarrow splits on one character only; "::" (MovieLens 1M) becomes this byte, which text never holds.
_UNIT_SEPARATOR = "\x1f"
_NUM_LISTED = 10  # bad rows named in the warning; all of them are in the returned list


def report_skipped(bad: list[BadRow], into: list | None = None) -> None:
    """Append ``bad`` to ``into`` (when given) and warn once, listing the first few."""
    order = {file: i for i, file in enumerate(dict.fromkeys(b.file for b in bad))}
    bad.sort(key=lambda b: (order[b.file], b.line or 0))  # file order, then line order
    if into is not None:
        into.extend(bad)
    if bad:
        listed = "; ".join(str(b) for b in bad[:_NUM_LISTED])
        more = f"; ... and {len(bad) - _NUM_LISTED} more" if len(bad) > _NUM_LISTED else ""
        warnings.warn(
            f"skipped {len(bad)} bad row(s): {listed}{more}", SkippedRowsWarning, stacklevel=3
        )


# -- step 1: parse --------------------------------------------------------------------------------


def parse_text(
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    quote: bool = True,
    skip_bad_rows: bool = False,
    bad: list[BadRow] | None = None,
) -> Rows:
    """Read a delimited text file into string columns, remembering each row's line.

    ``names``: the file's columns when it has no header line; None reads them from the first line.
    Lines with the wrong number of fields raise DataError, or are skipped into ``bad``.
    """
    bad = [] if bad is None else bad
    data, undecodable = load_text(path, encoding)
    file_delimiter = delimiter  # the bad-byte column is counted in the file's own text
    if len(delimiter) > 1:
        if _UNIT_SEPARATOR.encode() in data:
            raise DataError("holds byte 0x1f, which stands in for the delimiter", file=path)
        data = data.replace(delimiter.encode(), _UNIT_SEPARATOR.encode())
        delimiter = _UNIT_SEPARATOR
    data, stand_in = hide_lone_cr(data, delimiter, path)
    records = record_lines(data)
    header = names is None
    if header:
        if undecodable and (not len(records) or undecodable[0][0] < records[0]):
            line, _, reason = undecodable[0]  # the header itself: no column can be named
            raise DataError(f"not {encoding} text ({reason}); pass encoding=", file=path, line=line)
        if not len(records):
            raise DataError("empty file; expected a header line", file=path, line=1)
        names = _header(data, records[0], delimiter, quote, path, stand_in)
    set_aside = [
        undecodable_row(u, names, file_delimiter, quote, path, encoding) for u in undecodable
    ]
    if len(records) <= header:
        table, rows_lines = pa.table({n: pa.array([], pa.string()) for n in names}), records[:0]
    else:
        table, invalid = _read_strings(
            data, None if header else names, names, delimiter, quote, path
        )
        if stand_in is not None:
            table = restore_cr(table, stand_in)
        keep = np.ones(len(records), bool)
        keep[: int(header)] = False
        keep[[number - 1 for number, _ in invalid]] = False
        rows_lines = records[keep]
        if quote and b'"' in data:
            _reject_multiline_values(table, rows_lines, path)
        set_aside += _field_count_rows(invalid, records, names, path)
        if len(rows_lines) != table.num_rows:
            raise DataError(
                "cannot tell which line each row is on; is a quote misplaced?", file=path
            )
    if skip_bad_rows:
        bad.extend(set_aside)
    return Rows(
        table,
        path,
        lambda: rows_lines,
        skip_bad_rows=skip_bad_rows,
        bad=bad,
        header_line=int(records[0]) if header else None,
        pending=None if skip_bad_rows else min(set_aside, key=lambda b: b.line, default=None),
    )


def _read_strings(data: bytes, column_names, names, delimiter, quote, path):
    """pyarrow's parse, every column as text: (table, [(record number, field count)] set aside)."""
    invalid: list[tuple[int, int]] = []

    def set_aside(row) -> str:  # pyarrow numbers records (non-empty lines) from 1, header included
        invalid.append((row.number, row.actual_columns))
        return "skip"

    try:
        table = pv.read_csv(
            io.BytesIO(data),
            read_options=pv.ReadOptions(column_names=column_names, use_threads=False),
            parse_options=pv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quote else False,
                invalid_row_handler=set_aside,
            ),
            convert_options=pv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as err:
        raise DataError(f"cannot parse: {err}", file=path) from None
    return table, invalid


def _reject_multiline_values(table: pa.Table, rows_lines: np.ndarray, path) -> None:
    """A value holding a line break means a quote that runs on past its line: always an error,
    because the lines it swallowed cannot be told apart from the value (rows before it are fine)."""
    first = None
    for name in table.column_names:
        hit = pc.match_substring(table.column(name), "\n")
        if pc.any(hit).as_py():
            row = pc.index(hit, True).as_py()
            first = min(first or (row, name), (row, name))
    if first is not None:
        line = int(rows_lines[first[0]]) if first[0] < len(rows_lines) else None
        raise DataError(
            "quoted value runs past its line (quote not closed?)",
            file=path,
            line=line,
            column=first[1],
        )


def _header(data: bytes, line: int, delimiter: str, quote: bool, path, stand_in) -> list[str]:
    text = data.split(b"\n", line)[line - 1].decode("utf-8")
    if stand_in is not None:
        text = text.replace(stand_in.decode(), "\r")
    names = next(
        csv.reader(
            [text], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE
        )
    )
    seen = set()
    for name in names:
        if name in seen:
            raise DataError("column named twice in the header", file=path, line=line, column=name)
        seen.add(name)
    return names


def _field_count_rows(invalid, records, names, path) -> list[BadRow]:
    found = []
    for number, actual in invalid:
        line = int(records[number - 1])
        # Too few fields: name the first one missing. Too many: the surplus follows the last column.
        column = names[actual] if actual < len(names) else names[-1]
        found.append(BadRow(str(path), line, column, f"{actual} field(s), expected {len(names)}"))
    return found


# -- public readers -------------------------------------------------------------------------------


def schema_specs(
    schema: TableSchema, names: Sequence[str], *, ids="auto", list_delimiter="|"
) -> dict[str, Spec]:
    """The conversion of each of ``names`` (canonical names) as ``schema`` wants it."""
    kinds = {pa.int64(): "int", pa.float64(): "float", pa.string(): "string", pa.bool_(): "bool"}
    specs = {}
    for name in names:
        if name not in schema.names:
            specs[name] = Spec("infer")
            continue
        col = schema.column(name)
        kind = "id" if col.type == ID else "list" if pa.types.is_list(col.type) else kinds[col.type]
        specs[name] = Spec(
            kind,
            required=not col.nullable,
            nonnegative=name == "watch_time",
            ids=ids,
            delimiter=list_delimiter,
        )
    return specs


def _schema(table: str | TableSchema) -> TableSchema:
    if isinstance(table, TableSchema):
        return table
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; expected one of {list(SCHEMAS)}")
    return SCHEMAS[table]


def read_csv(
    path: str | Path,
    table: str,
    columns: Mapping[str, str] | None = None,
    *,
    delimiter: str = ",",
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    ids: str = "auto",
    list_delimiter: str = "|",
    skip_bad_rows: bool = False,
    skipped: list[BadRow] | None = None,
) -> pa.Table:
    """Read a delimited text file as the canonical table ``table`` ("watches", "users", ...).

    columns: canonical name -> the file's column name, for those that differ ({"user_id": "uid"}).
    names: the file's column names when it has no header line. delimiter may be several characters
    ("::"). ids: "auto" (int64 if every id is an integer), "int" or "string". Columns outside the
    schema are kept (as int, float or string). Skipped rows are appended to ``skipped``.
    """
    schema, bad = _schema(table), []
    rows = parse_text(
        path,
        names=names,
        delimiter=delimiter,
        encoding=encoding,
        skip_bad_rows=skip_bad_rows,
        bad=bad,
    )
    return _canonical(rows, schema, columns, ids, list_delimiter, bad, skipped)


def read_parquet(
    path: str | Path,
    table: str,
    columns: Mapping[str, str] | None = None,
    *,
    ids: str = "auto",
    list_delimiter: str = "|",
    skip_bad_rows: bool = False,
    skipped: list[BadRow] | None = None,
) -> pa.Table:
    """Read a Parquet file as the canonical table ``table``; ``line`` in errors is the 1-based row
    (the message says "row").

    Text columns are parsed as in read_csv where the canonical type is not text (numbers, booleans,
    dates, lists split on ``list_delimiter``, and ids when ``ids="int"``); elsewhere they are kept
    as stored, since Parquet has types and nulls ("" stays "", "007" stays a string id). Typed
    columns are cast, and a value that does not survive the cast (1.5 as an int) is a bad row, as
    is text that is not UTF-8. ``Dataset.load`` reads each table with this function.
    """
    schema, bad = _schema(table), []
    try:
        data = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"cannot read Parquet: {err}", file=path) from None
    rows = Rows(
        data,
        path,
        lambda: np.arange(1, data.num_rows + 1),
        skip_bad_rows=skip_bad_rows,
        bad=bad,
        typed=True,
    )
    return _canonical(rows, schema, columns, ids, list_delimiter, bad, skipped)


def _canonical(rows, schema, columns, ids, list_delimiter, bad, skipped) -> pa.Table:
    """Shared tail of the readers: rename to canonical names, convert, validate, report skips."""
    rows.rename(columns or {}, schema)
    rows.convert(
        schema_specs(schema, rows.table.column_names, ids=ids, list_delimiter=list_delimiter)
    )
    out = rows.finish(schema)
    report_skipped(bad, skipped)
    return out


def read_dataset(
    directory: str | Path,
    *,
    columns: Mapping[str, Mapping[str, str]] | None = None,
    ids: str = "auto",
    skip_bad_rows: bool = False,
    name: str | None = None,
    delimiter: str = ",",
) -> Dataset:
    """Read ``<directory>/<table>.parquet`` or ``<table>.csv`` for each canonical table present.

    columns: table name -> that table's column mapping. Skipped rows go to ``Dataset.skipped_rows``.
    delimiter: the CSV files' field separator (";", "\t", ...).
    """
    directory, tables, skipped = Path(directory), {}, []
    for table in TABLES:
        mapping = (columns or {}).get(table)
        with warnings.catch_warnings():  # one warning for the whole dataset, below
            warnings.simplefilter("ignore", SkippedRowsWarning)
            if (path := directory / f"{table}.parquet").exists():
                tables[table] = read_parquet(
                    path, table, mapping, ids=ids, skip_bad_rows=skip_bad_rows, skipped=skipped
                )
            elif (path := directory / f"{table}.csv").exists():
                tables[table] = read_csv(
                    path, table, mapping, delimiter=delimiter, ids=ids, skip_bad_rows=skip_bad_rows, skipped=skipped
                )
    if "watches" not in tables:
        raise DataError("no watches.parquet or watches.csv in the data directory", file=directory)
    report_skipped(skipped)
    dataset = Dataset(**tables, name=name or directory.name, skipped_rows=skipped)
    return dataset.validate()


__all__ = [
    "BadRow",
    "Problem",
    "Rows",
    "SkippedRowsWarning",
    "Spec",
    "parse_text",
    "read_csv",
    "read_dataset",
    "read_parquet",
    "report_skipped",
    "schema_specs",
]
