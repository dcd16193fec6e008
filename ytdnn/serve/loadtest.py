"""A bounded load test of the serving API, on loopback only, that stops by itself.

``run_load_test`` drives ``clients`` concurrent clients for ``seconds``: each loops, posting a
watch to ``POST /events`` with probability ``post_fraction`` and otherwise asking
``GET /recommend/{user_id}?k=k``, then thinks for a while before its next request.

Think time. Each client waits an exponentially distributed time, mean ``think_time_s``, after
each reply (and a uniform random part of one before its first request, so that clients do not
start in lockstep). That is how a person uses a service, and it is what "N concurrent users"
means: N users thinking ``think_time_s`` on average offer at most about N / think_time_s requests
per second, and latency is then what the server takes, plus queueing only when it is near its
capacity. With ``think_time_s=0`` the test is closed-loop without think time: every client fires
its next request the moment the last one returns, so the server always has ``clients`` requests
queued and latency is simply clients / throughput (Little's law). That mode measures the
saturation throughput; its latencies measure the queue, not the server.

It refuses any host but loopback (it is a benchmark of this machine's server, never a tool to aim
at someone else's), follows no redirects, and every request has a timeout, so a run lasts at most
``seconds + timeout``. Proxy settings in the environment are ignored.

All clients share one asyncio loop in one thread. So that a slow client is never mistaken for a
slow server, the result reports the CPU time that thread spent per request
(``client_cpu_ms_per_request``) and the share of the run it was busy (``client_busy_fraction``;
near 1.0, or near the share of a core the machine can give it, means the client, not the
server, set the pace). Measured against a trivial server in another process, on 2 shared cores:
about 1.1 ms of client CPU per request whether 1 or 200 clients run, i.e. a ceiling near
600-900 requests/s for this one-process client; a server slower than that is what is measured.

``serve_in_thread(app)`` runs an ASGI app under uvicorn on a free loopback port in a background
thread, for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from ytdnn.serve.events import EventStore, Watch

_MAX_ERROR_SAMPLES = 5


def check_loopback(base_url: str) -> str:
    """``base_url`` without a trailing slash; ValueError unless it is http(s) on loopback."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"refusing {base_url!r}: the load test speaks http(s) only")
    host = url.host.lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to load-test {base_url!r}: host {host!r} is not loopback "
            "(127.0.0.1, localhost or ::1)"
        )
    return str(base_url).rstrip("/")


def _plain(ids: Sequence[Any]) -> list[Any]:
    """Python ints/strs (NumPy scalars unwrapped), so they serialize to JSON."""
    return [v.item() if isinstance(v, np.generic) else v for v in ids]


@dataclass
class LoadTestResult:
    """What one run measured. ``posted``: the watches the server acknowledged (2xx)."""

    clients: int
    seconds: float  # wall time from the first request to the last response
    latencies_ms: dict[str, list[float]]  # endpoint ("recommend", "events") -> one per 2xx reply
    errors: int  # non-2xx replies and exceptions (timeouts, refused connections, ...)
    error_samples: list[str]
    posted: list[Watch]
    client_cpu_s: float  # CPU time of the thread that ran every client
    think_time_s: float = 0.0  # mean think time between a client's requests (0: none)
    lost_events: int | None = None  # set by check_lost
    lost: list[Watch] = field(default_factory=list)

    @property
    def num_requests(self) -> int:
        return sum(map(len, self.latencies_ms.values())) + self.errors

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self, endpoint: str | None = None) -> dict[str, float | None]:
        """p50/p95/p99 in ms of successful requests, of one endpoint or all (None if none)."""
        values = (
            self.latencies_ms.get(endpoint, [])
            if endpoint
            else [v for vs in self.latencies_ms.values() for v in vs]
        )
        if not values:
            return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
        p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99]).tolist()
        return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99}

    def check_lost(self, store: EventStore | Callable[[list[Watch]], Sequence[Any]]) -> int:
        """Count acknowledged watches that are not stored; sets ``lost_events`` and ``lost``.

        ``store``: an EventStore, or a callable taking the posted watches and returning the
        missing ones (for a store reached another way, e.g. ``GET /users/{id}/history``).
        """
        check = store.missing_watches if isinstance(store, EventStore) else store
        self.lost = list(check(self.posted))
        self.lost_events = len(self.lost)
        return self.lost_events

    def to_metrics(self) -> dict[str, Any]:
        """Flat figures for a benchmark record; ``lost_events`` is None until check_lost ran."""
        metrics: dict[str, Any] = {
            **self.percentiles(),
            "requests_per_s": self.requests_per_s,
            "errors": self.errors,
            "lost_events": self.lost_events,
            "num_requests": self.num_requests,
            "clients": self.clients,
            "think_time_s": self.think_time_s,
            "seconds": self.seconds,
            "client_cpu_ms_per_request": 1e3 * self.client_cpu_s / max(self.num_requests, 1),
            "client_busy_fraction": self.client_cpu_s / self.seconds if self.seconds > 0 else 0.0,
        }
        for endpoint in sorted(self.latencies_ms):
            for name, value in self.percentiles(endpoint).items():
                metrics[f"{endpoint}_{name}"] = value
        return metrics


