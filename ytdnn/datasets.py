"""Datasets for the front door (``ytdnn.YouTubeDNN``): MovieLens and the synthetic world as pandas
DataFrames, and whatever a user holds (arrays, lists, pandas, polars, Arrow) as canonical tables.

    data = load_movielens("ml-1m", "path/to/ml-1m", folds="path/to/ml-1m-5fold-no-timestamps")
    data["ratings"]      # user_id, item_id, rating, timestamp (<NA> for the fold files), fold
    data["users"]        # user_id, age, gender, geo, occupation
    data["movies"]       # item_id, title, genres (a list), ...
    data = load_synthetic("tiny")  # the same three frames from the synthetic world

Both loaders read through the validating readers (``ytdnn.data.movielens``,
``ytdnn.data.synthetic``): a malformed file is a DataError naming the file, line and column.
``pandas`` is needed for the DataFrames (``pip install ytdnn[bench]``); ``as_dataset`` needs no
pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import SCHEMAS, DataError, Dataset, unix_seconds, validate_table

MOVIELENS = ("ml-100k", "ml-1m", "ml-latest")  # the names load_movielens knows
LATEST_RELEASES = {"ml-latest-small": "ml-latest", "ml-20m": "ml-latest", "ml-25m": "ml-latest", "ml-32m": "ml-latest"}
_LAYOUTS = (("u.data", "ml-100k"), ("ratings.dat", "ml-1m"), ("ratings.csv", "ml-latest"))  # file -> layout
RATING = "rating"  # the watches column that holds an explicit rating (the front door's ratings)


def load_movielens(name: str, path: str | Path, folds: str | Path | None = None) -> dict[str, Any]:
    """MovieLens ``name`` ("ml-100k", "ml-1m", "ml-latest"; a 20M/25M release reads as
    "ml-latest") from the release directory ``path`` -> {"ratings", "users", "movies"} as
    pandas DataFrames ("users" is None where the release has no users file).

    folds: for ml-1m, the directory of the 3-column fold files (``test_1m1.dat`` ...), read in
    fold order, with users.dat and movies.dat from ``path``; also taken when ``path`` itself
    holds only fold files. ratings: user_id, item_id, rating (float), timestamp (Int64, <NA>
    where the log has none), and fold (the fold files only).
    """
    from ytdnn.data.movielens import read_movielens, read_movielens_folds

    name = LATEST_RELEASES.get(name, name)
    if name not in MOVIELENS:
        raise ValueError(f"unknown MovieLens name {name!r}; known: {list(MOVIELENS) + list(LATEST_RELEASES)}")
    found = next((layout for file, layout in _LAYOUTS if (Path(path) / file).exists()), None)
    if folds is None and found is not None and found != name:
        raise ValueError(f"{path} holds the {found} layout, not {name}'s: load_movielens({found!r}, ...)")
    if folds is not None:
        if name != "ml-1m":
            raise ValueError("folds= is the ml-1m fold files' directory; other releases have none")
        dataset = read_movielens_folds(folds, meta_dir=path)
    else:
        dataset = read_movielens(path)
    return _frames(dataset)


def load_synthetic(preset: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """The synthetic world of ``preset`` ("tiny", "small", "large") as {"ratings", "users",
    "movies"} DataFrames, shaped like load_movielens.

    The world has watch times, not ratings. Each watch is given 1-5 stars by how much of the
    item was watched, the share s = watch_time / duration: rating = 1 + floor(5 s), capped at 5.
    The share follows the planted interest, language and clickbait (``WorldConfig``), so the
    stars carry what the user thought of the item, as a rating does.
    """
    from ytdnn.data.synthetic import WorldConfig, generate

    dataset = generate(WorldConfig.preset(preset, seed=seed)).dataset
    watches, items = dataset.watches, dataset.items
    duration = items.column("duration").to_numpy(zero_copy_only=False)
    row = np.searchsorted(items.column("item_id").to_numpy(), watches.column("item_id").to_numpy())
    share = watches.column("watch_time").to_numpy() / duration[row]
    stars = np.minimum(1.0 + np.floor(5.0 * share), 5.0)
    dataset.watches = watches.append_column(RATING, pa.array(stars))
    return _frames(dataset)


def _frames(dataset: Dataset) -> dict[str, Any]:
    """Dataset -> {"ratings", "users", "movies"} DataFrames (ratings: the rating, not watch_time)."""
    watches = dataset.watches
    if RATING not in watches.column_names:  # MovieLens: the readers keep the rating as watch_time
        watches = watches.rename_columns([RATING if c == "watch_time" else c for c in watches.column_names])
    columns = ["user_id", "item_id", RATING, "timestamp"] + [
        c for c in watches.column_names if c not in ("user_id", "item_id", RATING, "timestamp")]
    ratings = watches.select(columns).to_pandas(types_mapper={pa.int64(): _int64_dtype()}.get)
    ratings[["user_id", "item_id"]] = ratings[["user_id", "item_id"]].astype("int64")
    movies = dataset.items
    if movies is not None and "categories" in movies.column_names:
        movies = movies.rename_columns(["genres" if c == "categories" else c for c in movies.column_names])
    return {"ratings": ratings, "users": None if dataset.users is None else dataset.users.to_pandas(),
            "movies": None if movies is None else movies.to_pandas()}


def _int64_dtype():
    import pandas as pd

    return pd.Int64Dtype()


# ---- whatever the user holds -> canonical tables ---------------------------------------------------


def as_table(value: Any, what: str) -> pa.Table:
    """A pandas or polars DataFrame, an Arrow table, or a mapping of columns -> pa.Table."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if type(value).__module__.startswith("polars"):
        return value.to_arrow()
    if type(value).__module__.startswith("pandas"):
        return pa.Table.from_pandas(value, preserve_index=False)
    if isinstance(value, Mapping):
        return pa.table({name: as_array(column, f"{what}[{name!r}]") for name, column in value.items()})
    raise TypeError(f"{what} must be a DataFrame (pandas or polars), an Arrow table or a dict of "
                    f"columns, got {type(value).__name__}")


