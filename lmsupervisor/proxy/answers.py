"""How the holding proxy writes its own answers to a client: a non-SSE answer's head with its
first bytes (:class:`Answer`), an HTTP/1.0 client's unsized answer ended by a close
(:func:`prepare`), a stream ended by an error event (:func:`sse_end`), LM Studio's error
as one (:func:`as_error`)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import web

from lmsupervisor.proxy.hold import event_break


class Answer(web.StreamResponse):
    """A non-SSE answer: its head goes out in one write with its first body bytes (as
    aiohttp's ``web.Response`` does), one send per small answer instead of two."""

    _send_headers_immediately = False  # aiohttp >= 3.11 reads it; older ones send the head at once


async def prepare(out: web.StreamResponse, request: web.BaseRequest) -> None:
    """Send ``out``'s head. An answer without a length to an HTTP/1.0 client ends when its
    connection closes: said with ``force_close`` (aiohttp 3.14 keeps a ``Connection:
    keep-alive`` one open, and the client never sees the end)."""
    if request.version < aiohttp.HttpVersion11 and out.content_length is None:
        out.force_close()
    await out.prepare(request)


def as_error(status: int, text: str) -> dict[str, Any]:
    """LM Studio's non-SSE answer to a request whose SSE head went out already: its own
    JSON error when it sent one, else its text wrapped as one."""
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and "error" in data:
            return data
    return {"error": {"message": text, "type": "upstream_error", "code": status}}


async def sse_end(out: web.StreamResponse, error: dict[str, Any], tail: bytes = b"") -> web.StreamResponse:
    """End an SSE answer with ``error`` as its last event, after the stream's last bytes
    ``tail`` (a partial event is ended first: the error is an event of its own)."""
    with contextlib.suppress(ConnectionError):
        await out.write(event_break(tail) + b"data: " + json.dumps(error).encode() + b"\n\n")
        await out.write_eof()
    return out
