"""`make bench ONLY=serving`: the HTTP API under load, on a 100k-item two-stage model.

The server (`ytdnn serve`, one uvicorn process, SQLite event store seeded with the training
history) and the load generator (`ytdnn.serve.loadtest`, one asyncio thread) run as two processes
on the same machine, all on loopback. Each client mixes `GET /recommend/{user}?k=10` (80%) with
`POST /events` of one watch (20%) over a sample of known users plus a few unknown ones.

Five runs, each a record:

1. 100 clients thinking 10, 5 and 2 s on average: latency against offered load; the 5 s run is
   the one held to the latency target (p99 of GET /recommend <= 25 ms);
2. 200 clients thinking 5 s: zero errors and zero lost events (every acknowledged watch is
   looked up in the store afterwards);
3. 200 clients without think time (closed loop): the saturation throughput. Its latencies are
   queueing (clients / throughput, Little's law), reported but not a target.

Think time (``THINK_TIME_S``): each client pauses an exponentially distributed time between a
reply and its next request, as a person does between pages, so N clients offer about
N / THINK_TIME_S requests/s. Without it "100 concurrent clients" would mean 100 requests always
queued, and p99 <= 25 ms would need ~4,000 requests/s: not a figure of one Python process on 2
cores. The figure chosen, and the offered rate it implies, are in each record's params.

Where server time goes: the server's /metrics are read before and after each run; the record
carries the inference seconds per stage per request (history read, user tower, index search,
ranker features, ranker model, ...) and the mean micro-batch size.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ytdnn.eval.report import Record

BENCHMARK = "serving"
DATASET = "synthetic-100k-items"
THINK_TIME_S = 5.0  # mean pause of a client between requests (exponential); the headline runs
RUNS = (  # (clients, think time, seconds)
    (100, 10.0, 40.0),  # a latency-vs-load curve at 100 clients: ~10, ~20, ~50 requests/s
    (100, THINK_TIME_S, 40.0),
    (100, 2.0, 40.0),
    (200, THINK_TIME_S, 40.0),
    (200, 0.0, 25.0),  # saturation
)
POST_FRACTION = 0.2
K = 10
NUM_USERS = 20_000  # drawn uniformly; 1% of them unknown to the model (popular list / features)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model_dir: Path, events: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "ytdnn", "serve", "--model", str(model_dir), "--port", str(port),
               "--events", str(events), "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _wait_healthy(base_url: str, server: subprocess.Popen, log: Path, timeout: float = 900.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            reply = httpx.get(f"{base_url}/health", timeout=2.0, trust_env=False)
            if reply.status_code == 200:
                return reply.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not become healthy in {timeout:.0f} s")


def _scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base_url}/metrics", timeout=30.0, trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _server_time(before: dict, after: dict) -> dict[str, float]:
    """Per recommend request: inference ms by stage, batch size, and the server-side latency."""
    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = delta("ytdnn_recommend_batch_size_sum")
    batches = delta("ytdnn_recommend_batch_size_count")
    stages = sorted({dict(k[1])["stage"] for k in after if k[0] == "ytdnn_recommend_stage_seconds_total"})
    out = {f"server_{stage}_ms": 1e3 * delta("ytdnn_recommend_stage_seconds_total", stage=stage)
           / max(requests, 1) for stage in stages}
    out["server_batch_size"] = requests / max(batches, 1)
    # the inference thread's wall time per request; what the stages above leave of it is the
    # pipeline's untimed glue (history -> streams, id decoding, building the answer)
    out["server_inference_ms"] = 1e3 * delta("ytdnn_recommend_batch_seconds_sum") / max(requests, 1)
    out["server_untimed_inference_ms"] = out["server_inference_ms"] - sum(
        v for k, v in out.items() if k.startswith("server_") and k.endswith("_ms") and k != "server_inference_ms")
    labels = {"endpoint": "/recommend/{user_id}", "method": "GET"}
    served = delta("ytdnn_http_request_duration_seconds_count", **labels)
    out["server_recommend_mean_ms"] = 1e3 * delta("ytdnn_http_request_duration_seconds_sum", **labels) / max(served, 1)
    return out


def _ids(model_dir: Path) -> tuple[list, list]:
    from ytdnn.features.vocab import Vocabulary

    users = Vocabulary.from_json(model_dir / "candidates" / "vocab" / "users.json").tokens_
    items = Vocabulary.from_json(model_dir / "candidates" / "vocab" / "items.json").tokens_
    rng = np.random.default_rng(0)
    known = rng.choice(len(users), NUM_USERS - NUM_USERS // 100, replace=False)
    unknown = [10**9 + n for n in range(NUM_USERS // 100)]
    return [users[i] for i in known] + unknown, list(items) + [10**12]  # one unknown item


def _one_run(base_url: str, store, clients: int, think: float, seconds: float, users, items,
             params: dict) -> Record:
    from ytdnn.serve.loadtest import run_load_test

    load_before = os.getloadavg()[0]
    before = _scrape(base_url)
    result = run_load_test(base_url, clients=clients, seconds=seconds, user_ids=users, item_ids=items,
                           post_fraction=POST_FRACTION, k=K, timeout=30.0, seed=clients,
                           think_time_s=think)
    after = _scrape(base_url)
    result.check_lost(store)
    figures = result.to_metrics()
    metrics = {
        **{name: figures[f"recommend_{name}"] for name in ("p50_ms", "p95_ms", "p99_ms")},
        "requests_per_s": figures["requests_per_s"], "errors": result.errors,
        "lost_events": result.lost_events, "num_requests": result.num_requests,
        "events_p99_ms": figures["events_p99_ms"], "all_p99_ms": figures["p99_ms"],
        "client_busy_fraction": figures["client_busy_fraction"], **_server_time(before, after),
    }
    metrics = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()}
    if result.error_samples:
        print(f"   error samples: {result.error_samples}", flush=True)
    mode = f"think {think:g} s" if think > 0 else "closed loop, no think time"
    offered = f"~{clients / think:.0f}" if think > 0 else "unbounded"
    print(f"   {clients} clients, {mode}: {metrics}", flush=True)
    run_params = {**params, "clients": clients, "think_time_s": think, "seconds": seconds,
                  "offered_requests_per_s": offered, "latency_of": "GET /recommend (p50/p95/p99)",
                  # other work on the machine inflates every figure: the 1-minute load average
                  # before and after the run (2 = both cores busy)
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return Record(BENCHMARK, DATASET, mode, f"ytdnn serve, {clients} clients", metrics,
                  {"run": round(result.seconds, 1)}, run_params)


def run() -> list[Record]:
    from bench.serving_model import build_100k_model, default_dir
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    start = time.perf_counter()
    model_dir = build_100k_model()
    seconds = {"model": round(time.perf_counter() - start, 1)}
    users, items = _ids(model_dir)
    with tempfile.TemporaryDirectory(prefix="ytdnn-serving-bench-") as tmp:
        events, log = Path(tmp) / "events.sqlite", Path(tmp) / "server.log"
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        start = time.perf_counter()
        server = _start_server(model_dir, events, port, log)
        try:
            health = _wait_healthy(base_url, server, log)
            seconds["start_and_seed"] = round(time.perf_counter() - start, 1)
            print(f"   server up in {seconds['start_and_seed']} s: {health['model']['version']}", flush=True)
            store = SQLiteEventStore(events)
            params = {"model_dir": str(default_dir().name), "num_items": health["model"]["num_items"],
                      "num_candidates": health["model"]["num_candidates"], "k": K,
                      "post_fraction": POST_FRACTION, "num_users": len(users), "server": "1 uvicorn process",
                      "store": "SQLite WAL"}
            _one_run(base_url, store, 20, 0.2, 5.0, users, items, params)  # warm-up, not recorded
            records = [_one_run(base_url, store, clients, think, length, users, items, params)
                       for clients, think, length in RUNS]
            store.close()
        finally:
            server.terminate()
            server.wait(30)
    for r in records:
        r.seconds.update(seconds)
    return records


if __name__ == "__main__":
    from ytdnn.eval.report import format_table

    print(format_table(run()))
