"""MovieLens (GroupLens) files -> a canonical Dataset.

Layouts, told apart by the files in the directory:
- 100K: ``u.data`` (tab), ``u.user`` and ``u.item`` ("|", u.item in Latin-1), ``u.genre``.
- 1M: ``ratings.dat``, ``users.dat``, ``movies.dat`` ("::", movies.dat in Latin-1); or, where
  ratings.dat is missing, the fold files ``test_1m{1..5}.dat`` (``user,item,rating``, no
  timestamps) given as ``folds=``.
- latest / 20M / 25M: ``ratings.csv``, ``movies.csv``, ``tags.csv`` (with headers, UTF-8).

Every layout follows the line conventions of readers.py: an empty line is skipped but counted (the
releases end in one), a lone "\\r" stays inside its line, and a ratings file with no ratings left
(empty, or every row skipped) is an error naming it.

How MovieLens maps onto the canonical tables:
- the rating is the watch_time: MovieLens has no watch times, and the rating is the closest proxy
  for how much of an item the user wanted;
- tags become searches (query = tag): they are text a user typed, as a search query is;
- zip -> geo as its first 3 characters: a 3-digit ZIP prefix is a coarse region (a sectional
  centre), which is what a geo feature should be; a full zip code is nearly one user each;
- genres -> categories; the 100K release date -> upload_time (Unix seconds), the nearest thing to
  an upload time; 1M occupation codes -> their names from the ml-1m README; the 1M age is a bucket
  code (1, 18, 25, ...) kept as the number.
"""

from __future__ import annotations

import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.readers import Problem, Rows, Spec, parse_text, report_skipped, schema_specs
from ytdnn.data.schema import ITEMS, SEARCHES, USERS, WATCHES, DataError, Dataset

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
OCCUPATIONS_1M = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)  # fmt: skip; index = the code in users.dat
NO_GENRES = "(no genres listed)"  # movies.csv's marker for an empty genre list
_FOLD_FILE = re.compile(r"(\d+)\.dat$")  # test_1m3.dat -> fold 3

_ID = Spec("int", required=True)
_RATING = Spec("float", required=True, nonnegative=True)
_RATINGS = {"user_id": _ID, "item_id": _ID, "watch_time": _RATING, "timestamp": _ID}


def read_movielens(
    path: str | Path, *, folds: str | Path | None = None, skip_bad_rows: bool = False
) -> Dataset:
    """Read the MovieLens release in directory ``path``, whichever layout it has.

    folds: a directory of fold files (ml-1m-5fold-no-timestamps) to take the watches from, with
    users and items from ``path``; needed for ml-1m when ratings.dat is missing.
    Skipped rows (``skip_bad_rows=True``) are in ``Dataset.skipped_rows``.
    """
    root, bad = Path(path), []
    if not root.is_dir():
        raise DataError("not a directory", file=root)
    if folds is not None:
        dataset = _read_folds(Path(folds), root, skip_bad_rows, bad)
    elif (root / "u.data").exists():
        dataset = _read_100k(root, skip_bad_rows, bad)
    elif (root / "ratings.dat").exists():
        watches = _read_ratings(root / "ratings.dat", "::", skip_bad_rows, bad)
        dataset = Dataset(watches, **_read_meta_1m(root, skip_bad_rows, bad))
    elif (root / "ratings.csv").exists():
        dataset = _read_csv_layout(root, skip_bad_rows, bad)
    elif _fold_files(root):
        dataset = _read_folds(root, None, skip_bad_rows, bad)
    elif (root / "movies.dat").exists():
        raise DataError(
            "ml-1m without ratings.dat: pass folds=<directory of the fold files>", file=root
        )
    else:
        raise DataError(
            "no MovieLens ratings here (u.data, ratings.dat, ratings.csv, fold files)", file=root
        )
    return _finish(dataset, root.name, bad)


def read_movielens_folds(
    folds_dir: str | Path, meta_dir: str | Path | None = None, *, skip_bad_rows: bool = False
) -> Dataset:
    """Read the ml-1m fold files: watches with null timestamps and an int8 ``fold`` (1..5).

    The fold is the number that ends the file name (test_1m3.dat -> 3). meta_dir: where users.dat
    and movies.dat are (the ml-1m directory), for the users and items tables.
    """
    folds_dir, bad = Path(folds_dir), []
    meta = None if meta_dir is None else Path(meta_dir)
    dataset = _read_folds(folds_dir, meta, skip_bad_rows, bad)
    return _finish(dataset, (meta or folds_dir).name, bad)


def _finish(dataset: Dataset, name: str, bad: list) -> Dataset:
    report_skipped(bad)
    dataset.name, dataset.skipped_rows = name, bad
    if dataset.items is not None and "categories" in dataset.items.column_names:
        dataset.items = _clean_genres(dataset.items)
    return dataset.validate()


