"""Kaggle's "The Movies Dataset" (MovieLens ratings with TMDB metadata) -> a canonical Dataset.

Files, all CSV with a header line, UTF-8, quoted where needed (readers.py conventions: an empty
line is skipped but counted, a quoted value never spans lines):

- ``ratings.csv`` (or ``ratings_small.csv``, ``ratings=``): userId,movieId,rating,timestamp;
- ``links.csv``: movieId,imdbId,tmdbId, which joins a movie to its metadata;
- ``movies_metadata.csv``: one row per TMDB movie: id (the tmdbId), title, release_date,
  runtime, original_language, popularity, vote_average, vote_count, genres, and more that is
  not read (overview, budget, ...).

How it maps onto the canonical tables:
- ratings -> watches, the rating as the watch_time (as for MovieLens, movielens.py);
- metadata -> items, one row per movieId whose tmdbId has a metadata row: title, release_date
  (YYYY-MM-DD) -> upload_time (Unix seconds), runtime (minutes) -> duration (seconds; 0, the
  dataset's mark for unknown, is missing), original_language -> language, genres (a Python-literal
  list of {'id': .., 'name': ..} dicts) -> categories (the names); popularity, vote_average and
  vote_count are extra numeric columns (features of the models, schema.py).

Every malformed field is a DataError naming the file, the line and the column, or with
``skip_bad_rows=True`` a skipped row (``Dataset.skipped_rows``), as with every reader. That
includes a metadata id that is not an integer, a genres field that is not such a list, and a
duplicate (the dataset repeats a few TMDB ids: the second row of a movie is the bad one).
Metadata rows that no movieId links to are no part of any rating: they are left out of items,
with a warning that counts them.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.readers import Problem, Rows, Spec, parse_text, report_skipped, schema_specs
from ytdnn.data.schema import ITEMS, WATCHES, DataError, Dataset, TableSchema

_ID = Spec("int", required=True)
_RATINGS = {"user_id": "userId", "item_id": "movieId", "watch_time": "rating"}
# movies_metadata.csv column -> (canonical name, conversion); "id" is the only one required
_METADATA = {
    "id": ("tmdb_id", _ID),
    "title": ("title", Spec("string")),
    "release_date": ("upload_time", Spec("date", date_format="%Y-%m-%d")),
    "runtime": ("duration", Spec("float", nonnegative=True)),
    "original_language": ("language", Spec("string")),
    "popularity": ("popularity", Spec("float", nonnegative=True)),
    "vote_average": ("vote_average", Spec("float", nonnegative=True)),
    "vote_count": ("vote_count", Spec("float", nonnegative=True)),
    "genres": ("categories", Spec("string")),  # parsed below: a Python literal, not a delimited list
}
FILES = ("links.csv", "movies_metadata.csv")


def read_movies_dataset(
    path: str | Path, *, ratings: str = "ratings.csv", skip_bad_rows: bool = False
) -> Dataset:
    """Read The Movies Dataset in directory ``path``: watches from ``ratings`` (a file name in it,
    "ratings.csv" or "ratings_small.csv"), items from links.csv and movies_metadata.csv."""
    root, bad = Path(path), []
    if not root.is_dir():
        raise DataError("not a directory", file=root)
    missing = [name for name in (ratings, *FILES) if not (root / name).exists()]
    if missing:
        raise DataError(f"no {', '.join(missing)} here: not The Movies Dataset", file=root)
    watches = _read_ratings(root / ratings, skip_bad_rows, bad)
    links = _read_links(root / "links.csv", skip_bad_rows, bad)
    items = _read_metadata(root / "movies_metadata.csv", links, skip_bad_rows, bad)
    report_skipped(bad)
    return Dataset(watches, items=items, name=root.name, skipped_rows=bad).validate()


def _read_ratings(path: Path, skip: bool, bad: list) -> pa.Table:
    rows = parse_text(path, skip_bad_rows=skip, bad=bad)
    rows.rename(_RATINGS, WATCHES)
    specs = schema_specs(WATCHES, rows.table.column_names, ids="int")
    specs.update({name: _ID for name in ("user_id", "item_id", "timestamp") if name in specs})
    rows.convert(specs)
    return rows.finish(WATCHES)


def _read_links(path: Path, skip: bool, bad: list) -> dict[int, list[int]]:
    """links.csv -> {tmdbId: [movieId, ...]} (a few TMDB ids link to two movies)."""
    rows = parse_text(path, skip_bad_rows=skip, bad=bad)
    _require(rows, ("movieId", "tmdbId"))
    rows.convert({"movieId": _ID, "tmdbId": Spec("int")})  # no tmdbId: a movie without metadata
    rows.check_key(("movieId",))
    rows.raise_pending()
    table = rows.table.filter(pc.is_valid(rows.table.column("tmdbId")))
    links: dict[int, list[int]] = {}
    for movie, tmdb in zip(table.column("movieId").to_pylist(), table.column("tmdbId").to_pylist(), strict=True):
        links.setdefault(tmdb, []).append(movie)
    return links


def _read_metadata(path: Path, links: dict[int, list[int]], skip: bool, bad: list) -> pa.Table:
    rows = parse_text(path, skip_bad_rows=skip, bad=bad)
    _require(rows, ("id",))
    present = [name for name in _METADATA if name in rows.table.column_names]
    rows.table = rows.table.select(present)  # the same rows: only the columns read
    rows.rename({_METADATA[name][0]: name for name in present}, TableSchema("movies_metadata", ()))
    rows.convert({_METADATA[name][0]: _METADATA[name][1] for name in present})
    if "categories" in rows.table.column_names:
        _parse_genres(rows)
    if "duration" in rows.table.column_names:
        minutes = rows.table.column("duration")
        seconds = pc.multiply(pc.if_else(pc.equal(minutes, 0.0), pa.scalar(None, pa.float64()), minutes), 60.0)
        rows.table = rows.table.set_column(rows.table.column_names.index("duration"), "duration", seconds)
    return _join_movie_ids(rows, links).finish(ITEMS)


def _parse_genres(rows: Rows) -> None:
    """The genres field, "[{'id': 16, 'name': 'Animation'}, ...]", -> list<string> of the names;
    a field that is not such a list is a bad row. Each distinct text is parsed once: a dataset of
    45,000 movies has a few thousand distinct genre lists."""
    column = rows.table.column("categories").combine_chunks()
    texts = pc.fill_null(column, "[]")
    distinct, inverse = np.unique(texts.to_numpy(zero_copy_only=False), return_inverse=True)
    parsed = [_genre_names(text) for text in distinct]
    failed = np.array([isinstance(p, str) for p in parsed])[inverse]
    names = [[] if isinstance(p, str) else p for p in parsed]
    categories = pa.array([names[i] for i in inverse], pa.list_(pa.string()))
    rows.table = rows.table.set_column(rows.table.column_names.index("categories"), "categories", categories)
    reasons = {i: p for i, p in enumerate(parsed) if isinstance(p, str)}
    rows.reject([
        Problem(failed, "categories", "not a list of {'id': .., 'name': ..} dicts",
                lambda row: f"{reasons[inverse[row]]}: {texts[row].as_py()[:80]!r}")
    ])


def _genre_names(text: str) -> list[str] | str:
    """The names in one genres field, or the reason it is not a genre list (a str)."""
    try:
        value = ast.literal_eval(text)  # literals only: never runs code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        return f"not a Python literal ({type(err).__name__})"
    if not isinstance(value, list):
        return f"a {type(value).__name__}, not a list"
    names = []
    for entry in value:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
            return "an entry without a 'name' text"
        names.append(entry["name"])
    return names


def _join_movie_ids(rows: Rows, links: dict[int, list[int]]) -> Rows:
    """One row per (metadata row, movieId linked to its id), each keeping its line; rows without
    a movieId are left out, with a warning that counts them."""
    tmdb = rows.table.column("tmdb_id").to_pylist()
    source, movie = [], []
    for row, tmdb_id in enumerate(tmdb):
        for movie_id in links.get(tmdb_id, ()):
            source.append(row)
            movie.append(movie_id)
    unlinked = len(set(range(len(tmdb))) - set(source))
    if unlinked:
        warnings.warn(f"{rows.file}: {unlinked} movie(s) have no movieId in links.csv; they are "
                      "left out of items (no rating can name them)", stacklevel=4)
    taken = np.asarray(source, np.int64)
    lines = rows.lines()[taken]
    table = rows.table.take(pa.array(taken)).drop_columns(["tmdb_id"])
    table = table.add_column(0, "item_id", pa.array(movie, pa.int64()))
    joined = Rows(table, rows.file, lambda: lines, skip_bad_rows=rows.skip_bad_rows, bad=rows.bad,
                  header_line=rows.header_line, pending=rows.pending)
    joined.file_names = {**rows.file_names, "item_id": "id"}  # a duplicate movieId is the id's fault
    return joined


def _require(rows: Rows, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in rows.table.column_names:
            raise DataError("missing required column", file=rows.file, line=rows.header_line, column=name)
