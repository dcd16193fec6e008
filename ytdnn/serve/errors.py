"""Every error as JSON: ``{"error": {"status": 422, "message": "...", "field": ..., ...}}``.

Client mistakes are 4xx with a message that says what to change (``ApiError``, and the model's
``BadInput``: an id or a feature it cannot take, a 422 naming the field); FastAPI's own validation errors
(a non-integer ``k``, say) keep their per-field details. An unexpected exception is logged and
answered with a JSON 500 that says nothing of the internals.

Error bodies are written with every non-ASCII character escaped (``\\u00e9``): a message may quote
what the client sent, and text that is not valid Unicode (a lone surrogate) would otherwise make
the error's own UTF-8 encoding fail, turning a 4xx into a dropped connection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ytdnn.serve.engine import BadInput

log = logging.getLogger("ytdnn.serve")


class ApiError(Exception):
    """A 4xx answer: ``status``, a message, and any JSON-ready context (field, index, ...)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **context: Any):
        self.status, self.message, self.headers = status, message, headers
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(message)


class ErrorResponse(JSONResponse):
    """A JSON response whose body is ASCII (see the module docstring)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


MAX_MESSAGE = 1_000  # characters; a message quoting a 1 MiB id or 50,000 unknown names is cut


def error_response(status: int, message: str, headers: dict | None = None,
                   **context: Any) -> JSONResponse:
    """``{"error": {"status": ..., "message": ..., **context}}`` with that status."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    body = {"error": {"status": status, "message": message, **context}}
    return ErrorResponse(jsonable_encoder(body), status_code=status, headers=headers)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to
    ``limit`` characters: an exception's message as an error message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, headers=err.headers, **err.context)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: BadInput) -> JSONResponse:  # an id or feature the model cannot take
        return error_response(422, str(err), **({"field": err.field} if err.field else {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        details = [{"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
                   for e in err.errors()]
        first = details[0] if details else {"location": [], "message": "invalid request"}
        where = ".".join(str(p) for p in first["location"])
        return error_response(422, f"{where}: {first['message']}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, err: ClientDisconnect) -> JSONResponse:
        # the client left before its body arrived: nothing failed here, and no one reads the
        # answer; 499 is the status proxies count such requests under ("client closed request")
        log.debug("client left during %s %s", request.method, request.url.path)
        return error_response(499, "client closed the request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return error_response(500, "internal error")
