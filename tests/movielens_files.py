"""Tiny MovieLens directories in the GroupLens layouts: the tests never need the real data.

Each writer formats rows the way the release does and returns the directory. The default rows
are small hand-checked logs (the exact tables are worked out in tests/data/test_movielens.py);
``write_movielens_root`` writes a larger deterministic log in all three layouts side by side,
as the README's ``path/to`` and the benchmarks' ``$YTDNN_MOVIELENS`` expect them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ytdnn.data.movielens import GENRES_100K

ML100K_RATINGS = [(1, 10, 4, 881250949), (2, 20, 5, 881250950), (1, 20, 3, 881250951)]
ML100K_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "T8H1N")]
ML100K_ITEMS = [  # item, title, release date, URL, genres
    (10, "Amélie (2001)", "01-Jan-1995", "http://x", ("Comedy", "Romance")),
    (20, "unknown", "", "", ("unknown",)),
]
ML1M_RATINGS = [(1, 10, 5, 978300760), (2, 20, 3, 978302109)]
ML1M_USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072")]  # age and occupation: codes
ML1M_MOVIES = [
    (10, "Amélie (2001)", ("Comedy", "Romance")),
    (20, "Heat (1995)", ("Action", "Crime")),
]
AGES_1M = (1, 18, 25, 35, 45, 50, 56)  # users.dat's age codes
ML1M_FOLDS = {  # (1, 10) twice: a log may repeat a pair
    1: [(1, 10, 5), (2, 20, 3)],
    2: [(1, 20, 4), (1, 10, 5)],
}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` in ``encoding`` (u.item and movies.dat are Latin-1)."""
    path.write_bytes(text.encode(encoding))
    return path


def genre_flags(*genres: str) -> str:
    """The 19 0/1 genre columns of a u.item line."""
    return "|".join("1" if g in genres else "0" for g in GENRES_100K)


def _lines(delimiter: str, rows: Iterable[Sequence]) -> str:
    return "".join(delimiter.join(str(v) for v in row) + "\n" for row in rows)


def write_ml100k(
    root: Path, ratings=ML100K_RATINGS, users=ML100K_USERS, items=ML100K_ITEMS
) -> Path:
    """ml-100k: u.data (tab), u.user and u.item ('|', u.item in Latin-1)."""
    root.mkdir(parents=True, exist_ok=True)
    write(root / "u.data", _lines("\t", ratings))
    write(root / "u.user", _lines("|", users))
    lines = (f"{i}|{title}|{date}||{url}|{genre_flags(*g)}\n" for i, title, date, url, g in items)
    write(root / "u.item", "".join(lines), encoding="latin-1")
    return root


def write_ml1m(root: Path, ratings=ML1M_RATINGS, users=ML1M_USERS, movies=ML1M_MOVIES) -> Path:
    """ml-1m: ratings.dat (left out when ``ratings`` is None), users.dat, movies.dat ('::')."""
    root.mkdir(parents=True, exist_ok=True)
    if ratings is not None:
        write(root / "ratings.dat", _lines("::", ratings))
    write(root / "users.dat", _lines("::", users))
    write(root / "movies.dat", _lines("::", ((i, t, "|".join(g)) for i, t, g in movies)), "latin-1")
    return root


def write_ml1m_folds(root: Path, folds: dict[int, list] = ML1M_FOLDS) -> Path:
    """ml-1m-5fold-no-timestamps: test_1m<fold>.dat with user,item,rating lines."""
    root.mkdir(parents=True, exist_ok=True)
    for fold, rows in folds.items():
        write(root / f"test_1m{fold}.dat", _lines(",", rows))
    return root


def rating_grid(
    num_users: int, num_items: int, per_user: int, start: int = 978_300_000
) -> list[tuple]:
    """(user, item, rating, timestamp): user u in 1..num_users rates ``per_user`` distinct items
    (u + j) % num_items + 1, j = 0.., one minute apart; ratings cycle through 1..5."""
    if per_user > num_items:
        raise ValueError("per_user must be at most num_items (each user rates distinct items)")
    return [
        (u, (u + j) % num_items + 1, 1 + (3 * u + j) % 5, start + 60 * (u * per_user + j))
        for u in range(1, num_users + 1)
        for j in range(per_user)
    ]


def write_movielens_root(
    root: Path, num_users: int = 8, num_items: int = 10, per_user: int = 5
) -> Path:
    """ml-100k, ml-1m and ml-1m-5fold-no-timestamps under ``root``, on one ``rating_grid`` log;
    the j-th rating of each user goes to fold j % 5 + 1, so every user is in every fold."""
    ratings = rating_grid(num_users, num_items, per_user)
    user_ids, item_ids = range(1, num_users + 1), range(1, num_items + 1)
    write_ml100k(
        root / "ml-100k",
        ratings,
        [(u, 20 + u, "MF"[u % 2], "other", f"{10000 + 97 * u}") for u in user_ids],
        [(i, f"Movie {i} (1995)", "01-Jan-1995", "", (GENRES_100K[1 + i % 18],)) for i in item_ids],
    )
    write_ml1m(
        root / "ml-1m",
        ratings,
        [(u, "MF"[u % 2], AGES_1M[u % 7], u % 21, f"{10000 + 97 * u}") for u in user_ids],
        [(i, f"Movie {i} (1995)", (GENRES_100K[1 + i % 18],)) for i in item_ids],
    )
    folds: dict[int, list] = {f: [] for f in range(1, 6)}
    for n, (user, item, rating, _) in enumerate(ratings):
        folds[n % per_user % 5 + 1].append((user, item, rating))
    write_ml1m_folds(root / "ml-1m-5fold-no-timestamps", folds)
    return root
