"""The candidate generator's own validation split and its training-health warnings."""

import warnings

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.candidates import CandidateGenerator, TrainingHealthWarning
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.protocols import HOLDOUT, holdout_split
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig


def test_holdout_split_holds_out_each_users_last_watch():
    # user 1: items 10, 11, 12 at t=1, 2, 3 -> 12 held out; user 2 has 2 items: only trains
    watches = pa.table({"user_id": [1, 1, 1, 2, 2], "item_id": [11, 10, 12, 10, 11],
                        "timestamp": pa.array([2, 1, 3, 5, 6], pa.int64())})
    split = holdout_split(watches)
    assert split.protocol == HOLDOUT and len(split.test) == 0
    valid = split.valid
    assert split.user_ids.take(pa.array(valid.user_idx)).to_pylist() == [1]
    assert split.item_ids.take(pa.array(valid.item_idx)).to_pylist() == [12]
    assert len(split.train) == 4


def test_holdout_split_of_an_unordered_log_draws_a_share_per_user():
    users = np.repeat([1, 2, 3], [20, 10, 2])
    watches = pa.table({"user_id": users, "item_id": np.arange(len(users)),
                        "timestamp": pa.nulls(len(users), pa.int64())})
    split = holdout_split(watches, seed=4, share=0.1)
    held = np.bincount(split.valid.user_idx, minlength=3)
    assert held.tolist() == [2, 1, 0]  # 10% of 20, at least 1 of 10, none of a 2-item user
    other = holdout_split(watches, seed=5, share=0.1)
    assert sorted(other.valid.item_idx) != sorted(split.valid.item_idx)  # the seed draws


def _generator(**train):
    return CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=20),
        TrainConfig(**{"lr": 3e-3, "progress": False, "num_threads": 1, **train}),
    )


def test_patience_without_validation_chooses_epochs_on_its_own_split_then_refits():
    d = generate(WorldConfig.preset("tiny", seed=2)).dataset
    gen = _generator(max_epochs=6, patience=2).fit(d.watches, d.searches, d.users)
    sel = gen.selection_
    assert sel["split"].startswith(HOLDOUT) and 1 <= sel["epochs"] <= 6
    assert sel["valid"]["Recall@20"] > sel["popularity"]["Recall@20"]  # it learned something
    # the refit ran exactly the chosen number of epochs on the whole log
    assert len(gen.history_.epochs) == sel["epochs"]
    assert gen.featurizer_.num_items - 1 == len(set(d.watches.column("item_id").to_pylist()))


def test_a_diverging_run_warns_with_its_figures():
    d = generate(WorldConfig.preset("tiny", seed=2)).dataset
    with pytest.warns(TrainingHealthWarning, match="rose|far above|below popularity"):
        _generator(max_epochs=3, lr=5.0, patience=1).fit(d.watches)


def test_a_healthy_run_does_not_warn():
    d = generate(WorldConfig.preset("tiny", seed=2)).dataset
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)
        _generator(max_epochs=2).fit(d.watches, d.searches, d.users)


def test_auto_chooses_the_better_settings_on_its_own_split_and_records_them(monkeypatch, tmp_path):
    from ytdnn import training
    from ytdnn.configuration import TwoStageConfig

    d = generate(WorldConfig.preset("tiny", seed=2)).dataset
    small = {"candidates.embedding_dim": 16, "candidates.output_dim": 16, "candidates.depth": 0,
             "train.max_epochs": 4, "train.progress": False, "train.num_threads": 1}
    # a choice blind to the watch history cannot find the next watch as well as one that sees it
    monkeypatch.setattr(training, "AUTO_CHOICES", {
        "blind": {"candidates.use_watches": False, "candidates.use_searches": False},
        "sighted": {"examples.max_watch_history": 20}})
    rec = training.train_all(d, tmp_path / "m", TwoStageConfig().with_settings(
        {**small, "ranker.tower": "none", "ranker_train.max_epochs": 1, "ranker_train.progress": False}), auto=True)
    auto = rec.candidates.selection_["auto"]
    assert auto["chosen"] == "sighted" and set(auto["valid"]) == {"blind", "sighted"}
    assert auto["valid"]["sighted"]["Recall@20"] > auto["valid"]["blind"]["Recall@20"]
    assert len(rec.candidates.history_.epochs) == auto["epochs"]  # the refit ran the chosen epochs
    assert rec.candidates.example_cfg.max_watch_history == 20
    saved = TwoStageConfig.load(tmp_path / "m" / "config.json")  # the model records what was chosen
    assert saved.examples.max_watch_history == 20
