"""`ytdnn train` with train.tensorboard / ranker_train.tensorboard: curves under each stage's tb/."""

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ytdnn.cli import main

CANDIDATES = ["embedding_dim=8", "output_dim=8", "depth=0", "num_negatives=50", "train.max_epochs=2",
              "train.patience=null", "train.progress=false", "train.log_every=2", "train.tensorboard=true"]
RANKER = ["ranker.tower=none", "ranker_train.max_epochs=2", "ranker_train.progress=false",
          "ranker_train.batch_size=512", "ranker_train.log_every=2", "ranker_train.tensorboard=true"]
STEP_TAGS = {"train/loss", "train/lr", "train/examples_per_second"}
EPOCH_TAGS = {"epoch/train_loss", "epoch/lr", "epoch/examples_per_second"}


def flags(settings: list[str]) -> list[str]:
    return [flag for setting in settings for flag in ("--set", setting)]


def scalars(tb_dir) -> dict[str, list[float]]:
    """Every scalar tag of the event files in tb_dir, with its values in step order."""
    assert list(tb_dir.glob("events.out.tfevents.*")), f"no event files in {tb_dir}"
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_train_candidates_then_ranker_write_their_curves(data_dir, tmp_path, capsys):
    model = tmp_path / "cands"
    assert main(["train", "candidates", "--data", str(data_dir), "--out", str(model), *flags(CANDIDATES)]) == 0
    assert main(["train", "ranker", "--data", str(data_dir), "--model", str(model), *flags(RANKER)]) == 0
    candidates = scalars(model / "tb")
    assert STEP_TAGS | EPOCH_TAGS <= set(candidates)
    assert len(candidates["epoch/train_loss"]) == 2  # one point per epoch
    assert all(v > 0 and math.isfinite(v) for v in candidates["train/examples_per_second"])
    ranker = scalars(model / "ranker" / "tb")  # the ranker's own directory: its checkpoints lie there too
    assert STEP_TAGS | EPOCH_TAGS | {"val/weighted_per_user_loss"} <= set(ranker)
    page_loss = ranker["val/weighted_per_user_loss"]
    assert len(page_loss) == 2 and all(0 <= v <= 1 for v in page_loss)  # a share of watch time
    assert ranker["train/lr"][0] == pytest.approx(1e-3)  # ranker_train.lr's default
    # the ranker now resumes from its checkpoint like the generator: another tower is a clean error
    other = ["train", "ranker", "--data", str(data_dir), "--model", str(model), *flags(RANKER + ["ranker.tower=8"])]
    assert main(other) == 2
    assert "holds another model" in capsys.readouterr().err


def test_train_all_writes_each_stage_into_its_directory_and_only_when_switched_on(data_dir, tmp_path):
    model = tmp_path / "both"
    quick = ["train.max_epochs=1", "ranker_train.max_epochs=1", "train.tensorboard=false"]  # later --set wins
    args = ["train", "all", "--data", str(data_dir), "--out", str(model), *flags(CANDIDATES + RANKER + quick),
            "--num-candidates", "50"]
    assert main(args) == 0
    assert (model / "candidates" / "config.json").exists() and not (model / "candidates" / "tb").exists()
    assert "val/weighted_per_user_loss" in scalars(model / "ranker" / "tb")
    assert main(["recommend", "--model", str(model), "--user", "3", "--k", "2"]) == 0  # still serves
