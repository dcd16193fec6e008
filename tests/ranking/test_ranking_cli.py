"""`ytdnn train all`, `train ranker` and `recommend` on the tiny synthetic world."""

import json

from ytdnn.cli import main

CANDIDATES = ["--set", "embedding_dim=8", "--set", "output_dim=8", "--set", "depth=0",
              "--set", "train.max_epochs=1", "--set", "train.patience=null", "--set", "num_negatives=50",
              "--set", "train.progress=false"]
RANKER = ["ranker.tower=none", "ranker_train.max_epochs=1", "ranker_train.progress=false",
          "ranker_train.batch_size=512"]


def test_train_all_then_recommend(data_dir, tmp_path, capsys):
    model = tmp_path / "model"
    ranker_flags = [flag for setting in RANKER for flag in ("--set", setting)]
    args = ["train", "all", "--data", str(data_dir), "--out", str(model), *CANDIDATES, *ranker_flags,
            "--num-candidates", "50"]
    assert main(args) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "ytdnn.recommender" and config["num_candidates"] == 50
    # the model directory records every setting of both stages, as `config show --model` prints
    assert config["settings"]["ranker"]["tower"] == "none" and config["settings"]["candidates"]["embedding_dim"] == 8
    capsys.readouterr()
    assert main(["config", "show", "--model", str(model)]) == 0
    shown = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert shown["ranker.tower"] == '"none"' and shown["pipeline.num_candidates"] == "50"
    capsys.readouterr()
    assert main(["recommend", "--model", str(model), "--user", "3", "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "1" and "ranker" in lines[0]
    assert "part" in lines[0]  # the synthetic titles read "... part N"


def test_train_ranker_next_to_a_candidates_model(data_dir, tmp_path, capsys):
    model = tmp_path / "cands"
    assert main(["train", "candidates", "--data", str(data_dir), "--out", str(model), *CANDIDATES]) == 0
    ranker_flags = [flag for setting in RANKER for flag in ("--set", setting)]
    assert main(["train", "ranker", "--data", str(data_dir), "--model", str(model), *ranker_flags]) == 0
    assert (model / "ranker" / "config.json").exists()
    capsys.readouterr()
    assert main(["recommend", "--model", str(model), "--user", "5", "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_recommend_errors_are_clean(tmp_path, capsys):
    assert main(["recommend", "--model", str(tmp_path / "nothing"), "--user", "1"]) == 2
    assert "not a ytdnn model directory" in capsys.readouterr().err
