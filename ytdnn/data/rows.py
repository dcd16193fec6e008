"""Rows: a table read from one file, the line each row came from, and the checks on it.

The readers (readers.py, movielens.py) parse a file into a Rows, then ``convert`` its columns,
``check_key`` and ``finish``. Each step finds bad rows as boolean masks, vectorised; ``reject``
then raises a DataError for the first one, or (``skip_bad_rows=True``) drops them all and records
each as a BadRow. Nothing else ever removes a row.

Lines the parse itself could not take (wrong field count, bytes that are not text) are set aside
before ``convert``. Without skip_bad_rows the earliest of them is kept ``pending``: ``reject``
raises it when it comes before the row that step found, and ``finish`` raises it at the latest,
so the error names the file's first bad line (a duplicate key aside: that check comes last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import DataError, TableSchema, unix_seconds, validate_table

_TRUE = pa.array(["true", "t", "yes", "y", "1"])
_FALSE = pa.array(["false", "f", "no", "n", "0"])


@dataclass(frozen=True)
class BadRow:
    """A row a reader skipped (``skip_bad_rows=True``): where it was and why."""

    file: str
    line: int | None  # 1-based line in ``file`` (row number for Parquet)
    column: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} column {self.column!r}: {self.reason}"


class SkippedRowsWarning(UserWarning):
    """Rows were skipped because the reader was asked to (``skip_bad_rows=True``)."""


@dataclass(frozen=True)
class Spec:
    """How to convert one column to its canonical type.

    kind: "int", "float", "string", "bool", "id", "list" (split on ``delimiter``), "date"
    (strptime ``date_format`` -> int64 Unix seconds) or "infer" (int, else float, else string;
    never a bad value, for columns outside the schema).
    """

    kind: str
    required: bool = False  # a missing value is a bad row
    nonnegative: bool = False
    ids: str = "auto"  # for kind "id": "auto" (int64 if every id is an integer, none zero-padded), "int" or "string"
    delimiter: str = "|"  # for kind "list"
    date_format: str = "%d-%b-%Y"  # for kind "date"


@dataclass(frozen=True)
class Problem:
    """The rows (mask [n]) with one kind of problem in one column."""

    mask: np.ndarray
    column: str | None
    reason: str
    detail: Callable[[int], str] | None = None  # row -> text after the reason, e.g. the bad value

    def message(self, row: int) -> str:
        return self.reason if self.detail is None else f"{self.reason}: {self.detail(row)}"


class Rows:
    """A table read from ``file``, and the 1-based line of each of its rows (computed when needed).

    ``table`` may be replaced by one with the same rows in the same order (new or dropped columns).
    typed: the file stores types and nulls (Parquet): "line" is the row number, and a text column
    is parsed only where the canonical type is not text (see ``convert_column``).
    pending: the earliest row the parse set aside, to raise in order (see the module docstring).
    """

    def __init__(
        self,
        table: pa.Table,
        file: str | Path,
        lines: Callable[[], np.ndarray],
        *,
        skip_bad_rows: bool = False,
        bad: list[BadRow] | None = None,
        header_line: int | None = None,
        typed: bool = False,
        pending: BadRow | None = None,
    ):
        self.table = table
        self.file = str(file)
        self.skip_bad_rows = skip_bad_rows
        self.bad = [] if bad is None else bad
        self.header_line = header_line  # where a missing column would have been named
        self.typed = typed
        self.unit = "row" if typed else "line"
        self.pending = pending
        self.file_names: dict[str, str] = {}  # canonical -> the file's name, for messages
        self._line_fn = lines
        self._lines: np.ndarray | None = None

    def lines(self) -> np.ndarray:
        """[rows] the line of each row in the file."""
        if self._lines is None:
            self._lines = np.asarray(self._line_fn())
        return self._lines

    def reject(self, problems: Sequence[Problem]) -> None:
        """Raise for the earliest bad row, or drop every bad row and record it (skip_bad_rows)."""
        problems = [p for p in problems if p.mask.any()]
        if not problems:
            return  # a pending row waits for finish: a later step may find an earlier line
        lines = self.lines()
        if not self.skip_bad_rows:
            first = min(problems, key=lambda p: int(p.mask.argmax()))  # ties: the earlier column
            row = int(first.mask.argmax())
            if self.pending is not None and self.pending.line < lines[row]:
                self.raise_pending()
            column = self.file_names.get(first.column, first.column)
            raise DataError(
                first.message(row),
                file=self.file,
                line=int(lines[row]),
                column=column,
                unit=self.unit,
            )
        taken = np.zeros(self.table.num_rows, bool)
        for p in problems:
            column = self.file_names.get(p.column, p.column)
            for row in np.flatnonzero(p.mask & ~taken):
                self.bad.append(BadRow(self.file, int(lines[row]), column, p.message(row)))
            taken |= p.mask
        self.table = self.table.filter(pa.array(~taken))
        self._lines = lines[~taken]

    def raise_pending(self) -> None:
        """Raise the row the parse set aside, if any (only without skip_bad_rows)."""
        if self.pending is not None:
            p = self.pending
            raise DataError(p.reason, file=p.file, line=p.line, column=p.column, unit=self.unit)

    def rename(self, columns: Mapping[str, str], schema: TableSchema) -> None:
        """Give the file's columns their canonical names (columns: canonical -> file name).

        Messages about a renamed column still use the file's name for it: that is what the user sees.
        """
        present = self.table.column_names
        for canonical, name in columns.items():
            if name not in present:
                raise DataError(
                    f"no column {name!r} (for {canonical!r}) in the file",
                    file=self.file,
                    line=self.header_line,
                    column=name,
                )
        inverse = {name: canonical for canonical, name in columns.items()}
        names = [inverse.get(n, n) for n in present]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise DataError(
                    "two columns map to one name",
                    file=self.file,
                    line=self.header_line,
                    column=name,
                )
        self.table = self.table.rename_columns(names)
        self.file_names = dict(zip(names, present, strict=True))
        for name in schema.required:
            if name not in names:
                # one column whose name holds the others: the file has another separator
                other = next((d for d in (";", "\t", "|") if len(names) == 1 and d in names[0]), None)
                hint = f" (the header is one column, {names[0]!r}: separated by {other!r}? pass delimiter=)" if other else ""
                raise DataError(
                    f"missing required column of table {schema.name!r}{hint}",
                    file=self.file,
                    line=self.header_line,
                    column=name,
                )

    def convert(self, specs: Mapping[str, Spec]) -> None:
        """Convert the columns named in ``specs``; unparsable, missing or negative values are bad rows."""
        problems, columns = [], {}
        for name in self.table.column_names:
            if name not in specs:
                columns[name] = self.table.column(name)
                continue
            spec, raw = specs[name], self.table.column(name).combine_chunks()
            values, found = convert_column(
                raw, spec, file=self.file, column=name, typed=self.typed
            )
            shown = _shower(raw)
            flagged = np.zeros(len(raw), bool)
            for mask, reason in found:
                problems.append(Problem(mask, name, reason, shown))
                flagged |= mask
            if spec.required:
                problems.append(
                    Problem(~_mask(pc.is_valid(values)) & ~flagged, name, "missing value")
                )
            if spec.nonnegative:
                problems.append(Problem(_mask(pc.less(values, 0)), name, "negative value", shown))
            columns[name] = values
        self.table = pa.table(columns) if columns else self.table
        self.reject(problems)

    def check_key(self, key: Sequence[str]) -> None:
        """A row whose key appeared on an earlier row is bad (the first one stays)."""
        key = list(key)
        if self.table.num_rows == 0:
            return
        frame = pl.from_arrow(self.table.select(key)).with_row_index("_row")
        first = frame.select(pl.col("_row").first().over(key)).to_series().to_numpy()
        duplicate = first != np.arange(len(first))
        if not duplicate.any():
            return
        lines = self.lines()

        def detail(row: int) -> str:
            value = ", ".join(str(self.table.column(k)[row].as_py()) for k in key)
            return f"{value} (first on {self.unit} {lines[first[row]]})"

        self.reject([Problem(duplicate, ",".join(key), f"duplicate {'/'.join(key)}", detail)])

    def finish(self, schema: TableSchema) -> pa.Table:
        """Check the key, then validate against ``schema``: the canonical table.

        A watches table with no rows is an error: nothing downstream can use it, and an empty
        or truncated file should not pass for a log.
        """
        if schema.key:
            self.check_key(schema.key)
        self.raise_pending()
        if schema.name == "watches" and self.table.num_rows == 0:
            skipped = sum(b.file == self.file for b in self.bad)
            why = f"every row was bad ({skipped} skipped)" if skipped else "the file has none"
            raise DataError(f"no watches: {why}", file=self.file)
        return validate_table(self.table, schema, source=self.file)


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """[n] bool, null counted as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _shower(raw: pa.Array) -> Callable[[int], str]:
    def show(row: int) -> str:
        try:
            return repr(raw[row].as_py())
        except UnicodeDecodeError:  # text that is not UTF-8 (Parquet): show its bytes
            if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
                binary = pa.large_binary() if pa.types.is_large_string(raw.type) else pa.binary()
                return repr(raw.slice(row, 1).view(binary)[0].as_py())
            return "(not UTF-8)"

    return show


