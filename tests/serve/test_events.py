"""The event store contract: every implementation passes EventStoreContract."""

import gc
import math
import re
import sqlite3
import threading
import time

import pyarrow as pa
import pytest

from ytdnn.serve.events import EventError, EventStore, InMemoryEventStore, Search, Watch
from ytdnn.serve.events_sqlite import SQLiteEventStore


class EventStoreContract:
    """Mix into a Test* class that defines make_store(tmp_path, id_type=None)."""

    def make_store(self, tmp_path, id_type=None) -> EventStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path):
        store = self.make_store(tmp_path)
        yield store
        store.close()

    def test_empty(self, store):
        assert store.watches("nobody") == []
        assert store.searches("nobody") == []
        assert store.count() == {"watches": 0, "searches": 0}
        assert store.history("nobody").to_dict() == {
            "user_id": "nobody",
            "watches": [],
            "searches": [],
        }

    def test_most_recent_last_and_ties_in_arrival_order(self, store):
        store.add_watches([("u", "b", 20), ("u", "a", 10, 3.5)])
        store.add_watches([{"user_id": "u", "item_id": "c", "timestamp": 20, "watch_time": 1}])
        store.add_watches([("u", "z", 5), ("other", "x", 15)])  # an older one arrives late
        # by timestamp; "b" and "c" share t=20 and keep the order they arrived in
        assert [w.item_id for w in store.watches("u")] == ["z", "a", "b", "c"]
        assert store.watches("u")[1] == Watch("u", "a", 10, 3.5)
        assert store.watches("u")[3].watch_time == 1.0  # int watch time stored as float
        assert store.count() == {"watches": 5, "searches": 0}

    def test_limit_keeps_the_most_recent(self, store):
        store.add_watches([("u", f"i{t}", t) for t in (3, 1, 4, 2, 5)])
        assert [w.timestamp for w in store.watches("u", limit=2)] == [4, 5]
        assert [w.timestamp for w in store.watches("u", limit=None)] == [1, 2, 3, 4, 5]
        assert [w.timestamp for w in store.watches("u", limit=50)] == [1, 2, 3, 4, 5]
        assert store.watches("u", limit=0) == []
        with pytest.raises(ValueError, match="limit"):
            store.watches("u", limit=-1)

    def test_searches_and_history(self, store):
        store.add_searches(
            [("u", 7, "cat videos"), {"user_id": "u", "timestamp": 3, "query": "dogs"}]
        )
        store.add_watches([("u", "v1", 5)])
        assert store.searches("u") == [Search("u", 3, "dogs"), Search("u", 7, "cat videos")]
        assert store.searches("u", limit=1) == [Search("u", 7, "cat videos")]
        assert store.history("u").to_dict() == {
            "user_id": "u",
            "watches": [{"user_id": "u", "item_id": "v1", "timestamp": 5, "watch_time": None}],
            "searches": [
                {"user_id": "u", "timestamp": 3, "query": "dogs"},
                {"user_id": "u", "timestamp": 7, "query": "cat videos"},
            ],
        }
        assert store.count() == {"watches": 1, "searches": 2}

    @pytest.mark.parametrize(
        ("bad", "where"),
        [
            ({"user_id": "u", "timestamp": 1}, "watches[1].item_id: missing required field"),
            (
                {"user_id": "u", "item_id": "i", "timestamp": 1.5},
                "watches[1].timestamp: expected an int",
            ),
            ({"user_id": "u", "item_id": "i", "timestamp": "1"}, "watches[1].timestamp"),
            (
                {"user_id": "u", "item_id": "i", "timestamp": 1, "watch_time": -2},
                "watches[1].watch_time",
            ),
            (
                {"user_id": "u", "item_id": "i", "timestamp": 1, "watch_time": math.nan},
                "watches[1].watch_time",
            ),
            ({"user_id": True, "item_id": "i", "timestamp": 1}, "watches[1].user_id"),
            ({"user_id": "u", "item_id": 1.0, "timestamp": 1}, "watches[1].item_id"),
            (
                {"user_id": "u", "item_id": "i", "timestamp": 1, "watchtime": 3},
                "watches[1]: unknown field",
            ),
            ("u,i,1", "watches[1]: expected a mapping"),
            ({"user_id": 2**63, "item_id": "i", "timestamp": 1}, "watches[1].user_id: 922"),
        ],
    )
    def test_a_bad_event_rejects_the_whole_batch(self, store, bad, where):
        good = {"user_id": "u", "item_id": "ok", "timestamp": 1}
        with pytest.raises(EventError, match=re.escape(where)):
            store.add_watches([good, bad, good])
        assert store.count() == {"watches": 0, "searches": 0}
        assert store.watches("u") == []

    def test_a_bad_search_names_index_and_field(self, store):
        with pytest.raises(EventError, match=r"searches\[0\]\.query: expected a str") as err:
            store.add_searches([{"user_id": "u", "timestamp": 1, "query": 3}, ("u", 2, "fine")])
        assert (err.value.table, err.value.index, err.value.field) == ("searches", 0, "query")
        assert store.count()["searches"] == 0

    def test_ids_keep_their_type_by_default(self, store):
        store.add_watches([(1, 7, 1), ("1", "7", 2)])  # user 1 and user "1" are different users
        assert store.watches(1) == [Watch(1, 7, 1)]
        assert store.watches("1") == [Watch("1", "7", 2)]

    def test_int_id_store_parses_path_style_ids(self, tmp_path):
        store = self.make_store(tmp_path, id_type="int")
        store.add_watches([("12", 3, 1), (12, "4", 2)])
        assert store.watches("12") == [Watch(12, 3, 1), Watch(12, 4, 2)]
        with pytest.raises(EventError, match=r"watches\[0\]\.item_id: expected an int id"):
            store.add_watches([(12, "video-9", 3)])
        store.close()

    def test_str_id_store_turns_ints_into_text(self, tmp_path):
        store = self.make_store(tmp_path, id_type="str")
        store.add_watches([(12, 3, 1)])
        assert store.watches("12") == [Watch("12", "3", 1)]
        store.close()

    def test_missing_counts_duplicates(self, store):
        store.add_watches([("u", "a", 1, 2.0), ("u", "a", 1, 2.0), ("u", "b", 2)])
        assert store.missing_watches([("u", "a", 1, 2.0)] * 2 + [("u", "b", 2)]) == []
        assert store.missing_watches([("u", "a", 1, 2.0)] * 3) == [Watch("u", "a", 1, 2.0)]
        assert store.missing_watches([("u", "a", 1)]) == [Watch("u", "a", 1)]  # watch_time differs
        store.add_searches([("u", 1, "q")])
        assert store.missing_searches([("u", 1, "q"), ("u", 1, "r")]) == [Search("u", 1, "r")]
        assert store.contains(watches=[("u", "b", 2)], searches=[("u", 1, "q")])
        assert not store.contains(watches=[("v", "b", 2)])

    def test_bulk_load_keeps_ties_in_table_order(self, store):
        watches = pa.table(
            {
                "user_id": ["b", "a", "b", "a", "b"],
                "item_id": ["x", "y", "z", "w", "v"],
                "timestamp": [5, 9, 5, 1, 3],
                "watch_time": [1.0, 2.0, 3.0, 4.0, 5.0],
            }
        )
        searches = pa.table({"user_id": ["a"], "timestamp": [4], "query": ["q"]})
        assert store.bulk_load(watches, searches) == {"watches": 5, "searches": 1}
        assert [w.item_id for w in store.watches("b")] == ["v", "x", "z"]
        assert [w.item_id for w in store.watches("a")] == ["w", "y"]
        assert store.searches("a") == [Search("a", 4, "q")]
        store.add_watches([("b", "late", 5)])  # a live event after a tie lands after it
        assert [w.item_id for w in store.watches("b")] == ["v", "x", "z", "late"]

    def test_bulk_load_refuses_bad_tables_atomically(self, store):
        no_time = pa.table(
            {"user_id": [1, 2], "item_id": [1, 2], "timestamp": pa.array([1, None], pa.int64())}
        )
        with pytest.raises(EventError, match=r"watches\[1\]\.timestamp: missing timestamp"):
            store.bulk_load(no_time)
        negative = pa.table(
            {"user_id": [1], "item_id": [1], "timestamp": [1], "watch_time": [-1.0]}
        )
        with pytest.raises(ValueError, match="negative watch time"):
            store.bulk_load(negative)
        good = pa.table({"user_id": [1], "item_id": [1], "timestamp": [1]})
        with pytest.raises(ValueError, match="query"):
            store.bulk_load(good, pa.table({"user_id": [1], "timestamp": [1]}))
        assert store.count() == {"watches": 0, "searches": 0}

    def test_concurrent_writers_and_readers_lose_nothing(self, store):
        num_writers, per_writer, batch = 8, 500, 5
        users = [f"u{j}" for j in range(10)]
        written = [[] for _ in range(num_writers)]
        problems = []
        done = threading.Event()

        def write(w):
            for start in range(0, per_writer, batch):
                events = [
                    Watch(users[(w + n) % 10], f"i{w}-{n}", w * per_writer + n, 1.0)
                    for n in range(start, start + batch)
                ]
                store.add_watches(events)
                written[w].extend(events)

        def read(r):
            while not done.is_set():
                history = store.watches(users[r % 10], limit=20)
                times = [w.timestamp for w in history]
                if len(history) > 20 or times != sorted(times):
                    problems.append(times)
                time.sleep(0.001)  # like a request handler between reads; a spin would hog the GIL

        writers = [threading.Thread(target=write, args=(w,)) for w in range(num_writers)]
        readers = [threading.Thread(target=read, args=(r,)) for r in range(8)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        for t in readers:
            t.join()
        everything = [e for events in written for e in events]
        assert problems == []
        assert store.count() == {"watches": num_writers * per_writer, "searches": 0}
        assert store.missing_watches(everything) == []
        for user in users:
            mine = sorted((e for e in everything if e.user_id == user), key=lambda e: e.timestamp)
            assert store.watches(user, limit=None) == mine

    def test_closed_store_refuses_use(self, tmp_path):
        store = self.make_store(tmp_path)
        store.close()
        with pytest.raises(RuntimeError, match="closed"):
            store.watches("u")


class TestInMemoryEventStore(EventStoreContract):
    def make_store(self, tmp_path, id_type=None):
        return InMemoryEventStore(id_type=id_type)


class TestSQLiteEventStore(EventStoreContract):
    def make_store(self, tmp_path, id_type=None):
        return SQLiteEventStore(tmp_path / "events.db", id_type=id_type)

    def test_wal_mode_is_on(self, tmp_path, store):
        store.add_watches([("u", "i", 1)])
        assert store.journal_mode == "wal"
        conn = sqlite3.connect(tmp_path / "events.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
        conn.close()
        assert (tmp_path / "events.db-wal").exists()

    def test_events_and_id_types_survive_reopening(self, tmp_path):
        with SQLiteEventStore(tmp_path / "events.db") as store:
            store.add_watches([(1, "a", 1, 2.5), ("1", 2, 2)])
            store.add_searches([(1, 3, "q")])
        again = SQLiteEventStore(tmp_path / "events.db")
        assert again.watches(1) == [Watch(1, "a", 1, 2.5)]
        assert again.watches("1") == [Watch("1", 2, 2)]
        assert again.searches(1) == [Search(1, 3, "q")]
        assert again.count() == {"watches": 2, "searches": 1}
        again.close()

    def test_reopening_checks_the_id_policy(self, tmp_path):
        SQLiteEventStore(tmp_path / "events.db", id_type="int").close()
        with pytest.raises(ValueError, match="stores 'int' ids; opened with id_type='str'"):
            SQLiteEventStore(tmp_path / "events.db", id_type="str")
        with SQLiteEventStore(tmp_path / "events.db") as store:
            assert store.id_type == "int"  # None adopts the file's policy

    def test_a_finished_thread_releases_its_connection(self, store):
        thread = threading.Thread(target=store.watches, args=("u",))
        thread.start()
        thread.join()
        gc.collect()
        assert len(store._handles) == 1  # only the writer: the dead thread's reader was closed


class TestSQLitePerThreadWriters(EventStoreContract):
    def make_store(self, tmp_path, id_type=None):
        return SQLiteEventStore(tmp_path / "events.db", id_type=id_type, single_writer=False)
