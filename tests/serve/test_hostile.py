"""Hostile input never gets a 5xx (issue 14): every POST endpoint, every kind of bad body, and
the HTTP level (headers, unparsable requests) answering JSON errors."""

import json
import socket
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from ytdnn.serve.app import create_app
from ytdnn.serve.engine import ServeConfig
from ytdnn.serve.events import InMemoryEventStore
from ytdnn.serve.loadtest import serve_in_thread

POSTS = ["/recommend/46", "/events", "/admin/reload"]
DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB; Python's parser recurses once per level
LONG_INT = b"9" * 5000  # over Python's 4,300-digit int conversion limit

# (what, body) -> 400 on every POST endpoint; each was a 500 (or a dropped connection) before
MALFORMED = [
    ("deep nesting", DEEP),
    ("deep nesting in a value", b'{"k": 5, "features": {"geo": ' + b"[" * 900 + b"]" * 900 + b"}}"),
    ("a 5,000-digit integer", b'{"k": ' + LONG_INT + b"}"),
    ("a 5,000-digit timestamp", b'{"user_id": 1, "item_id": 2, "timestamp": ' + LONG_INT + b"}"),
    ("a surrogate in a feature value", b'{"k": 5, "features": {"geo": "\\ud800"}}'),
    ("a surrogate in a query", b'{"user_id": 1, "timestamp": 3, "query": "cats \\udfff"}'),
    ("a surrogate in model_dir", b'{"model_dir": "\\ud800"}'),
    ("a surrogate in a key", b'{"\\ud800": 1}'),
    ("a surrogate as a string id", b'{"user_id": "\\ud800", "item_id": 2, "timestamp": 3}'),
    ("NaN", b'{"k": NaN, "user_id": 1, "item_id": 2, "timestamp": 3, "watch_time": NaN}'),
    ("Infinity", b'{"user_id": 1, "item_id": 2, "timestamp": 3, "watch_time": Infinity}'),
    ("-Infinity", b'{"features": {"age": -Infinity}}'),
]


@pytest.fixture(scope="module")
def app(tiny_world_model, tmp_path_factory):
    _, model_dir = tiny_world_model
    events = tmp_path_factory.mktemp("hostile") / "events.sqlite"  # SQLite: what fails on text
    return create_app(model_dir, events=events)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, client=("127.0.0.1", 50000), raise_server_exceptions=False) as c:
        yield c


