"""Training streams prepared shards: every example once per epoch, memory bounded by the shuffle
buffer, deterministic and resumable (issue 18)."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.schema import Dataset
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.shards import ShardStream
from ytdnn.scale.prepare import prepare_local, read_manifest
from ytdnn.train.config import TrainConfig

EXAMPLES = ExampleConfig(max_examples_per_user=30, max_watch_history=10)


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare_local(data_dir, out, EXAMPLES, seed=0, num_shards=3, row_group_rows=64)
    return out


def _labels(stream, seed):
    return [b.labels.numpy() for b in stream.epoch(torch.Generator().manual_seed(seed))]


def test_an_epoch_is_every_example_once_in_a_seeded_order(prepared):
    _, featurizer, shards = read_manifest(prepared)
    stream = ShardStream(shards, featurizer, batch_size=50, buffer_size=300)
    everything = np.sort(pq.read_table(shards).column("label").to_numpy())
    first, again, other = _labels(stream, 1), _labels(stream, 1), _labels(stream, 2)
    assert len(stream) == len(everything) and all(len(b) == 50 for b in first[:-1])
    np.testing.assert_array_equal(np.sort(np.concatenate(first)), everything)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))


def test_rows_in_memory_are_bounded_by_the_buffer_not_the_log(prepared, monkeypatch):
    _, featurizer, shards = read_manifest(prepared)
    read = []
    original = pq.ParquetFile.read_row_group

    def counting(self, i, *args, **kwargs):
        table = original(self, i, *args, **kwargs)
        read.append(table.num_rows)
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    stream = ShardStream(shards, featurizer, batch_size=20, buffer_size=100)
    largest_group = max(pq.ParquetFile(s).metadata.row_group(g).num_rows
                        for s in shards for g in range(pq.ParquetFile(s).num_row_groups))
    given, most = 0, 0
    for batch in stream.epoch(torch.Generator().manual_seed(0)):
        most = max(most, sum(read) - given)  # rows read and not yet handed out
        given += len(batch)
    assert given == len(stream) > 3 * (100 + largest_group)  # the log is larger than the bound
    assert most <= 100 + largest_group


def _generator(epochs):
    return CandidateGenerator(CandidateConfig(embedding_dim=8, output_dim=8, depth=0), EXAMPLES,
                              TrainConfig(max_epochs=epochs, batch_size=64, progress=False, num_threads=1))


def test_training_from_shards_is_deterministic_and_resumes(prepared, data_dir, tmp_path):
    d = Dataset.load(data_dir)
    whole = _generator(2).fit_prepared(prepared, d.watches, d.searches, d.users, out_dir=tmp_path / "a")
    _generator(1).fit_prepared(prepared, d.watches, d.searches, d.users, out_dir=tmp_path / "b")
    resumed = _generator(2).fit_prepared(prepared, d.watches, d.searches, d.users, out_dir=tmp_path / "b")
    again = _generator(2).fit_prepared(prepared, d.watches, d.searches, d.users)
    for other in (resumed, again):
        for name, tensor in whole.model_.state_dict().items():
            torch.testing.assert_close(other.model_.state_dict()[name], tensor, rtol=0, atol=0)
    assert whole.featurizer_.items_.tokens_ == read_manifest(prepared)[1].items_.tokens_
    with pytest.raises(ValueError, match="other example settings"):
        CandidateGenerator(examples=ExampleConfig()).fit_prepared(prepared, d.watches)


def test_training_from_shards_alone_reads_no_log_and_scores_from_the_logs(prepared, data_dir, tmp_path, capsys):
    from ytdnn.cli import main
    from ytdnn.scale.score import score_local

    d = Dataset.load(data_dir)
    with_logs = _generator(1).fit_prepared(prepared, d.watches, d.searches, d.users)
    alone = _generator(1).fit_prepared(prepared, None)
    for name, tensor in with_logs.model_.state_dict().items():  # the history never reaches the weights
        torch.testing.assert_close(alone.model_.state_dict()[name], tensor, rtol=0, atol=0)
    assert len(alone.streams_.watch_items) == 0 and len(with_logs.streams_.watch_items) == d.watches.num_rows
    with_logs.save(tmp_path / "with-logs")
    alone.save(tmp_path / "alone")
    for model in ("with-logs", "alone"):  # each user's history built from the logs: the same vectors
        score_local(tmp_path / model, "users", tmp_path / f"{model}.parquet", data=data_dir)
    assert pq.read_table(tmp_path / "alone.parquet").equals(pq.read_table(tmp_path / "with-logs.parquet"))

    small = ["--set", "candidates.embedding_dim=8", "--set", "candidates.output_dim=8", "--set", "depth=0",
             "--set", "train.max_epochs=1", "--set", "train.progress=false",
             "--set", "examples.max_examples_per_user=30", "--set", "examples.max_watch_history=10"]
    assert main(["train", "candidates", "--examples", str(prepared), "--out", str(tmp_path / "cli"), *small]) == 0
    assert "model written to" in capsys.readouterr().out
    assert main(["train", "candidates", "--out", str(tmp_path / "neither"), *small]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["train", "ranker", "--data", str(data_dir), "--model", str(tmp_path / "cli"), *small]) == 2
    assert "keeps no history" in capsys.readouterr().err  # its features would read empty histories
    # serving it without histories would give every user one list: said, and refused where it would be written
    assert main(["retrieve", "--model", str(tmp_path / "cli"), "--user", "3", "--k", "2"]) == 0
    assert "keeps no history" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path / "cli"), "--what", "recommendations",
                 "--out", str(tmp_path / "recs.parquet")]) == 2
    assert "pass the logs with --data" in capsys.readouterr().err and not (tmp_path / "recs.parquet").exists()
