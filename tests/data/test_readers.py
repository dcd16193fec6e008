"""Readers: tiny hand-written files in every format -> exact tables, or exact errors."""

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ytdnn.data.readers import BadRow, SkippedRowsWarning, read_csv, read_dataset, read_parquet
from ytdnn.data.schema import DataError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def raises_at(file, line, column):
    """Context manager: a DataError naming exactly this file, line and column."""

    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(DataError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            err = self.info.value
            assert (err.file, err.line, err.column) == (str(file), line, column), str(err)
            return handled

    return Check()


# -- generic CSV ----------------------------------------------------------------------------------


def test_csv_with_column_mapping_parses_to_the_exact_table(tmp_path):
    path = write(
        tmp_path / "w.csv", "uid,vid,ts,wt,device\n7,10,100,3.5,tv\n\n8,11,200, 1 ,phone\n"
    )
    table = read_csv(
        path, "watches", {"user_id": "uid", "item_id": "vid", "timestamp": "ts", "watch_time": "wt"}
    )
    assert table.schema == pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("timestamp", pa.int64()),
            ("watch_time", pa.float64()),
            ("device", pa.string()),
        ]
    )
    assert table.to_pydict() == {
        "user_id": [7, 8], "item_id": [10, 11], "timestamp": [100, 200], "watch_time": [3.5, 1.0], "device": ["tv", "phone"],
    }  # fmt: skip


def test_csv_ids_are_strings_unless_every_id_is_an_integer(tmp_path):
    path = write(tmp_path / "w.csv", "user_id,item_id,timestamp\nu1,10,5\n2,0x10,6\n")
    table = read_csv(path, "watches")
    assert table.column("user_id").to_pylist() == ["u1", "2"]
    assert table.column("item_id").to_pylist() == ["10", "0x10"]  # "0x10" is not the integer 16
    assert read_csv(path, "watches", ids="string").column("timestamp").to_pylist() == [5, 6]


def test_csv_without_header_and_with_a_two_character_delimiter(tmp_path):
    path = write(tmp_path / "w.dat", "1::2::30\n3::4::40\n")
    table = read_csv(path, "watches", names=["user_id", "item_id", "timestamp"], delimiter="::")
    assert table.to_pydict() == {"user_id": [1, 3], "item_id": [2, 4], "timestamp": [30, 40]}


def test_csv_items_categories_and_quoted_titles(tmp_path):
    path = write(
        tmp_path / "items.csv",
        'item_id,title,categories\n1,"Heat, the movie",Action|Crime\n2,Alone,\n',
    )
    table = read_csv(path, "items")
    assert table.to_pydict() == {
        "item_id": [1, 2],
        "title": ["Heat, the movie", "Alone"],
        "categories": [["Action", "Crime"], []],
    }


def test_csv_duplicate_watch_is_kept_and_crlf_lines_count(tmp_path):
    path = write(tmp_path / "w.csv", "user_id,item_id,timestamp\r\n1,2,3\r\n1,2,3\r\n")
    assert read_csv(path, "watches").num_rows == 2  # the same watch twice is a log, not an error
    write(path, "user_id,item_id,timestamp\r\n1,2,3\r\n1,x,3\r\n")
    with raises_at(path, 3, "item_id"):
        read_csv(path, "watches", ids="int")


