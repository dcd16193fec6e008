"""Bytes of a delimited text file -> UTF-8 bytes pyarrow can parse, with the file's own lines.

The conventions (readers.py): a line ends at "\\n" or "\\r\\n", and a lone "\\r" is part of its
line; an empty line is no row but keeps its number; a line with bytes that are not ``encoding``
text is set aside whole, as one bad row, and the others keep their numbers.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.rows import BadRow
from ytdnn.data.schema import DataError

_CR_STAND_INS = (b"\x1e", b"\x1d", b"\x1c", b"\x1a", b"\x19", b"\x18")  # see hide_lone_cr
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte it cannot decode


def load_text(path: str | Path, encoding: str) -> tuple[bytes, list[tuple[int, str, str]]]:
    """The file as UTF-8 bytes (what pyarrow reads), each line that is not ``encoding`` text
    emptied: (bytes, [(line, the line's text before its first bad byte, reason), ...])."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("no such file", file=path) from None
    utf8 = encoding.replace("-", "").replace("_", "").lower()
    if raw.startswith(b"\xef\xbb\xbf") and utf8 in ("utf8", "utf8sig"):
        raw = raw[3:]
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        return _empty_undecodable_lines(raw, encoding)
    return (raw if utf8 == "utf8" else text.encode("utf-8")), []


def _empty_undecodable_lines(raw: bytes, encoding: str) -> tuple[bytes, list]:
    """The slow path of ``load_text``, one pass: surrogateescape marks every byte that does not
    decode, and only the lines holding one are looked at. An emptied line keeps its "\\n", so
    every other line keeps its number (pyarrow skips empty lines, as ``record_lines`` does)."""
    text = raw.decode(encoding, errors="surrogateescape")
    found, kept = [], []
    # line: the number of the line at ``counted``; end: where the last line set aside ends
    line, counted, end = 1, 0, 0
    for match in _ESCAPED.finditer(text):
        at = match.start()
        if found and at < end:
            continue  # a second bad byte on a line already set aside
        line += text.count("\n", counted, at)
        counted = at
        start = text.rfind("\n", 0, at) + 1
        kept.append(text[end:start])
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        try:
            text[start:end].encode(encoding, "surrogateescape").decode(encoding)
            reason = "undecodable byte"
        except UnicodeDecodeError as err:
            reason = err.reason
        found.append((line, text[start:at], reason))
    kept.append(text[end:])
    return "".join(kept).encode("utf-8"), found


def undecodable_row(found, names, delimiter, quote, path, encoding) -> BadRow:
    """The BadRow of a line that is not ``encoding`` text, naming the field its bad byte is in."""
    line, before, reason = found
    if quote and '"' in before and len(delimiter) == 1:  # a quoted delimiter does not count
        field = len(next(csv.reader([before.replace("\r", " ")], delimiter=delimiter))) - 1
    else:
        field = before.count(delimiter)
    column = names[field] if field < len(names) else None
    return BadRow(str(path), line, column, f"not {encoding} text ({reason}); pass encoding=")


def hide_lone_cr(data: bytes, delimiter: str, path) -> tuple[bytes, bytes | None]:
    """Lines end at "\\n" (or "\\r\\n"); a lone "\\r" is part of its line. pyarrow would end a
    line there too and shift every later line number, so while it parses, a lone "\\r" becomes a
    byte the file lacks (returned; ``restore_cr`` puts the "\\r" back)."""
    if b"\r" not in data:
        return data, None
    data = data.replace(b"\r\n", b"\n")
    if b"\r" not in data:
        return data, None
    for stand_in in _CR_STAND_INS:
        if stand_in not in data and stand_in != delimiter.encode():
            return data.replace(b"\r", stand_in), stand_in
    raise DataError("holds lone carriage returns and every byte that could stand in", file=path)


def restore_cr(table: pa.Table, stand_in: bytes) -> pa.Table:
    text = stand_in.decode()
    return pa.table(
        {n: pc.replace_substring(table.column(n), text, "\r") for n in table.column_names}
    )


def record_lines(data: bytes) -> np.ndarray:
    """[records] the 1-based line of every non-empty line: pyarrow skips empty lines."""
    buf = np.frombuffer(data, np.uint8)
    ends = np.append(np.flatnonzero(buf == 10), len(buf))
    starts = np.append(0, ends[:-1] + 1)
    return np.flatnonzero(ends > starts) + 1
