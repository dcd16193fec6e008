"""The chunked synthetic generator (issue 18): a world written block by block of users is one
consistent world, the same for the same seed."""

import numpy as np
import pyarrow.compute as pc
import pytest

from ytdnn.data.schema import Dataset
from ytdnn.data.synthetic_chunked import generate_to, user_blocks
from ytdnn.data.synthetic_config import PRESETS, SCALE_WATCHES_PER_USER, WorldConfig
from ytdnn.data.synthetic_entities import build_truth
from ytdnn.data.synthetic_sampler import SegmentSampler
from ytdnn.data.synthetic_sessions import simulate
from ytdnn.data.synthetic_tables import build_dataset


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chunked")
    rows = generate_to(WorldConfig.preset("tiny"), out, block_watches=1_500)  # ~4 blocks of 50 users
    return out, rows


def test_blocks_cover_every_user_once_in_order():
    cfg = WorldConfig.preset("tiny")
    truth = build_truth(cfg, np.random.Generator(np.random.PCG64(cfg.seed)))
    blocks = user_blocks(truth, cfg, 1_500)
    assert len(blocks) >= 3
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(cfg.num_users))


def test_a_log_of_whole_blocks_has_no_block_of_one_user():
    cfg = WorldConfig.preset("tiny")
    truth = build_truth(cfg, np.random.Generator(np.random.PCG64(cfg.seed)))
    blocks = user_blocks(truth, cfg, cfg.num_watches // 4)  # the log is exactly 4 blocks
    assert len(blocks) == 4 and min(len(b) for b in blocks) > 10
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(cfg.num_users))


def test_a_block_of_users_without_pages_keeps_its_watches():
    cfg = WorldConfig.preset("tiny")
    truth = build_truth(cfg, np.random.Generator(np.random.PCG64(cfg.seed)))
    events = simulate(cfg, truth, SegmentSampler(truth, cfg), np.random.Generator(np.random.PCG64(1)))
    events.impression = {k: v[:0] for k, v in events.impression.items()}  # no page was shown
    events.watch["page"][:] = -1
    dataset, _ = build_dataset(cfg, truth, events, np.random.Generator(np.random.PCG64(2)))
    in_window = int((events.watch["time"] < cfg.window_s).sum())
    assert dataset.watches.num_rows == in_window > 0 and dataset.impressions.num_rows == 0


def test_blocks_form_one_valid_world(world_dir):
    out, rows = world_dir
    data = Dataset.load(out)  # validates every table
    cfg = WorldConfig.preset("tiny")
    assert rows == {name: len(t) for name, t in data.tables().items()}
    np.testing.assert_array_equal(data.users.column("user_id").to_numpy(), np.arange(cfg.num_users))
    assert len(data.items) == cfg.num_items  # written once, not once per block
    watchers = np.unique(data.watches.column("user_id").to_numpy())
    assert watchers.max() < cfg.num_users and len(watchers) > 0.8 * cfg.num_users  # every block's users
    assert abs(len(data.watches) - cfg.num_watches) < 0.15 * cfg.num_watches
    pages = data.impressions.column("page_id").to_numpy()
    assert len(np.unique(pages)) == pages.max() + 1  # page ids go on counting across blocks
    # one page belongs to one user, across blocks too
    per_page = data.impressions.group_by("page_id").aggregate([("user_id", "count_distinct")])
    assert pc.max(per_page.column("user_id_count_distinct")).as_py() == 1


def test_same_seed_same_tables(world_dir, tmp_path):
    out, _ = world_dir
    generate_to(WorldConfig.preset("tiny"), tmp_path, block_watches=1_500)
    a, b = Dataset.load(out), Dataset.load(tmp_path)
    for name, table in a.tables().items():
        assert table.equals(getattr(b, name)), name


def test_scale_presets_grow_users_with_the_log():
    for n in (1, 5, 20):
        preset = PRESETS[f"scale-{n}m"]
        assert preset["num_watches"] == n * 1_000_000
        assert preset["num_watches"] / preset["num_users"] == SCALE_WATCHES_PER_USER
        assert preset["num_items"] == PRESETS["large"]["num_items"]


def test_cli_writes_a_chunked_world(tmp_path, capsys):
    from ytdnn.cli import main

    assert main(["data", "synth", "--preset", "tiny", "--chunked", "--out", str(tmp_path)]) == 0
    assert "watches" in capsys.readouterr().out
    assert WorldConfig.load(tmp_path / "world.json") == WorldConfig.preset("tiny")
    assert len(Dataset.load(tmp_path).users) == PRESETS["tiny"]["num_users"]
