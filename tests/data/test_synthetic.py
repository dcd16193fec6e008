"""The synthetic world: determinism, schema, exact ground truth and the planted mechanisms.

Statistical checks use the tiny preset (about 5k watches) or a slightly larger custom world, with
margins several times the sampling noise, so they hold for any seed.
"""

import json

import numpy as np
import pytest

from ytdnn.data import synthetic_behaviour, synthetic_sessions
from ytdnn.data.schema import SCHEMAS, Dataset
from ytdnn.data.synthetic import DAY, SOURCES, World, WorldConfig, generate
from ytdnn.data.synthetic_config import AGE_GROUP_EDGES
from ytdnn.data.synthetic_entities import build_truth


@pytest.fixture(scope="module")
def tiny() -> World:
    return generate(WorldConfig.preset("tiny"))


@pytest.fixture(scope="module")
def medium() -> World:
    """Enough events for tight statistics, still about a second."""
    return generate(
        WorldConfig.preset(
            "tiny",
            num_users=600,
            num_items=600,
            num_watches=20_000,
            num_channels=60,
            num_topics=16,
            num_categories=4,
            seed=7,
        )
    )


def columns(world: World, table: str, *names: str) -> list[np.ndarray]:
    t = getattr(world.dataset, table)
    return [t.column(n).to_numpy(zero_copy_only=False) for n in names]


# --- configuration, determinism, schema


def test_presets_and_overrides():
    cfg = WorldConfig.preset("tiny", seed=3, num_watches=1_000)
    assert (cfg.seed, cfg.num_watches, cfg.num_users) == (3, 1_000, 200)
    large = WorldConfig.preset("large")
    assert (large.num_users, large.num_items, large.num_watches) == (100_000, 50_000, 5_000_000)
    with pytest.raises(ValueError, match="unknown world preset"):
        WorldConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown setting"):
        WorldConfig.preset("tiny", num_user=3)
    with pytest.raises(ValueError, match="page_rate"):
        WorldConfig.preset("tiny", page_rate=1.5)
    with pytest.raises(ValueError, match="num_channels"):
        WorldConfig.preset("tiny", num_channels=5)  # fewer channels than topics


def test_same_seed_gives_identical_tables_and_truth(tiny):
    again = generate(WorldConfig.preset("tiny"))
    for name, table in tiny.dataset.tables().items():
        assert table.equals(getattr(again.dataset, name)), name
    for name, values in tiny.truth.to_arrays().items():
        np.testing.assert_array_equal(values, getattr(again.truth, name), err_msg=name)
    np.testing.assert_array_equal(tiny.watch_source, again.watch_source)


def test_different_seed_gives_different_tables(tiny):
    other = generate(WorldConfig.preset("tiny", seed=1))
    for name in ("watches", "searches", "impressions", "users", "items"):
        assert not getattr(tiny.dataset, name).equals(getattr(other.dataset, name)), name


def test_threads_and_chunks_do_not_change_the_log(monkeypatch):
    monkeypatch.setattr(synthetic_sessions, "SESSION_CHUNK", 150)  # several chunks
    cfg = WorldConfig.preset("tiny", num_watches=3_000)
    one, two = generate(cfg, num_threads=1), generate(cfg, num_threads=2)
    for name, table in one.dataset.tables().items():
        assert table.equals(getattr(two.dataset, name)), name


def test_tables_follow_the_canonical_schema(tiny):
    tables = tiny.dataset.tables()
    assert set(tables) == {"watches", "searches", "impressions", "users", "items"}
    for name, table in tables.items():
        assert set(SCHEMAS[name].required) <= set(table.column_names), name
        for col in ("user_id", "item_id", "page_id", "timestamp", "upload_time"):
            if col in table.column_names:
                assert str(table.schema.field(col).type) == "int64", (name, col)
    Dataset(**tables).validate()  # raises on any violation
    cfg = tiny.config
    assert len(tiny.dataset.users) == cfg.num_users and len(tiny.dataset.items) == cfg.num_items
    assert abs(len(tiny.dataset.watches) - cfg.num_watches) < 0.1 * cfg.num_watches
    assert len(tiny.watch_source) == len(tiny.dataset.watches)
    assert set(np.unique(tiny.watch_source)) == set(range(len(SOURCES)))


