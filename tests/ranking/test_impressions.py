"""Impressions built from the candidate generator's top N, checked row by row against the log."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.schema import IMPRESSIONS, DataError, Dataset, validate_table
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import (
    ImpressionConfig,
    drop_last_watches,
    impressions_from_candidates,
    stacking_generator,
)
from ytdnn.train.config import TrainConfig


def ratings_log(seed=0, num_users=12, num_items=15, per_user=8):
    """Each user rates `per_user` distinct items at increasing times, two of them in one second."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        items = rng.choice(num_items, per_user, replace=False)
        times = 100 * np.arange(per_user) + 10 * u
        times[3] = times[2]  # a burst: two ratings at one second, as MovieLens has
        rows += [(u, int(i), int(t), float(rng.integers(1, 6))) for i, t in zip(items, times)]
    u, i, t, r = zip(*rows)
    return pa.table({"user_id": pa.array(u, pa.int64()), "item_id": pa.array(i, pa.int64()),
                     "timestamp": pa.array(t, pa.int64()), "watch_time": pa.array(r)})


@pytest.fixture(scope="module")
def built():
    watches = ratings_log()
    torch.manual_seed(0)
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=5, max_examples_per_user=None),
        TrainConfig(max_epochs=1, progress=False, num_threads=1),
    ).fit(watches)
    cfg = ImpressionConfig(num_candidates=4, horizon=2, requests_per_user=3, seed=1)
    return watches, impressions_from_candidates(gen, watches, cfg), cfg, gen


def test_pages_follow_the_log(built):
    watches, impressions, cfg, _ = built
    validate_table(impressions, IMPRESSIONS)
    log = {}
    for row in watches.to_pylist():
        log.setdefault(row["user_id"], []).append(row)
    pages = {}
    for row in impressions.to_pylist():
        pages.setdefault(row["page_id"], []).append(row)
    per_user = {}
    for rows in pages.values():
        user, t = rows[0]["user_id"], rows[0]["timestamp"]
        assert all(r["user_id"] == user and r["timestamp"] == t for r in rows) and len(rows) <= cfg.num_candidates
        history = sorted(log[user], key=lambda r: (r["timestamp"], r["item_id"]))
        earlier = [r for r in history if r["timestamp"] < t]
        later = [r for r in history if r["timestamp"] >= t][: cfg.horizon]
        assert earlier and any(r["timestamp"] == t for r in history)  # a request is at a watch
        assert not {r["item_id"] for r in rows} & {r["item_id"] for r in earlier}  # never re-shown
        next_time = {r["item_id"]: r["watch_time"] for r in later}
        for r in rows:
            assert r["clicked"] == (r["item_id"] in next_time)
            assert r["watch_time"] == (next_time[r["item_id"]] if r["clicked"] else 0.0)
        per_user[user] = per_user.get(user, 0) + 1
    assert max(per_user.values()) <= cfg.requests_per_user and len(per_user) == 12
    assert impressions["clicked"].to_numpy(zero_copy_only=False).any()


def test_the_same_seed_builds_the_same_impressions(built):
    watches, impressions, cfg, gen = built
    assert impressions_from_candidates(gen, watches, cfg).equals(impressions)


def test_unordered_logs_are_refused(built):
    watches, _, _, gen = built
    unordered = watches.set_column(2, "timestamp", pa.nulls(len(watches), pa.int64()))
    with pytest.raises(DataError):
        impressions_from_candidates(gen, unordered)


def test_subsampled_negatives_and_last_watch_requests(built):
    watches, _, _, gen = built
    cfg = ImpressionConfig(num_candidates=8, horizon=2, requests_per_user=3, negatives_per_page=2,
                           last_watches=3, seed=1)
    sampled = impressions_from_candidates(gen, watches, cfg)
    clicked = sampled["clicked"].to_numpy(zero_copy_only=False)
    pages = sampled["page_id"].to_numpy()
    assert np.all(np.bincount(pages[~clicked]) <= 2)  # <= 2 negatives per page, all positives kept
    rows = cfg.replace(negatives_per_page=None)
    everything = impressions_from_candidates(gen, watches, rows)
    assert clicked.sum() == everything["clicked"].to_numpy(zero_copy_only=False).sum()
    # every request time is among the user's last 3 watch times
    last = {}
    for r in watches.to_pylist():
        last.setdefault(r["user_id"], []).append(r["timestamp"])
    for u, t in zip(sampled["user_id"].to_pylist(), sampled["timestamp"].to_pylist()):
        assert t in sorted(last[u])[-3:]


def test_drop_last_watches_keeps_the_rest_in_row_order():
    watches = pa.table({"user_id": ["a", "a", "b", "a", "a"], "item_id": pa.array([7, 2, 5, 9, 4], pa.int64()),
                        "timestamp": pa.array([5, 1, 8, 3, 3], pa.int64())})
    # a in (time, item) order: (1, 2) (3, 4) (3, 9) (5, 7); b has one watch
    kept = drop_last_watches(watches, 2)
    assert kept.to_pydict() == {"user_id": ["a", "a"], "item_id": [2, 4], "timestamp": [1, 3]}
    assert drop_last_watches(watches, 0).equals(watches)


def test_stacking_generator_never_sees_the_last_watches(built):
    watches, _, _, gen = built
    stacked = stacking_generator(gen, Dataset(watches), drop_last_watches(watches, 3))
    assert len(stacked.streams_.watch_items) == len(watches) - 3 * 12  # every user has 8 watches
    assert stacked.model_cfg == gen.model_cfg and stacked.example_cfg == gen.example_cfg
    assert len(stacked.history_.epochs) == len(gen.history_.epochs)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        ImpressionConfig(num_candidates=0)
    with pytest.raises(ValueError):
        ImpressionConfig(negatives_per_page=0)
    with pytest.raises(ValueError, match="source"):
        ImpressionConfig(source="shown")
