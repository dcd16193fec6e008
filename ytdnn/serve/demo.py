"""The serving step of ``make demo``: the API on the demo model, and a watch that changes the list.

    serve_demo("demo_out/model")

Starts the HTTP server on loopback for a few seconds (a throwaway event store, seeded with the
model's training history), asks for a user's recommendations, posts a watch of the top item,
asks again, prints both lists side by side, and ends with the command that runs the server.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ytdnn.serve.app import create_app
from ytdnn.serve.loadtest import serve_in_thread


def serve_demo(model_dir: str | Path, user: Any = None, k: int = 5, port: int = 8000,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo's serving step; returns {"user", "before", "after", "posted"} (the answers).

    user: whom to serve (default: the model's first known user); port: only printed, in the
    command for running the server yourself (the demo itself takes a free port).
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ytdnn-demo-events-") as tmp:
        app = create_app(model_dir, events=Path(tmp) / "events.sqlite")
        model = app.state.serve.holder.current
        if user is None:
            user = model.recommender.candidates.featurizer_.users_.tokens_[0]
        with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, trust_env=False,
                                                             timeout=30) as http:
            say(f"   serving {model.version} at {base_url} ({time.perf_counter() - start:.1f} s to start)")
            before = _get(http, f"/recommend/{user}", k)
            history = _get(http, f"/users/{user}/history", None, limit=1)
            last = max([w["timestamp"] for w in history["watches"]], default=0)
            watch = {"user_id": user, "item_id": before["items"][0]["item_id"], "timestamp": last + 60}
            posted = http.post("/events", json=watch)
            posted.raise_for_status()
            after = _get(http, f"/recommend/{user}", k)
    say(f"   POST /events {watch}  ->  {posted.json()}")
    _show(say, user, before, after)
    say("\nServe it yourself (Ctrl+C stops it; docs at /docs):")
    say(f"   .venv/bin/ytdnn serve --model {shlex.quote(str(model_dir))} --port {port}")
    say(f"   curl 'http://127.0.0.1:{port}/recommend/{user}?k=5'")
    say(f"   curl -X POST http://127.0.0.1:{port}/events -H 'content-type: application/json' "
        f"-d '{json.dumps({'user_id': user, 'item_id': watch['item_id'], 'timestamp': last + 120})}'")
    return {"user": user, "before": before, "after": after, "posted": watch}


def _get(http: httpx.Client, path: str, k: int | None, **params: Any) -> dict:
    reply = http.get(path, params={**({"k": k} if k is not None else {}), **params})
    reply.raise_for_status()
    return reply.json()


def _label(item: dict) -> str:
    title = item.get("title")
    return f"{item['item_id']}" + (f" {title}" if title else "")


def _show(say: Callable[[str], None], user: Any, before: dict, after: dict) -> None:
    say(f"\n   user {user}: recommendations before and after the watch (score, stage)")
    width = max(len(_label(i)) for i in before["items"] + after["items"]) + 2
    for n in range(max(len(before["items"]), len(after["items"]))):
        left = _cell(before["items"], n, width)
        right = _cell(after["items"], n, width)
        say(f"   {n + 1:2d}. {left} | {right}")


def _cell(items: list[dict], n: int, width: int) -> str:
    if n >= len(items):
        return " " * (width + 22)
    item = items[n]
    return f"{_label(item):<{width}} {item['score']:9.3f} {item['stage']:<10}"
