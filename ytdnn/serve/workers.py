"""``ytdnn serve --workers N``: N worker processes on one port, sharing one SQLite (WAL) event store.

    serve_workers("models/demo", workers=2, port=8000, events="events.sqlite")

Why processes: one process answers every request through one inference thread, and its HTTP
event loop and that thread share one GIL. N processes each hold their own model, GIL and
inference thread; the kernel spreads the connections of the one listening socket over them.

What they share is the event store, a SQLite file in WAL mode: a watch posted to any worker is
committed before its POST returns, and every read that starts after a commit sees it, so the very
next request sees it whichever worker answers it. The parent opens the store first (seeding a
new one, which may take seconds), so the workers never race to create it.

Hot reload reaches every worker. ``POST /admin/reload`` (answered by one worker) loads the model
there, records its directory in the store (meta key ``model_dir``) and sends SIGHUP to the parent,
uvicorn's supervisor, which replaces the workers one by one, each replacement serving before the
worker it replaces is stopped (uvicorn >= 0.30), so no request is refused. A new worker loads the
directory the store records, else the one given at start. ``kill -HUP <parent>`` reloads every
worker likewise; a SIGHUP to one worker would end it (send it to the parent). A new run
records its ``--model`` first: a reload lasts until the server stops.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ytdnn.serve.seed import STORE_FILE

ENV = "YTDNN_SERVE_WORKER"  # the parent's settings, read by every worker's app factory
MODEL_DIR = "model_dir"  # the store's meta key: the directory new workers load
HEALTHCHECK_S = 300  # a worker may take this long to load its model before it counts as failed


def serve_workers(model_dir: str | Path, *, workers: int, config, host: str = "127.0.0.1",
                  port: int = 8000, events: str | Path | None = None, data_dir: str | Path | None = None,
                  seed: bool = True, switch_interval_s: float = 0.001, log_level: str = "info",
                  access_log: bool = False) -> None:
    """Open (and seed) the store, then run ``workers`` uvicorn processes until stopped."""
    import uvicorn

    from ytdnn.serve.protocol import JSONErrorH11Protocol

    if workers < 2:
        raise ValueError(f"serve_workers needs workers >= 2, got {workers}")
    events = open_shared_store(model_dir, events, data_dir, seed)
    os.environ[ENV] = json.dumps({
        "model_dir": str(Path(model_dir).absolute()), "events": str(events.absolute()),
        "config": config.to_dict(), "switch_interval_s": switch_interval_s, "supervisor": os.getpid(),
    })
    uvicorn.run("ytdnn.serve.workers:app_from_environment", factory=True, workers=workers, host=host,
                port=port, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=10,
                http=JSONErrorH11Protocol, timeout_worker_healthcheck=HEALTHCHECK_S)


def open_shared_store(model_dir: str | Path, events: str | Path | None, data_dir: str | Path | None = None,
                      seed: bool = True) -> Path:
    """The parent's part: open (and seed) the store the workers share, recording ``model_dir``
    as the one they load (not one that a reload during an earlier run recorded); -> its path."""
    from ytdnn.pipeline import Recommender
    from ytdnn.serve.seed import open_event_store

    events = Path(events) if events is not None else Path(model_dir) / STORE_FILE
    store, _ = open_event_store(events, Recommender.load(model_dir), data_dir, seed)
    store.set_meta(MODEL_DIR, str(Path(model_dir).absolute()))
    store.close()
    return events


def app_from_environment():
    """One worker's app (uvicorn's factory), from the settings ``serve_workers`` left in ENV."""
    from ytdnn.serve.app import create_app
    from ytdnn.serve.engine import ServeConfig
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    settings = json.loads(os.environ[ENV])
    config = ServeConfig.from_dict(settings["config"])
    # this process's entry point: what `ytdnn serve` sets for its one process, each worker sets
    sys.setswitchinterval(settings["switch_interval_s"])
    if config.num_threads is not None:
        import torch

        torch.set_num_threads(config.num_threads)
    store = SQLiteEventStore(settings["events"])
    model_dir = store.get_meta(MODEL_DIR) or settings["model_dir"]
    app = create_app(model_dir, events=store, admin_token=os.environ.get("YTDNN_ADMIN_TOKEN") or None,
                     config=config)
    supervisor = settings["supervisor"]
    app.state.serve.after_reload = lambda model: reload_every_worker(store, model.model_dir, supervisor)
    return app


def reload_every_worker(store: Any, model_dir: str | Path, supervisor: int) -> None:
    """Record ``model_dir`` as the one new workers load, and ask the supervisor (a process id)
    to replace every worker."""
    store.set_meta(MODEL_DIR, str(model_dir))
    os.kill(supervisor, signal.SIGHUP)
