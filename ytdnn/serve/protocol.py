"""HTTP-level limits and errors, as JSON like every other error of the API.

- ``RequestLimitMiddleware`` (ASGI, in the app): a request whose headers (names and values) add
  up to more than ``max_header_bytes`` is answered 431, one whose target (path and query) is
  longer than that 414, before any endpoint reads it. uvicorn's h11 parser has a limit of its own
  (16 KiB) but applies it only while a request head arrives in pieces: a 100 KB header that
  reaches the server in one read, as it does on loopback, is parsed and passed on whole.
- ``JSONErrorH11Protocol``: uvicorn's h11 protocol whose answer to a request it cannot parse
  (its plain-text "Invalid HTTP request received.") is a JSON error: 431 when the unparsed head
  is over h11's limit, else 400. Such requests never reach the app; ``ytdnn serve`` and
  ``serve_in_thread`` run uvicorn with ``http=JSONErrorH11Protocol``.
"""

from __future__ import annotations

import json
import socket

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # what uvicorn uses too
from uvicorn.protocols.http.h11_impl import H11Protocol

from ytdnn.serve.errors import error_response


class RequestLimitMiddleware:
    """Refuses (431 / 414, JSON) requests with oversized headers or target (ASGI)."""

    def __init__(self, app, max_header_bytes: int) -> None:
        self.app, self.max_header_bytes = app, max_header_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            limit = self.max_header_bytes
            headers = sum(len(name) + len(value) for name, value in scope["headers"])
            target = len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"])
            refused = None
            if headers > limit:
                refused = error_response(431, f"the request headers are {headers} bytes; at "
                                              f"most {limit}")
            elif target > limit:
                refused = error_response(414, f"the request target (path and query) is {target} "
                                              f"bytes; at most {limit}")
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class JSONErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with its protocol-level errors as JSON (see the module docstring),
    and Nagle's algorithm off on every connection."""

    def connection_made(self, transport) -> None:
        # uvicorn writes a reply's head and its body apart; with Nagle on, the body waits for the
        # client's delayed ACK of the head (~40 ms on Linux). asyncio turns Nagle off only on
        # sockets created with IPPROTO_TCP named, which uvicorn's --workers socket and
        # serve_in_thread's are not.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        too_large = len(self.conn.trailing_data[0]) > limit
        status, message = ((431, f"the request head is over {limit} bytes") if too_large
                           else (400, "invalid HTTP request"))
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=status, headers=headers),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
