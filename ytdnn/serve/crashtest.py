"""Kill ``ytdnn serve`` with SIGKILL at random moments, restart it, and count what was lost.

    result = run_crash_test("models/demo", "events.sqlite", kills=20, seed=0)
    assert result.missing_training_watches == 0 and result.lost_events == 0

Each round starts ``python -m ytdnn serve --events EVENTS`` in a subprocess and kills it with
SIGKILL (no handler runs, no cleanup, no flush) at a random moment:

- ``"seeding"``: 0-``seeding_window_s`` (50 ms) after the store's file (its temporary seeding
  file, or the store itself) first appears, while the store is being created and seeded (the
  tiny test model's seeding takes ~50 ms); once the store exists, the moment is drawn over the
  start-up instead;
- ``"start-up"``: uniform over [0, 1.5 x the time a start takes), so about a third of the kills
  land after the server is up, while a client posts watches (``POST /events``, one batch at a
  time; a batch answered 200 is *acknowledged*).

The first round starts on a new store (``events`` must not exist). After the last kill the
server is started once more, left to come up, and stopped; then every training watch of the
model (``ytdnn.serve.seed.training_events``) and every acknowledged watch is looked up in the
store. Loopback only; every wait has a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from ytdnn.serve.events import Watch


@dataclass
class CrashTestResult:
    """What a run did and found; ``lost_events``: acknowledged watches not in the store."""

    kills: int = 0
    killed_while: Counter = field(default_factory=Counter)  # "seeding", "starting", "serving"
    kill_moments_s: list[float] = field(default_factory=list)  # after each start
    acknowledged: list[Watch] = field(default_factory=list)
    lost_events: int | None = None
    training_watches: int = 0
    missing_training_watches: int | None = None
    start_s: float = 0.0  # one start of the server, up to a healthy answer
    seconds: float = 0.0

    def to_metrics(self) -> dict:
        return {"kills": self.kills, "killed_while_seeding": self.killed_while["seeding"],
                "killed_while_starting": self.killed_while["starting"],
                "killed_while_serving": self.killed_while["serving"],
                "acknowledged_events": len(self.acknowledged), "lost_events": self.lost_events,
                "training_watches": self.training_watches,
                "missing_training_watches": self.missing_training_watches}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: str | Path, events: str | Path, port: int, log: Path,
                 *extra: str) -> subprocess.Popen:
    """``python -m ytdnn serve`` on 127.0.0.1:``port``, its output to ``log``."""
    command = [sys.executable, "-m", "ytdnn", "serve", "--model", str(model_dir), "--events",
               str(events), "--port", str(port), "--log-level", "info", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_healthy(base_url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return once GET /health answers 200; RuntimeError if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


def _store_appeared(events: Path, pid: int) -> bool:
    """The store, or the temporary store that process ``pid`` seeds (ytdnn.serve.seed), exists."""
    return events.exists() or events.with_name(f".{events.name}.seeding-{pid}").exists()


class _Poster:
    """Posts watches of made-up users, one small batch at a time, until stopped or refused."""

    def __init__(self, base_url: str, round_: int, acknowledged: list[Watch]):
        self.base_url, self.round, self.acknowledged = base_url, round_, acknowledged
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False) as http:
            while not self.stop.is_set():
                batch = [Watch(10**12 + self.round, n + i, 1_000 + n + i, 1.0) for i in range(5)]
                n += len(batch)
                try:
                    reply = http.post("/events", json={"watches": [w._asdict() for w in batch]})
                except httpx.HTTPError:
                    return  # killed
                if reply.status_code == 200:
                    self.acknowledged.extend(batch)


def _one_round(model_dir, events: Path, log: Path, rng, mode: str, start_s: float,
               seeding_window_s: float, result: CrashTestResult, timeout: float) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    new_store = not events.exists()
    spawned = time.monotonic()
    server = start_server(model_dir, events, port, log)
    poster = None
    try:
        if mode == "seeding" and new_store:
            while not _store_appeared(events, server.pid) and server.poll() is None:
                if time.monotonic() - spawned > timeout:
                    raise RuntimeError("the store's file never appeared")
                time.sleep(0.001)
            kill_at = time.monotonic() + rng.uniform(0, seeding_window_s)
        else:
            kill_at = spawned + rng.uniform(0, 1.5 * start_s)
        next_probe = spawned + 0.5 * start_s
        while time.monotonic() < kill_at and server.poll() is None:
            if poster is None and start_s and time.monotonic() > next_probe:
                next_probe = time.monotonic() + 0.05
                try:  # up already? then post until the kill
                    httpx.get(f"{base_url}/health", timeout=0.2, trust_env=False).raise_for_status()
                    poster = _Poster(base_url, result.kills, result.acknowledged)
                    poster.thread.start()
                except httpx.HTTPError:
                    pass
            time.sleep(0.002)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before its kill")
        server.send_signal(signal.SIGKILL)
        moment = time.monotonic() - spawned
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout)
        if poster is not None:
            poster.stop.set()
            poster.thread.join(timeout)
    result.kills += 1
    result.kill_moments_s.append(round(moment, 3))
    seeding = mode == "seeding" and new_store
    result.killed_while["seeding" if seeding else "serving" if poster else "starting"] += 1


def _time_a_start(model_dir, events: Path, log: Path, timeout: float) -> float:
    """Seconds from spawning the server to a healthy answer, on a store of its own (removed)."""
    probe = events.with_name(f"probe-{events.name}")
    port = free_port()
    started = time.monotonic()
    server = start_server(model_dir, probe, port, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, timeout)
        return time.monotonic() - started
    finally:
        server.kill()
        server.wait(timeout)
        for leftover in probe.parent.glob(f"*{probe.name}*"):
            leftover.unlink()


def run_crash_test(model_dir: str | Path, events: str | Path, *, kills: int = 20, seed: int = 0,
                   seeding_kills: int = 1, seeding_window_s: float = 0.05,
                   timeout: float = 120.0, log: Path | None = None) -> CrashTestResult:
    """Kill the server ``kills`` times (the first ``seeding_kills`` in "seeding" mode, the rest
    in "start-up" mode; see the module docstring), restart it, and check the store."""
    from ytdnn.pipeline import Recommender
    from ytdnn.serve.events_sqlite import SQLiteEventStore
    from ytdnn.serve.seed import training_events

    events = Path(events)
    if events.exists():
        raise ValueError(f"{events} exists; the crash test starts on a new store")
    log = log or events.with_name(events.name + ".log")
    rng = np.random.default_rng(seed)
    result = CrashTestResult()
    begin = time.monotonic()
    for round_ in range(kills):
        mode = "seeding" if round_ < seeding_kills else "start-up"
        if not result.start_s and not (mode == "seeding" and not events.exists()):
            result.start_s = _time_a_start(model_dir, events, log, timeout)
        _one_round(model_dir, events, log, rng, mode, result.start_s, seeding_window_s, result,
                   timeout)
    port = free_port()  # the last start: left to come up, then stopped
    server = start_server(model_dir, events, port, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, timeout)
    finally:
        server.terminate()
        server.wait(timeout)
    watches, _ = training_events(Recommender.load(model_dir).candidates)
    training = [Watch(*row) for row in zip(*(watches.column(c).to_pylist()
                                              for c in ("user_id", "item_id", "timestamp")))]
    with SQLiteEventStore(events) as store:
        result.training_watches = len(training)
        result.missing_training_watches = len(store.missing_watches(training))
        result.lost_events = len(store.missing_watches(result.acknowledged))
    result.seconds = time.monotonic() - begin
    return result
