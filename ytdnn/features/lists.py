"""List features (a user's interests, an item's genres): averaged bags of their values.

A list column is fed as its averaged one-hot: over the column's vocabulary (top ``MAX_LIST_VALUES``
values by frequency), a row with n known values holds 1/n at each of them and 0 elsewhere.
Values outside the vocabulary are left out of n, and an empty or unknown list is the zero row, as
the id-0 rule of the embedding bags (models/layers.py ``mean_bag``) has it.

Why a one-hot and not an embedding table of its own: both towers feed every input straight into
a linear layer, and W · (averaged one-hot) = the mean of W's columns at the row's values, which is
exactly an averaged embedding bag whose table is that layer's slice. The rows go through the
dense inputs the models already take (``user_continuous``, the ranker's ``continuous``), so a new
list column needs no new model input, at a cost of one float per value of the vocabulary per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.features.vocab import Vocabulary

# Values kept per list column: each one is a column of the dense input (a float per row).
MAX_LIST_VALUES = 128


def fit_list_vocabulary(column: pa.Array | pa.ChunkedArray, max_values: int = MAX_LIST_VALUES) -> Vocabulary:
    """The vocabulary of a list-of-text column: its ``max_values`` most frequent values."""
    values = pc.list_flatten(_combined(column))
    return Vocabulary(max_size=max_values).fit(values.cast(pa.string()))


def list_ids(column: pa.Array | pa.ChunkedArray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A list column of N rows -> CSR bags of its known values: ids int64 [M] (1..len(vocab) - 1),
    offsets int64 [N + 1]. Null lists are empty."""
    column = _combined(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(column)
    ids = vocab.encode(flat.cast(pa.string())) if len(flat) else np.zeros(0, np.int64)
    row = np.repeat(np.arange(len(column)), lengths)  # [M'] the row of every value
    known = ids > 0  # unknown values are no part of the mean
    counts = np.bincount(row[known], minlength=len(column))
    return ids[known].astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def averaged_one_hot(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """CSR bags (ids [M] in 1..width, offsets [N + 1]) at ``rows`` [R] -> float32 [R, width]: 1/n
    at each of a row's n values (a repeated value counts n times over), zeros for an empty bag."""
    rows = np.asarray(rows, np.int64)
    start, end = offsets[rows], offsets[rows + 1]
    lengths = end - start  # [R]
    out = np.zeros((len(rows), width), np.float32)
    if not lengths.sum():
        return out
    owner = np.repeat(np.arange(len(rows)), lengths)  # [M'] the output row of each value
    within = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values = ids[np.repeat(start, lengths) + within]
    np.add.at(out, (owner, values - 1), (1.0 / lengths[owner]).astype(np.float32))
    return out


def value_names(name: str, vocab: Vocabulary) -> list[str]:
    """The names of a list column's one-hot columns, in order: "genres=Drama", ..."""
    return [f"{name}={token}" for token in vocab.tokens_]


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    return column
