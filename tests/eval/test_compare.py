"""`ytdnn evaluate`: a user's own log split by a protocol, choices on validation, test after a refit."""

import json

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.cli import main
from ytdnn.data.schema import Dataset
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.compare import split_log
from ytdnn.eval.protocols import GLOBAL_TIME, P_RANDOM


def test_global_time_tests_the_last_tenth_of_the_span():
    watches = pa.table({"user_id": [1] * 11, "item_id": list(range(11)), "timestamp": pa.array(range(0, 110, 10), pa.int64())})
    split = split_log(watches, "global-time")
    assert split.protocol == GLOBAL_TIME
    # span 0..100 (+1) -> the test window starts at 101 - 10 = 91: only t=100; t=90 validates
    assert split.item_ids.take(pa.array(split.test.item_idx)).to_pylist() == [10]
    assert split.item_ids.take(pa.array(split.valid.item_idx)).to_pylist() == [9]


def test_random_protocol_draws_five_seeded_folds_when_the_log_has_none():
    rng = np.random.default_rng(0)
    watches = pa.table({"user_id": rng.integers(0, 50, 2000), "item_id": np.arange(2000),
                        "timestamp": pa.nulls(2000, pa.int64())})
    a, b = split_log(watches, "random", seed=1), split_log(watches, "random", seed=1)
    assert a.protocol == P_RANDOM and np.array_equal(a.test.item_idx, b.test.item_idx)
    assert 0.15 < len(a.test) / 2000 < 0.25 and 0.15 < len(a.valid) / 2000 < 0.25
    with pytest.raises(ValueError, match="unknown protocol"):
        split_log(watches, "leave-one-out")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return generate(WorldConfig.preset("tiny", seed=5)).save(tmp_path_factory.mktemp("ev") / "tiny")


def test_evaluate_command_writes_the_bench_table(tiny_dir, tmp_path, capsys):
    out = tmp_path / "ev.json"
    code = main(["evaluate", "--data", str(tiny_dir), "--protocol", "global-time", "--set", "depth=0",
                 "--set", "embedding_dim=16", "--set", "output_dim=16", "--set", "train.max_epochs=3", "--out", str(out)])
    assert code == 0
    records = json.loads(out.read_text())
    assert [r["model"] for r in records] == ["popularity", "EASE", "ytdnn"]
    assert all(set(r["metrics"]) == {"Recall@10", "NDCG@10", "HR@10", "Recall@100"} for r in records)
    assert 0 <= records[2]["params"]["best_epoch"] < 3 and "l2" in records[1]["params"]
    assert "ytdnn" in capsys.readouterr().out  # the table is printed


def test_evaluate_rejects_a_temporal_protocol_on_an_unordered_log(tmp_path, capsys):
    watches = pa.table({"user_id": pa.array([1, 1, 1], pa.int64()), "item_id": pa.array([1, 2, 3], pa.int64()),
                        "timestamp": pa.nulls(3, pa.int64())})
    Dataset(watches).save(tmp_path / "d")
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--protocol", "temporal"]) == 2
    assert "needs timestamps" in capsys.readouterr().err
