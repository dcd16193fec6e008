"""Seeding the event store with the training history, and the fresh-and-popular list."""

import numpy as np
import pyarrow as pa
import pytest

from ytdnn.pipeline import Recommender
from ytdnn.serve.popular import PopularItems
from ytdnn.serve.seed import oov_placeholder, open_event_store, training_events

USERS = [3, 17, 42, 46, 150]


@pytest.fixture(scope="module")
def rec(tiny_world_model):
    return Recommender.load(tiny_world_model[1])


def test_training_events_give_back_every_watch_in_order(rec, tiny_world_model):
    d, _ = tiny_world_model
    watches, searches = training_events(rec.candidates)
    assert len(watches) == len(d.watches) and watches.column_names == ["user_id", "item_id", "timestamp"]
    original = sorted(zip(*(d.watches.column(c).to_pylist() for c in ("user_id", "item_id", "timestamp"))))
    assert sorted(zip(*(watches.column(c).to_pylist() for c in watches.column_names))) == original
    assert searches is not None and len(searches) == len(d.searches)


def test_a_seeded_store_serves_what_the_training_log_serves(rec, tmp_path):
    store, seeded = open_event_store(tmp_path / "events.sqlite", rec)
    assert seeded["watches"] == len(rec.candidates.streams_.watch_items) and seeded["searches"] > 0
    histories = [store.history(u, limit=500) for u in USERS]
    from_store = rec.recommend_batch(USERS, k=10, histories=histories)
    from_log = rec.recommend_batch(USERS, k=10)
    for a, b in zip(from_store, from_log):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    store.close()
    again, seeded = open_event_store(tmp_path / "events.sqlite", rec)  # an existing store is kept
    assert seeded == {} and again.count()["watches"] == len(rec.candidates.streams_.watch_items)
    again.close()


def test_a_store_is_seeded_from_canonical_tables_when_given(rec, tiny_world_model, tmp_path):
    d, _ = tiny_world_model
    d.save(tmp_path / "data")
    store, seeded = open_event_store(None, rec, data_dir=tmp_path / "data")
    assert seeded == {"watches": len(d.watches), "searches": len(d.searches)}
    user = d.watches.column("user_id")[0].as_py()
    times = [w.watch_time for w in store.watches(user)]
    assert all(t is not None for t in times)  # the tables keep watch times; the model does not


def test_the_oov_placeholder_is_out_of_vocabulary(rec):
    items = rec.candidates.featurizer_.items_
    placeholder = oov_placeholder(items)
    assert placeholder not in items and items.encode([placeholder])[0] == 0


def test_popular_items_weigh_recent_watches_more(rec):
    popular = PopularItems().fit(rec.candidates)  # half-life: 1/30 of the training window
    ids, scores = popular.top(5)
    assert len(ids) == 5 and np.all(np.diff(scores) <= 0)
    f, s = rec.candidates.featurizer_, rec.candidates.streams_
    # by hand: sum over watches of 2 ** (-age / half-life)
    top = f.items_.encode(pa.array([ids[0]]))[0]
    ages = f.window_end_ - s.watch_times[s.watch_items == top]
    half_life = (f.window_end_ - f.window_start_) / 30
    assert scores[0] == pytest.approx(np.sum(np.exp2(-ages / half_life)), rel=1e-6)
    slow = PopularItems(half_life_share=1e6).fit(rec.candidates)  # no decay: plain watch counts
    assert slow.top(1)[1][0] == pytest.approx(f.items_.counts_.max(), rel=1e-3)
    with pytest.raises(ValueError, match="half_life_share"):
        PopularItems(half_life_share=0)


def dead_pid() -> int:
    """The id of a process that has exited (a seeding killed midway leaves its pid behind)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_store_whose_seeding_was_killed_is_rebuilt_on_start(rec, tmp_path, caplog):
    # regression (issue 14): kill -9 while seeding left a file that counted as seeded, and empty
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    path = tmp_path / "events.sqlite"
    SQLiteEventStore(path, id_type="int").close()  # what an older version left: schema, no rows
    leftover = tmp_path / f".events.sqlite.seeding-{dead_pid()}"  # what this version leaves
    with SQLiteEventStore(leftover, id_type="int") as half:
        half.add_watches([(1, 2, 3)])
    store, seeded = open_event_store(path, rec)
    expected = len(rec.candidates.streams_.watch_items)
    assert seeded["watches"] == expected and store.count()["watches"] == expected
    assert sorted(p.name for p in tmp_path.iterdir() if "seeding" in p.name) == []
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "a seeding that did not finish" in messages and str(leftover) in messages
    store.close()
    again, seeded = open_event_store(path, rec)  # finished: kept as it is
    assert seeded == {} and again.count()["watches"] == expected
    again.close()


def test_a_store_made_by_an_older_version_with_events_is_kept(rec, tmp_path):
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    path = tmp_path / "events.sqlite"
    with SQLiteEventStore(path, id_type="int") as old:
        old.add_watches([(1, 2, 3)])
    store, seeded = open_event_store(path, rec)
    assert seeded == {} and store.count() == {"watches": 1, "searches": 0}
    assert store.get_meta("seed") is not None  # marked: not looked at again
    store.close()


def test_a_store_left_empty_on_purpose_stays_empty(rec, tmp_path):
    path = tmp_path / "events.sqlite"
    store, seeded = open_event_store(path, rec, seed=False)
    assert seeded == {} and store.count() == {"watches": 0, "searches": 0}
    store.close()
    again, seeded = open_event_store(path, rec)  # marked as made without seeding: not rebuilt
    assert seeded == {} and again.count() == {"watches": 0, "searches": 0}
    again.close()


def test_a_seeding_that_fails_leaves_no_file(rec, tmp_path):
    from ytdnn.data.schema import DataError

    (tmp_path / "store").mkdir()
    with pytest.raises(DataError, match="watches.parquet"):
        open_event_store(tmp_path / "store" / "events.sqlite", rec, data_dir=tmp_path / "none")
    assert list((tmp_path / "store").iterdir()) == []