def test_ids_are_dense_and_pages_numbered(tiny):
    (item,) = columns(tiny, "watches", "item_id")
    user, page = columns(tiny, "impressions", "user_id", "page_id")
    assert item.min() >= 0 and item.max() < tiny.config.num_items
    assert page[0] == 0 and np.all(np.diff(page) >= 0) and np.all(np.diff(page) <= 1)
    # one user per page, pages hold page_size_min..max distinct items (minus duplicates dropped)
    first = np.r_[0, np.flatnonzero(np.diff(page)) + 1]
    assert np.all(user == np.repeat(user[first], np.diff(np.r_[first, len(page)])))
    sizes = np.bincount(page)
    assert (
        sizes.max() <= tiny.config.page_size_max and np.median(sizes) >= tiny.config.page_size_min
    )


def test_some_demographics_are_missing_but_geo_never(medium):
    age, gender, geo = columns(medium, "users", "age", "gender", "geo")
    assert 0 < np.isnan(age).mean() < 0.15
    assert 0 < np.mean([g is None for g in gender]) < 0.15
    assert all(g is not None for g in geo)


def test_every_click_is_a_watch_in_the_log(tiny):
    # clicked impressions and the watches they led to share user, item and watch time
    user, item, ts, clicked, wt = columns(
        tiny, "impressions", "user_id", "item_id", "timestamp", "clicked", "watch_time"
    )
    w_user, w_item, w_ts, w_wt = columns(
        tiny, "watches", "user_id", "item_id", "timestamp", "watch_time"
    )
    from_page = tiny.watch_source == SOURCES.index("page")
    clicks = np.stack([user, item, wt, ts])[:, clicked]
    watches = np.stack([w_user, w_item, w_wt, w_ts])[:, from_page]
    clicks = clicks[:, np.lexsort(clicks[::-1])]
    watches = watches[:, np.lexsort(watches[::-1])]
    np.testing.assert_array_equal(clicks[:3], watches[:3])
    assert np.all(watches[3] >= clicks[3]) and np.all(watches[3] - clicks[3] < 4 * 3600)
    assert np.all(wt[~clicked] == 0) and np.all(wt[clicked] <= tiny.item_duration[item[clicked]])


# --- (f) time


def test_events_lie_in_the_window_and_after_uploads(tiny):
    window = tiny.config.window_s
    for table in ("watches", "searches", "impressions"):
        (ts,) = columns(tiny, table, "timestamp")
        assert ts.min() >= 0 and ts.max() < window, table
    for table in ("watches", "impressions"):
        item, ts = columns(tiny, table, "item_id", "timestamp")
        assert np.all(ts >= tiny.item_upload_time[item]), table
    upload = tiny.item_upload_time
    assert (upload < 0).any() and (upload >= 0).mean() > 0.5  # back catalogue + new uploads
    assert upload.max() > window * 0.9


def test_a_users_watches_never_share_a_second(tiny):
    user, ts = columns(tiny, "watches", "user_id", "timestamp")
    order = np.lexsort((ts, user))
    same_user = user[order][1:] == user[order][:-1]
    assert np.all(np.diff(ts[order])[same_user] >= 1)


# --- ground truth


def test_affinity_is_exactly_the_context_free_watch_distribution(tiny):
    # softmax over items of affinity(u, ., t) must match draws of the generator's sampler
    rng = np.random.default_rng(0)
    items = np.arange(tiny.config.num_items)
    for user, t in ((3, 5 * DAY), (100, 0.0), (17, 40.5 * DAY)):
        n = 40_000
        drawn = synthetic_behaviour.sample_items(
            tiny.truth, tiny.config, tiny.sampler, np.full(n, user), np.full(n, t), rng
        )
        empirical = np.bincount(drawn, minlength=len(items)) / n
        a = tiny.affinity(user, items, t)
        p = np.exp(a - a.max())
        p /= p.sum()
        assert 0.5 * np.abs(empirical - p).sum() < 0.03  # noise alone gives about 0.01


