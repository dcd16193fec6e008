"""A synthetic world too large to hold in memory, written to Parquet block by block of users.

    generate_to(WorldConfig.preset("scale-20m"), "data/scale-20m")   # ~20M watches, ~1 GB peak

The world's entities (topics, users, items, words) are drawn once, as ``generate`` draws them,
and are small (arrays over users and items). The events are then simulated for contiguous blocks
of users, each holding about ``block_watches`` watches: a block is simulated by the in-memory
generator on the truth restricted to its users, with its own generator seeded by (seed, block),
and its tables are appended to the Parquet files. Peak memory is then one block's events plus
the entities, whatever ``num_watches`` is.

Differences from ``generate`` on the same config (the tables are a different draw of the same
world, not the same rows): the log is sorted by (timestamp, user_id) within a block, not across
blocks; the ground truth is not saved (only world.json); page ids still count up from 0 across
the whole file. Users who join during the window and user activity follow the config, as there.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ytdnn.data.schema import WORLD_FILES, clear_dataset
from ytdnn.data.synthetic_config import WorldConfig
from ytdnn.data.synthetic_entities import Truth, build_truth
from ytdnn.data.synthetic_sampler import SegmentSampler
from ytdnn.data.synthetic_sessions import simulate
from ytdnn.data.synthetic_tables import build_dataset

BLOCK_WATCHES = 2_000_000  # a block's events take ~0.5 GB while simulated
CONFIG_FILE = WORLD_FILES[0]


def user_blocks(truth: Truth, cfg: WorldConfig, block_watches: int) -> list[np.ndarray]:
    """Contiguous ranges of user ids, each expected to hold <= ~block_watches watches (users are
    weighted by activity x time in the window, as the sessions are drawn)."""
    w = cfg.window_s
    live = truth.user_activity * (w - truth.user_join_time) / w  # [U]
    expected = np.cumsum(live) / live.sum() * cfg.num_watches  # [U] watches of users 0..u
    # block k holds the users whose running total is in (k b, (k + 1) b]: when num_watches is a
    # multiple of b, the last user ends the last block instead of opening one of its own (the
    # 1e-9 absorbs the running sum's rounding)
    block = np.maximum(np.ceil(expected / max(block_watches, 1) - 1e-9) - 1, 0).astype(np.int64)
    cuts = np.flatnonzero(np.diff(block)) + 1
    return [b for b in np.split(np.arange(cfg.num_users), cuts) if len(b)]


def generate_to(config: WorldConfig, out: str | Path, block_watches: int = BLOCK_WATCHES,
                num_threads: int | None = None) -> dict[str, int]:
    """Write the canonical tables of ``config``'s world under ``out`` (watches, searches,
    impressions, users, items .parquet, and world.json), one block of users at a time; returns
    the rows written per table."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clear_dataset(out)
    truth = build_truth(config, np.random.Generator(np.random.PCG64(config.seed)))
    sampler = SegmentSampler(truth, config)  # items only: shared by every block
    w = config.window_s
    live = truth.user_activity * (w - truth.user_join_time) / w
    writers: dict[str, pq.ParquetWriter] = {}
    rows: dict[str, int] = {}
    next_page = 0
    try:
        for b, users in enumerate(user_blocks(truth, config, block_watches)):
            sub = _restricted(truth, users)
            share = float(live[users].sum() / live.sum())
            # a block seed of its own: blocks must not replay each other's random streams
            seed = int(np.random.SeedSequence([config.seed, 3, b]).generate_state(1)[0] >> 1)
            cfg = replace(config, num_users=len(users), num_watches=max(1, round(config.num_watches * share)), seed=seed)
            rng = np.random.Generator(np.random.PCG64([config.seed, 3, b]))
            events = simulate(cfg, sub, sampler, rng, num_threads or 1)
            dataset, _ = build_dataset(cfg, sub, events, rng)
            for name, table in dataset.tables().items():
                if name == "items" and b:
                    continue  # the same items in every block
                if "user_id" in table.column_names:
                    table = table.set_column(table.schema.get_field_index("user_id"), "user_id",
                                             pc.add(table.column("user_id"), int(users[0])))
                if name == "impressions" and table.num_rows:
                    page = table.column("page_id")
                    table = table.set_column(table.schema.get_field_index("page_id"), "page_id", pc.add(page, next_page))
                    next_page += int(pc.max(page).as_py()) + 1
                if name not in writers:
                    writers[name] = pq.ParquetWriter(out / f"{name}.parquet", table.schema)
                writers[name].write_table(table)
                rows[name] = rows.get(name, 0) + table.num_rows
            del events, dataset
    finally:
        for writer in writers.values():
            writer.close()
    config.save(out / CONFIG_FILE)
    return rows


def _restricted(truth: Truth, users: np.ndarray) -> Truth:
    """``truth`` with its per-user arrays cut to ``users`` (row i = user users[i])."""
    return replace(truth, **{f.name: getattr(truth, f.name)[users] for f in fields(truth)
                             if f.name.startswith("user_")})
