"""`ytdnn serve`: flags reach create_app and uvicorn (uvicorn itself is not started here)."""

import signal

import uvicorn

from ytdnn.cli import build_parser, main
from ytdnn.serve.protocol import JSONErrorH11Protocol


def test_serve_flags_reach_the_app_and_uvicorn(tiny_world_model, tmp_path, monkeypatch):
    _, model_dir = tiny_world_model
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setenv("YTDNN_ADMIN_TOKEN", "tok")
    previous = signal.getsignal(signal.SIGHUP)
    try:
        events = tmp_path / "events.sqlite"
        argv = ["serve", "--model", str(model_dir), "--port", "8123", "--events", str(events),
                "--max-batch", "4", "--log-level", "warning"]
        assert main(argv) == 0
    finally:
        signal.signal(signal.SIGHUP, previous)
    state = seen["app"].state.serve
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert state.admin_token == "tok" and state.config.max_batch_size == 4
    assert events.exists() and state.store.count()["watches"] > 0  # created and seeded
    assert seen["http"] is JSONErrorH11Protocol  # protocol-level 400s and 431s answer JSON too


def test_serve_defaults():
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.events, args.data, args.no_seed) == ("127.0.0.1", 8000, None, None, False)
