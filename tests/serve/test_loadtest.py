"""The load-test harness against a tiny FastAPI app served on loopback by serve_in_thread."""

import asyncio
import contextlib
import json
import random
import socket
import threading

import fastapi
import h11
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


def recording_app(log, *, status=200, body=b'{"ok":true}', close=False, sleep_s=0.0):
    """A raw ASGI app that appends (client port, "METHOD /path?query", request body) to ``log``
    and answers ``status`` with ``body`` (``close``: with ``Connection: close``), after
    ``sleep_s`` seconds."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request, more = b"", True
        while more:
            message = await receive()
            request += message.get("body", b"")
            more = message.get("more_body", False)
        target = scope["raw_path"].decode() + "?" + scope["query_string"].decode()
        log.append((scope["client"][1], f"{scope['method']} {target}", request))
        if sleep_s:
            await asyncio.sleep(sleep_s)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def quick_run(base_url, **kwargs):
    args = {"clients": 1, "seconds": 0.4, "user_ids": ["u1", "u/2"], "item_ids": ITEMS}
    return run_load_test(base_url, **{**args, "timeout": 5.0, **kwargs})


def test_each_client_keeps_one_connection_alive():
    log = []
    with serve_in_thread(recording_app(log)) as base_url:
        result = quick_run(base_url, clients=3, post_fraction=0.5)
    assert result.errors == 0, result.error_samples
    assert result.num_requests == len(log) > 6
    assert len({port for port, _, _ in log}) == 3  # one connection per client, every request
    assert {what.split()[0] for _, what, _ in log} == {"GET", "POST"}
    assert "GET /recommend/u%2F2?k=10" in {what for _, what, _ in log}  # the id quoted whole


def test_replies_are_not_held_back_by_nagle():
    """The server writes a reply's head and body apart: with Nagle on (uvicorn's sockets), the body
    waited for the client's delayed ACK, ~40 ms, so one client managed ~25 requests/s. With
    TCP_NODELAY set per connection (JSONErrorH11Protocol) a trivial reply takes well under 1 ms."""
    log = []
    with serve_in_thread(recording_app(log)) as base_url:
        result = quick_run(base_url, seconds=1.0)
    assert result.errors == 0, result.error_samples
    assert result.num_requests > 100  # at 40 ms a request, at most 25


def test_a_server_that_closes_every_connection_costs_no_errors():
    log = []
    with serve_in_thread(recording_app(log, close=True)) as base_url:
        result = quick_run(base_url, clients=2, post_fraction=0.3)
    assert result.errors == 0, result.error_samples
    assert result.num_requests == len(log) > 4
    assert len({port for port, _, _ in log}) > len(log) // 2  # a new connection per request


def test_a_5xx_reply_is_an_error_with_its_status_and_body():
    log = []
    with serve_in_thread(recording_app(log, status=500, body=b"boom")) as base_url:
        result = quick_run(base_url, post_fraction=0.0, seconds=0.2)
    assert result.errors == result.num_requests == len(log) > 0
    assert result.latencies_ms == {"recommend": [], "events": []}
    assert result.error_samples[0] == "recommend: HTTP 500: boom"


def test_a_reply_slower_than_the_timeout_is_an_error_and_the_run_still_ends():
    log = []
    with serve_in_thread(recording_app(log, sleep_s=1.0)) as base_url:
        result = quick_run(base_url, clients=2, seconds=0.5, timeout=0.2, post_fraction=0.0)
    assert result.num_requests == result.errors >= 4  # about 0.5 s / 0.2 s for each client
    assert result.error_samples[0].startswith("recommend: TimeoutError: ")
    assert 0.5 <= result.seconds < 0.5 + 0.2 + 0.5  # the deadline plus one timeout at most
    assert len({port for port, _, _ in log}) == len(log)  # a new connection after each timeout


def test_a_seed_repeats_the_request_sequence():
    def requested(seed):
        log = []
        with serve_in_thread(recording_app(log)) as base_url:
            result = quick_run(base_url, seed=seed, seconds=0.5, post_fraction=0.5,
                               user_ids=users, item_ids=ITEMS, k=3)
        assert result.errors == 0, result.error_samples
        sequence = []
        for _, what, body in log:
            if what.startswith("POST"):
                watch = json.loads(body)["watches"][0]
                what = f"POST {watch['user_id']} {watch['item_id']} {watch['watch_time']}"
            sequence.append(what)
        return sequence

    users = [f"u{n}" for n in range(50)]
    first, again, other = requested(7), requested(7), requested(8)
    n = min(len(first), len(again))
    assert n >= 5 and first[:n] == again[:n] and first[:n] != other[:n]
    rng = random.Random(7 * 1_000_003)  # client 0's draws, in the order the client makes them
    expected = []
    for _ in range(n):
        user = rng.choice(users)
        if rng.random() < 0.5:
            item = rng.choice(ITEMS)
            expected.append(f"POST {user} {item} {round(rng.uniform(1, 600), 3)}")
        else:
            expected.append(f"GET /recommend/{user}?k=3")
    assert first[:n] == expected


@contextlib.contextmanager
def closing_server(close_after_s):
    """A bare HTTP/1.1 server (h11) that answers one request per connection with a keep-alive
    reply, then closes the connection ``close_after_s`` later without reading anything more,
    as a server's keep-alive timeout does. Yields (base URL, replies sent)."""
    replies, ready = [], threading.Event()
    state, handlers = {}, {}

    async def handle(reader, writer):
        handlers[asyncio.current_task()] = writer
        conn = h11.Connection(h11.SERVER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                if not (data := await reader.read(65536)):  # the client left
                    writer.close()
                    return
                conn.receive_data(data)
        writer.write(conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                     + conn.send(h11.Data(data=b"{}")) + conn.send(h11.EndOfMessage()))
        replies.append(1)
        await asyncio.sleep(close_after_s)
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        state["port"], state["stop"] = server.sockets[0].getsockname()[1], asyncio.Event()
        ready.set()
        async with server:
            await state["stop"].wait()
        for writer in handlers.values():  # each handler then reads EOF and returns
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield f"http://127.0.0.1:{state['port']}", replies
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize("think_time_s", [0.0, 0.03])
def test_a_connection_the_server_closed_while_idle_is_reopened_without_an_error(think_time_s):
    # No think time: the next request goes out before the server closes, unread, so it fails
    # and is retried on a new connection. With think time the close is mostly seen before.
    with closing_server(close_after_s=0.01) as (base_url, replies):
        result = quick_run(base_url, clients=2, think_time_s=think_time_s, post_fraction=0.5)
    assert result.errors == 0, result.error_samples
    assert result.num_requests == len(replies) > 10


def test_ipv6_loopback_is_served():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    log = []
    with serve_in_thread(recording_app(log), host="::1") as base_url:
        assert base_url.startswith("http://[::1]:")
        result = quick_run(base_url, seconds=0.2)
    assert result.errors == 0 and result.num_requests == len(log) > 0