BAD_WATCHES = [
    # (file text, expected line, expected column, words in the message)
    ("u,item_id,timestamp\n1,2,3\n", 1, "user_id", "missing required column"),
    ("user_id,item_id,timestamp\n1,2,3\n1,2,x\n", 3, "timestamp", "not an integer: 'x'"),
    (
        "user_id,item_id,timestamp,watch_time\n1,2,3,4\n\n1,2,3,fast\n",
        4,
        "watch_time",
        "not a number",
    ),
    ("user_id,item_id,timestamp,watch_time\n1,2,3,nan\n", 2, "watch_time", "not a finite number"),
    ("user_id,item_id,timestamp\n1,2,3\n1,2\n", 3, "timestamp", "2 field(s), expected 3"),
    ("user_id,item_id,timestamp\n1,2,3,4\n", 2, "timestamp", "4 field(s), expected 3"),
    (
        "user_id,item_id,timestamp,watch_time\n1,2,3,4\n1,2,3,-0.5\n",
        3,
        "watch_time",
        "negative value",
    ),
    ("user_id,item_id,timestamp\n1,2,3\n,2,3\n", 3, "user_id", "missing value"),
    ('user_id,item_id,timestamp\n1,2,"3\n4,5,6\n', 2, "timestamp", "quote not closed"),
    (
        "user_id,item_id,timestamp\n1,2,3\n2,3,99999999999999999999\n",
        3,
        "timestamp",
        "out of range",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), BAD_WATCHES)
def test_csv_bad_watches_name_file_line_and_column(tmp_path, text, line, column, words):
    path = write(tmp_path / "w.csv", text)
    with raises_at(path, line, column) as info:
        read_csv(path, "watches", ids="int")
    assert words in str(info.value)


def test_csv_errors_name_the_files_own_column(tmp_path):
    path = write(tmp_path / "w.csv", "uid,item_id,timestamp\n1,2,3\n1,2,-\n")
    with raises_at(path, 3, "timestamp"):
        read_csv(path, "watches", {"user_id": "uid"})
    with raises_at(path, 1, "who"):
        read_csv(path, "watches", {"user_id": "who"})
    write(path, "uid,item_id,timestamp\n1,2,3\nx,2,3\n")
    with raises_at(path, 3, "uid"):
        read_csv(path, "watches", {"user_id": "uid"}, ids="int")


def test_csv_duplicate_user_id_is_an_error_on_its_second_line(tmp_path):
    path = write(tmp_path / "users.csv", "user_id,age,gender\n1,20,F\n2,30,M\n1,40,M\n")
    with raises_at(path, 4, "user_id") as info:
        read_csv(path, "users")
    assert "first on line 2" in str(info.value)


def test_csv_skip_bad_rows_skips_exactly_the_bad_rows_and_reports_them(tmp_path):
    text = "user_id,item_id,timestamp,watch_time\n1,2,3,4\n1,2\n1,x,3,4\n2,3,4,-1\n\n5,6,7,8\n"
    path = write(tmp_path / "w.csv", text)
    skipped = []
    with pytest.warns(SkippedRowsWarning, match="skipped 3 bad row"):
        table = read_csv(path, "watches", ids="int", skip_bad_rows=True, skipped=skipped)
    assert table.to_pydict() == {
        "user_id": [1, 5],
        "item_id": [2, 6],
        "timestamp": [3, 7],
        "watch_time": [4.0, 8.0],
    }
    assert skipped == [
        BadRow(str(path), 3, "timestamp", "2 field(s), expected 4"),
        BadRow(str(path), 4, "item_id", "not an integer: 'x'"),
        BadRow(str(path), 5, "watch_time", "negative value: '-1'"),
    ]


def test_csv_skip_keeps_the_first_of_duplicate_users(tmp_path):
    path = write(tmp_path / "users.csv", "user_id,age\n1,20\n1,40\n2,30\n")
    skipped = []
    with pytest.warns(SkippedRowsWarning):
        table = read_csv(path, "users", skip_bad_rows=True, skipped=skipped)
    assert table.to_pydict() == {"user_id": [1, 2], "age": [20.0, 30.0]}
    assert skipped == [BadRow(str(path), 3, "user_id", "duplicate user_id: 1 (first on line 2)")]