def _clean_genres(items: pa.Table) -> pa.Table:
    """Each movie's genres once each, in order, without empty ones or the no-genre marker: one
    list whatever the layout wrote ("Drama|Drama", "Comedy||(no genres listed)")."""
    rows = [None if genres is None else list(dict.fromkeys(g for g in genres if g and g != NO_GENRES))
            for genres in items.column("categories").to_pylist()]
    return items.set_column(items.column_names.index("categories"), "categories", pa.array(rows, pa.list_(pa.string())))


def _read(
    path: Path, names, delimiter: str, specs, skip: bool, bad: list, encoding="utf-8"
) -> Rows:
    # MovieLens never quotes fields, and a title may hold a lone '"'
    rows = parse_text(
        path,
        names=names,
        delimiter=delimiter,
        encoding=encoding,
        quote=False,
        skip_bad_rows=skip,
        bad=bad,
    )
    rows.convert(specs)
    return rows


def _read_ratings(path: Path, delimiter: str, skip: bool, bad: list) -> pa.Table:
    return _read(path, list(_RATINGS), delimiter, _RATINGS, skip, bad).finish(WATCHES)


# -- 100K -----------------------------------------------------------------------------------------


def _read_100k(root: Path, skip: bool, bad: list) -> Dataset:
    watches = _read_ratings(root / "u.data", "\t", skip, bad)
    users = items = None
    if (root / "u.user").exists():
        specs = {
            "user_id": _ID,
            "age": Spec("float"),
            "gender": Spec("string"),
            "occupation": Spec("string"),
            "zip": Spec("string"),
        }
        rows = _read(root / "u.user", list(specs), "|", specs, skip, bad)
        users = _users(rows, rows.table.column("occupation"))
    if (root / "u.item").exists():
        items = _items_100k(root / "u.item", _genres_100k(root / "u.genre"), skip, bad)
    return Dataset(watches, users=users, items=items)


def _genres_100k(path: Path) -> tuple[str, ...]:
    """The genre names in flag order, from u.genre (``name|index`` lines) when it is there."""
    if not path.exists():
        return GENRES_100K
    genres = {}
    # split at "\n" only: splitlines also ends a line at a lone "\r" (and \x1c-\x1e, \x85)
    lines = path.read_bytes().decode("latin-1").split("\n")
    for line, text in enumerate((t.removesuffix("\r") for t in lines), start=1):
        if text.strip():
            name, _, index = text.rpartition("|")
            if not index.strip().isdigit():
                raise DataError("expected name|index", file=path, line=line, column="index")
            genres[int(index)] = name
    if sorted(genres) != list(range(len(genres))):
        raise DataError(f"genre indices {sorted(genres)} are not 0..{len(genres) - 1}", file=path)
    return tuple(genres[i] for i in range(len(genres)))


def _items_100k(path: Path, genres: tuple[str, ...], skip: bool, bad: list) -> pa.Table:
    flag = Spec("int", required=True)
    specs = {
        "item_id": _ID,
        "title": Spec("string"),
        "release_date": Spec("date", date_format="%d-%b-%Y"),  # 01-Jan-1995
        "video_release_date": Spec("string"),
        "imdb_url": Spec("string"),
        **{genre: flag for genre in genres},
    }
    rows = _read(path, list(specs), "|", specs, skip, bad, encoding="latin-1")
    table = rows.table
    flags = [table.column(g).to_numpy() for g in genres]
    not_flag = [
        Problem(~np.isin(f, (0, 1)), g, "genre flag is not 0 or 1", lambda r, f=f: str(f[r]))
        for g, f in zip(genres, flags, strict=True)
    ]
    rows.reject(not_flag)
    table = rows.table
    flags = (
        np.column_stack([table.column(g).to_numpy() for g in genres])
        .astype(bool)
        .reshape(-1, len(genres))
    )  # [n, genres]
    _, which = np.nonzero(flags)  # row-major: each row's genres, in genre order
    offsets = np.concatenate([[0], np.cumsum(flags.sum(axis=1))]).astype(np.int32)
    categories = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(genres, pa.string()).take(pa.array(which, pa.int64()))
    )
    rows.table = pa.table(
        {
            "item_id": table.column("item_id"),
            "upload_time": table.column("release_date"),
            "categories": categories,
            "title": table.column("title"),
        }
    )
    return rows.finish(ITEMS)


# -- 1M -------------------------------------------------------------------------------------------


