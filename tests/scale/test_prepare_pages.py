"""`ytdnn prepare --model GENERATOR`: the ranker's built pages, written as shards by either engine,
are the pages ranker training builds in memory (issue 18)."""

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.candidates import CandidateGenerator
from ytdnn.cli import main
from ytdnn.data.schema import IMPRESSIONS, Dataset, validate_table
from ytdnn.pipeline import Recommender, generator_dir
from ytdnn.samples.impressions import ImpressionConfig, impressions_from_candidates
from ytdnn.scale.prepare import PageJob, prepare_local, read_pages

PAGE_CFG = ImpressionConfig(num_candidates=30, horizon=3, requests_per_user=4, negatives_per_page=5, seed=3)


@pytest.fixture(scope="module")
def dataset(data_dir):
    return Dataset.load(data_dir)


@pytest.fixture(scope="module")
def in_memory(dataset, two_stage_model):
    """The pages ranker training builds for PAGE_CFG, with the whole log in memory."""
    generator = CandidateGenerator.load(generator_dir(two_stage_model))
    return impressions_from_candidates(generator, dataset.watches, PAGE_CFG, dataset.searches, dataset.users)


def pages_as_sets(table: pa.Table) -> set:
    """{(user, time, frozenset of (item, clicked, watch time))}: the pages, whatever their ids."""
    pages: dict = {}
    for row in table.to_pylist():
        page = pages.setdefault(row["page_id"], [row["user_id"], row["timestamp"], set()])
        assert (page[0], page[1]) == (row["user_id"], row["timestamp"])  # one request per page
        page[2].add((row["item_id"], row["clicked"], row["watch_time"]))
    return {(u, t, frozenset(items)) for u, t, items in pages.values()}


def test_prepared_pages_are_the_in_memory_pages(dataset, two_stage_model, in_memory, tmp_path):
    manifest = prepare_local(dataset, tmp_path, seed=0, num_shards=3, num_workers=2,
                             pages=PageJob.of(two_stage_model, PAGE_CFG))
    built, pages = read_pages(tmp_path)
    validate_table(pages, IMPRESSIONS)
    assert manifest["pages"] == built and built["num_rows"] == pages.num_rows == in_memory.num_rows
    assert built["impressions"] == PAGE_CFG.to_dict()
    assert pages_as_sets(pages) == pages_as_sets(in_memory)
    clicked = in_memory["clicked"].to_numpy(zero_copy_only=False)
    per_page = np.bincount(in_memory["page_id"].to_numpy()[~clicked])
    assert clicked.any() and per_page.max() == PAGE_CFG.negatives_per_page


def test_pages_do_not_depend_on_the_sharding_and_follow_the_seed(dataset, two_stage_model, in_memory, tmp_path):
    one = prepare_local(dataset, tmp_path / "one", num_shards=1, num_workers=1,
                        pages=PageJob.of(two_stage_model, PAGE_CFG))
    assert one["pages"]["num_rows"] == in_memory.num_rows
    assert pages_as_sets(read_pages(tmp_path / "one")[1]) == pages_as_sets(in_memory)
    other = PAGE_CFG.replace(seed=4)
    prepare_local(dataset, tmp_path / "other", num_shards=2, pages=PageJob.of(two_stage_model, other))
    assert pages_as_sets(read_pages(tmp_path / "other")[1]) != pages_as_sets(in_memory)


def test_settings_that_pages_cannot_serve_are_refused(two_stage_model, tmp_path):
    with pytest.raises(ValueError, match="stacking generator"):
        PageJob.of(two_stage_model, PAGE_CFG.replace(last_watches=2))
    with pytest.raises(ValueError, match="one sample"):
        PageJob.of(two_stage_model, PAGE_CFG.replace(samples=2))
    with pytest.raises(ValueError, match="config.json"):
        PageJob.of(tmp_path)  # not a model directory
    (tmp_path / "prepare.json").write_text('{"format": "ytdnn.prepared"}')
    with pytest.raises(ValueError, match="holds no ranker pages"):
        read_pages(tmp_path)


def test_the_ranker_trains_from_prepared_pages_on_the_command_line(data_dir, two_stage_model, tmp_path, capsys):
    small = ["--set", "ranker.tower=none", "--set", "ranker_train.max_epochs=1", "--set", "ranker_train.progress=false",
             "--set", "impressions.source=built", "--set", "impressions.num_candidates=30"]
    assert main(["prepare", "--data", str(data_dir), "--out", str(tmp_path / "prep"), "--model", str(two_stage_model),
                 "--shards", "2", *small]) == 0
    assert "rows of ranker pages built by" in capsys.readouterr().out
    assert main(["train", "ranker", "--data", str(data_dir), "--model", str(two_stage_model),
                 "--examples", str(tmp_path / "prep"), "--out", str(tmp_path / "model"), *small]) == 0
    rec = Recommender.load(tmp_path / "model")
    assert rec.ranker is not None and len(rec.recommend(rec.candidates.featurizer_.users_.tokens_[0], k=5).item_ids) == 5
    assert main(["train", "ranker", "--data", str(data_dir), "--model", str(two_stage_model),
                 "--examples", str(tmp_path / "prep"), "--out", str(tmp_path / "other"), "--sources", "cooc:10",
                 *small]) == 2
    assert "they serve neither" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_spark_writes_the_local_pages(spark, data_dir, two_stage_model, in_memory, tmp_path):
    from ytdnn.scale.spark import prepare_spark

    manifest = prepare_spark(spark, data_dir, tmp_path, num_shards=2, pages=PageJob.of(two_stage_model, PAGE_CFG))
    built, pages = read_pages(tmp_path)
    assert manifest["pages"] == built and built["num_rows"] == in_memory.num_rows
    assert [(f.name, f.type) for f in pages.schema] == [(f.name, f.type) for f in in_memory.schema]
    assert pages_as_sets(pages) == pages_as_sets(in_memory)
