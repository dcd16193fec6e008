"""Reader fuzzing (issue 14): random watches, random corruptions, in four layouts.

For every case, each row is either read exactly or reported at its file, line and column: without
skip_bad_rows the error is the first corrupted line; with it, the skipped rows are exactly the
corrupted ones and the table is exactly the others. Layouts: the canonical CSV (``read_csv``, with
a header), MovieLens 1M ``ratings.dat`` ("::"), MovieLens 100K ``u.data`` (tab), and Parquet (text
or typed columns, "line" = row number).

Blank lines: every text layout skips an empty line (MovieLens files end in one, and pyarrow skips
them), but counts it, so the lines after it keep their numbers; "blank" below checks that. A line
of spaces is not blank: it is a row with the wrong number of fields.

The suite runs 60 cases per layout; YTDNN_FUZZ_EXAMPLES=1000 runs more.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ytdnn.data.movielens import read_movielens
from ytdnn.data.readers import SkippedRowsWarning, read_csv, read_parquet
from ytdnn.data.schema import DataError

FUZZ = settings(
    max_examples=int(os.environ.get("YTDNN_FUZZ_EXAMPLES", "60")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
COLUMNS = ("user_id", "item_id", "timestamp", "watch_time")
# Text that is neither an integer nor a number (no delimiter, quote, space or line end in it)
GARBAGE = ("x", "1a", "0x10", "--1", "½", "١", "one", "1.2.3", "1e", "é", "+-1")
NOT_INTEGERS = (*GARBAGE, "1.5", "1e3", "+1")
NON_FINITE = ("nan", "NaN", "inf", "-inf", "Infinity")
BAD_BYTES = (b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")  # not UTF-8
# A corruption: (kind, field position in the file, a seed for where or what)
TEXT_KINDS = ("garbage", "empty", "drop", "extra", "negative", "non_finite", "bad_byte",
              "cr_inside", "cr_edge", "blank")  # fmt: skip
PARQUET_TEXT_KINDS = ("garbage", "empty", "negative", "non_finite", "bad_byte", "cr_inside",
                      "cr_edge")  # fmt: skip
PARQUET_TYPED_KINDS = ("empty", "negative", "non_finite")


@dataclass(frozen=True)
class Layout:
    name: str
    file: str
    names: tuple[str, ...]  # the file's columns, in order
    delimiter: str = ","
    header: bool = False
    nullable: tuple[str, ...] = ()  # columns whose empty field is a null, not a bad row


CSV = Layout("csv", "watches.csv", ("user_id", "item_id", "timestamp", "watch_time"), ",", True,
             ("timestamp",))  # fmt: skip
ML_COLUMNS = ("user_id", "item_id", "watch_time", "timestamp")  # ratings.dat and u.data
RATINGS_DAT = Layout("ml-1m", "ratings.dat", ML_COLUMNS, "::")
U_DATA = Layout("ml-100k", "u.data", ML_COLUMNS, "\t")
PARQUET = Layout("parquet", "watches.parquet", COLUMNS, nullable=("timestamp",))


watches = st.fixed_dictionaries(
    {
        "user_id": st.integers(10, 10**6),
        "item_id": st.integers(10, 10**9),
        "timestamp": st.integers(10**8, 2 * 10**9),
        "watch_time": st.integers(1, 40).map(lambda k: k / 4),  # exact in decimal, never 0
    }
)


@st.composite
def cases(draw, kinds):
    """(rows, {row: (kind, field, seed)}, CRLF line ends?)"""
    rows = draw(st.lists(watches, min_size=1, max_size=12))
    corruption = st.tuples(st.sampled_from(kinds), st.integers(0, 3), st.integers(0, 2**16))
    corrupted = draw(st.dictionaries(st.integers(0, len(rows) - 1), corruption))
    return rows, corrupted, draw(st.booleans())


def render(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def corrupt_field(text: str, column: str, kind: str, seed: int) -> tuple[bytes, bool]:
    """(the corrupted field, is the row now bad?) for the kinds that change one field."""
    if kind == "garbage":
        garbage = GARBAGE if column == "watch_time" else NOT_INTEGERS  # "1.5" is a watch time
        return garbage[seed % len(garbage)].encode(), True
    if kind == "negative":
        return f"-{text}".encode(), True
    if kind == "non_finite":
        return NON_FINITE[seed % len(NON_FINITE)].encode(), True
    if kind == "bad_byte":
        at, byte = seed % (len(text) + 1), BAD_BYTES[(seed >> 8) % len(BAD_BYTES)]
        return text[:at].encode() + byte + text[at:].encode(), True
    if kind == "cr_inside":  # "1\r2" is no number
        at = 1 + seed % (len(text) - 1)
        return f"{text[:at]}\r{text[at:]}".encode(), True
    if kind == "cr_edge":  # "\r12" or "12\r": blank space around a number is allowed
        return (f"\r{text}" if seed % 2 else f"{text}\r").encode(), False
    raise AssertionError(kind)


@dataclass
class Expected:
    rows: list[dict]  # the rows read, in order
    bad: list[tuple[int, str]]  # (line, column) of each corrupted row, in line order


def write_text(layout: Layout, path: Path, rows, corrupted, crlf: bool) -> Expected:
    names, delimiter = layout.names, layout.delimiter.encode()
    lines, expected = [], Expected([], [])
    if layout.header:
        lines.append(",".join(names).encode())
    for i, row in enumerate(rows):
        fields = [render(row[name]).encode() for name in names]
        kind, position, seed = corrupted.get(i, (None, 0, 0))
        if kind in ("negative", "non_finite"):
            position = names.index("watch_time")
        column, bad, value = names[position], True, dict(row)
        if kind == "blank":
            lines.append(b"")
            bad = False
        elif kind == "empty":
            fields[position] = b""
            bad = column not in layout.nullable
            value[column] = None
        elif kind == "drop":  # too few fields: the first one missing is named
            del fields[position]
            column = names[-1]
        elif kind == "extra":  # too many: the surplus follows the last column
            fields.insert(position, b"7")
            column = names[-1]
        elif kind is not None:
            fields[position], bad = corrupt_field(fields[position].decode(), column, kind, seed)
        else:
            bad = False
        lines.append(delimiter.join(fields))
        line = len(lines)
        if bad:
            expected.bad.append((line, column))
        else:
            expected.rows.append(value)
    path.write_bytes(b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines))
    return expected


def write_parquet(path: Path, rows, corrupted, typed: bool) -> Expected:
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    if not typed:
        columns = {name: [render(v).encode() for v in values] for name, values in columns.items()}
    expected = Expected([], [])
    for i, row in enumerate(rows):
        kind, position, seed = corrupted.get(i, (None, 0, 0))
        column = "watch_time" if kind in ("negative", "non_finite") else COLUMNS[position]
        value, bad = dict(row), kind is not None
        if kind == "empty":
            columns[column][i], value[column] = None, None
            bad = column not in PARQUET.nullable
        elif typed and kind == "negative":
            columns[column][i] = -row[column]
        elif typed and kind == "non_finite":
            columns[column][i] = float(NON_FINITE[seed % len(NON_FINITE)])
        elif kind is not None:
            columns[column][i], bad = corrupt_field(render(row[column]), column, kind, seed)
        if bad:
            expected.bad.append((i + 1, column))
        else:
            expected.rows.append(value)
    if typed:
        types = {"watch_time": pa.float64()}
        table = pa.table({n: pa.array(v, types.get(n, pa.int64())) for n, v in columns.items()})
    else:  # binary viewed as text: pa.array would refuse the bytes that are not UTF-8
        table = pa.table(
            {n: pa.array(v, pa.binary()).view(pa.string()) for n, v in columns.items()}
        )
    pq.write_table(table, path)
    return expected


def read(layout: Layout, path: Path, skip: bool) -> tuple[list[dict], list]:
    """(rows read, skipped rows) by the layout's reader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedRowsWarning)
        if layout is CSV:
            skipped = []
            table = read_csv(path, "watches", ids="int", skip_bad_rows=skip, skipped=skipped)
        elif layout is PARQUET:
            skipped = []
            table = read_parquet(path, "watches", ids="int", skip_bad_rows=skip, skipped=skipped)
        else:
            dataset = read_movielens(path.parent, skip_bad_rows=skip)
            table, skipped = dataset.watches, dataset.skipped_rows
    return table.to_pylist(), skipped


