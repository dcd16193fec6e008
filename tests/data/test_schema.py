import pyarrow as pa
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