def test_csv_without_bad_rows_does_not_warn(tmp_path):
    path = write(tmp_path / "w.csv", "user_id,item_id,timestamp\n1,2,3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_csv(path, "watches", skip_bad_rows=True)


def test_csv_bad_encoding_names_line_and_column(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\n1,Amélie\n".encode("latin-1"))
    with raises_at(path, 2, "title"):
        read_csv(path, "items")
    assert read_csv(path, "items", encoding="latin-1").column("title").to_pylist() == ["Amélie"]


def test_csv_impressions_booleans(tmp_path):
    header = "user_id,item_id,timestamp,clicked,watch_time,page_id\n"
    path = write(tmp_path / "i.csv", header + "1,2,3,true,4,9\n1,3,3,0,0,9\n")
    assert read_csv(path, "impressions").column("clicked").to_pylist() == [True, False]
    write(path, header + "1,2,3,maybe,4,9\n")
    with raises_at(path, 2, "clicked"):
        read_csv(path, "impressions")


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_with_mapping_text_and_typed_columns(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "vid": pa.array([1, 2], pa.int32()),
                "categories": [["A"], []],
                "duration": ["1.5", "2"],
            }
        ),
        path,
    )
    table = read_parquet(path, "items", {"item_id": "vid"})
    assert table.schema.field("item_id").type == pa.int64()
    assert table.to_pydict() == {
        "item_id": [1, 2],
        "categories": [["A"], []],
        "duration": [1.5, 2.0],
    }


def test_parquet_bad_values_name_the_row(tmp_path):
    path = tmp_path / "w.parquet"
    pq.write_table(
        pa.table({"user_id": [1, 2, 3], "item_id": [1, 1, 1], "timestamp": [1.0, 2.0, 2.5]}), path
    )
    with raises_at(path, 3, "timestamp"):
        read_parquet(path, "watches")
    skipped = []
    with pytest.warns(SkippedRowsWarning):
        table = read_parquet(path, "watches", skip_bad_rows=True, skipped=skipped)
    assert table.column("timestamp").to_pylist() == [1, 2]
    assert skipped == [BadRow(str(path), 3, "timestamp", "not an integer: 2.5")]


def test_parquet_column_of_the_wrong_type_and_missing_column(tmp_path):
    path = tmp_path / "w.parquet"
    pq.write_table(pa.table({"user_id": [[1], [2]], "item_id": [1, 1], "timestamp": [1, 2]}), path)
    with raises_at(path, None, "user_id"):
        read_parquet(path, "watches")
    pq.write_table(pa.table({"user_id": [1], "item_id": [1]}), path)
    with raises_at(path, None, "timestamp"):
        read_parquet(path, "watches")


def test_read_dataset_mixes_csv_and_parquet_and_collects_skipped_rows(tmp_path):
    write(tmp_path / "watches.csv", "user_id,item_id,timestamp\n1,2,3\n1,2\n")
    pq.write_table(pa.table({"user_id": [1], "age": [30.0]}), tmp_path / "users.parquet")
    with pytest.warns(SkippedRowsWarning, match="skipped 1 bad row"):
        dataset = read_dataset(tmp_path, skip_bad_rows=True)
    assert dataset.watches.num_rows == 1 and dataset.users.to_pydict() == {
        "user_id": [1],
        "age": [30.0],
    }
    assert dataset.skipped_rows == [
        BadRow(str(tmp_path / "watches.csv"), 3, "timestamp", "2 field(s), expected 3")
    ]


# -- regressions: issue 14 ------------------------------------------------------------------------


def test_csv_lone_cr_is_part_of_its_line(tmp_path):
    # pyarrow ends a line at a lone \r; the readers do not, so later lines keep their numbers
    text = 'item_id,title\r\n1,"A\rB"\r\n2,C\rD\n3,E\n\r\n4\r,F\n5,G\n'
    path = write(tmp_path / "items.csv", text)
    assert read_csv(path, "items").to_pydict() == {
        "item_id": [1, 2, 3, 4, 5], "title": ["A\rB", "C\rD", "E", "F", "G"],
    }  # fmt: skip
    write(path, text.replace("5,G", "5,G,extra"))
    with raises_at(path, 7, "title"):
        read_csv(path, "items")