def as_array(value: Any, what: str) -> pa.Array:
    """A numpy array, list, pandas or polars Series, or Arrow array -> one pa.Array."""
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    if isinstance(value, pa.Array):
        return value
    module = type(value).__module__
    if module.startswith("polars"):
        return value.to_arrow()
    if module.startswith("pandas"):
        return pa.Array.from_pandas(value)
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        raise ValueError(f"{what} must be one-dimensional (an array, list or Series), got {type(value).__name__}"
                         f" of shape {np.shape(value)}")
    array = np.asarray(value)
    return pa.array(array if array.dtype != object else list(value))


def as_ids(value: Any, what: str) -> pa.Array:
    """Ids as int64 or string; a float column of whole numbers (pandas with NaN) becomes int64.
    Missing, NaN or fractional ids are a ValueError naming the row."""
    array = as_array(value, what)
    if pa.types.is_dictionary(array.type):  # pandas' category dtype
        array = array.dictionary_decode()
    if array.null_count:
        raise ValueError(f"{what}: missing id at row {_first(pc.is_null(array))}")
    if pa.types.is_floating(array.type):
        values = array.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{what}: NaN id at row {int(np.flatnonzero(bad)[0])}")
        if (values != np.round(values)).any():
            raise ValueError(f"{what}: fractional id {values[values != np.round(values)][0]} at row "
                             f"{int(np.flatnonzero(values != np.round(values))[0])}")
        return pa.array(values.astype(np.int64))
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64())
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    raise ValueError(f"{what}: ids must be integers or strings, got {array.type}")


def as_numbers(value: Any, what: str, allow_negative: bool = True) -> np.ndarray:
    """float64 [N]; missing or NaN values (and negatives, unless allowed) are a ValueError naming the row."""
    array = as_array(value, what)
    if array.null_count:
        raise ValueError(f"{what}: missing value at row {_first(pc.is_null(array))}")
    try:
        values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: not numbers ({array.type})") from err
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{what}: NaN or infinite value at row {int(np.flatnonzero(bad)[0])}")
    if not allow_negative and (values < 0).any():
        row = int(np.flatnonzero(values < 0)[0])
        raise ValueError(f"{what}: negative value {values[row]} at row {row}")
    return values


def _first(mask) -> int:
    return int(pc.index(mask, True).as_py())


