"""Reading a request body as JSON without letting any client input reach a 5xx.

``read_json`` is the one way an endpoint reads its body. Every limit is checked before the body
can cost more than its size in memory, and everything a client can get wrong is a 4xx:

- 413 for a body over ``max_bytes`` (the declared Content-Length first, then the bytes as they
  arrive, so a 50 MB body is refused after reading 1 MiB of it);
- 400 for bytes that are not JSON: not UTF-8, not JSON syntax, ``NaN``/``Infinity`` (accepted by
  Python's parser, not by RFC 8259), an integer over Python's 4,300-digit conversion limit,
  nesting deeper than ``MAX_DEPTH`` (Python's parser recurses: a 10 KB body of 5,000 brackets
  otherwise ends in RecursionError), or a string holding a lone UTF-16 surrogate (``"\\ud800"``
  is legal JSON syntax but no Unicode text: SQLite, Arrow and the UTF-8 encoder of the response
  all fail on it later).

The depth and surrogate checks walk the parsed value once, with an explicit stack (no recursion);
on a 1 MiB body of small numbers, the worst case, the walk costs about as much as the parse.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import Request

from ytdnn.serve.errors import ApiError, one_line

MAX_DEPTH = 32  # the deepest body of this API is 3 ({"watches": [{...}]}); 32 leaves room


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _readable(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` (parsed JSON), or ApiError 400 when it nests deeper than ``max_depth`` containers
    or a string (key or value) holds a lone surrogate."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not _readable(node):
                raise ApiError(400, "malformed JSON: a string holds a lone UTF-16 surrogate "
                                    "(such as \\ud800), which is not Unicode text")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise ApiError(400, f"malformed JSON: nested deeper than {max_depth} levels")
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, str | dict | list))
    return value


def parse_json(data: bytes) -> Any:
    """``data`` as JSON (RFC 8259: no NaN or Infinity), checked by ``check_json``; ApiError 400
    for anything else."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, f"malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, _NotJson, a 4,301-digit int
        message = str(err)
        if "integer string conversion" in message:  # the int limit's advice is for the server
            message = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise ApiError(400, f"malformed JSON: {one_line(message)}") from None
    return check_json(value)


async def read_json(request: Request, max_bytes: int, empty: Any = ...) -> Any:
    """The request body as JSON: 413 when over ``max_bytes``, 400 when not JSON (see the module
    docstring); an empty body is ``empty`` when given."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):  # gzip, br, ...: read as JSON they would be garbage or a lie
        raise ApiError(415, f"Content-Encoding {encoding!r} is not accepted: send the JSON body uncompressed")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the body is over {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the body is over {max_bytes} bytes")
        chunks.append(chunk)
    if size == 0 and empty is not ...:
        return empty
    return parse_json(b"".join(chunks))