@dataclass
class _Tally:
    """Shared by all clients: one event loop thread, so no lock is needed."""

    latencies_ms: dict[str, list[float]] = field(
        default_factory=lambda: {"recommend": [], "events": []}
    )
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    posted: list[Watch] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(what)


def _make_client(base_url: str, timeout: float, tls: ssl.SSLContext) -> httpx.AsyncClient:
    # One AsyncClient (one keep-alive connection) per simulated client: httpcore's shared pool
    # assigns requests to connections in O(connections x requests) per request (encode/httpcore
    # PR #1035): one pool of 200 connections measured 15.7 ms of client CPU per request,
    # 200 pools of one 1.1 ms.
    # One shared TLS context: httpx builds a new one (tens of ms) for every client otherwise.
    # trust_env=False: an HTTP(S)_PROXY in the environment must not route loopback traffic away.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(
        base_url=base_url,
        limits=limits,
        timeout=timeout,
        verify=tls,
        follow_redirects=False,
        trust_env=False,
    )


async def _think(rng, think_time_s: float, deadline: float, first: bool = False) -> None:
    """Sleep a think time (never past the deadline): uniform in [0, mean) before the first
    request, exponential with that mean afterwards."""
    if think_time_s <= 0:
        return
    pause = rng.uniform(0, think_time_s) if first else rng.expovariate(1.0 / think_time_s)
    await asyncio.sleep(max(0.0, min(pause, deadline - time.perf_counter())))


async def _one_client(
    http, rng, deadline, user_ids, item_ids, post_fraction, k, tally, think_time_s=0.0
) -> None:
    await _think(rng, think_time_s, deadline, first=True)
    while time.perf_counter() < deadline:
        await _one_request(http, rng, user_ids, item_ids, post_fraction, k, tally)
        await _think(rng, think_time_s, deadline)


async def _one_request(http, rng, user_ids, item_ids, post_fraction, k, tally) -> None:
    user_id = rng.choice(user_ids)
    watch = None
    if rng.random() < post_fraction:
        endpoint = "events"
        watch = Watch(
            user_id, rng.choice(item_ids), int(time.time()), round(rng.uniform(1, 600), 3)
        )
        request = http.post("/events", json={"watches": [watch._asdict()], "searches": []})
    else:
        endpoint = "recommend"
        request = http.get(f"/recommend/{quote(str(user_id), safe='')}", params={"k": k})
    start = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as err:
        tally.error(f"{endpoint}: {type(err).__name__}: {err}")
        return
    if not response.is_success:
        tally.error(f"{endpoint}: HTTP {response.status_code}: {response.text[:200]}")
        return
    tally.latencies_ms[endpoint].append(1e3 * (time.perf_counter() - start))
    if watch is not None:
        tally.posted.append(watch)


