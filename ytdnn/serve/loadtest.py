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
server, set the pace). Each client holds one keep-alive HTTP/1.1 connection, spoken with h11 over
asyncio streams rather than through an HTTP client library, whose per-request bookkeeping would
cost the server a large share of the cores it shares with the client. Measured against a trivial
server in another process, on 2 shared cores (AMD EPYC): about 0.10 ms of client CPU per request
with 200 clients and 0.17 ms with one (each reply then wakes the loop by itself), against 0.7 ms
for one httpx.AsyncClient per client on the same machine; the client drove that server at about
5,000 requests/s with 200 clients, half a core busy. A server slower than that is what is measured.

``serve_in_thread(app)`` runs an ASGI app under uvicorn on a free loopback port in a background
thread, for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

import h11
import numpy as np

from ytdnn.serve.events import EventStore, Watch

_MAX_ERROR_SAMPLES = 5
_READ_SIZE = 65536
_USER_AGENT = b"ytdnn-loadtest"


def _split(base_url: str) -> tuple[SplitResult, str, int | None]:
    """The parsed URL, its host (lower case, an IPv6 address without brackets) and port."""
    try:
        url = urlsplit(base_url)
        return url, url.hostname or "", url.port
    except ValueError as err:  # e.g. an unclosed "[" or a port that is not a number
        raise ValueError(f"refusing {base_url!r}: not a valid URL ({err})") from None


def check_loopback(base_url: str) -> str:
    """``base_url`` without a trailing slash; ValueError unless it is http(s) on loopback."""
    url, host, _ = _split(base_url)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"refusing {base_url!r}: the load test speaks http(s) only")
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


@dataclass(frozen=True)
class _Origin:
    """Where every connection goes, and the request parts that never change during a run."""

    host: str  # for connecting: an IPv6 address without brackets
    port: int
    tls: ssl.SSLContext | None
    prefix: str  # the base URL's path, without a trailing slash
    get_headers: list[tuple[bytes, bytes]]

    @classmethod
    def of(cls, base_url: str, tls: ssl.SSLContext) -> _Origin:
        url, host, port = _split(check_loopback(base_url))
        https = url.scheme == "https"
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        prefix = quote(url.path.rstrip("/"), safe="/%!$&'()*+,;=:@")
        headers = [(b"host", netloc.encode("ascii")), (b"user-agent", _USER_AGENT)]
        return cls(host, port or (443 if https else 80), tls if https else None, prefix, headers)

    def post_headers(self, body: bytes) -> list[tuple[bytes, bytes]]:
        return [*self.get_headers, (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body))]


class ConnectionClosedBeforeReply(ConnectionError):
    """The server closed a kept-alive connection before any byte of the reply."""


