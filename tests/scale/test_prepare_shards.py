"""`ytdnn prepare --engine local`: the examples written as shards are the in-memory examples (issue 18)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ytdnn.data.schema import Dataset
from ytdnn.samples.candidate import CandidateExamples, ExampleConfig
from ytdnn.samples.prepared import batch_from_rows
from ytdnn.samples.streams import Featurizer
from ytdnn.scale.prepare import prepare_local, read_manifest

SORT = [("user_id", "ascending"), ("key", "ascending")]


@pytest.fixture(scope="module")
def dataset(data_dir):
    return Dataset.load(data_dir)


def _examples(batch, featurizer):
    """(user row, label, watch bag, search bag, normalized age) of every example of a batch."""
    def split(ids, offsets):
        ends = offsets[1:].tolist() + [len(ids)]
        return [tuple(ids[a:b].tolist()) for a, b in zip(offsets.tolist(), ends)]
    watch, search = split(batch.watch_ids, batch.watch_offsets), split(batch.search_ids, batch.search_offsets)
    return [(int(batch.labels[i]), watch[i], search[i], float(batch.example_age[i]),
             tuple(batch.user_categorical[i].tolist()), tuple(batch.user_continuous[i].tolist()))
            for i in range(len(batch))]


def test_uncapped_shards_hold_exactly_the_in_memory_examples(dataset, tmp_path):
    cfg = ExampleConfig(max_examples_per_user=None, max_watch_history=7, max_search_history=5)
    manifest = prepare_local(dataset, tmp_path, cfg, seed=0, num_shards=3)
    _, featurizer, shards = read_manifest(tmp_path)
    assert len(shards) == 3 and manifest["num_examples"] == sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    got = _examples(batch_from_rows(pq.read_table(shards), featurizer), featurizer)

    f = Featurizer().fit(dataset.watches, dataset.searches, dataset.users)
    examples = CandidateExamples(f.streams(dataset.watches, dataset.searches, dataset.users), cfg, f)
    want = [e for b in examples.batches(10_000, np.random.default_rng(0)) for e in _examples(b, f)]
    assert len(want) == len(dataset.watches) == manifest["num_examples"]
    assert sorted(got) == sorted(want)


def test_the_cap_is_drawn_by_seed_whatever_the_sharding(dataset, tmp_path):
    cfg = ExampleConfig(max_examples_per_user=3, max_recent_watches=2)
    tables = {}
    for name, seed, shards in (("one", 5, 1), ("four", 5, 4), ("other seed", 6, 4)):
        prepare_local(dataset, tmp_path / name, cfg, seed=seed, num_shards=shards)
        tables[name] = pq.read_table(tmp_path / name / "candidates").sort_by(SORT)
    assert tables["one"].equals(tables["four"])
    per_user = np.bincount(tables["one"].column("user_id").to_numpy())
    watches = np.bincount(dataset.watches.column("user_id").to_numpy(), minlength=len(per_user))
    assert (per_user == np.minimum(watches, 3)).all()  # every watch's item is in the vocabulary
    assert not tables["one"].equals(tables["other seed"])
    assert tables["one"].num_rows == tables["other seed"].num_rows


def test_prepare_refuses_an_unordered_log(dataset, tmp_path):
    watches = dataset.watches
    no_times = pa.array([None] * len(watches), pa.int64())
    unordered = Dataset(watches.set_column(watches.column_names.index("timestamp"), "timestamp", no_times))
    with pytest.raises(ValueError, match="timestamped"):
        prepare_local(unordered, tmp_path)


def test_worker_processes_write_the_same_shards_as_one_process(dataset, tmp_path):
    cfg = ExampleConfig(max_examples_per_user=4)
    for workers in (1, 2):
        prepare_local(dataset, tmp_path / str(workers), cfg, seed=3, num_shards=4, num_workers=workers)
    one, two = (sorted((tmp_path / w / "candidates").glob("*.parquet")) for w in ("1", "2"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 4
    for a, b in zip(one, two):
        assert pq.read_table(a).equals(pq.read_table(b))  # file by file, row order included