def test_csv_invalid_utf8_skips_only_its_row(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b'user_id,item_id,timestamp\n1,2,3\n"1,0",\xff2,3\n4,5,6\n7,\xc3\n8,9,1\n')
    with raises_at(path, 3, "item_id") as info:  # the quoted comma is not a delimiter
        read_csv(path, "watches", ids="int")
    assert "not utf-8 text (invalid start byte)" in str(info.value)
    skipped = []
    with pytest.warns(SkippedRowsWarning, match="skipped 2 bad row"):
        table = read_csv(path, "watches", ids="int", skip_bad_rows=True, skipped=skipped)
    assert table.to_pydict() == {"user_id": [1, 4, 8], "item_id": [2, 5, 9], "timestamp": [3, 6, 1]}
    assert [(b.line, b.column) for b in skipped] == [(3, "item_id"), (5, "item_id")]


def test_csv_invalid_utf8_in_the_header_names_line_1(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"user_id,it\xffem_id\n1,2\n")
    with raises_at(path, 1, None):
        read_csv(path, "watches", skip_bad_rows=True)


def test_csv_strict_error_is_the_first_bad_line_whatever_the_step(tmp_path):
    # a field count (parse) on line 4, a bad value (convert) on line 2, bad text on line 3
    path = tmp_path / "w.csv"
    path.write_bytes(b"user_id,item_id,timestamp\n1,x,0\n\xff,2,0\n1,2,3,4\n")
    with raises_at(path, 2, "item_id"):
        read_csv(path, "watches", ids="int")
    path.write_bytes(b"user_id,item_id,timestamp\n1,2,0\n\xff,2,0\n1,2,3,4\n1,x,0\n")
    with raises_at(path, 3, "user_id"):
        read_csv(path, "watches", ids="int")


def test_csv_watches_without_rows_is_an_error(tmp_path):
    path = write(tmp_path / "w.csv", "user_id,item_id,timestamp\n\n")
    with raises_at(path, None, None) as info:
        read_csv(path, "watches")
    assert "no watches: the file has none" in str(info.value)
    write(path, "user_id,item_id,timestamp\n1,x,3\n")
    with raises_at(path, None, None) as info:
        read_csv(path, "watches", ids="int", skip_bad_rows=True)
    assert "every row was bad (1 skipped)" in str(info.value)
    assert read_csv(write(tmp_path / "u.csv", "user_id,age\n"), "users").num_rows == 0


def test_parquet_errors_say_row_and_bool_columns_read(tmp_path):
    path = tmp_path / "i.parquet"
    header = {"user_id": [1, 1], "item_id": [2, 3], "timestamp": [3, 3], "page_id": [9, 9]}
    pq.write_table(pa.table({**header, "clicked": [True, False], "watch_time": [4.0, 0.0]}), path)
    assert read_parquet(path, "impressions").column("clicked").to_pylist() == [True, False]
    pq.write_table(pa.table({**header, "clicked": [True, False], "watch_time": [4.0, -1.0]}), path)
    with raises_at(path, 2, "watch_time") as info:
        read_parquet(path, "impressions")
    assert str(info.value).startswith(f"file {path}, row 2, column 'watch_time'")


def invalid_utf8(values: list[bytes], type_: pa.DataType) -> pa.Array:
    """A string (or binary) array holding these bytes as they are: pyarrow checks pa.array(...)."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(
        type_, len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )


@pytest.mark.parametrize("type_", [pa.string(), pa.binary()])
def test_parquet_invalid_utf8_is_a_bad_row(tmp_path, type_):
    path = tmp_path / "items.parquet"
    titles = invalid_utf8([b"ok", b"caf\xe9", b"fine"], type_)
    pq.write_table(pa.table({"item_id": [1, 2, 3], "title": titles}), path)
    with raises_at(path, 2, "title") as info:
        read_parquet(path, "items")
    assert "not UTF-8 text: b'caf\\xe9'" in str(info.value)
    skipped = []
    with pytest.warns(SkippedRowsWarning):
        table = read_parquet(path, "items", skip_bad_rows=True, skipped=skipped)
    assert table.to_pydict() == {"item_id": [1, 3], "title": ["ok", "fine"]}
    assert [(b.line, b.column) for b in skipped] == [(2, "title")]