class _Connection:
    """One simulated client's keep-alive HTTP/1.1 connection: h11 over asyncio streams.

    Opened on first use, and again after the server asked to close (``Connection: close``) or
    closed it, or after a failed request (its state is unknown then). A few lines of h11 and one
    socket per client instead of an httpx client: that is what keeps the client's CPU per request
    low enough that the server, not the client, sets the pace at saturation (module docstring).
    """

    def __init__(self, origin: _Origin):
        self.origin = origin
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.h11 = h11.Connection(h11.CLIENT)

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        """(status, body) of one request; OSError or h11.ProtocolError if it failed."""
        reader, writer = self.reader, self.writer
        reused = (
            writer is not None and not writer.is_closing() and not reader.at_eof()
            and reader.exception() is None
        )
        try:
            if not reused:
                await self._open()
            try:
                return await self._exchange(method, target, headers, body)
            except ConnectionClosedBeforeReply:
                # The server's keep-alive timeout may close an idle connection just as a request
                # goes out on it: try once more on a new one. On a new connection it is an error.
                if not reused:
                    raise
            self.close(abort=True)
            await self._open()
            return await self._exchange(method, target, headers, body)
        except BaseException:  # failed, timed out or cancelled mid-request: drop the connection
            self.close(abort=True)
            raise

    async def _open(self) -> None:
        self.close(abort=True)
        origin = self.origin
        self.reader, self.writer = await asyncio.open_connection(
            origin.host, origin.port, ssl=origin.tls,
            server_hostname=origin.host if origin.tls else None, limit=_READ_SIZE,
        )
        self.h11 = h11.Connection(h11.CLIENT)

    async def _exchange(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        conn, reader = self.h11, self.reader
        data = conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += conn.send(h11.Data(data=body))
        self.writer.write(data + conn.send(h11.EndOfMessage()))
        status, chunks, replied = 0, [], False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await reader.read(_READ_SIZE)
                except ConnectionError as err:
                    if replied:
                        raise
                    message = f"the server reset the connection ({err})"
                    raise ConnectionClosedBeforeReply(message) from err
                if not data and not replied:
                    message = "the server closed the connection before replying"
                    raise ConnectionClosedBeforeReply(message)
                replied = True
                conn.receive_data(data)  # b"": EOF; h11 raises if that cuts a reply short
                continue
            kind = type(event)
            if kind is h11.Data:
                chunks.append(event.data)
            elif kind is h11.Response:
                status = event.status_code
            elif kind is h11.EndOfMessage:
                break
            elif kind is not h11.InformationalResponse:  # a 1xx precedes the real reply
                raise ConnectionError(f"the server closed the connection mid-reply ({event})")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # Connection: close, an HTTP/1.0 reply or a body ended by EOF
            self.close()
        return status, b"".join(chunks)

    def close(self, abort: bool = False) -> asyncio.StreamWriter | None:
        """Close the connection (``abort``: at once, without a TLS goodbye); returns its writer."""
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
        return writer


async def _think(rng, think_time_s: float, deadline: float, first: bool = False) -> None:
    """Sleep a think time (never past the deadline): uniform in [0, mean) before the first
    request, exponential with that mean afterwards."""
    if think_time_s <= 0:
        return
    pause = rng.uniform(0, think_time_s) if first else rng.expovariate(1.0 / think_time_s)
    await asyncio.sleep(max(0.0, min(pause, deadline - time.perf_counter())))


async def _one_client(
    connection, rng, deadline, user_ids, item_ids, post_fraction, k, timeout, tally,
    think_time_s=0.0,
) -> None:
    await _think(rng, think_time_s, deadline, first=True)
    while time.perf_counter() < deadline:
        await _one_request(
            connection, rng, user_ids, item_ids, post_fraction, k, timeout, tally
        )
        await _think(rng, think_time_s, deadline)


async def _one_request(
    connection: _Connection, rng, user_ids, item_ids, post_fraction, k, timeout, tally
) -> None:
    origin = connection.origin
    user_id = rng.choice(user_ids)
    watch = None
    if rng.random() < post_fraction:
        endpoint = "events"
        watch = Watch(
            user_id, rng.choice(item_ids), int(time.time()), round(rng.uniform(1, 600), 3)
        )
        body = json.dumps(
            {"watches": [watch._asdict()], "searches": []}, separators=(",", ":")
        ).encode()
        method, target, headers = b"POST", f"{origin.prefix}/events", origin.post_headers(body)
    else:
        endpoint = "recommend"
        body, method, headers = b"", b"GET", origin.get_headers
        target = f"{origin.prefix}/recommend/{quote(str(user_id), safe='')}?k={k}"
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            status, reply = await connection.request(method, target.encode(), headers, body)
    except TimeoutError:
        tally.error(f"{endpoint}: TimeoutError: no complete reply within {timeout:g} s")
        return
    except (OSError, h11.ProtocolError) as err:
        tally.error(f"{endpoint}: {type(err).__name__}: {err}")
        return
    if not 200 <= status < 300:
        text = reply.decode("utf-8", errors="replace")
        tally.error(f"{endpoint}: HTTP {status}: {text[:200]}")
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
    # One TLS context for all connections: building one costs tens of ms.
    origin = _Origin.of(base_url, ssl.create_default_context())
    connections = [_Connection(origin) for _ in range(clients)]
    try:
        cpu_start, start = time.thread_time(), time.perf_counter()
        deadline = start + seconds
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    _one_client(
                        connection,
                        random.Random(seed * 1_000_003 + c),
                        deadline,
                        user_ids,
                        item_ids,
                        post_fraction,
                        k,
                        timeout,
                        tally,
                        think_time_s,
                    )
                    for c, connection in enumerate(connections)
                )
            ),
            timeout=seconds + timeout + 5.0,  # a backstop: each request has its own timeout
        )
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    finally:
        await _close_all(connections)
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


async def _close_all(connections: list[_Connection]) -> None:
    """Close every connection politely, waiting a moment for the closes (TLS says goodbye)."""
    writers = [w for w in (c.close() for c in connections) if w is not None]
    if writers:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


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