def test_affinity_broadcasts_and_is_minus_inf_before_upload(tiny):
    users, items = np.arange(5), np.arange(tiny.config.num_items)
    t = 10 * DAY
    grid = tiny.affinity(users[:, None], items[None, :], t)
    assert grid.shape == (5, len(items))
    np.testing.assert_allclose(grid[2], tiny.affinity(2, items, t))
    np.testing.assert_allclose(grid[:, 7], tiny.affinity(users, 7, np.full(5, t)))
    future = tiny.item_upload_time > t
    assert np.all(np.isneginf(grid[:, future])) and np.all(np.isfinite(grid[:, ~future]))
    assert np.all(tiny.click_probability(users[:, None], items[None, future], t) == 0)
    top = tiny.top_items(users, t, k=10)
    assert top.shape == (5, 10)
    best = np.take_along_axis(grid, top, axis=1)
    assert np.all(np.diff(best, axis=1) <= 0) and np.all(
        best[:, -1:] >= np.sort(grid, axis=1)[:, -10:-9]
    )
    with pytest.raises(ValueError, match="user ids"):
        tiny.affinity(tiny.config.num_users, 0, t)


def test_freshness_spikes_at_upload_and_decays_to_evergreen(tiny):
    cfg, item = tiny.config, 5
    up = tiny.item_upload_time[item]
    tau = cfg.freshness_days * DAY
    fresh = tiny.freshness(item, up + np.array([-1.0, 0.0, tau, 50 * tau]))
    expected = [0.0, 1.0, cfg.evergreen + (1 - cfg.evergreen) / np.e, cfg.evergreen]
    np.testing.assert_allclose(fresh, expected, atol=1e-9)


def test_expected_watch_time_matches_the_log(medium):
    user, item, ts, wt, clicked = columns(
        medium, "impressions", "user_id", "item_id", "timestamp", "watch_time", "clicked"
    )
    expected = medium.expected_watch_time(user, item, ts)
    assert abs(expected.mean() - wt.mean()) < 0.08 * wt.mean()
    assert (
        abs(medium.click_probability(user, item, ts).mean() - clicked.mean()) < 0.1 * clicked.mean()
    )
    if_clicked = medium.expected_watch_time_if_clicked(user[clicked], item[clicked])
    assert np.corrcoef(if_clicked, wt[clicked])[0, 1] > 0.5


# --- planted mechanisms


def test_a_searches_come_shortly_before_watches_of_their_topic(medium):
    s_user, s_ts, query = columns(medium, "searches", "user_id", "timestamp", "query")
    w_user, w_ts, w_item = columns(medium, "watches", "user_id", "timestamp", "item_id")
    token_topic = dict(zip(medium.vocabulary.tolist(), medium.token_topic.tolist()))
    searched = np.array([token_topic[q.split()[0]] for q in query])  # first word: a topic word
    order = np.lexsort((w_ts, w_user))
    key = w_user[order] * 10**8 + w_ts[order]
    nxt = np.searchsorted(key, s_user * 10**8 + s_ts)  # the user's first watch after the search
    ok = nxt < len(key)
    ok[ok] = w_user[order][nxt[ok]] == s_user[ok]
    watched = medium.item_topic[w_item[order][nxt[ok]]]
    base = np.sum((np.bincount(medium.item_topic[w_item]) / len(w_item)) ** 2)  # two random watches
    assert ok.mean() > 0.9 and np.mean(watched == searched[ok]) > max(0.7, 4 * base)
    assert np.median(w_ts[order][nxt[ok]] - s_ts[ok]) < 60  # seconds


def test_b_new_uploads_draw_a_spike_of_watches(medium):
    item, ts = columns(medium, "watches", "item_id", "timestamp")
    upload = medium.item_upload_time[item]
    new = upload >= 0
    age, left = ts[new] - upload[new], medium.config.window_s - upload[new]
    first_days = 3 * DAY
    share = np.mean(age < first_days)
    uniform = np.mean(np.minimum(first_days, left) / left)  # if watches ignored the upload time
    assert share > 2 * uniform


