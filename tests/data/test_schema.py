import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ytdnn.data.schema import (
    ITEMS,
    USERS,
    WATCHES,
    DataError,
    Dataset,
    has_timestamps,
    validate_table,
)


def watches(**overrides):
    cols = {"user_id": [1, 1, 2], "item_id": [10, 11, 10], "timestamp": [5, 6, 7], "watch_time": [1.0, 2.0, 3.0]}
    cols.update(overrides)
    return pa.table(cols)


def test_valid_table_is_cast_to_canonical_types():
    table = validate_table(watches(timestamp=pa.array([5, 6, 7], pa.int32())), WATCHES)
    assert table.schema.field("timestamp").type == pa.int64()
    assert table.schema.field("user_id").type == pa.int64()
    assert table.column("watch_time").to_pylist() == [1.0, 2.0, 3.0]


def test_missing_column_names_it():
    with pytest.raises(DataError) as err:
        validate_table(pa.table({"user_id": [1]}), WATCHES, source="w.parquet")
    assert (err.value.file, err.value.column) == ("w.parquet", "item_id")


def test_wrong_type_names_the_column():
    with pytest.raises(DataError) as err:
        validate_table(watches(timestamp=["a", "b", "c"]), WATCHES, source="w.csv")
    assert err.value.column == "timestamp"


def test_null_id_names_line_and_column():
    with pytest.raises(DataError) as err:
        validate_table(watches(item_id=[10, None, 10]), WATCHES, source="w.csv")
    assert (err.value.line, err.value.column) == (2, "item_id")


def test_negative_watch_time_names_line():
    with pytest.raises(DataError, match="negative watch time") as err:
        validate_table(watches(watch_time=[1.0, 2.0, -3.0]), WATCHES, source="w.csv")
    assert (err.value.line, err.value.column) == (3, "watch_time")


def test_duplicate_key_names_the_second_occurrence():
    users = pa.table({"user_id": ["a", "b", "a"], "age": [20.0, 30.0, 40.0]})
    with pytest.raises(DataError, match="duplicate key") as err:
        validate_table(users, USERS, source="u.csv")
    assert err.value.line == 3


def test_extra_columns_are_kept_and_list_categories_accepted():
    items = pa.table({"item_id": [1, 2], "categories": [["a", "b"], []], "fold": [1, 2]})
    out = validate_table(items, ITEMS)
    assert out.column_names == ["item_id", "categories", "fold"]


def test_unordered_log_has_no_timestamps():
    assert has_timestamps(validate_table(watches(), WATCHES))
    assert not has_timestamps(validate_table(watches(timestamp=pa.nulls(3, pa.int64())), WATCHES))


def test_dataset_round_trip_and_id_type_mismatch(tmp_path):
    ds = Dataset(watches=watches(), users=pa.table({"user_id": [1, 2], "geo": ["x", None]}), name="t").validate()
    again = Dataset.load(ds.save(tmp_path / "d"))
    assert again.watches.equals(ds.watches) and again.users.equals(ds.users)
    bad = Dataset(watches=watches(), users=pa.table({"user_id": ["1", "2"]}))
    with pytest.raises(DataError, match="different types"):
        bad.validate()
    with pytest.raises(DataError, match="no watches.parquet"):
        Dataset.load(tmp_path / "missing")


def test_non_finite_watch_time_is_an_error():  # nan < 0 is false: the negative check missed it
    with pytest.raises(DataError, match="not a finite number") as err:
        validate_table(watches(watch_time=[1.0, float("inf"), 3.0]), WATCHES, source="w")
    assert (err.value.line, err.value.column) == (2, "watch_time")


# -- Dataset.load validates each file as readers.read_parquet does (regression: issue 14) ---------


def save_watches(directory, **overrides):
    directory.mkdir(exist_ok=True)
    pq.write_table(watches(**overrides), directory / "watches.parquet")
    return directory / "watches.parquet"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_rejects_non_finite_watch_time_naming_the_file_and_row(tmp_path, value):
    path = save_watches(tmp_path / "d", watch_time=[1.0, value, 3.0])
    with pytest.raises(DataError) as err:
        Dataset.load(tmp_path / "d")
    assert (err.value.file, err.value.line, err.value.column) == (str(path), 2, "watch_time")
    assert str(err.value).startswith(f"file {path}, row 2, column 'watch_time': not a finite")


def test_load_cast_error_names_the_row(tmp_path):
    path = save_watches(tmp_path / "d", timestamp=[5.0, 6.0, 6.5])
    with pytest.raises(DataError, match="row 3, column 'timestamp': not an integer: 6.5") as err:
        Dataset.load(tmp_path / "d")
    assert (err.value.file, err.value.line) == (str(path), 3)


def test_load_keeps_text_as_stored(tmp_path):
    # Parquet has types and nulls: string ids stay strings, "" stays "", extra text stays text
    users = pa.table({"user_id": ["007", "8"], "geo": ["", None], "note": ["1", "2"]})
    ds = Dataset(watches(user_id=["007", "8", "8"]), users=users, name="t").validate()
    again = Dataset.load(ds.save(tmp_path / "d"))
    assert again.users.to_pydict() == users.to_pydict()
    assert again.watches.column("user_id").to_pylist() == ["007", "8", "8"]


def test_load_of_an_empty_watches_table_names_the_file(tmp_path):
    path = tmp_path / "d" / "watches.parquet"
    save_watches(tmp_path / "d")
    pq.write_table(watches().slice(0, 0), path)
    with pytest.raises(DataError, match="no watches") as err:
        Dataset.load(tmp_path / "d")
    assert (err.value.file, err.value.line) == (str(path), None)