async def run_load_test_async(
    base_url: str,
    *,
    clients: int,
    seconds: float,
    user_ids: Sequence[Any],
    item_ids: Sequence[Any],
    post_fraction: float = 0.2,
    k: int = 10,
    timeout: float = 10.0,
    seed: int = 0,
    think_time_s: float = 0.0,
) -> LoadTestResult:
    """``run_load_test`` for a caller already inside an event loop."""
    base_url = check_loopback(base_url)
    if clients < 1 or seconds <= 0 or timeout <= 0:
        raise ValueError(
            f"need clients >= 1, seconds > 0, timeout > 0; got {clients}, {seconds}, {timeout}"
        )
    if not 0 <= post_fraction <= 1:
        raise ValueError(f"post_fraction must be in [0, 1], got {post_fraction}")
    if not think_time_s >= 0:
        raise ValueError(f"think_time_s must be >= 0, got {think_time_s}")
    if len(user_ids) == 0 or len(item_ids) == 0:
        raise ValueError("user_ids and item_ids must not be empty")
    user_ids, item_ids = _plain(user_ids), _plain(item_ids)
    tally = _Tally()
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        http_clients = [
            await stack.enter_async_context(_make_client(base_url, timeout, tls))
            for _ in range(clients)
        ]
        cpu_start, start = time.thread_time(), time.perf_counter()
        deadline = start + seconds
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    _one_client(
                        http,
                        random.Random(seed * 1_000_003 + c),
                        deadline,
                        user_ids,
                        item_ids,
                        post_fraction,
                        k,
                        tally,
                        think_time_s,
                    )
                    for c, http in enumerate(http_clients)
                )
            ),
            timeout=seconds + timeout + 5.0,  # a backstop: each request has its own timeout
        )
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    return LoadTestResult(
        clients,
        elapsed,
        tally.latencies_ms,
        tally.errors,
        tally.error_samples,
        tally.posted,
        cpu,
        think_time_s,
    )


def run_load_test(
    base_url: str,
    *,
    clients: int,
    seconds: float,
    user_ids: Sequence[Any],
    item_ids: Sequence[Any],
    post_fraction: float = 0.2,
    k: int = 10,
    timeout: float = 10.0,
    seed: int = 0,
    think_time_s: float = 0.0,
) -> LoadTestResult:
    """Run the load test (see the module docstring) and return what it measured.

    ``user_ids`` / ``item_ids``: drawn uniformly for each request (``seed`` makes the draws
    repeatable); ``timeout``: seconds per request; ``think_time_s``: mean pause of a client between
    a reply and its next request (0: closed loop, no pause). Raises ValueError for a non-loopback
    ``base_url`` before sending anything.
    """
    check_loopback(base_url)
    return asyncio.run(
        run_load_test_async(
            base_url,
            clients=clients,
            seconds=seconds,
            user_ids=user_ids,
            item_ids=item_ids,
            post_fraction=post_fraction,
            k=k,
            timeout=timeout,
            seed=seed,
            think_time_s=think_time_s,
        )
    )


@contextlib.contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", log_level: str = "warning", startup_timeout: float = 10.0
) -> Iterator[str]:
    """Run ASGI ``app`` under uvicorn on a free port of ``host``; yields its base URL.

    The socket is bound here, before the server starts, so the port is known without a race.
    uvicorn runs as ``ytdnn serve`` runs it: h11, with protocol-level errors as JSON
    (``ytdnn.serve.protocol``). On exit the server is asked to stop (``should_exit``) and the
    thread is joined.
    """
    import uvicorn  # a serving dependency only, not needed to import this module's client

    from ytdnn.serve.protocol import JSONErrorH11Protocol

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="auto",
                                           http=JSONErrorH11Protocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        stop_waiting = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > stop_waiting:
                raise RuntimeError(f"uvicorn did not start on {host}:{port} (see its log above)")
            time.sleep(0.01)
        yield f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()