def as_dataset(user_ids=None, item_ids=None, ratings=None, timestamps=None, watch_times=None,
               user_features=None, item_features=None, searches=None) -> Dataset:
    """Arrays (and optional feature tables) -> a validated canonical Dataset.

    user_ids, item_ids [N] and the optional ratings, timestamps (int seconds or datetimes),
    watch_times [N]: arrays, lists, Series or Arrow arrays of one length. user_features: a table
    with a user_id column (the users table); item_features: with item_id (the items table);
    searches: user_id, timestamp, query. The watches hold the rating in a "rating" column and
    watch_time = the watch times, else the rating (its proxy, as for MovieLens), else absent.
    """
    if user_ids is None or item_ids is None:
        raise ValueError("fit needs user_ids and item_ids (or a dataset / canonical tables)")
    columns = {"user_id": as_ids(user_ids, "user_ids"), "item_id": as_ids(item_ids, "item_ids")}
    n = len(columns["user_id"])
    if timestamps is not None:
        columns["timestamp"] = _timestamps(as_array(timestamps, "timestamps"))
    else:
        columns["timestamp"] = pa.nulls(n, pa.int64())  # an unordered log
    if watch_times is not None:
        columns["watch_time"] = pa.array(as_numbers(watch_times, "watch_times", allow_negative=False))
    if ratings is not None:
        columns[RATING] = pa.array(as_numbers(ratings, "ratings"))
        if watch_times is None:
            columns["watch_time"] = pa.array(np.maximum(as_numbers(ratings, "ratings"), 0.0))
    given = (("user_ids", "user_id", user_ids), ("item_ids", "item_id", item_ids), ("timestamps", "timestamp", timestamps),
             ("watch_times", "watch_time", watch_times), ("ratings", RATING, ratings))
    lengths = {arg: len(columns[name]) for arg, name, value in given if value is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays of different lengths: {lengths}")
    tables = {"watches": _ordered(pa.table(columns))}
    for name, value, key in (("users", user_features, "user_id"), ("items", item_features, "item_id"),
                             ("searches", searches, "user_id")):
        if value is not None:
            tables[name] = _keyed(as_table(value, name if name == "searches" else f"{name[:-1]}_features"), key)
    return Dataset(**tables, name="arrays").validate()


def _keyed(table: pa.Table, key: str) -> pa.Table:
    """The table with its key column checked as ids (movies' "genres" is the items' "categories")."""
    if key == "item_id" and "genres" in table.column_names and "categories" not in table.column_names:
        table = table.rename_columns(["categories" if c == "genres" else c for c in table.column_names])
    if key not in table.column_names:
        raise DataError(f"missing required column; the table has {table.column_names}", column=key)
    return table.set_column(table.column_names.index(key), key, as_ids(table.column(key), key))


def _timestamps(array: pa.Array) -> pa.Array:
    """int seconds; datetimes -> Unix seconds; missing values are a ValueError naming the row."""
    if array.null_count:
        raise ValueError(f"timestamps: missing value at row {_first(pc.is_null(array))}")
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return unix_seconds(array)
    return pa.array(as_numbers(array, "timestamps").astype(np.int64))


def canonical(dataset: Dataset | Mapping | pa.Table | Any = None, watches=None, users=None,
              items=None, searches=None) -> Dataset:
    """``fit(dataset)`` or ``fit(watches=..., users=..., items=...)`` -> a validated Dataset.

    dataset: a Dataset, a watches table (any DataFrame), or the mapping load_movielens returns
    ({"ratings", "users", "movies"}: renamed to the canonical columns). A missing column is a
    DataError naming it.
    """
    if isinstance(dataset, Dataset):
        return Dataset(**dataset.tables(), name=dataset.name).validate()
    if isinstance(dataset, Mapping):
        dataset = dict(dataset)
        watches = dataset.pop("ratings", dataset.pop("watches", watches))
        users = dataset.pop("users", users)
        items = dataset.pop("movies", dataset.pop("items", items))
        searches = dataset.pop("searches", searches)
        if dataset:
            raise ValueError(f"unknown tables {sorted(dataset)}; known: ratings/watches, users, movies/items, searches")
    elif dataset is not None:
        watches = dataset
    if watches is None:
        raise ValueError("fit needs a dataset, a watches table or user_ids and item_ids")
    tables = {"watches": _watches(as_table(watches, "watches"))}
    for name, value in (("users", users), ("items", items), ("searches", searches)):
        if value is not None:
            table = as_table(value, name)
            if name == "items" and "genres" in table.column_names and "categories" not in table.column_names:
                table = table.rename_columns(["categories" if c == "genres" else c for c in table.column_names])
            tables[name] = validate_table(table, SCHEMAS[name], source=f"<{name}>")
    return Dataset(**tables, name="tables").validate()


def _watches(table: pa.Table) -> pa.Table:
    """A watches table as given: the rating column (if any) checked, watch_time from it when
    absent, timestamps null when absent, ids checked for NaN."""
    for key in ("user_id", "item_id"):
        if key not in table.column_names:
            raise DataError(f"missing required column for table 'watches'; it has {table.column_names}",
                            file="<watches>", column=key)
        table = table.set_column(table.column_names.index(key), key, as_ids(table.column(key), key))
    if "timestamp" not in table.column_names:
        table = table.append_column("timestamp", pa.nulls(len(table), pa.int64()))
    elif table.column("timestamp").null_count < len(table):
        table = table.set_column(table.column_names.index("timestamp"), "timestamp",
                                 _timestamps(table.column("timestamp").combine_chunks()))
    else:
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", pa.nulls(len(table), pa.int64()))
    if RATING in table.column_names:
        values = as_numbers(table.column(RATING), RATING)
        table = table.set_column(table.column_names.index(RATING), RATING, pa.array(values))
        if "watch_time" not in table.column_names:
            table = table.append_column("watch_time", pa.array(np.maximum(values, 0.0)))
    return validate_table(_ordered(table), SCHEMAS["watches"], source="<watches>")


def _ordered(watches: pa.Table) -> pa.Table:
    """The canonical columns first (user_id, item_id, timestamp, watch_time, rating), then the rest."""
    first = [c for c in ("user_id", "item_id", "timestamp", "watch_time", RATING) if c in watches.column_names]
    return watches.select(first + [c for c in watches.column_names if c not in first])