def test_c_next_watch_depends_on_the_previous_one(medium):
    user, ts, item = columns(medium, "watches", "user_id", "timestamp", "item_id")
    order = np.lexsort((ts, user))
    user, item = user[order], item[order]
    same = user[1:] == user[:-1]
    topic = medium.item_topic[item]
    chance = np.sum((np.bincount(topic) / len(topic)) ** 2)
    assert np.mean((topic[1:] == topic[:-1])[same]) > max(0.4, 4 * chance)
    # series are watched in upload order: episode n then n + 1, far more than n + 1 then n
    following = medium.item_next_in_channel
    forward = np.mean((following[item[:-1]] == item[1:])[same])
    backward = np.mean((following[item[1:]] == item[:-1])[same])
    assert forward > 0.05 and forward > 1.8 * backward


def test_d_watch_time_follows_affinity_but_clicks_also_follow_clickbait(medium):
    user, item, ts, clicked, wt = columns(
        medium, "impressions", "user_id", "item_id", "timestamp", "clicked", "watch_time"
    )
    c = clicked
    completion = wt[c] / medium.item_duration[item[c]]
    assert np.corrcoef(completion, medium.affinity(user[c], item[c], ts[c]))[0, 1] > 0.15
    assert np.corrcoef(completion, medium.interest(user[c], item[c]))[0, 1] > 0.35
    bait = medium.item_clickbait[item]
    assert np.corrcoef(clicked, bait)[0, 1] > 0.1  # clickbait draws clicks ...
    assert np.corrcoef(completion, bait[c])[0, 1] < -0.25  # ... and is not watched for long
    # so ranking by click probability and by expected watch time disagree
    t = 30 * DAY
    by_click = medium.top_items(np.arange(50), t, k=10, score="click_probability")
    by_time = medium.top_items(np.arange(50), t, k=10, score="expected_watch_time")
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(by_click, by_time)])
    assert overlap < 0.8


def test_e_demographics_carry_interest_signal():
    cfg = WorldConfig.preset("small", num_users=3_000)
    truth = build_truth(cfg, np.random.Generator(np.random.PCG64(cfg.seed)))
    main = truth.user_topics[:, 0]

    def same_main_topic(group):  # P(two users share their main topic | same group)
        num = den = 0.0
        for g in np.unique(group):
            counts = np.bincount(main[group == g]).astype(float)
            num += np.sum(counts * (counts - 1))
            den += counts.sum() * (counts.sum() - 1)
        return num / den

    base = same_main_topic(np.zeros(len(main), int))
    age_group = np.searchsorted(AGE_GROUP_EDGES, truth.user_age, side="right")
    assert same_main_topic(truth.user_geo) > 1.5 * base
    assert same_main_topic(age_group) > 1.2 * base
    assert same_main_topic(truth.user_geo * 10 + age_group) > 2.0 * base
    # and languages: most watches are in the user's language, although most items are not
    world = generate(WorldConfig.preset("tiny", num_users=400, num_watches=8_000))
    user, item = columns(world, "watches", "user_id", "item_id")
    own = world.user_language[user] == world.item_language[item]
    own_if_random = np.mean(world.user_language[user][:, None] == world.item_language[None, :])
    assert own.mean() > 1.5 * own_if_random


# --- persistence


def test_save_and_load_round_trip(tiny, tmp_path):
    tiny.save(tmp_path)
    for name in ("watches", "searches", "impressions", "users", "items"):
        assert (tmp_path / f"{name}.parquet").exists()
    assert json.loads((tmp_path / "world.json").read_text())["seed"] == tiny.config.seed
    loaded = World.load(tmp_path)
    assert loaded.config == tiny.config
    for name, table in tiny.dataset.tables().items():
        assert table.equals(getattr(loaded.dataset, name)), name
    for name, values in tiny.truth.to_arrays().items():
        np.testing.assert_array_equal(values, getattr(loaded.truth, name), err_msg=name)
    items = np.arange(tiny.config.num_items)
    np.testing.assert_array_equal(
        loaded.affinity(4, items, 9 * DAY), tiny.affinity(4, items, 9 * DAY)
    )
    assert Dataset.load(tmp_path).watches.equals(tiny.dataset.watches)