def check(layout: Layout, path: Path, expected: Expected) -> None:
    """The property, in both modes."""
    file = str(path)
    if expected.bad:  # strict: the first corrupted line
        with pytest.raises(DataError) as info:
            read(layout, path, skip=False)
        err = info.value
        assert (err.file, err.line, err.column) == (file, *expected.bad[0]), str(err)
    else:
        assert read(layout, path, skip=False) == (expected.rows, [])
    if not expected.rows:  # every row bad: nothing is left to call a watches table
        with pytest.raises(DataError, match="no watches") as info:
            read(layout, path, skip=True)
        assert (info.value.file, info.value.line) == (file, None)
        return
    rows, skipped = read(layout, path, skip=True)
    assert rows == expected.rows
    assert [(b.file, b.line, b.column) for b in skipped] == [(file, *b) for b in expected.bad]


@pytest.mark.parametrize("layout", [CSV, RATINGS_DAT, U_DATA], ids=lambda x: x.name)
@FUZZ
@given(case=cases(TEXT_KINDS))
def test_text_layouts_read_each_row_exactly_or_report_it(layout, case):
    rows, corrupted, crlf = case
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / layout.file
        check(layout, path, write_text(layout, path, rows, corrupted, crlf))


@FUZZ
@given(case=cases(PARQUET_TEXT_KINDS), typed=st.booleans())
def test_parquet_reads_each_row_exactly_or_reports_it(case, typed):
    rows, corrupted, _ = case
    if typed:  # a typed column holds numbers: only missing, negative and non-finite values
        corrupted = {
            i: (PARQUET_TYPED_KINDS[seed % 3], position, seed)
            for i, (_, position, seed) in corrupted.items()
        }
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / PARQUET.file
        check(PARQUET, path, write_parquet(path, rows, corrupted, typed))
