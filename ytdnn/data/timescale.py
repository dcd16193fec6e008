"""Stretching a log's time axis: every timestamp t -> round(t * factor) + shift.

ytdnn's inputs do not depend on the unit or the span of the timestamps (the example age and every
"time since" are fed as their CDF over the training data, windows are shares of the training
span), so a log and its stretched copy must train the same model. This is how the tests and the
defaults benchmark check it: an input scaled by a fixed constant (a 30-day age scale) puts a
20-year log far outside the range the network trains well on (paper §4.1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from ytdnn.data.schema import Dataset

TIME_COLUMNS = {"watches": ("timestamp",), "searches": ("timestamp",), "impressions": ("timestamp",),
                "items": ("upload_time",)}


def rescale_time(dataset: Dataset, factor: float, shift: int = 0) -> Dataset:
    """A copy of ``dataset`` with every time column t -> round(t * factor) + shift (int64; nulls stay).

    A factor below 1 merges distinct seconds when the timestamps are not multiples of 1 / factor.
    """
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a positive finite number, got {factor!r}")
    tables = {}
    for name, table in dataset.tables().items():
        for column in TIME_COLUMNS.get(name, ()):
            if column in table.column_names:
                table = table.set_column(table.column_names.index(column), column,
                                         _rescaled(table.column(column), factor, shift))
        tables[name] = table
    return dataclasses.replace(dataset, **tables)


def _rescaled(values: pa.ChunkedArray, factor: float, shift: int) -> pa.Array:
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    t = values.to_numpy(zero_copy_only=False).astype(np.float64)
    out = np.rint(np.where(nulls, 0.0, t) * factor) + shift
    if np.abs(out).max(initial=0.0) >= 2.0**63:
        raise ValueError(f"time x {factor} overflows int64 seconds")
    return pa.array(out.astype(np.int64), pa.int64(), mask=nulls if nulls.any() else None)
