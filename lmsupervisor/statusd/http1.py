"""HTTP/1.1 for the status server: requests parsed by httptools (llhttp, C), answers formatted here.

:class:`RequestParser` is fed bytes as they arrive and hands out complete
:class:`Request` objects in order (pipelining), or an :class:`~lmsupervisor.errors.HttpError` saying why the
next one is refused: 400 (malformed, no ``Host`` on HTTP/1.1, a target that is not
printable ASCII, a protocol upgrade), 411 (HTTP/1.0 POST without a length), 413 (a body
over ``max_body`` bytes, by ``Content-Length`` or as it arrives), 431 (a head over
``max_head`` bytes, whole or trickled), 501 (a transfer coding other than chunked).
Bodies are counted and dropped: no endpoint takes one.

Answers are small and built here in one piece (:func:`response`); event streams use
chunked framing (:func:`chunk`) on HTTP/1.1 and the end of the connection on HTTP/1.0.
h11 did this before, at about 100 µs a request: the parser here costs a few.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus

import httptools

from lmsupervisor.errors import HttpError

MAX_HEAD = 16 * 1024  # bytes: request line + headers (431 past it)
MAX_BODY = 1024 * 1024  # bytes: request bodies are read and dropped (413 past it)
PHRASES = {s.value: s.phrase for s in HTTPStatus}


class Request:
    """One complete request: ``method``, ``target`` (text), ``version`` (``"1.1"``),
    ``headers`` (lower-case name -> value, the last one of a name), ``keep_alive``."""

    __slots__ = ("headers", "keep_alive", "method", "target", "version")

    def __init__(self) -> None:
        self.method = ""
        self.target = ""
        self.version = "1.1"
        self.headers: dict[bytes, bytes] = {}
        self.keep_alive = True


class RequestParser:
    """Feed bytes with :meth:`feed`; take :attr:`ready` requests; stop at :attr:`error`."""

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.ready: deque[Request] = deque()
        self.error: HttpError | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._cur: Request | None = None  # begun, not complete
        self._target = bytearray()
        self._head = 0  # bytes of the current head, from the callbacks
        self._partial = 0  # bytes fed while a head was incomplete (a trickled head)
        self._in_head = False
        self._body = 0

    @property
    def mid_request(self) -> bool:
        """A request has begun and is not complete (its deadline runs)."""
        return self._cur is not None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; sets :attr:`error` instead of raising."""
        if self.error is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            te = self._cur.headers.get(b"transfer-encoding") if self._cur is not None else None
            if te is not None and te.strip().lower() != b"chunked":
                self._fail(501, "only the chunked transfer coding is supported")
            else:
                self._fail(400, f"malformed request: {exc}")
        if self._in_head:
            self._partial += len(data)
            if self._partial > self.max_head + len(data):
                self._fail(431, f"request headers may have at most {self.max_head} bytes")

    def _fail(self, status: int, message: str) -> None:
        if self.error is None:
            self.error = HttpError(status, message)

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        """httptools: a request begins."""
        self._cur = Request()
        self._target.clear()
        self._head = 0
        self._body = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        """httptools: (a piece of) the request target."""
        self._target += url
        self._head += len(url)
        if self._head > self.max_head:
            self._fail(431, f"request headers may have at most {self.max_head} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one complete header."""
        self._head += len(name) + len(value) + 4
        if self._head > self.max_head:
            self._fail(431, f"request headers may have at most {self.max_head} bytes")
        if self._cur is not None:
            self._cur.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        """httptools: the head is complete: check it (400, 411, 413, 501)."""
        self._in_head, self._partial = False, 0
        req = self._cur
        if req is None or self.error is not None:
            return
        req.method = self._parser.get_method().decode("latin-1")
        req.version = self._parser.get_http_version()
        req.keep_alive = self._parser.should_keep_alive()
        target = bytes(self._target)
        if not target or any(b < 0x21 or b > 0x7E for b in target):
            self._fail(400, "the request target must be printable ASCII (percent-encode the rest)")
            return
        req.target = target.decode("ascii")
        headers = req.headers
        if req.version == "1.1" and b"host" not in headers:
            self._fail(400, "an HTTP/1.1 request needs a Host header")
            return
        te = headers.get(b"transfer-encoding")
        if te is not None and te.strip().lower() != b"chunked":
            self._fail(501, "only the chunked transfer coding is supported")
            return
        length = headers.get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            self._fail(413, f"a request body may have at most {self.max_body} bytes")
            return
        if req.method == "POST" and req.version == "1.0" and length is None:
            self._fail(411, "an HTTP/1.0 POST needs a Content-Length")

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the body, counted and dropped (413 past the cap)."""
        self._body += len(body)
        if self._body > self.max_body:
            self._fail(413, f"a request body may have at most {self.max_body} bytes")

    def on_message_complete(self) -> None:
        """httptools: the request is complete: ready to answer, unless refused."""
        req, self._cur = self._cur, None
        if req is not None and self.error is None:
            self.ready.append(req)


def response(
    status: int,
    body: bytes,
    ctype: str = "application/json",
    extra: tuple[tuple[str, str], ...] = (),
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    """A whole answer: status line, ``Content-Type``, ``Content-Length``, ``Server``,
    ``extra`` headers, ``Connection: close`` when ``close``; the body unless ``head_only``."""
    lines = [
        f"HTTP/1.1 {status} {PHRASES.get(status, 'Unknown')}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Server: lmsupervisor",
        *(f"{name}: {value}" for name, value in extra),
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def stream_head(ctype: str, chunked: bool) -> bytes:
    """The head of a streamed answer (200): chunked on HTTP/1.1, else ended by closing."""
    framing = "Transfer-Encoding: chunked\r\n" if chunked else "Connection: close\r\n"
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nCache-Control: no-cache\r\nServer: lmsupervisor\r\n{framing}\r\n"
    ).encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; ``b""`` gives the last chunk (the end of the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"