def assert_json_error(reply, status):
    assert reply.status_code == status, reply.text[:300]
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["status"] == status and error["message"] and "\n" not in error["message"]
    return error


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(("what", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_json_is_a_400_on_every_post_endpoint(client, path, what, body):
    assert_json_error(client.post(path, content=body), 400)


def test_a_50_mb_body_is_a_413_on_every_post_endpoint(client):
    body = b'{"k": "' + b"a" * (50 << 20) + b'"}'
    for path in POSTS:
        assert_json_error(client.post(path, content=body), 413)

    def chunks():  # no Content-Length: refused while it arrives
        for _ in range(50):
            yield b" " * (1 << 20)

    for path in POSTS:
        assert_json_error(client.post(path, content=chunks()), 413)


def test_1001_events_are_a_413_and_1000_are_stored(client):
    watch = {"user_id": 1, "item_id": 2, "timestamp": 3}
    error = assert_json_error(client.post("/events", json={"watches": [watch] * 1001}), 413)
    assert "1001 events" in error["message"]
    search = {"user_id": 1, "timestamp": 3, "query": "q"}
    split = {"watches": [watch] * 500, "searches": [search] * 501}
    assert_json_error(client.post("/events", json=split), 413)
    reply = client.post("/events", json={"watches": [watch] * 1000})
    assert reply.status_code == 200 and reply.json() == {"stored": {"watches": 1000, "searches": 0}}


@pytest.mark.parametrize("timestamp", [2**63, -(2**63) - 1, 10**30, 1.5, "3", None, True])
def test_a_timestamp_outside_int64_or_not_an_int_is_a_422(client, timestamp):
    error = assert_json_error(
        client.post("/events", json={"user_id": 1, "item_id": 2, "timestamp": timestamp}), 422)
    assert error["field"] == "timestamp"


@pytest.mark.parametrize("timestamp", [2**63 - 1, -(2**63), 0])
def test_extreme_int64_timestamps_are_stored_and_served(client, timestamp):
    user = 60 + abs(timestamp) % 7
    assert client.post("/events", json={"user_id": user, "item_id": 5, "timestamp": timestamp}
                       ).status_code == 200
    reply = client.get(f"/recommend/{user}", params={"k": 5})  # the ranker's time features
    assert reply.status_code == 200 and len(reply.json()["items"]) == 5


@pytest.mark.parametrize("number", ["1e308", "-1e308", "1e400", "-1e400", "1e-400"])
def test_huge_numbers_are_4xx_or_served(client, number):
    body = f'{{"k": 5, "features": {{"age": {number}, "geo": {number}}}}}'  # 1e400 parses as inf
    assert client.post("/recommend/46", content=body).status_code in (200, 422)
    watch = f'{{"user_id": 1, "item_id": 2, "timestamp": 3, "watch_time": {number}}}'
    assert client.post("/events", content=watch).status_code in (200, 422)


def test_an_error_quoting_any_text_is_written_and_cut_to_size(client):
    from ytdnn.serve.errors import MAX_MESSAGE, error_response

    reply = error_response(422, "no such feature \ud800 \u00e9", field="features")
    assert json.loads(reply.body)["error"]["message"] == "no such feature \ud800 \u00e9"
    features = {f"f{n}": 1 for n in range(20_000)}  # every name quoted back: cut
    error = assert_json_error(client.post("/recommend/46", json={"features": features}), 422)
    assert len(error["message"]) == MAX_MESSAGE
    long_id = {"user_id": "x" * 500_000, "item_id": 2, "timestamp": 3}  # an int store's user id
    error = assert_json_error(client.post("/events", json=long_id), 422)
    assert len(error["message"]) == MAX_MESSAGE


def test_a_huge_header_is_a_431_and_a_huge_url_a_414(client):
    assert_json_error(client.get("/health", headers={"x-big": "a" * 100_000}), 431)
    assert_json_error(client.post("/events", headers={"x-big": "a" * 100_000}, json={}), 431)
    assert_json_error(client.get("/recommend/46", params={"geo": "a" * 20_000}), 414)
    assert client.get("/health", headers={"x-fine": "a" * 8_000}).status_code == 200


def raw_request(base_url: str, *parts: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes over a socket, in ``parts`` 50 ms apart; -> (status, headers, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for n, part in enumerate(parts):
            if n:
                time.sleep(0.05)
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed before the rest
                break
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def fresh_app(tiny_world_model):
    """An app of its own, for a test that runs its lifespan (which closes the store at the end)."""
    return create_app(tiny_world_model[1], events=InMemoryEventStore(id_type="int"))


def test_protocol_level_errors_are_json_under_uvicorn(tiny_world_model):
    with serve_in_thread(fresh_app(tiny_world_model)) as base_url:
        status, headers, body = raw_request(base_url, b"NOT HTTP AT ALL\r\n\r\n")
        assert status == 400 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["status"] == 400
        # a head that arrives in pieces and outgrows h11's buffer: refused by the protocol
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 20_000
        status, headers, body = raw_request(base_url, head, b"a" * 80_000 + b"\r\n\r\n")
        assert status == 431 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["status"] == 431
        # one that arrives whole is parsed by h11 and refused by the app
        status, headers, body = raw_request(base_url, head + b"a" * 80_000 + b"\r\n\r\n")
        assert status == 431 and json.loads(body)["error"]["status"] == 431
        status, _, body = raw_request(base_url, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                                b"Connection: close\r\n\r\n")
        assert status == 200 and json.loads(body)["status"] == "ok"


def test_a_model_directory_that_fails_to_load_is_a_one_line_422(client, tmp_path, monkeypatch):
    from ytdnn.serve import engine

    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    error = assert_json_error(client.post("/admin/reload", json={"model_dir": str(bad)}), 422)
    assert error["message"].startswith("the model was not reloaded: ")
    assert error["field"] == "model_dir"
    for raised in (RuntimeError("line one\n  line two\n"), KeyError("x"), MemoryError(),
                   RecursionError("maximum recursion depth exceeded")):
        def load(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(engine.Recommender, "load", load)
        error = assert_json_error(client.post("/admin/reload", json={"model_dir": str(bad)}), 422)
        assert len(error["message"]) > len("the model was not reloaded: ")
    monkeypatch.undo()
    assert client.get("/recommend/46").status_code == 200  # the old model still serves


def test_a_request_through_a_proxy_is_not_a_loopback_client(tiny_world_model):
    app = fresh_app(tiny_world_model)
    with TestClient(app, client=("127.0.0.1", 50000)) as local:
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            reply = local.post("/admin/reload", headers={header: "127.0.0.1"})
            assert_json_error(reply, 403)
    # uvicorn's defaults (proxy_headers=True, forwarded_allow_ips=127.0.0.1) trust a loopback
    # peer's X-Forwarded-For; a proxy that passes a client's own header through must not let it in
    with serve_in_thread(app) as base_url:
        import httpx

        reply = httpx.post(f"{base_url}/admin/reload", headers={"X-Forwarded-For": "127.0.0.1"},
                           trust_env=False)
        assert_json_error(reply, 403)
        reply = httpx.post(f"{base_url}/admin/reload", headers={"X-Forwarded-For": "10.0.0.1"},
                           trust_env=False)
        assert_json_error(reply, 403)


def test_serving_leaves_torch_threads_as_found(tiny_world_model, tmp_path):
    """The inference thread used to call torch.set_num_threads: not thread-local (a thread
    started afterwards inherits it), so a library must not."""

    def in_new_thread():
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    before = (torch.get_num_threads(), in_new_thread())
    wanted = before[1] + 2  # a count this process does not have
    app = create_app(tiny_world_model[1], events=tmp_path / "events.sqlite",
                     config=ServeConfig(num_threads=wanted))
    with TestClient(app) as client:
        assert client.get("/recommend/46").status_code == 200
    assert (torch.get_num_threads(), in_new_thread()) == before
