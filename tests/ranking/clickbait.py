"""A tiny clickbait world with a planted answer, and a candidate generator trained on it.

Items 0..9 are "good" (channel "good"): clicked 20% of the time, watched 100 s when clicked, so
an impression earns 20 s in expectation and the weighted odds sum(T) / (N - k) are 100 * 0.2 / 0.8
= 25. Items 10..19 are "bait": clicked 50% of the time but watched 4 s, 2 s per impression and
odds 4 * 0.5 / 0.5 = 4. Click-through ranks bait first; watch time ranks good first.
"""

import numpy as np
import pyarrow as pa

NUM_USERS, PAGES_PER_USER, NUM_ITEMS = 30, 10, 20
GOOD, BAIT = np.arange(10), np.arange(10, 20)
CLICK = np.where(np.arange(NUM_ITEMS) < 10, 0.2, 0.5)
WATCH = np.where(np.arange(NUM_ITEMS) < 10, 100.0, 4.0)


def clickbait_world(seed: int = 0) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(NUM_USERS), PAGES_PER_USER * NUM_ITEMS)
    page = np.repeat(np.arange(NUM_USERS * PAGES_PER_USER), NUM_ITEMS)
    times = 1_000 * (page % PAGES_PER_USER + 1) + users  # one page per user every 1,000 s
    items = np.tile(np.arange(NUM_ITEMS), NUM_USERS * PAGES_PER_USER)
    clicked = rng.random(len(items)) < CLICK[items]
    watch_time = np.where(clicked, WATCH[items], 0.0)
    impressions = pa.table({
        "user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
        "timestamp": pa.array(times, pa.int64()), "clicked": pa.array(clicked),
        "watch_time": pa.array(watch_time), "page_id": pa.array(page, pa.int64()),
    })
    # a click is a watch a few seconds after the page: later than the page, never "earlier" history
    watches = pa.table({
        "user_id": pa.array(users[clicked], pa.int64()), "item_id": pa.array(items[clicked], pa.int64()),
        "timestamp": pa.array(times[clicked] + 5 + items[clicked], pa.int64()),
        "watch_time": pa.array(watch_time[clicked]),
    })
    users_table = pa.table({
        "user_id": pa.array(np.arange(NUM_USERS), pa.int64()),
        "language": ["en" if u % 2 else "fr" for u in range(NUM_USERS)],
    })
    items_table = pa.table({
        "item_id": pa.array(np.arange(NUM_ITEMS), pa.int64()),
        "channel": ["good" if i < 10 else "bait" for i in range(NUM_ITEMS)],
        "language": ["en"] * NUM_ITEMS,
        "categories": [["film", "long"] if i < 10 else ["short"] for i in range(NUM_ITEMS)],
        "upload_time": pa.array(np.zeros(NUM_ITEMS, np.int64)),
        "duration": pa.array(np.where(np.arange(NUM_ITEMS) < 10, 120.0, 10.0)),
        "title": [f"item {i}" for i in range(NUM_ITEMS)],
    })
    return {"watches": watches, "impressions": impressions, "users": users_table, "items": items_table}
