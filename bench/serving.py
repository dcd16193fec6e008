"""`make bench ONLY=serving`: the HTTP API under load, on a 100k-item two-stage model.

The server (`ytdnn serve`, one uvicorn process, SQLite event store seeded with the training
history) and the load generator (`ytdnn.serve.loadtest`, one asyncio thread) run as two processes
on the same machine, all on loopback. Each client mixes `GET /recommend/{user}?k=10` (80%) with
`POST /events` of one watch (20%) over a sample of known users plus a few unknown ones.

Five load runs per server, each a record:

1. 100 clients thinking 10, 5 and 2 s on average: latency against offered load; the 2 s run
   (~50 requests/s) is the one held to the latency target (p99 of GET /recommend <= 25 ms,
   issue 21);
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

Two ranking paths (issue 21). The runs above are of ``ytdnn serve`` as shipped (the fast path:
every item's share of the ranker's first layer precomputed at load). The same server started
with ``--reference-path`` is then run at 100 clients, 2 s, and at saturation, for the ratio in
one run. ``--workers 2`` (two processes sharing the port and the SQLite store) runs all five;
its /metrics are per worker, so those records carry no server figures.
``YTDNN_BENCH_SERVING_BASELINE=<commit>`` also runs that commit's own ``ytdnn serve``
(``git archive``, nothing checked out) at saturation. In-process records time
``recommend_batch`` on both paths (bench/serving_paths.py), and a projection puts requests/s per
core beside the arithmetic floor. ``YTDNN_BENCH_SERVING_SECONDS=<s>`` shortens every load run (a
smoke run, not a record to keep).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
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
REFERENCE_RUNS = ((100, 2.0, 40.0), (200, 0.0, 25.0))  # the reference path: latency target, saturation
IN_PROCESS_REQUESTS = 500
SATURATION_KEYS = {"fast path": "fast", "reference path": "reference", "fast path, 2 workers": "fast_2_workers"}
POST_FRACTION = 0.2
K = 10
NUM_USERS = 20_000  # drawn uniformly; 1% of them unknown to the model (popular list / features)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model_dir: Path, events: Path, port: int, log: Path, flags: tuple[str, ...] = (),
                  code: Path | None = None) -> subprocess.Popen:
    """``ytdnn serve`` of this tree, or of the tree at ``code`` (a baseline commit's)."""
    command = [sys.executable, "-m", "ytdnn", "serve", "--model", str(model_dir), "--port", str(port),
               "--events", str(events), "--log-level", "warning", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if code is not None:  # ahead of the installed (editable) ytdnn on the path
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=code)


def _baseline_code(commit: str, into: Path) -> Path:
    """The ``ytdnn`` package of ``commit``, extracted under ``into`` (read from git, the working
    tree untouched) -> the folder to put on PYTHONPATH."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit, "ytdnn"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


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
             params: dict, path: str = "fast path") -> Record:
    from ytdnn.serve.loadtest import run_load_test

    load_before = os.getloadavg()[0]
    # each worker process has its own /metrics: server figures only from a one-process server
    one_process = "--workers" not in params["server_flags"]
    before = _scrape(base_url) if one_process else {}
    result = run_load_test(base_url, clients=clients, seconds=seconds, user_ids=users, item_ids=items,
                           post_fraction=POST_FRACTION, k=K, timeout=30.0, seed=clients,
                           think_time_s=think)
    after = _scrape(base_url) if one_process else {}
    result.check_lost(store)
    figures = result.to_metrics()
    metrics = {
        **{name: figures[f"recommend_{name}"] for name in ("p50_ms", "p95_ms", "p99_ms")},
        "requests_per_s": figures["requests_per_s"], "errors": result.errors,
        "lost_events": result.lost_events, "num_requests": result.num_requests,
        "events_p99_ms": figures["events_p99_ms"], "all_p99_ms": figures["p99_ms"],
        "client_busy_fraction": figures["client_busy_fraction"],
        **(_server_time(before, after) if one_process else {}),
    }
    metrics = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()}
    if result.error_samples:
        print(f"   error samples: {result.error_samples}", flush=True)
    mode = f"think {think:g} s" if think > 0 else "closed loop, no think time"
    offered = f"~{clients / think:.0f}" if think > 0 else "unbounded"
    print(f"   {path}, {clients} clients, {mode}: {metrics}", flush=True)
    run_params = {**params, "clients": clients, "think_time_s": think, "seconds": seconds,
                  "offered_requests_per_s": offered, "latency_of": "GET /recommend (p50/p95/p99)",
                  # other work on the machine inflates every figure: the 1-minute load average
                  # before and after the run (2 = both cores busy)
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return Record(BENCHMARK, DATASET, mode, f"ytdnn serve ({path}), {clients} clients", metrics,
                  {"run": round(result.seconds, 1)}, {**run_params, "path": path})


def _serve_runs(model_dir: Path, events: Path, log: Path, runs, users, items, path: str,
                flags: tuple[str, ...] = (), code: Path | None = None) -> tuple[list[Record], dict]:
    """Start one server, warm it up, load it with ``runs`` (clients, think, seconds), stop it."""
    from bench.serving_model import default_dir
    from ytdnn.serve.events_sqlite import SQLiteEventStore

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    server = _start_server(model_dir, events, port, log, flags, code)
    try:
        health = _wait_healthy(base_url, server, log)
        seconds = {"start_and_seed": round(time.perf_counter() - start, 1)}
        print(f"   {path}: server up in {seconds['start_and_seed']} s: {health['model']['version']}", flush=True)
        store = SQLiteEventStore(events)
        params = {"model_dir": str(default_dir().name), "num_items": health["model"]["num_items"],
                  "num_candidates": health["model"]["num_candidates"], "k": K,
                  "post_fraction": POST_FRACTION, "num_users": len(users),
                  "server": f"{flags[flags.index('--workers') + 1]} uvicorn workers" if "--workers" in flags
                  else "1 uvicorn process",
                  "store": "SQLite WAL", "server_flags": " ".join(flags)}
        _one_run(base_url, store, 20, 0.2, 5.0, users, items, params, path)  # warm-up, not recorded
        records = [_one_run(base_url, store, clients, think, _seconds(length), users, items, params, path)
                   for clients, think, length in runs]
        store.close()
    finally:
        server.terminate()
        server.wait(30)
    return records, seconds


def _seconds(length: float) -> float:
    short = os.environ.get("YTDNN_BENCH_SERVING_SECONDS")
    return float(short) if short else length


def run() -> list[Record]:
    import torch

    from bench.serving_model import build_100k_model
    from bench.serving_paths import floor, in_process, projection

    start = time.perf_counter()
    model_dir = build_100k_model()
    seconds = {"model": round(time.perf_counter() - start, 1)}
    torch.set_num_threads(1)  # as `ytdnn serve --threads 1` runs its inference thread
    requests = IN_PROCESS_REQUESTS if not os.environ.get("YTDNN_BENCH_SERVING_SECONDS") else 100
    records = [in_process(model_dir, fast, requests, batch, DATASET) for batch in (1, 16) for fast in (False, True)]
    for r in records:
        print(f"   {r.model}, {r.protocol}: {r.metrics}", flush=True)
    users, items = _ids(model_dir)
    saturation: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ytdnn-serving-bench-") as tmp:
        events, log = Path(tmp) / "events.sqlite", Path(tmp) / "server.log"
        variants = [("fast path", RUNS, (), None), ("reference path", REFERENCE_RUNS, ("--reference-path",), None),
                    ("fast path, 2 workers", RUNS, ("--workers", "2"), None)]
        baseline = os.environ.get("YTDNN_BENCH_SERVING_BASELINE")
        if baseline:
            code = _baseline_code(baseline, Path(tmp) / "baseline")
            variants.append((f"baseline {baseline}", REFERENCE_RUNS[-1:], (), code))
        for path, runs, flags, code in variants:
            # one store for all: the first server seeds it, the others open it as it stands
            done, started = _serve_runs(model_dir, events, log, runs, users, items, path, flags, code)
            for r in done:
                r.seconds.update({**seconds, **started})
                if r.params["think_time_s"] == 0:
                    saturation[SATURATION_KEYS.get(path, "baseline")] = r.metrics["requests_per_s"]
            records += done
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    records.append(projection(floor(model_dir), saturation, cores, DATASET))
    print(f"   projection: {records[-1].metrics}", flush=True)
    return records


if __name__ == "__main__":
    from ytdnn.eval.report import format_table

    print(format_table(run()))
