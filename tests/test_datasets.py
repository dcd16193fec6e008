"""ytdnn.datasets: MovieLens and the synthetic world as DataFrames, and user inputs as canonical
tables. The MovieLens files are tiny hand-checked ones (tests/movielens_files.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.movielens_files import write, write_ml1m, write_ml1m_folds, write_ml100k
from ytdnn.data.schema import DataError
from ytdnn.datasets import as_dataset, canonical, load_movielens, load_synthetic

pd = pytest.importorskip("pandas")


def test_100k_ratings_users_and_movies(tmp_path):
    data = load_movielens("ml-100k", write_ml100k(tmp_path / "ml-100k"))
    r = data["ratings"]
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r.to_dict("list") == {"user_id": [1, 2, 1], "item_id": [10, 20, 20], "rating": [4.0, 5.0, 3.0],
                                 "timestamp": [881250949, 881250950, 881250951]}
    assert data["users"]["geo"].tolist() == ["857", "T8H"]  # zip -> its first 3 characters
    assert data["movies"]["genres"].map(list).tolist() == [["Comedy", "Romance"], ["unknown"]]


def test_1m_ratings_dat_and_the_fold_files_in_fold_order(tmp_path):
    root = write_ml1m(tmp_path / "ml-1m")
    data = load_movielens("ml-1m", root)
    assert data["ratings"][["user_id", "item_id", "rating"]].values.tolist() == [[1, 10, 5.0], [2, 20, 3.0]]
    assert data["users"]["occupation"].tolist() == ["K-12 student", "self-employed"]
    folds = write_ml1m_folds(tmp_path / "folds")
    data = load_movielens("ml-1m", write_ml1m(tmp_path / "meta", ratings=None), folds=folds)
    r = data["ratings"]
    # fold 1's rows, then fold 2's (ML1M_FOLDS), with no timestamps
    assert r[["user_id", "item_id", "rating", "fold"]].values.tolist() == [
        [1, 10, 5.0, 1], [2, 20, 3.0, 1], [1, 20, 4.0, 2], [1, 10, 5.0, 2]]
    assert r["timestamp"].isna().all()
    assert data["movies"]["title"].tolist() == ["Amélie (2001)", "Heat (1995)"]


def test_latest_layout_and_bad_names(tmp_path):
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.5,1000\n2,20,0.5,1002\n")
    write(root / "movies.csv", "movieId,title,genres\n10,Heat (1995),Action|Crime\n20,Up,(no genres listed)\n")
    data = load_movielens("ml-latest", root)
    assert data["ratings"]["rating"].tolist() == [4.5, 0.5]
    assert data["users"] is None
    assert data["movies"]["genres"].map(list).tolist() == [["Action", "Crime"], []]
    with pytest.raises(ValueError, match="unknown MovieLens name"):
        load_movielens("ml-2m", root)
    with pytest.raises(ValueError, match="folds="):
        load_movielens("ml-100k", root, folds=root)
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,x,1000\n")
    with pytest.raises(DataError, match="ratings.csv"):  # the validating reader's error
        load_movielens("ml-latest", root)


def test_synthetic_stars_follow_the_watched_share():
    data = load_synthetic("tiny", seed=1)
    r, movies = data["ratings"], data["movies"].set_index("item_id")
    share = r["watch_time"].to_numpy() / movies.loc[r["item_id"], "duration"].to_numpy()
    assert r["rating"].tolist() == np.minimum(1 + np.floor(5 * share), 5).tolist()
    assert set(r["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert list(data["users"].columns)[:2] == ["user_id", "age"]


def test_every_array_kind_gives_the_same_watches():
    polars = pytest.importorskip("polars")
    users, items, ratings = [3, 1, 3], [7, 7, 8], [4.0, 2.0, 5.0]
    expected = as_dataset(user_ids=users, item_ids=items, ratings=ratings).watches
    assert expected.to_pydict() == {"user_id": users, "item_id": items, "timestamp": [None] * 3,
                                    "watch_time": ratings, "rating": ratings}
    for convert in (np.asarray, pd.Series, polars.Series, pa.array):
        got = as_dataset(user_ids=convert(users), item_ids=convert(items), ratings=convert(ratings))
        assert got.watches.equals(expected), convert
    frame = pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings})
    assert canonical(frame).watches.equals(expected)
    assert canonical(polars.from_pandas(frame)).watches.equals(expected)
    assert canonical(pa.Table.from_pandas(frame)).watches.equals(expected)
    float_ids = pd.Series([3.0, 1.0, 3.0])  # pandas turns ids into floats beside a NaN
    assert as_dataset(user_ids=float_ids, item_ids=items).watches["user_id"].to_pylist() == users


def test_timestamps_and_feature_tables():
    when = pd.to_datetime(["2020-01-01", "2020-01-02"])
    data = as_dataset(user_ids=["a", "b"], item_ids=[1, 2], timestamps=when, watch_times=[10.0, 0.0],
                      user_features=pd.DataFrame({"user_id": ["a"], "age": [30.0]}))
    assert data.watches["timestamp"].to_pylist() == [1577836800, 1577923200]
    assert data.users.to_pydict() == {"user_id": ["a"], "age": [30.0]}
    with pytest.raises(DataError, match="'user_id'"):
        as_dataset(user_ids=[1], item_ids=[1], user_features=pd.DataFrame({"age": [30.0]}))
