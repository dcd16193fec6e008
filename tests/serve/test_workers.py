"""`ytdnn serve --workers N` (issue 21): what each worker builds from the supervisor's settings,
and a reload that reaches every worker (recorded in the shared store, then SIGHUP to the
supervisor, whose rolling restart is uvicorn's)."""

import json
import os
import signal
import threading

from fastapi.testclient import TestClient

from ytdnn.pipeline import Recommender
from ytdnn.serve.engine import ServeConfig
from ytdnn.serve.events_sqlite import SQLiteEventStore
from ytdnn.serve.seed import open_event_store
from ytdnn.serve.workers import ENV, MODEL_DIR, app_from_environment, open_shared_store


def test_a_reload_is_recorded_for_new_workers_and_signals_the_supervisor(
        tiny_world_model, other_model_dir, tmp_path, monkeypatch):
    _, model_dir = tiny_world_model
    events = tmp_path / "events.sqlite"
    store, _ = open_event_store(events, Recommender.load(model_dir), seed=False)  # the parent's part
    store.close()
    settings = {"model_dir": str(model_dir), "events": str(events), "supervisor": os.getpid(),
                "config": ServeConfig(num_threads=None).to_dict(), "switch_interval_s": 0.005}
    monkeypatch.setenv(ENV, json.dumps(settings))
    monkeypatch.setenv("YTDNN_ADMIN_TOKEN", "t0ken")  # the test client is not a loopback client
    hangups = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda *_: hangups.set())  # this test is the supervisor
    try:
        with TestClient(app_from_environment()) as worker:
            assert worker.get("/health").json()["model"]["model_dir"] == str(model_dir)
            reply = worker.post("/admin/reload", json={"model_dir": str(other_model_dir)},
                                headers={"Authorization": "Bearer t0ken"})
            assert reply.status_code == 200, reply.text
            assert hangups.wait(5.0)  # the supervisor is asked to replace every worker
    finally:
        signal.signal(signal.SIGHUP, previous)
    with SQLiteEventStore(events) as shared:
        assert shared.get_meta(MODEL_DIR) == str(other_model_dir)
    with TestClient(app_from_environment()) as replacement:  # a new worker loads the recorded one
        assert replacement.get("/health").json()["model"]["model_dir"] == str(other_model_dir)
    # the next run starts from its own --model, not from the reload of this one
    assert open_shared_store(model_dir, events, seed=False) == events
    with SQLiteEventStore(events) as shared:
        assert shared.get_meta(MODEL_DIR) == str(model_dir.absolute())
