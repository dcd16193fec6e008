"""The Movies Dataset layout (Kaggle): tiny files written here, read exactly; every malformed
field named by file, line and column."""

import calendar
import csv
import io
from pathlib import Path

import pytest

from ytdnn.data.movies_dataset import read_movies_dataset
from ytdnn.data.schema import DataError

# tmdb 999 has no movieId: every read warns so (test_reads_the_layout_exactly checks it)
pytestmark = pytest.mark.filterwarnings("ignore:.*have no movieId in links.csv")

HEADER = ("adult", "belongs_to_collection", "budget", "genres", "homepage", "id", "imdb_id", "original_language",
          "original_title", "overview", "popularity", "poster_path", "production_companies",
          "production_countries", "release_date", "revenue", "runtime", "spoken_languages", "status", "tagline",
          "title", "video", "vote_average", "vote_count")  # the release's columns, in its order
TOY_STORY = "[{'id': 16, 'name': 'Animation'}, {'id': 35, 'name': 'Comedy'}, {'id': 10751, 'name': 'Family'}]"
MOVIES = [  # (id, genres, language, popularity, release_date, runtime, title, vote_average, vote_count)
    ("862", TOY_STORY, "en", "21.946943", "1995-10-30", "81.0", "Toy Story", "7.7", "5415"),
    ("8844", "[{'id': 12, 'name': 'Adventure'}, {'id': 14, 'name': 'Fantasy'}]", "en", "17.015539",
     "1995-12-15", "104.0", "Jumanji", "6.9", "2413"),
    ("999", "[]", "de", "1.5", "2001-01-01", "90.0", "Nobody Rated Me", "5.0", "3"),  # no movieId links it
    ("31357", "[]", "fr", "0.5", "", "0.0", 'Say "Cheese", Please', "6.1", "34"),  # runtime 0 = unknown
]
LINKS = [("1", "0114709", "862"), ("2", "0113497", "8844"), ("3", "0113228", ""), ("4", "0114885", "31357")]
RATINGS = [("1", "1", "4.0", "964982703"), ("1", "4", "3.5", "964981247"), ("2", "2", "5.0", "964982224")]


def _csv(rows, header) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _metadata_row(movie) -> list[str]:
    tmdb, genres, language, popularity, release, runtime, title, average, count = movie
    fields = dict.fromkeys(HEADER, "")
    fields.update(adult="False", genres=genres, id=tmdb, original_language=language, original_title=title,
                  overview=f"{title}, a film.", popularity=popularity, release_date=release, runtime=runtime,
                  title=title, video="False", vote_average=average, vote_count=count)
    return [fields[name] for name in HEADER]


