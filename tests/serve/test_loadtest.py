"""The load-test harness against a tiny FastAPI app served on loopback by serve_in_thread."""

import fastapi
import httpx
import pytest

from ytdnn.serve.events import EventError, InMemoryEventStore, Watch
from ytdnn.serve.loadtest import (
    LoadTestResult,
    check_loopback,
    run_load_test,
    serve_in_thread,
)

ITEMS = [f"i{n}" for n in range(20)]


def dummy_app(store):
    """/recommend: the k most popular items the user has not watched; /events: into the store."""
    app = fastapi.FastAPI()

    @app.get("/recommend/{user_id}")
    def recommend(user_id: str, k: int = 10):
        seen = {w.item_id for w in store.watches(user_id)}
        return {"user_id": user_id, "item_ids": [i for i in ITEMS if i not in seen][:k]}

    @app.post("/events")
    def events(body: dict):
        try:
            added = store.add_watches(body.get("watches", [])) + store.add_searches(
                body.get("searches", [])
            )
        except EventError as err:
            raise fastapi.HTTPException(status_code=422, detail=str(err)) from None
        return {"added": added}

    return app


@pytest.fixture(scope="module")
def served():
    store = InMemoryEventStore(id_type="str")
    with serve_in_thread(dummy_app(store)) as base_url:
        yield base_url, store


def test_serve_in_thread_serves_the_app(served):
    base_url, _ = served
    assert base_url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=base_url, trust_env=False) as http:
        reply = http.post(
            "/events",
            json={
                "watches": [{"user_id": "solo", "item_id": "i0", "timestamp": 1, "watch_time": 2.0}]
            },
        )
        assert reply.json() == {"added": 1}
        # the posted watch changes the very next recommendation
        assert http.get("/recommend/solo", params={"k": 2}).json()["item_ids"] == ["i1", "i2"]
        bad = http.post("/events", json={"watches": [{"user_id": "solo", "timestamp": 1}]})
    assert bad.status_code == 422 and "watches[0].item_id" in bad.text


def test_load_test_runs_clean_and_loses_nothing(served):
    base_url, store = served
    before = store.count()["watches"]
    result = run_load_test(
        base_url,
        clients=10,
        seconds=1.5,
        user_ids=[f"u{n}" for n in range(30)],
        item_ids=ITEMS,
        post_fraction=0.3,
        k=5,
        timeout=5.0,
    )
    assert result.errors == 0, result.error_samples
    assert result.num_requests > 0
    assert len(result.latencies_ms["recommend"]) > 0 and len(result.posted) > 0
    assert store.count()["watches"] == before + len(result.posted)
    assert result.check_lost(store) == 0
    metrics = result.to_metrics()
    assert {"p50_ms", "p95_ms", "p99_ms", "requests_per_s", "errors", "lost_events"} <= set(metrics)
    assert metrics["lost_events"] == 0 and metrics["requests_per_s"] > 0
    assert (
        1.5 <= result.seconds < 1.5 + 5.0
    )  # stops by itself: the deadline plus one request at most
    assert metrics["p50_ms"] <= metrics["p95_ms"] <= metrics["p99_ms"]


def test_check_lost_reports_what_the_store_lacks():
    posted = [Watch("u", "a", 1, 2.0), Watch("u", "b", 2, 3.0)]
    result = LoadTestResult(1, 1.0, {"recommend": [], "events": [1.0, 1.0]}, 0, [], posted, 0.1)
    store = InMemoryEventStore()
    store.add_watches(posted[:1])
    assert result.check_lost(store) == 1 and result.lost == [posted[1]]
    assert result.check_lost(lambda events: []) == 0  # any callable returning the missing ones
    assert result.to_metrics()["lost_events"] == 0


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:1/", "http://[::1]:8080", "https://127.0.0.2"],
)
def test_loopback_urls_are_accepted(url):
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.0.0.1:8000",
        "http://0.0.0.0:80",
        "http://localhost.example.com",
        "ftp://127.0.0.1",
        "http://[::2]:80",
    ],
)
def test_a_non_loopback_url_is_refused(url):
    with pytest.raises(ValueError, match="refusing"):
        run_load_test(url, clients=1, seconds=0.1, user_ids=["u"], item_ids=["i"])
