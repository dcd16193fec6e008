"""Serving: the HTTP API over a Recommender, the event store that feeds fresh history back into
``recommend``, and a bounded loopback load test.

    from ytdnn.serve import create_app                 # FastAPI app over a model directory
    app = create_app("models/demo", events="events.sqlite")

Modules: ``app`` (endpoints), ``engine`` (the loaded model, ServeConfig, hot-reload holder),
``batcher`` (the inference thread), ``events`` / ``events_sqlite`` (the stores), ``seed``
(training history into a new store, atomically), ``popular`` (the fallback list), ``metrics``,
``admin``, ``errors``, ``bodies`` (reading request bodies safely), ``schemas`` (the OpenAPI
bodies), ``protocol`` (header limits, JSON protocol errors), ``loadtest``, ``fuzz``
(schemathesis), ``crashtest`` (kill -9), ``demo``. Names below are imported lazily, so that
importing the event store does not pull in FastAPI and torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_app": "ytdnn.serve.app",
    "ServeConfig": "ytdnn.serve.engine",
    "ServingModel": "ytdnn.serve.engine",
    "serve_demo": "ytdnn.serve.demo",
    "run_load_test": "ytdnn.serve.loadtest",
    "EventStore": "ytdnn.serve.events",
    "InMemoryEventStore": "ytdnn.serve.events",
    "SQLiteEventStore": "ytdnn.serve.events_sqlite",
}
__all__ = ["EventStore", "InMemoryEventStore", "SQLiteEventStore", "ServeConfig", "ServingModel",
           "create_app", "run_load_test", "serve_demo"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
