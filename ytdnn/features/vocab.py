"""Vocabulary: top-N ids by frequency mapped to dense ids, out-of-vocabulary -> 0 (paper §4.1).

The paper truncates very large id spaces (video ids, query tokens) to the N most frequent values
and maps everything else to the zero embedding. Here id 0 is reserved for both out-of-vocabulary
values and padding, so the embedding row 0 can stay zero, and the kept tokens get ids 1..N.

Ordering (the id of each token) is deterministic and independent of row order or chunking:
tokens are sorted by count, descending, and ties are broken by the token's value, ascending
(integers numerically, strings by Unicode code point, i.e. UTF-8 byte order). So refitting on the
same multiset of values always gives the same ids, and ``max_size`` truncation inside a tie keeps
the smallest values.

Tokens are either all ``int`` (int64) or all ``str``; the type is kept exactly through JSON.
Null values are never tokens: ``fit`` ignores them and ``encode`` maps them to 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.features._fitted import check_fitted
from ytdnn.modeldir import load_errors

TokenType = Literal["int", "str"]

OOV_ID = 0  # also the padding id: embedding row 0 is the zero vector
ARROW_TYPES: dict[str, pa.DataType] = {"int": pa.int64(), "str": pa.string()}  # ids of each TokenType
_JSON_FORMAT = "ytdnn.vocabulary"
# Below this many values a dict lookup beats pc.index_in, which rebuilds a hash table of the
# whole vocabulary on every call (tens of ms for 1M tokens): serving encodes a few ids at a time.
_SMALL_INPUT = 4096


class Vocabulary:
    """Top-N tokens by frequency; token ``tokens_[i]`` has id ``i + 1``; id 0 = OOV and padding.

    ``max_size``: keep at most this many tokens (None = all). ``min_count``: drop tokens seen
    fewer times. Fitted attributes: ``tokens_`` (list of int or str, most frequent first),
    ``counts_`` (int64 [N], training count of each token), ``token_type_`` ("int" or "str").
    """

    def __init__(self, max_size: int | None = None, min_count: int = 1) -> None:
        if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
            raise ValueError(f"max_size must be None or an int >= 0, got {max_size!r}")
        if not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        self.max_size = max_size
        self.min_count = min_count
        self.tokens_: list[Any] | None = None
        self.counts_: np.ndarray | None = None
        self.token_type_: TokenType | None = None

    # ---- fitting ------------------------------------------------------------------------------

    def fit(self, values: Any) -> Vocabulary:
        """Count ``values`` ([M]: Arrow array, NumPy array, polars Series or list of int/str)."""
        column = _as_token_column(values)
        if column.type == pa.null():
            raise ValueError("cannot fit a Vocabulary on no values: the token type is unknown")
        counted = pc.value_counts(pc.drop_null(column))
        return self.fit_counts(counted.field("values"), counted.field("counts"), _token_type(column.type))

    def fit_counts(self, tokens: Any, counts: Any, token_type: TokenType | None = None) -> Vocabulary:
        """Fit on values already counted (a distributed group-by): distinct ``tokens`` [N] and
        their ``counts`` [N]. The same vocabulary as ``fit`` on the values themselves."""
        tokens = _as_token_column(tokens)
        token_type = token_type or _token_type(tokens.type)
        table = pa.table({"token": tokens, "count": pa.chunked_array([pa.array(np.asarray(counts, np.int64))])})
        table = table.filter(pc.greater_equal(table["count"], self.min_count))
        order = pc.sort_indices(table, sort_keys=[("count", "descending"), ("token", "ascending")])
        if self.max_size is not None:
            order = order[: self.max_size]
        table = table.take(order)
        self._set_tokens(
            table["token"].to_pylist(), table["count"].to_numpy().astype(np.int64), token_type
        )
        return self

    def _set_tokens(self, tokens: list[Any], counts: np.ndarray, token_type: TokenType) -> None:
        self.tokens_ = tokens
        self.counts_ = counts
        self.token_type_ = token_type
        self._value_set = pa.array(tokens, type=ARROW_TYPES[token_type])  # [N], id - 1
        self._lookup: dict[Any, int] | None = None  # built on the first small encode

    # ---- lookups ------------------------------------------------------------------------------

    @property
    def token_array(self) -> pa.Array:
        """``tokens_`` as an Arrow array of their own type (int64 or string): [N], entry id - 1."""
        check_fitted(self, "tokens_")
        return self._value_set

    def __len__(self) -> int:
        """Embedding table size: N tokens plus the shared OOV/padding row 0."""
        check_fitted(self, "tokens_")
        return len(self.tokens_) + 1

    def __contains__(self, token: Any) -> bool:
        try:
            return bool(self.encode([token])[0] != OOV_ID)
        except TypeError:  # a str in an int vocabulary is simply not in it
            return False

    def __repr__(self) -> str:
        size = "unfitted" if self.tokens_ is None else f"{len(self.tokens_)} {self.token_type_}"
        return f"Vocabulary(max_size={self.max_size}, min_count={self.min_count}) [{size}]"

    def encode(self, values: Any) -> np.ndarray:
        """Token -> id. ``values``: [M] (or a NumPy array of any shape) -> int64, same shape.

        Unknown and null values -> 0. A value of the wrong type (a str for an int vocabulary, or
        the reverse) raises TypeError rather than silently mapping everything to 0.
        """
        check_fitted(self, "tokens_")
        shape = np.shape(values) if isinstance(values, np.ndarray) else None
        if isinstance(values, (str, bytes, int, np.integer)):
            return self.encode([values]).reshape(())
        if shape is not None and len(shape) != 1:
            values = values.reshape(-1)
        column = _as_token_column(values)
        ids = self._encode_column(column)  # [M]
        return ids if shape is None else ids.reshape(shape)

    def _encode_column(self, column: pa.ChunkedArray) -> np.ndarray:
        if column.type == pa.null():  # all nulls (or empty): nothing to look up
            return np.zeros(len(column), dtype=np.int64)
        if column.type != self._value_set.type:
            raise TypeError(
                f"this Vocabulary holds {self.token_type_} tokens but got values of Arrow "
                f"type {column.type}"
            )
        if len(column) <= _SMALL_INPUT:
            if self._lookup is None:
                self._lookup = {token: i for i, token in enumerate(self.tokens_, start=1)}
            get = self._lookup.get
            return np.fromiter((get(v, OOV_ID) for v in column.to_pylist()), np.int64, len(column))
        positions = pc.index_in(column, value_set=self._value_set)  # null where unknown
        ids = pc.add(pc.fill_null(positions, -1), 1)
        # a copy: Arrow's zero-copy view is read-only, which torch.from_numpy warns about
        return np.array(ids.to_numpy(), dtype=np.int64)

    def decode(self, ids: Any) -> Any:
        """Id -> token. ``ids``: int or int array of any shape -> token, or (nested) list; 0 -> None.

        Raises IndexError for ids outside ``0 .. len(self) - 1``.
        """
        check_fitted(self, "tokens_")
        array = np.asarray(ids)
        if array.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        flat = array.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            bad = flat[(flat < 0) | (flat >= len(self))][0]
            raise IndexError(f"id {bad} is outside this Vocabulary (ids 0..{len(self) - 1})")
        if flat.size <= _SMALL_INPUT:  # a served top k: a list lookup beats building Arrow arrays
            tokens = [self.tokens_[i - 1] if i else None for i in flat.tolist()]
        else:
            with_oov = pa.concat_arrays([pa.nulls(1, self._value_set.type), self._value_set])
            tokens = with_oov.take(pa.array(flat)).to_pylist()  # [M]
        if array.ndim == 0:
            return tokens[0]
        if array.ndim == 1:
            return tokens
        nested = np.empty(flat.size, dtype=object)
        nested[:] = tokens
        return nested.reshape(array.shape).tolist()

    # ---- persistence (JSON, never pickle) ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        check_fitted(self, "tokens_")
        return {
            "format": _JSON_FORMAT,
            "version": 1,
            "max_size": self.max_size,
            "min_count": self.min_count,
            "token_type": self.token_type_,
            "tokens": self.tokens_,
            "counts": self.counts_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        if data.get("format") != _JSON_FORMAT or data.get("version") != 1:
            raise ValueError(
                f"not a version-1 {_JSON_FORMAT} document: format={data.get('format')!r}, "
                f"version={data.get('version')!r}"
            )
        token_type = data["token_type"]
        tokens, counts = data["tokens"], data["counts"]
        if token_type not in ARROW_TYPES:
            raise ValueError(f"token_type must be 'int' or 'str', got {token_type!r}")
        python_type = int if token_type == "int" else str
        # bool is an int subclass in Python: reject it so True never becomes token 1
        if any(type(t) is not python_type for t in tokens):
            raise ValueError(f"every token of a {token_type!r} vocabulary must be {token_type}")
        if len(set(tokens)) != len(tokens) or len(counts) != len(tokens):
            raise ValueError("tokens must be unique and have one count each")
        vocab = cls(max_size=data["max_size"], min_count=data["min_count"])
        vocab._set_tokens(list(tokens), np.asarray(counts, dtype=np.int64), token_type)
        return vocab

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n", "utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> Vocabulary:
        """The vocabulary ``to_json`` wrote; any failure is a ModelDirError naming ``path``."""
        with load_errors(path):
            return cls.from_dict(json.loads(Path(path).read_text("utf-8")))


def _as_token_column(values: Any) -> pa.ChunkedArray:
    """Any supported container -> ChunkedArray of int64, string, or null (all-null / empty)."""
    if type(values).__module__.split(".")[0] == "polars":
        values = values.to_arrow()
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], type=values.type)
    elif not isinstance(values, pa.ChunkedArray):
        try:
            values = pa.chunked_array([pa.array(values)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise TypeError(f"tokens must be all int or all str: {error}") from error
    if pa.types.is_dictionary(values.type):
        values = pa.chunked_array([c.dictionary_decode() for c in values.chunks])
    kind = values.type
    if pa.types.is_null(kind) or kind in (pa.int64(), pa.string()):
        return values
    if pa.types.is_integer(kind):
        target = pa.int64()
    elif pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        target = pa.string()
    else:
        raise TypeError(f"tokens must be integers or strings, got Arrow type {kind}")
    try:
        return values.cast(target)
    except pa.ArrowInvalid as error:  # e.g. uint64 beyond int64
        raise TypeError(f"cannot represent these tokens as {target}: {error}") from error


def _token_type(arrow_type: pa.DataType) -> TokenType:
    return "int" if arrow_type == pa.int64() else "str"
