"""The command line, end to end on the tiny synthetic world: synth -> train candidates -> retrieve."""

import json

from ytdnn.cli import main


def test_synth_writes_validated_parquet(data_dir, capsys):
    assert {p.name for p in data_dir.glob("*.parquet")} >= {"watches.parquet", "users.parquet", "items.parquet"}
    assert main(["data", "validate", str(data_dir)]) == 0
    assert "valid" in capsys.readouterr().out


def test_train_candidates_then_retrieve(data_dir, tmp_path, capsys):
    model = tmp_path / "model"
    args = ["train", "candidates", "--data", str(data_dir), "--out", str(model),
            "--set", "embedding_dim=16", "--set", "output_dim=16", "--set", "depth=1",
            "--set", "tower_widths=[32]", "--set", "train.max_epochs=1", "--set", "num_negatives=50"]
    assert main(args) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["candidate"]["tower_widths"] == [32] and config["train"]["max_epochs"] == 1
    assert (model / "candidate.safetensors").exists() and (model / "index").is_dir()
    capsys.readouterr()
    assert main(["retrieve", "--model", str(model), "--user", "3", "--k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].split()[0] == "1"


def test_unknown_setting_and_missing_model_are_clean_errors(data_dir, tmp_path, capsys):
    assert main(["train", "candidates", "--data", str(data_dir), "--out", str(tmp_path / "m"), "--set", "depht=2"]) == 2
    assert "unknown setting 'depht'" in capsys.readouterr().err
    assert main(["retrieve", "--model", str(tmp_path / "nothing"), "--user", "1"]) == 2
    assert "not a ytdnn model directory" in capsys.readouterr().err


def test_data_movielens_converts_and_an_empty_ratings_file_is_a_clean_error(tmp_path, capsys):
    from tests.movielens_files import write_ml100k

    root = write_ml100k(tmp_path / "ml-100k")
    assert main(["data", "movielens", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "3 watches" in capsys.readouterr().out
    (root / "u.data").write_text("")
    assert main(["data", "movielens", str(root), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ytdnn: error:") and "u.data" in err and len(err.strip().splitlines()) == 1


def test_data_validate_rejects_a_non_finite_watch_time_naming_the_file(tmp_path, capsys):
    import pyarrow as pa

    from ytdnn.data.schema import Dataset

    watches = pa.table({"user_id": pa.array([1, 2], pa.int64()), "item_id": pa.array([1, 2], pa.int64()),
                        "timestamp": pa.array([1, 2], pa.int64()), "watch_time": [1.0, float("nan")]})
    Dataset(watches).save(tmp_path / "d")
    assert main(["data", "validate", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "watches.parquet" in err and "watch_time" in err