def write_movies_dataset(root: Path, movies=MOVIES, links=LINKS, ratings=RATINGS) -> Path:
    """The three files of The Movies Dataset, formatted as the release has them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies_metadata.csv").write_text(_csv([_metadata_row(m) for m in movies], HEADER))
    (root / "links.csv").write_text(_csv(links, ("movieId", "imdbId", "tmdbId")))
    (root / "ratings.csv").write_text(_csv(ratings, ("userId", "movieId", "rating", "timestamp")))
    return root


def test_reads_the_layout_exactly(tmp_path):
    with pytest.warns(UserWarning, match="1 movie"):  # tmdb 999: no rating can name it
        ds = read_movies_dataset(write_movies_dataset(tmp_path / "m"))
    assert ds.watches.to_pydict() == {"user_id": [1, 1, 2], "item_id": [1, 4, 2],
                                      "timestamp": [964982703, 964981247, 964982224], "watch_time": [4.0, 3.5, 5.0]}
    assert ds.items.to_pydict() == {
        "item_id": [1, 2, 4],
        "title": ["Toy Story", "Jumanji", 'Say "Cheese", Please'],
        "upload_time": [calendar.timegm((1995, 10, 30, 0, 0, 0)), calendar.timegm((1995, 12, 15, 0, 0, 0)), None],
        "duration": [81 * 60.0, 104 * 60.0, None],
        "language": ["en", "en", "fr"],
        "popularity": [21.946943, 17.015539, 0.5],
        "vote_average": [7.7, 6.9, 6.1],
        "vote_count": [5415.0, 2413.0, 34.0],
        "categories": [["Animation", "Comedy", "Family"], ["Adventure", "Fantasy"], []],
    }
    assert ds.skipped_rows == []


def test_ratings_small_is_read_when_named(tmp_path):
    root = write_movies_dataset(tmp_path / "m")
    (root / "ratings.csv").rename(root / "ratings_small.csv")
    assert len(read_movies_dataset(root, ratings="ratings_small.csv").watches) == 3
    with pytest.raises(DataError, match="no ratings.csv here"):
        read_movies_dataset(root)


def _with(movie_index: int, **fields) -> list:
    names = ("id", "genres", "language", "popularity", "release_date", "runtime", "title", "vote_average", "vote_count")
    movies = [list(m) for m in MOVIES]
    for name, value in fields.items():
        movies[movie_index][names.index(name)] = value
    return movies


@pytest.mark.parametrize(("movies", "line", "column", "reason"), [
    (_with(1, id="1997-08-20"), 3, "id", "not an integer: '1997-08-20'"),
    (_with(0, genres="Animation"), 2, "genres", "not a list of {'id': .., 'name': ..} dicts"),
    (_with(3, genres="[{'id': 1}]"), 5, "genres", "an entry without a 'name' text"),
    (_with(1, popularity="Beware Of Frost Bites"), 3, "popularity", "not a number"),
    (_with(0, release_date="30/10/1995"), 2, "release_date", "not a date like %Y-%m-%d"),
    (_with(3, runtime="-5"), 5, "runtime", "negative value"),
    (_with(3, id="862"), 5, "id", "duplicate item_id"),  # the dataset repeats a few TMDB ids
])
def test_a_malformed_metadata_field_is_named(tmp_path, movies, line, column, reason):
    root = write_movies_dataset(tmp_path / "m", movies=movies)
    with pytest.raises(DataError, match=reason) as err:
        read_movies_dataset(root)
    assert (err.value.file, err.value.line, err.value.column) == (str(root / "movies_metadata.csv"), line, column)


@pytest.mark.parametrize(("links", "ratings", "file", "line", "column"), [
    ([*LINKS, ("1", "0", "5")], RATINGS, "links.csv", 6, "movieId"),
    ([("x", "0", "862")], RATINGS, "links.csv", 2, "movieId"),
    (LINKS, [*RATINGS, ("2", "1", "five", "964982224")], "ratings.csv", 5, "rating"),
    (LINKS, [("1", "1", "4.0")], "ratings.csv", 2, "timestamp"),  # a field short
])
def test_a_malformed_link_or_rating_is_named(tmp_path, links, ratings, file, line, column):
    root = write_movies_dataset(tmp_path / "m", links=links, ratings=ratings)
    with pytest.raises(DataError) as err:
        read_movies_dataset(root)
    assert (err.value.file, err.value.line, err.value.column) == (str(root / file), line, column)


def test_skip_bad_rows_reads_the_rest_and_names_each_skipped_row(tmp_path):
    movies = _with(1, popularity="Beware Of Frost Bites")
    movies[3][1] = "not [a list"
    ratings = [*RATINGS, ("2", "1", "five", "964982224")]
    root = write_movies_dataset(tmp_path / "m", movies=movies, ratings=ratings)
    with pytest.warns(UserWarning, match="skipped 3 bad row"):
        ds = read_movies_dataset(root, skip_bad_rows=True)
    assert ds.items.column("item_id").to_pylist() == [1]
    assert len(ds.watches) == 3
    assert [(Path(b.file).name, b.line, b.column) for b in ds.skipped_rows] == [
        ("ratings.csv", 5, "rating"), ("movies_metadata.csv", 3, "popularity"), ("movies_metadata.csv", 5, "genres")]


def test_a_missing_file_or_column_is_named(tmp_path):
    root = write_movies_dataset(tmp_path / "m")
    (root / "links.csv").unlink()
    with pytest.raises(DataError, match="no links.csv here"):
        read_movies_dataset(root)
    (root / "links.csv").write_text("movieId,imdbId\n1,0114709\n")
    with pytest.raises(DataError, match="line 1, column 'tmdbId': missing required column"):
        read_movies_dataset(root)


def test_the_command_line_writes_canonical_parquet(tmp_path, capsys):
    from ytdnn.cli import main
    from ytdnn.data.schema import Dataset

    root = write_movies_dataset(tmp_path / "m")
    assert main(["data", "movies-dataset", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "3 watches, 3 items" in capsys.readouterr().out
    assert Dataset.load(tmp_path / "out").items.column("categories").to_pylist()[0] == ["Animation", "Comedy", "Family"]