def _read_meta_1m(root: Path, skip: bool, bad: list) -> dict[str, pa.Table]:
    """users.dat and movies.dat, those present, as {"users": ..., "items": ...}."""
    tables = {}
    if (root / "users.dat").exists():
        specs = {
            "user_id": _ID,
            "gender": Spec("string"),
            "age": Spec("float"),
            "occupation": Spec("int"),
            "zip": Spec("string"),
        }
        rows = _read(root / "users.dat", list(specs), "::", specs, skip, bad)
        codes = rows.table.column("occupation").to_numpy(zero_copy_only=False)
        unknown = ~np.isnan(codes) & ~np.isin(codes, np.arange(len(OCCUPATIONS_1M)))
        rows.reject(
            [
                Problem(
                    unknown, "occupation", "unknown occupation code", lambda r: str(int(codes[r]))
                )
            ]
        )
        names = pc.take(pa.array(OCCUPATIONS_1M), rows.table.column("occupation"))
        tables["users"] = _users(rows, names)
    if (root / "movies.dat").exists():
        specs = {"item_id": _ID, "title": Spec("string"), "categories": Spec("list", delimiter="|")}
        rows = _read(root / "movies.dat", list(specs), "::", specs, skip, bad, encoding="latin-1")
        tables["items"] = rows.finish(ITEMS)
    return tables


def _users(rows: Rows, occupation: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The users table from rows with user_id, age, gender, zip, and the occupation names."""
    table = rows.table
    rows.table = pa.table(
        {
            "user_id": table.column("user_id"),
            "age": table.column("age"),
            "gender": table.column("gender"),
            "geo": pc.utf8_slice_codeunits(table.column("zip"), 0, 3),  # see the module docstring
            "occupation": occupation,
        }
    )
    return rows.finish(USERS)


def _fold_files(directory: Path) -> list[tuple[int, Path]]:
    found = sorted(
        (int(m.group(1)), p) for p in directory.glob("*.dat") if (m := _FOLD_FILE.search(p.name))
    )
    for (fold, first), (again, second) in itertools.pairwise(found):
        if fold == again:
            raise DataError(
                f"two files for fold {fold}: {first.name} and {second.name}", file=directory
            )
    return found


def _read_folds(folds_dir: Path, meta_dir: Path | None, skip: bool, bad: list) -> Dataset:
    files = _fold_files(folds_dir) if folds_dir.is_dir() else []
    if not files:
        raise DataError("no fold files (names ending in <fold>.dat)", file=folds_dir)
    specs = {"user_id": _ID, "item_id": _ID, "watch_time": _RATING}
    parts = []
    for fold, path in files:
        rows = _read(path, list(specs), ",", specs, skip, bad)
        n, table = rows.table.num_rows, rows.table
        rows.table = pa.table(
            {
                "user_id": table.column("user_id"),
                "item_id": table.column("item_id"),
                "timestamp": pa.nulls(n, pa.int64()),  # the fold files have no order
                "watch_time": table.column("watch_time"),
                "fold": pa.array(np.full(n, fold, np.int8)),
            }
        )
        parts.append(rows.finish(WATCHES))
    meta = _read_meta_1m(meta_dir, skip, bad) if meta_dir is not None else {}
    others = [n for n in ("u.user", "u.item", "movies.csv") if meta_dir is not None and (meta_dir / n).exists()]
    if others and not meta:
        warnings.warn(f"{meta_dir}: the fold files' users and items are read from ml-1m's users.dat and movies.dat, "
                      f"which are not there; {', '.join(others)} are not read: the dataset has no users or items "
                      "table", UserWarning, stacklevel=3)
    return Dataset(pa.concat_tables(parts), **meta)


# -- latest / 20M / 25M ---------------------------------------------------------------------------


def _read_csv_layout(root: Path, skip: bool, bad: list) -> Dataset:
    watches = _read_csv(
        root / "ratings.csv",
        WATCHES,
        {"user_id": "userId", "item_id": "movieId", "watch_time": "rating"},
        skip,
        bad,
    )
    items = searches = None
    if (root / "movies.csv").exists():
        items = _read_csv(
            root / "movies.csv", ITEMS, {"item_id": "movieId", "categories": "genres"}, skip, bad
        )
    if (root / "tags.csv").exists():
        # the tagged movie stays as an extra item_id column: the query was typed on that item
        searches = _read_csv(
            root / "tags.csv",
            SEARCHES,
            {"user_id": "userId", "item_id": "movieId", "query": "tag"},
            skip,
            bad,
        )
    return Dataset(watches, searches=searches, items=items)


def _read_csv(path: Path, schema, columns: dict[str, str], skip: bool, bad: list) -> pa.Table:
    rows = parse_text(path, skip_bad_rows=skip, bad=bad)
    rows.rename(columns, schema)
    specs = schema_specs(schema, rows.table.column_names, ids="int")
    specs.update({name: _ID for name in ("user_id", "item_id", "timestamp") if name in specs})
    rows.convert(specs)
    return rows.finish(schema)
