"""The Spark engine writes what the local engine writes (issue 18). The session is conftest's one."""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from ytdnn.samples.candidate import ExampleConfig
from ytdnn.scale.prepare import prepare_local, read_manifest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("PySpark needs Java 17 (.ci/run installs it)", allow_module_level=True)

from ytdnn.scale.spark import QUANTILE_ACCURACY, prepare_spark

SORT = [("user_id", "ascending"), ("key", "ascending")]


def test_spark_prepare_writes_the_local_examples(spark, data_dir, tmp_path):
    cfg = ExampleConfig(max_examples_per_user=4, max_recent_watches=3, max_watch_history=20)
    local = prepare_local(data_dir, tmp_path / "local", cfg, seed=7, num_shards=2)
    distributed = prepare_spark(spark, data_dir, tmp_path / "spark", cfg, seed=7, num_shards=3)
    assert distributed["num_shards"] == 3 and distributed["num_examples"] == local["num_examples"] > 0
    a = pq.read_table(tmp_path / "local" / "candidates").sort_by(SORT)
    b = pq.read_table(tmp_path / "spark" / "candidates").sort_by(SORT)
    assert a.schema.names == b.schema.names
    assert a.to_pylist() == b.to_pylist()

    _, f_local, _ = read_manifest(tmp_path / "local")
    _, f_spark, _ = read_manifest(tmp_path / "spark")
    for vocab in ("items_", "users_", "tokens_"):
        assert getattr(f_spark, vocab).tokens_ == getattr(f_local, vocab).tokens_
        assert getattr(f_spark, vocab).counts_.tolist() == getattr(f_local, vocab).counts_.tolist()
    assert f_spark.user_features_.to_dict() == f_local.user_features_.to_dict()
    assert (f_spark.window_start_, f_spark.window_end_) == (f_local.window_start_, f_local.window_end_)
    # the sketch's cut points are within rank N/accuracy of the exact ones; between two cuts the
    # CDF may then differ by up to one quantile bin more (ytdnn/scale/spark.py)
    ages = np.linspace(0, f_local.window_end_ - f_local.window_start_, 20_001)
    bound = 1 / f_local.AGE_QUANTILES + 1 / QUANTILE_ACCURACY
    assert np.abs(f_spark.example_age(ages) - f_local.example_age(ages)).max() <= bound


def test_spark_score_writes_the_local_scores(spark, two_stage_model, tmp_path):
    from ytdnn.scale.score import score_local
    from ytdnn.scale.spark_score import score_spark

    order = {"users": [("user_id", "ascending")], "items": [("item_id", "ascending")],
             "recommendations": [("user_id", "ascending"), ("rank", "ascending")]}
    for what, sort in order.items():
        local = score_local(two_stage_model, what, tmp_path / f"{what}.parquet", k=5)
        assert score_spark(spark, two_stage_model, what, tmp_path / what, k=5, users_per_partition=70) == local
        a = pq.read_table(tmp_path / f"{what}.parquet").sort_by(sort)
        b = pq.read_table(tmp_path / what).sort_by(sort)
        if what == "recommendations":
            assert a.column("item_id").to_pylist() == b.column("item_id").to_pylist()
            np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), atol=1e-5)
        else:
            assert a.column(0).to_pylist() == b.column(0).to_pylist()
            np.testing.assert_allclose(np.stack(a.column("vector").to_pylist()),
                                       np.stack(b.column("vector").to_pylist()), atol=1e-5)


def test_spark_scores_from_the_logs_what_the_local_engine_scores_from_the_history(spark, data_dir, tmp_path, monkeypatch):
    from test_score_local import forbid_history, train_with_sources

    from ytdnn.scale.score import score_local
    from ytdnn.scale.spark_score import score_spark

    model = train_with_sources(data_dir, tmp_path / "model")  # its ranker reads the EASE and co-occurrence sources
    order = {"users": [("user_id", "ascending")], "recommendations": [("user_id", "ascending"), ("rank", "ascending")]}
    for what in order:
        score_local(model, what, tmp_path / f"{what}.parquet", k=5)
    forbid_history(monkeypatch)  # on the driver; each executor loads the model with history=False
    timings: dict = {}
    for what, sort in order.items():
        rows = score_spark(spark, model, what, tmp_path / what, k=5, users_per_partition=70, timings=timings, data=data_dir)
        a = pq.read_table(tmp_path / f"{what}.parquet").sort_by(sort)
        b = pq.read_table(tmp_path / what).sort_by(sort)
        assert rows == a.num_rows == b.num_rows
        assert a.column("user_id").to_pylist() == b.column("user_id").to_pylist()
        if what == "recommendations":
            assert a.column("item_id").to_pylist() == b.column("item_id").to_pylist()
            np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-5)
        else:
            np.testing.assert_allclose(np.stack(a.column("vector").to_pylist()),
                                       np.stack(b.column("vector").to_pylist()), atol=1e-5)
    assert timings["driver_s"] > 0
