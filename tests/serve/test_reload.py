"""Hot reload under concurrent requests, and who may ask for one."""

import os
import signal
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from ytdnn.serve.admin import AdminRefused, check_admin, is_loopback
from ytdnn.serve.app import create_app, install_sighup_reload
from ytdnn.serve.events import InMemoryEventStore
from ytdnn.serve.loadtest import serve_in_thread


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_may_reload_without_a_token(host):
    assert is_loopback(host)
    check_admin(host, None, None)  # no exception


@pytest.mark.parametrize("host", ["10.0.0.2", "192.168.1.5", "::2", "testclient", "", None])
def test_other_clients_are_refused_without_a_token(host):
    with pytest.raises(AdminRefused) as refused:
        check_admin(host, None, None)
    assert refused.value.status == 403


def test_with_a_token_only_its_bearers_may_reload_from_anywhere():
    check_admin("10.0.0.2", "Bearer s3cret", "s3cret")
    check_admin("10.0.0.2", "bearer s3cret", "s3cret")
    for header in (None, "", "Bearer wrong", "s3cret", "Basic s3cret", "Bearer s3cret2"):
        for host in ("10.0.0.2", "127.0.0.1"):  # a token, once set, is needed from loopback too
            with pytest.raises(AdminRefused) as refused:
                check_admin(host, header, "s3cret")
            assert refused.value.status == 401


def test_reload_is_refused_over_http_from_a_remote_client_or_without_the_token(tiny_world_model):
    _, model_dir = tiny_world_model
    app = create_app(model_dir, events=InMemoryEventStore(id_type="int"))
    with TestClient(app, client=("10.1.2.3", 40000)) as remote:
        reply = remote.post("/admin/reload")
        assert reply.status_code == 403 and "loopback" in reply.json()["error"]["message"]
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.post("/admin/reload").status_code == 200
    guarded = create_app(model_dir, events=InMemoryEventStore(id_type="int"), admin_token="tok")
    with TestClient(guarded, client=("10.1.2.3", 40000)) as remote:
        refused = remote.post("/admin/reload")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        reply = remote.post("/admin/reload", headers={"Authorization": "Bearer tok"})
        assert reply.status_code == 200 and reply.json()["reloaded"] is True


def test_reload_under_concurrent_requests_fails_none(tiny_world_model, other_model_dir):
    _, model_dir = tiny_world_model
    store = InMemoryEventStore(id_type="int")
    app = create_app(model_dir, events=store)
    first = app.state.serve.holder.current.version
    failures, versions, stop = [], set(), threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as http:
            i = 0
            while not stop.is_set():
                i += 1
                if i % 3:
                    reply = http.get(f"/recommend/{(n * 7 + i) % 200}", params={"k": 5})
                    if reply.status_code == 200:
                        versions.add(reply.json()["model"])
                else:
                    reply = http.post("/events", json={"user_id": n, "item_id": i, "timestamp": i})
                if reply.status_code != 200:
                    failures.append((reply.status_code, reply.text[:200]))

    with serve_in_thread(app) as base_url:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=base_url, trust_env=False, timeout=60) as admin:
            time.sleep(0.3)
            swapped = admin.post("/admin/reload", json={"model_dir": str(other_model_dir)})
            time.sleep(0.3)
            broken = admin.post("/admin/reload", json={"model_dir": str(other_model_dir / "nope")})
            time.sleep(0.3)
            back = admin.post("/admin/reload", json={"model_dir": str(model_dir)})
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        after = httpx.get(f"{base_url}/recommend/3", params={"k": 5}, trust_env=False).json()
    assert failures == []
    assert swapped.status_code == 200 and back.status_code == 200
    second = swapped.json()["model"]["version"]
    assert second != first and {first, second} <= versions  # both served, nothing failed
    assert swapped.json()["model"]["stage"] == "candidates"
    assert broken.status_code == 422 and "not reloaded" in broken.json()["error"]["message"]
    assert after["model"] == first and {i["stage"] for i in after["items"]} == {"ranker"}


def test_a_request_in_flight_finishes_on_the_model_it_started_on(tiny_world_model, other_model_dir):
    _, model_dir = tiny_world_model
    app = create_app(model_dir, events=InMemoryEventStore(id_type="int"))
    state = app.state.serve
    old = state.holder.current
    gate, entered = threading.Event(), threading.Event()
    answer = old.answer

    def slow_answer(jobs):  # holds the old model's batch until the reload is done
        entered.set()
        gate.wait(30)
        return answer(jobs)

    old.answer = slow_answer
    with TestClient(app, client=("127.0.0.1", 1)) as client:
        result = {}
        thread = threading.Thread(target=lambda: result.update(client.get("/recommend/3?k=4").json()))
        thread.start()
        assert entered.wait(30)
        assert client.post("/admin/reload", json={"model_dir": str(other_model_dir)}).status_code == 200
        gate.set()
        thread.join(30)
        new = client.get("/recommend/3?k=4").json()
    assert result["model"] == old.version and {i["stage"] for i in result["items"]} == {"ranker"}
    assert new["model"] == state.holder.current.version != old.version


def test_sighup_reloads_the_model(tiny_world_model):
    _, model_dir = tiny_world_model
    app = create_app(model_dir, events=InMemoryEventStore(id_type="int"))
    state = app.state.serve
    previous = install_sighup_reload(state)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 30
        while state.holder.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert state.holder.reloads == 1


def test_a_model_whose_ids_the_store_cannot_hold_is_refused_at_start_and_at_reload(tiny_world_model):
    _, model_dir = tiny_world_model  # int user and item ids
    with pytest.raises(ValueError, match="store holds str ids"):
        create_app(model_dir, events=InMemoryEventStore(id_type="str"))
    store = InMemoryEventStore(id_type="int")
    app = create_app(model_dir, events=store)
    state = app.state.serve
    serving = state.holder.current
    store.id_type = "str"  # as if the store had been made for another model meanwhile
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        reply = local.post("/admin/reload")
    assert reply.status_code == 422 and "store holds str ids" in reply.json()["error"]["message"]
    assert state.holder.current is serving and state.holder.reloads == 0
