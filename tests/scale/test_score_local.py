"""`ytdnn score --engine local`: partitions of users score as the whole model serves (issue 18),
from the model's history or from the logs it was trained on (--data)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ytdnn.cli import main
from ytdnn.configuration import TwoStageConfig
from ytdnn.data.schema import Dataset
from ytdnn.pipeline import Recommender
from ytdnn.scale.score import history_rows, log_partitions, score_local, score_logs, score_partition
from ytdnn.training import train_all


def train_with_sources(data_dir: Path, out: Path) -> Path:
    """A two-stage model of the tiny world whose ranker reads EASE's and co-occurrence's
    candidates beside the generator's (pipeline.sources), trained in about a second."""
    small = {"candidates.embedding_dim": 16, "candidates.output_dim": 16, "candidates.depth": 0,
             "train.max_epochs": 1, "train.patience": None, "train.progress": False, "train.num_threads": 1,
             "ranker.tower": "none", "ranker_train.max_epochs": 1, "ranker_train.progress": False,
             "pipeline.num_candidates": 20, "pipeline.sources": "ease:10,cooc:10"}
    train_all(Dataset.load(data_dir), out, TwoStageConfig().with_settings(small))
    return out


@pytest.fixture(scope="module")
def sources_model(data_dir, tmp_path_factory):
    return train_with_sources(data_dir, tmp_path_factory.mktemp("sources-model"))


def forbid_history(monkeypatch) -> None:
    """Fail the test if anything in this process opens a model's history.npz."""
    load = np.load

    def guarded(file, *args, **kwargs):
        assert Path(file).name != "history.npz", "the model's whole history was read"
        return load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", guarded)


def assert_serves_every_user(model: Path, scored: Path, k: int) -> None:
    """``scored`` holds the model's own top k (Recommender.recommend_batch) of every user it knows."""
    rec = Recommender.load(model)
    want = sorted(rec.recommend_batch(rec.candidates.featurizer_.users_.tokens_, k=k), key=lambda r: r.user)
    got = pq.read_table(scored).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert got.column("user_id").to_pylist() == [r.user for r in want for _ in r.item_ids]
    assert got.column("item_id").to_pylist() == [i for r in want for i in r.item_ids.tolist()]
    # scored on the ranker's fast path: its scores equal the default path's to ~1e-6 relative
    np.testing.assert_allclose(got.column("score").to_numpy(), np.concatenate([r.scores for r in want]), rtol=1e-5)


def test_recommendations_are_the_recommenders_for_every_user(two_stage_model, tmp_path):
    users = Recommender.load(two_stage_model).candidates.featurizer_.users_.tokens_
    assert score_local(two_stage_model, "recommendations", tmp_path / "r.parquet", k=7) == 7 * len(users)
    assert_serves_every_user(two_stage_model, tmp_path / "r.parquet", k=7)


def test_user_and_item_vectors_are_the_models(two_stage_model, tmp_path):
    gen = Recommender.load(two_stage_model).candidates
    score_local(two_stage_model, "users", tmp_path / "u.parquet")
    users = pq.read_table(tmp_path / "u.parquet")
    want = gen.user_vectors(gen.user_rows(users.column("user_id")))
    np.testing.assert_array_equal(np.stack(users.column("vector").to_pylist()), want)
    score_local(two_stage_model, "items", tmp_path / "i.parquet")
    items = pq.read_table(tmp_path / "i.parquet")
    assert items.column("item_id").to_pylist() == gen.featurizer_.items_.tokens_
    np.testing.assert_array_equal(np.stack(items.column("vector").to_pylist()),
                                  gen.model_.item_vectors().detach().numpy()[1:])


def test_a_partition_needs_only_its_users_rows(two_stage_model):
    whole = Recommender.load(two_stage_model)
    [everyone] = list(history_rows(whole.candidates, 10_000))
    without_history = Recommender.load(two_stage_model, history=False)
    assert without_history.candidates.streams_ is None
    parts = [score_partition(without_history, "recommendations", rows) for rows in history_rows(whole.candidates, 37)]
    assert pa.concat_tables(parts).equals(score_partition(whole, "recommendations", everyone))


def test_the_training_logs_give_the_models_history_without_reading_it(two_stage_model, data_dir, tmp_path, monkeypatch):
    for what in ("users", "recommendations"):
        score_local(two_stage_model, what, tmp_path / f"{what}-history.parquet", k=5)
    forbid_history(monkeypatch)
    rec = Recommender.load(two_stage_model, history=False)
    for what in ("users", "recommendations"):
        score_local(two_stage_model, what, tmp_path / f"{what}-logs.parquet", k=5, data=data_dir)
        want = pq.read_table(tmp_path / f"{what}-history.parquet")
        assert pq.read_table(tmp_path / f"{what}-logs.parquet").equals(want)  # the same file, row for row
        parts = [score_logs(rec, what, *logs, k=5) for logs in log_partitions(rec.candidates, data_dir, 37)]
        assert len(parts) > 1 and pa.concat_tables(parts).equals(want)


def test_users_the_model_does_not_know_are_skipped(two_stage_model, data_dir, tmp_path):
    logs = Dataset.load(data_dir)
    stranger = logs.watches.slice(0, 3).set_column(0, "user_id", pa.array([10**9] * 3))
    Dataset(watches=pa.concat_tables([logs.watches, stranger]), searches=logs.searches, users=logs.users).save(tmp_path / "more")
    Dataset(watches=stranger).save(tmp_path / "strangers")
    score_local(two_stage_model, "recommendations", tmp_path / "a.parquet", data=data_dir)
    score_local(two_stage_model, "recommendations", tmp_path / "b.parquet", data=tmp_path / "more")
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    with pytest.raises(ValueError, match="no user of .* is known to the model"):
        score_local(two_stage_model, "recommendations", tmp_path / "c.parquet", data=tmp_path / "strangers")


def test_logs_without_watches_are_refused(two_stage_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["score", "--model", str(two_stage_model), "--what", "users", "--out", str(tmp_path / "u.parquet")]
    assert main([*argv, "--data", str(tmp_path / "empty")]) == 2
    assert "no watches.parquet in the data directory" in capsys.readouterr().err


def test_a_model_with_candidate_sources_scores_as_it_serves(sources_model, data_dir, tmp_path):
    assert [s.name for s, _ in Recommender.load(sources_model).sources] == ["ease", "cooc"]
    score_local(sources_model, "recommendations", tmp_path / "history.parquet", k=5)
    assert_serves_every_user(sources_model, tmp_path / "history.parquet", k=5)
    score_local(sources_model, "recommendations", tmp_path / "logs.parquet", k=5, data=data_dir)
    assert pq.read_table(tmp_path / "logs.parquet").equals(pq.read_table(tmp_path / "history.parquet"))