def _null_if_blank(text: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)


def _bisect_failures(n: int, check) -> np.ndarray:
    """bad [n]: the single rows on which ``check(start, count)`` raises ArrowInvalid, found by
    bisection (k bad rows cost about k * log2(n) checks), once a check of all n has failed."""
    bad = np.zeros(n, bool)
    pending = [(0, n)]
    while pending:
        start, stop = pending.pop()
        try:
            check(start, stop - start)
        except pa.ArrowInvalid:
            if stop - start == 1:
                bad[start] = True
            else:
                middle = (start + stop) // 2
                pending += [(start, middle), (middle, stop)]
    return bad


def _cast_each(values: pa.Array, to: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast, and find the values that do not survive the cast (bad [n]); nulls stay null.

    The search, by bisection, runs only after the whole-column cast failed: the happy path is one
    vectorised cast, and k bad values cost about k * log2(n) casts.
    """
    try:
        return pc.cast(values, to), np.zeros(len(values), bool)
    except pa.ArrowInvalid:
        bad = _bisect_failures(len(values), lambda start, n: pc.cast(values.slice(start, n), to))
    return pc.cast(pc.if_else(pa.array(~bad), values, pa.scalar(None, values.type)), to), bad


def convert_column(
    values: pa.Array, spec: Spec, *, file: str, column: str, typed: bool = False
) -> tuple[pa.Array, list]:
    """Convert one column as ``spec`` says: (values, [(bad mask [n], reason), ...]).

    Text is parsed; typed (Parquet) columns are cast. A column whose type cannot hold the kind at
    all (a list where a number belongs) is a DataError for the whole column. Text (or binary) that
    is not UTF-8 is a bad value. typed: the text comes from a file that stores types (Parquet), so
    it is kept as stored where text is wanted (no "" -> null, ids stay text under ids="auto").
    """
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        # a view, not a cast: a cast fails the whole column on one bad byte
        large = pa.types.is_large_binary(values.type)
        values = values.view(pa.large_string() if large else pa.string())
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        return _from_typed(values, spec, file, column)
    values, broken = _valid_utf8(values)
    as_stored = spec.kind in ("string", "infer") or (spec.kind == "id" and spec.ids != "int")
    values, found = (values, []) if typed and as_stored else _from_text(values, spec)
    return values, [(broken, "not UTF-8 text"), *found] if broken.any() else found


def _valid_utf8(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Null the values that are not UTF-8 (bad [n]), found by bisection as in ``_cast_each``.

    Text parsed from a file is UTF-8 already; Parquet stores whatever bytes its writer gave.
    """
    try:
        text.validate(full=True)
        return text, np.zeros(len(text), bool)
    except pa.ArrowInvalid:
        bad = _bisect_failures(len(text), lambda start, n: text.slice(start, n).validate(full=True))
    return pc.if_else(pa.array(~bad), text, pa.scalar(None, pa.string())), bad


def _from_text(text: pa.Array, spec: Spec) -> tuple[pa.Array, list]:
    kind = spec.kind
    if kind == "string":
        return _null_if_blank(text), []
    if kind == "list":
        empty = pa.scalar([], pa.list_(pa.string()))
        return pc.if_else(pc.equal(text, ""), empty, pc.split_pattern(text, spec.delimiter)), []
    stripped = _null_if_blank(pc.utf8_trim_whitespace(text))
    present = _mask(pc.is_valid(stripped))
    if kind == "int" or (kind == "id" and spec.ids == "int"):
        return _parse_ints(stripped, present)
    if kind == "id":
        if spec.ids == "string":
            return stripped, []
        values, found = _parse_ints(stripped, present)
        # "007" and "7" are two ids: as ints they would merge, so zero-padded ids stay text
        padded = pc.any(pc.match_substring_regex(stripped, r"^-?0[0-9]")).as_py()
        return (values, []) if not padded and not any(mask.any() for mask, _ in found) else (stripped, [])
    if kind == "float":
        return _parse_floats(stripped, present)
    if kind == "bool":
        lowered = pc.utf8_lower(stripped)
        true, false = _mask(pc.is_in(lowered, _TRUE)), _mask(pc.is_in(lowered, _FALSE))
        values = pc.if_else(
            pa.array(true), True, pc.if_else(pa.array(false), False, pa.scalar(None, pa.bool_()))
        )
        return values, [(present & ~true & ~false, "not a boolean")]
    if kind == "date":
        parsed = pc.strptime(stripped, format=spec.date_format, unit="s", error_is_null=True)
        values = parsed.cast(pa.int64())
        return values, [
            (present & ~_mask(pc.is_valid(values)), f"not a date like {spec.date_format}")
        ]
    if kind == "infer":
        for attempt in (_parse_ints, _parse_floats):
            values, found = attempt(stripped, present)
            if not any(mask.any() for mask, _ in found):
                return values, []
        return _null_if_blank(text), []
    raise ValueError(f"unknown kind {kind!r}")


def _parse_ints(stripped: pa.Array, present: np.ndarray) -> tuple[pa.Array, list]:
    # A pattern first: pyarrow alone would also take "0x10" as 16, and an id must not change.
    wellformed = _mask(pc.match_substring_regex(stripped, r"^-?[0-9]+$"))
    candidates = pc.if_else(pa.array(wellformed), stripped, pa.scalar(None, pa.string()))
    values, too_big = _cast_each(candidates, pa.int64())
    return values, [(present & ~wellformed, "not an integer"), (too_big, "integer out of range")]


def _parse_floats(stripped: pa.Array, present: np.ndarray) -> tuple[pa.Array, list]:
    values, bad = _cast_each(stripped, pa.float64())
    return values, [(bad, "not a number"), *_non_finite(values)]


def _non_finite(values: pa.Array) -> list:
    # nan and inf parse, but no watch time, age or duration is either
    return [(~_mask(pc.is_finite(values)) & _mask(pc.is_valid(values)), "not a finite number")]


_NULL_TYPES = {"int": pa.int64(), "id": pa.int64(), "date": pa.int64(), "float": pa.float64(),
               "bool": pa.bool_(), "string": pa.string(), "list": pa.list_(pa.string())}


def _from_typed(values: pa.Array, spec: Spec, file: str, column: str) -> tuple[pa.Array, list]:
    t, kind = values.type, spec.kind
    numeric = (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    )
    if kind == "infer":
        return values, []
    if pa.types.is_null(t):  # no value at all (pandas writes an all-None column so): nulls of the kind's type
        return pa.nulls(len(values), _NULL_TYPES[kind]), []
    if kind == "id" and (spec.ids == "string" or not numeric):
        kind = "string"
    if kind == "string" and not pa.types.is_nested(t):
        return values.cast(pa.string()), []
    if pa.types.is_timestamp(t) and kind in ("int", "date"):
        return unix_seconds(values), []
    if kind in ("int", "id", "date") and numeric:
        values, bad = _cast_each(values, pa.int64())
        return values, [(bad, "integer out of range" if pa.types.is_integer(t) else "not an integer")]
    if kind == "float" and numeric:
        values, bad = _cast_each(values, pa.float64())
        return values, [(bad, "not a number"), *_non_finite(values)]
    if kind == "bool" and pa.types.is_boolean(t):
        return values, []
    if kind == "bool" and pa.types.is_integer(t):
        ok = _mask(pc.is_in(values, pa.array([0, 1], t))) | ~_mask(pc.is_valid(values))
        return pc.if_else(pa.array(ok), values, pa.scalar(None, t)).cast(pa.bool_()), [
            (~ok, "not a boolean")
        ]
    if kind == "list" and pa.types.is_list(t) and not pa.types.is_nested(t.value_type):
        return values.cast(pa.list_(pa.string())), []
    raise DataError(f"a {t} column cannot be read as {kind}", file=file, column=column)
