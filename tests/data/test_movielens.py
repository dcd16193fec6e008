"""MovieLens readers on tiny hand-written copies of each layout (never the real data)."""

import pyarrow as pa
import pytest

from ytdnn.data.movielens import GENRES_100K, read_movielens, read_movielens_folds
from ytdnn.data.readers import BadRow, SkippedRowsWarning
from ytdnn.data.schema import DataError

JAN_1_1995 = 788_918_400  # 1995-01-01T00:00:00Z in Unix seconds (25 years incl. 6 leap days)


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def where(err: DataError):
    return err.file, err.line, err.column


def flags(*genres):
    return "|".join("1" if g in genres else "0" for g in GENRES_100K)


@pytest.fixture
def ml100k(tmp_path):
    root = tmp_path / "ml-100k"
    root.mkdir()
    write(root / "u.data", "1\t10\t4\t881250949\n2\t20\t5\t881250950\n1\t20\t3\t881250951\n")
    write(root / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    item = f"10|Amélie (2001)|01-Jan-1995||http://x|{flags('Comedy', 'Romance')}\n20|unknown||||{flags('unknown')}\n"
    write(root / "u.item", item, encoding="latin-1")
    return root


@pytest.fixture
def ml1m(tmp_path):
    root = tmp_path / "ml-1m"
    root.mkdir()
    write(root / "ratings.dat", "1::10::5::978300760\n2::20::3::978302109\n")
    write(root / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    write(
        root / "movies.dat",
        "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime\n",
        encoding="latin-1",
    )
    return root


@pytest.fixture
def folds(tmp_path):
    root = tmp_path / "folds"
    root.mkdir()
    write(root / "test_1m1.dat", "1,10,5\n2,20,3\n")
    write(root / "test_1m2.dat", "1,20,4\n1,10,5\n")  # (1, 10) again: a log may repeat a pair
    return root


def test_100k_parses_to_the_exact_tables(ml100k):
    dataset = read_movielens(ml100k)
    assert dataset.name == "ml-100k" and dataset.skipped_rows == []
    assert dataset.watches.to_pydict() == {
        "user_id": [1, 2, 1], "item_id": [10, 20, 20],
        "watch_time": [4.0, 5.0, 3.0], "timestamp": [881250949, 881250950, 881250951],
    }  # fmt: skip
    assert dataset.users.to_pydict() == {
        "user_id": [1, 2], "age": [24.0, 53.0], "gender": ["M", "F"],
        "geo": ["857", "T8H"], "occupation": ["technician", "other"],
    }  # fmt: skip
    assert dataset.items.to_pydict() == {
        "item_id": [10, 20], "upload_time": [JAN_1_1995, None],
        "categories": [["Comedy", "Romance"], ["unknown"]], "title": ["Amélie (2001)", "unknown"],
    }  # fmt: skip
    assert dataset.watches.schema.field("user_id").type == pa.int64()


def test_100k_genre_names_come_from_u_genre(ml100k):
    write(ml100k / "u.genre", "none|0\nfunny|1\nsad|2\n\n")
    write(ml100k / "u.item", "10|A|01-Jan-1995||u|0|1|1\n")
    assert read_movielens(ml100k).items.column("categories").to_pylist() == [["funny", "sad"]]


def test_100k_u_genre_lines_end_at_newlines_only(ml100k):  # regression: issue 14
    write(ml100k / "u.genre", "none|0\r\nfun\rny|1\nbad|x\n", encoding="latin-1")
    with pytest.raises(DataError) as info:
        read_movielens(ml100k)
    assert where(info.value) == (str(ml100k / "u.genre"), 3, "index")


def test_100k_duplicate_user_id_is_an_error(ml100k):
    write(ml100k / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n1|30|F|writer|32067\n")
    with pytest.raises(DataError) as info:
        read_movielens(ml100k)
    assert where(info.value) == (str(ml100k / "u.user"), 3, "user_id")


@pytest.mark.parametrize(
    ("file", "text", "line", "column"),
    [
        ("u.data", "1\t10\t4\t881250949\n2\t20\t-1\t881250950\n", 2, "watch_time"),
        ("u.data", "1\t10\t4\t881250949\n2\t20\t4\n", 2, "timestamp"),
        ("u.data", "1\t10\t4\t881250949\n\n2\tx\t4\t881250950\n", 3, "item_id"),
        ("u.user", "1|24|M|technician|85711\n2|old|F|other|94043\n", 2, "age"),
        (
            "u.item",
            f"10|A|01-Jan-1995||u|{flags()}\n11|B|1995-01-01||u|{flags()}\n",
            2,
            "release_date",
        ),
        ("u.item", f"10|A|01-Jan-1995||u|{flags()[:-1]}2\n", 1, "Western"),
    ],
)
def test_100k_bad_lines_name_file_line_and_column(ml100k, file, text, line, column):
    write(ml100k / file, text)
    with pytest.raises(DataError) as info:
        read_movielens(ml100k)
    assert where(info.value) == (str(ml100k / file), line, column)


def test_1m_parses_with_occupation_names_and_latin1_titles(ml1m):
    dataset = read_movielens(ml1m)
    assert dataset.watches.to_pydict() == {
        "user_id": [1, 2], "item_id": [10, 20], "watch_time": [5.0, 3.0], "timestamp": [978300760, 978302109],
    }  # fmt: skip
    assert dataset.users.to_pydict() == {
        "user_id": [1, 2], "age": [1.0, 56.0], "gender": ["F", "M"],
        "geo": ["480", "700"], "occupation": ["K-12 student", "self-employed"],
    }  # fmt: skip
    assert dataset.items.to_pydict() == {
        "item_id": [10, 20], "title": ["Amélie (2001)", "Heat (1995)"],
        "categories": [["Comedy", "Romance"], ["Action", "Crime"]],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("file", "text", "line", "column"),
    [
        ("users.dat", "1::F::1::10::48067\n2::M::56::21::70072\n", 2, "occupation"),
        ("users.dat", "1::F::1::10::48067\n1::M::56::16::70072\n", 2, "user_id"),
        ("ratings.dat", "1::10::5::978300760\n2::20::3\n", 2, "timestamp"),
        ("movies.dat", "10::Amélie (2001)\n", 1, "categories"),
    ],
)
def test_1m_bad_lines_name_file_line_and_column(ml1m, file, text, line, column):
    write(ml1m / file, text, encoding="latin-1")
    with pytest.raises(DataError) as info:
        read_movielens(ml1m)
    assert where(info.value) == (str(ml1m / file), line, column)


def test_folds_give_unordered_watches_with_their_fold(ml1m, folds):
    (ml1m / "ratings.dat").unlink()
    dataset = read_movielens_folds(folds, ml1m)
    assert dataset.watches.to_pydict() == {
        "user_id": [1, 2, 1, 1], "item_id": [10, 20, 20, 10], "timestamp": [None] * 4,
        "watch_time": [5.0, 3.0, 4.0, 5.0], "fold": [1, 1, 2, 2],
    }  # fmt: skip
    assert dataset.watches.schema.field("fold").type == pa.int8()
    assert dataset.watches.schema.field("timestamp").type == pa.int64()
    assert dataset.users.num_rows == 2 and dataset.items.num_rows == 2
    same = read_movielens(ml1m, folds=folds)
    assert same.watches.equals(dataset.watches) and same.users.equals(dataset.users)
    assert read_movielens_folds(folds).users is None


def test_1m_without_ratings_or_folds_says_what_to_pass(ml1m, tmp_path):
    (ml1m / "ratings.dat").unlink()
    with pytest.raises(DataError, match="folds="):
        read_movielens(ml1m)
    with pytest.raises(DataError) as info:
        read_movielens(tmp_path)
    assert where(info.value) == (str(tmp_path), None, None)


def test_folds_skip_bad_rows_records_and_warns(folds):
    write(folds / "test_1m2.dat", "1,20,4\n1,ten,5\n3,30\n")
    with pytest.warns(SkippedRowsWarning, match="skipped 2 bad row"):
        dataset = read_movielens_folds(folds, skip_bad_rows=True)
    assert dataset.watches.column("item_id").to_pylist() == [10, 20, 20]
    bad_file = str(folds / "test_1m2.dat")
    assert dataset.skipped_rows == [
        BadRow(bad_file, 2, "item_id", "not an integer: 'ten'"),
        BadRow(bad_file, 3, "watch_time", "2 field(s), expected 3"),
    ]


def test_csv_layout_reads_quoted_titles_no_genres_and_tags_as_searches(tmp_path):
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.5,1000\n2,20,0.5,1002\n")
    write(
        root / "movies.csv",
        'movieId,title,genres\n10,"Heat, Part 2 (1999)",Action|Crime\n20,Untitled,(no genres listed)\n',
    )
    write(root / "tags.csv", 'userId,movieId,tag,timestamp\n1,10,"slow, moody",1001\n')
    dataset = read_movielens(root)
    assert dataset.watches.to_pydict() == {
        "user_id": [1, 2],
        "item_id": [10, 20],
        "watch_time": [4.5, 0.5],
        "timestamp": [1000, 1002],
    }
    assert dataset.items.to_pydict() == {
        "item_id": [10, 20],
        "title": ["Heat, Part 2 (1999)", "Untitled"],
        "categories": [["Action", "Crime"], []],
    }
    assert dataset.searches.to_pydict() == {
        "user_id": [1],
        "item_id": [10],
        "query": ["slow, moody"],
        "timestamp": [1001],
    }
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.5,1000\n2,20,0.5,\n")
    with pytest.raises(DataError) as info:
        read_movielens(root)
    assert where(info.value) == (str(root / "ratings.csv"), 3, "timestamp")  # the file's own name


# -- regressions: issue 14 ------------------------------------------------------------------------


def test_100k_stray_cr_does_not_shift_later_lines(ml100k):
    lines = [f"{n}\t{10 * n}\t4\t88125094{n}" for n in range(1, 10)]
    lines[2] = "3\t3\r0\t4\t881250943"  # bad: "3\r0" is not an integer; the \r ends no line
    lines[7] = "8\tx\t4\t881250948"
    lines[4] = "5\t50\t4\r\t881250945"  # good: a \r next to a field is blank space around it
    write(ml100k / "u.data", "\n".join(lines) + "\n")
    with pytest.warns(SkippedRowsWarning, match="skipped 2 bad row"):
        dataset = read_movielens(ml100k, skip_bad_rows=True)
    assert [(b.line, b.column) for b in dataset.skipped_rows] == [(3, "item_id"), (8, "item_id")]
    assert dataset.watches.column("item_id").to_pylist() == [10, 20, 40, 50, 60, 70, 90]


def test_100k_invalid_utf8_is_one_bad_row(ml100k):
    (ml100k / "u.data").write_bytes(b"1\t10\t4\t5\n2\t2\xff0\t4\t6\n\n1\t20\t3\t7\n")
    with pytest.raises(DataError, match="not utf-8 text") as info:
        read_movielens(ml100k)
    assert where(info.value) == (str(ml100k / "u.data"), 2, "item_id")
    with pytest.warns(SkippedRowsWarning, match="skipped 1 bad row"):
        dataset = read_movielens(ml100k, skip_bad_rows=True)
    assert dataset.watches.to_pydict() == {
        "user_id": [1, 1], "item_id": [10, 20], "watch_time": [4.0, 3.0], "timestamp": [5, 7],
    }  # fmt: skip
    assert [(b.line, b.column) for b in dataset.skipped_rows] == [(2, "item_id")]


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_ratings_files_are_errors_naming_the_file(ml100k, ml1m, folds, text):
    for directory, name in [(ml100k, "u.data"), (ml1m, "ratings.dat"), (folds, "test_1m2.dat")]:
        write(directory / name, text)
        with pytest.raises(DataError, match="no watches") as info:
            read_movielens(directory)
        assert where(info.value) == (str(directory / name), None, None)
    root = folds.parent / "ml-latest"
    root.mkdir()
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n" + text)
    with pytest.raises(DataError, match="no watches") as info:
        read_movielens(root)
    assert where(info.value) == (str(root / "ratings.csv"), None, None)


def test_genres_are_one_clean_list_in_every_layout(tmp_path):
    from tests.movielens_files import write_ml1m

    movies = [(10, "A (2001)", ("Comedy", "(no genres listed)", "", "Drama", "Comedy")), (20, "B (1995)", ("Drama",))]
    items = read_movielens(write_ml1m(tmp_path / "ml-1m", movies=movies)).items
    assert items.column("categories").to_pylist() == [["Comedy", "Drama"], ["Drama"]]


def test_fold_files_beside_another_layouts_metadata_say_it_is_not_read(tmp_path):
    from tests.movielens_files import write_ml1m_folds, write_ml100k

    root = write_ml100k(tmp_path / "ml-100k")
    with pytest.warns(UserWarning, match="u.user, u.item are not read"):
        dataset = read_movielens(root, folds=write_ml1m_folds(tmp_path / "folds"))
    assert dataset.users is None and dataset.items is None


def test_load_movielens_checks_the_name_against_the_layout(tmp_path):
    from tests.movielens_files import write_ml100k
    from ytdnn.datasets import load_movielens

    root = write_ml100k(tmp_path / "ml-100k")
    with pytest.raises(ValueError, match="holds the ml-100k layout, not ml-1m's"):
        load_movielens("ml-1m", root)
    with pytest.raises(ValueError, match="holds the ml-100k layout, not ml-latest's"):
        load_movielens("ml-25m", root)  # a release name of the ml-latest layout
    assert len(load_movielens("ml-100k", root)["ratings"]) == 3
