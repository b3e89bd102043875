"""A request's exchange with LM Studio on a kept-alive connection of the proxy's own, its
answer's body written on to the client from the socket callback as it arrives.

Why not aiohttp's client (still used for a body too large to keep, and for ``HEAD``, whose
answer's length says nothing of its body): there each piece of an answer wakes the handler
task (one more loop iteration, aiohttp's ``StreamReader``, the task's frames) before it is
written on, and building each request is aiohttp's whole client machinery. Here the answer
is parsed by httptools (llhttp, C) inside the upstream connection's ``data_received``, and
each piece of body is written to the client's transport in that same callback, as a byte
relay does. ``bench/proxy.py``, interleaved, 2 cores, added p50: per SSE event 0.19-0.22 ms
through aiohttp's client, 0.08-0.12 ms here, 0.06-0.10 ms through a bare byte relay (the
floor of one more process on the path); a small request 0.32-0.52 ms through aiohttp's
client, 0.24-0.42 ms here; 32 clients 6-8.6k requests/s through aiohttp's client, 10-16k here.

The three ways LM Studio may frame a body are told apart (facts leave it open):
``chunked``, ``length`` (``Content-Length``), and ``close`` (the body ends when LM Studio
closes the connection: a cut is then only seen in a stream's last event,
:func:`~lmsupervisor.proxy.hold.complete`). A connection whose answer ended as framed and
that LM Studio keeps alive goes back to :class:`Upstreams` for the next request, and is
closed after its ``keepalive`` seconds unused.

Raises :class:`~lmsupervisor.errors.ProxyUnreachedError` when no connection could be made
(the request never reached LM Studio) and :class:`~lmsupervisor.errors.ProxyUnansweredError`
when LM Studio closed the connection or sent something unreadable before an answer's head.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Literal

import httptools
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from lmsupervisor.errors import ProxyUnansweredError, ProxyUnreachedError
from lmsupervisor.proxy.hold import REQUEST_OWN, SSE, forwarded, tail_after, whole_events

Framing = Literal["chunked", "length", "close"]
EARLY_LIMIT = 1024 * 1024  # bytes of an answer read before anyone takes them; then LM Studio is not read
IDEMPOTENT = frozenset({"GET", "OPTIONS", "PUT", "DELETE", "TRACE"})  # sent again when a kept connection was stale


class UpstreamConnection(asyncio.Protocol):
    """One connection to LM Studio, and the request on it now with its answer.

    After :meth:`Upstreams.exchange` returns, the head is known: ``status``, ``reason``, ``headers``
    (names and values as sent), ``content_type`` (lower case, no parameters, ``""`` when
    absent), ``content_length`` (bytes, or None) and ``framing``. The body is then taken
    with :meth:`first` and :meth:`pass_on`, or :meth:`whole`; then :meth:`release` keeps
    the connection for the next request or closes it. :meth:`close` ends the connection at
    any time (idempotent)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Upstreams | None = None) -> None:
        self._loop = loop
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None  # LM Studio's address, the pool's key
        self.lost = False  # the connection is closed
        self.reused = False  # the request now is not the connection's first
        self._begin()

    def _begin(self) -> None:
        """The state of one request and its answer (a reused connection starts afresh)."""
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.content_type = ""
        self.content_length: int | None = None
        self.framing: Framing = "close"
        self.tail = b""  # an SSE body's last bytes: TAIL of a "close"-framed one (its last event), else ENDING
        self.cut: str | None = None  # why the answer did not end as its framing says, once it ended
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._answering = True  # False while the connection waits in the pool
        self.received = False  # a byte of this request's answer came
        self._ended = False
        self._kept = False  # the answer ended as framed, and LM Studio keeps the connection alive
        self._early: list[bytes] = []  # body received while nothing is attached
        self._early_size = 0
        self._early_paused = False  # LM Studio is not read: EARLY_LIMIT bytes wait to be taken
        self._sink: _Sink | None = None
        self._attention = asyncio.Event()  # the body grew, ended, or the client fell behind or left

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: the connection to LM Studio is up."""
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a TCP connection
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from LM Studio, parsed at once (the callbacks below); bytes on an
        idle connection (no request on it, or after the answer's end) close it."""
        if not self._answering:
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._unanswered(f"not an HTTP answer: {exc}")
            self._end(f"its answer could not be read: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: LM Studio (or :meth:`close`) closed the connection."""
        self.lost = True
        if self._pool is not None:
            self._pool.forget(self)
        if not self._answering:  # idle in the pool
            return
        self._unanswered(str(exc) if exc is not None else "connection closed")
        if self.framing == "close" and exc is None:  # a close-framed body ends by a close, not by a reset
            self._end(None)
        else:
            self._end(f"connection {'reset' if exc is not None else 'closed'} mid-answer{f': {exc}' if exc else ''}")

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        """httptools: a message begins (after a 1xx, the answer proper). One after the answer
        ended is bytes no request asked for: parsing stops there, none of it is taken for the
        answer's, and the connection is closed (:meth:`data_received`)."""
        if self._ended:
            raise httptools.HttpParserError("bytes after the answer's end")
        self.headers = []

    def on_status(self, reason: bytes) -> None:
        """httptools: the status line's reason phrase."""
        self.reason = reason.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header of the answer (bytes kept as they came: UTF-8 with
        surrogate escapes, as aiohttp reads and writes them)."""
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        """httptools: the head is complete (a 1xx head is skipped: its answer follows)."""
        status = self._parser.get_status_code()
        if status < 200 or self._head.done():
            return
        self.status = status
        fields = {name.lower(): value for name, value in self.headers}
        self.content_type = fields.get("content-type", "").split(";")[0].strip().lower()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self.framing = "chunked"
        elif (length := fields.get("content-length", "").strip()).isdigit():
            self.framing, self.content_length = "length", int(length)
        self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the body: written on at once when a client is attached."""
        if not body:
            return
        if self.sse:  # only a stream's end is read (its last event, or where its last one ended)
            self.tail = tail_after(self.tail, body, self.framing == "close")
        if self._sink is not None:
            self._sink.write(body)
        else:
            self._early.append(body)
            self._early_size += len(body)
            self._attention.set()
            if self._early_size > EARLY_LIMIT and self._transport is not None and not self._early_paused:
                self._early_paused = True  # nobody takes it yet (the client is slow to take the head)
                self._transport.pause_reading()

    def on_message_complete(self) -> None:
        """httptools: the answer ended as its framing says (a 1xx one is skipped)."""
        if self._head.done():
            self._kept = self._parser.should_keep_alive()
            self._end(None)

    # -- the caller's side --------------------------------------------------------------------
    async def send(self, request: bytes) -> None:
        """Write the whole request (head and body) and wait for the answer's head; raises
        :class:`ProxyUnansweredError`."""
        assert self._transport is not None  # noqa: S101 - connection_made ran
        self._transport.write(request)
        await self._head

    async def first(self) -> bytes:
        """The body's first bytes (``b""`` for an empty body), once some came or it ended;
        a cut before any byte leaves ``cut`` set and returns ``b""``."""
        while not self._early and not self._ended:
            await self._wait()
        return self._take()

    async def whole(self, limit: int) -> bytes:
        """The whole body, up to ``limit`` bytes (then the connection is closed: the rest is
        not read)."""
        while not self._ended and self._early_size < limit and not self._early_paused:
            await self._wait()
        if not self._ended:
            self.close()
        return self._take()[:limit]

    async def pass_on(self, client: asyncio.Transport, chunked: bool, writer: AbstractStreamWriter) -> None:
        """Write the rest of the body to ``client`` as it arrives (chunk-framed when
        ``chunked``; an SSE answer in whole events only:
        :func:`~lmsupervisor.proxy.hold.whole_events`), until it ends (``cut`` then says
        whether it was whole; :meth:`finish` then). While the client's transport holds more
        than its high-water mark, LM Studio is not read (``writer.drain()`` waits for the
        client). Raises ``ConnectionResetError`` when the client is gone."""
        sink = self._sink = _Sink(client, chunked, self, self.sse)
        sink.write_all(self._take())
        while not self._ended or sink.behind:
            if sink.gone:
                raise ConnectionResetError("the client left")
            if sink.behind:
                await writer.drain()
                sink.behind = False
                self._resume()
                continue
            await self._wait()
        if sink.gone:
            raise ConnectionResetError("the client left")

    def finish(self, whole: bool) -> bool:
        """After :meth:`pass_on`: a ``whole`` answer's held-back end is written on; else it
        is dropped. True when an unfinished event was dropped (what the client got ends
        between events)."""
        sink = self._sink
        if sink is None or not sink.pending:
            return False
        if whole:
            sink.write_raw(sink.pending)
        sink.pending = b""
        return not whole

    def pause(self) -> None:
        """Stop reading from LM Studio until :meth:`pass_on` sees the client caught up."""
        if self._transport is not None and not self._ended:
            self._transport.pause_reading()
        self._attention.set()

    @property
    def sse(self) -> bool:
        """The answer is an SSE stream (``text/event-stream``)."""
        return self.content_type == SSE

    @property
    def buffered(self) -> int:
        """Bytes of the answer read and not taken yet (at most about :data:`EARLY_LIMIT`)."""
        return self._early_size

    @property
    def closed(self) -> bool:
        """The connection is closed or closing, by either side, whether or not asyncio has
        reported it lost yet (``lost``): it takes no other request."""
        return self.lost or self._transport is None or self._transport.is_closing()

    def release(self) -> None:
        """Done with this request: the connection goes back to the pool when its answer
        ended as framed and LM Studio keeps it alive, else it is closed."""
        self._detach()
        if self._kept and self.cut is None and not self.closed and self._pool is not None:
            self._answering = False
            self._resume()  # paused for a slow client as the answer ended: the next one must be read
            self._pool.keep(self)
        else:
            self.close()

    def reuse(self) -> None:
        """Take the connection from the pool for a new request."""
        self._begin()
        self.reused = True

    def close(self) -> None:
        """Close the connection to LM Studio (nothing more is written to the client)."""
        self._detach()
        if self._transport is not None:
            self._transport.close()

    def _resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()  # a no-op unless paused

    def _detach(self) -> None:
        if self._sink is not None:
            self._sink.client, self._sink = None, None

    def _unanswered(self, why: str) -> None:
        if not self._head.done():
            self._head.set_exception(ProxyUnansweredError(why))
            self._head.exception()  # retrieved: an exchange dropped before its head logs nothing

    def _end(self, cut: str | None) -> None:
        if not self._ended:
            self._ended, self.cut = True, cut
            self._attention.set()
            if not self._kept and self._transport is not None:
                self._transport.close()

    async def _wait(self) -> None:
        await self._attention.wait()
        self._attention.clear()

    def _take(self) -> bytes:
        data, self._early, self._early_size = b"".join(self._early), [], 0
        if self._early_paused:
            self._early_paused = False
            self._resume()
        return data


class _Sink:
    """Where an attached exchange writes the body: the client's transport."""

    def __init__(self, client: asyncio.Transport, chunked: bool, exchange: UpstreamConnection, events: bool) -> None:
        self.client: asyncio.Transport | None = client
        self.chunked = chunked
        self.exchange = exchange
        self.events = events  # only whole SSE events go on; the unfinished one waits in pending
        self.pending = b""
        self.behind = False  # the client's transport is over its high-water mark: LM Studio is not read
        self.gone = False

    def write(self, data: bytes) -> None:
        """A piece of the body from LM Studio: on to the client (whole events only, with
        ``events``)."""
        if self.events:
            data, self.pending = whole_events(self.pending, data)
            if not data:
                return
        self.write_raw(data)

    def write_raw(self, data: bytes) -> None:
        """``data`` to the client's transport as it is (chunk-framed when ``chunked``); a
        client gone closes the connection to LM Studio; a client behind pauses reading it."""
        client = self.client
        if client is None:
            return
        if client.is_closing():
            self.gone = True
            self.exchange.close()
            return
        client.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        if not self.behind and client.get_write_buffer_size() > client.get_write_buffer_limits()[1]:
            self.behind = True
            self.exchange.pause()

    def write_all(self, data: bytes) -> None:
        """:meth:`write` for bytes read before the sink was attached (none: nothing)."""
        if data:
            self.write(data)


def request_head(method: str, url: URL, raw_path: str, headers: Iterable[tuple[str, str]], length: int | None) -> bytes:
    """The request line and headers LM Studio is sent: the client's headers (``Authorization``
    included) but the hop-by-hop ones (:func:`~lmsupervisor.proxy.hold.forwarded`), and
    ours for ``Host`` and ``Content-Length`` (none for a request without a body: ``length``
    None)."""
    lines = [f"{method} {raw_path} HTTP/1.1", f"Host: {url.host_port_subcomponent}"]
    lines += [f"{name}: {value}" for name, value in forwarded(headers, also=REQUEST_OWN)]
    lines += [f"Content-Length: {length}"] if length is not None else []
    lines += ["", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class Upstreams:
    """The proxy's connections to LM Studio: one per request in flight, kept alive between
    requests (``keepalive`` seconds at most, below LM Studio's own: it never closes one
    first), by address. :meth:`close` at shutdown."""

    def __init__(self, connect_timeout: float, keepalive: float) -> None:
        self.connect_timeout = connect_timeout  # seconds
        self.keepalive = keepalive  # seconds
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._busy: set[UpstreamConnection] = set()  # answering a request now
        self._expiry: dict[UpstreamConnection, asyncio.TimerHandle] = {}
        self._closed = False

    async def exchange(
        self, url: URL, method: str, raw_path: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> UpstreamConnection:
        """Send one request to LM Studio at ``url`` (``http://host:port``) and wait for its
        answer's head, on a kept connection when one is idle, else a new one. A kept
        connection that LM Studio had closed unseen is replaced by a new one for an
        idempotent request (:data:`IDEMPOTENT`). Raises :class:`ProxyUnreachedError` or
        :class:`ProxyUnansweredError`; a cancelled wait closes the connection."""
        request = request_head(method, url, raw_path, headers, None if body is None else len(body)) + (body or b"")
        while True:
            ex = self._take(url) or await self._connect(url)
            self._busy.add(ex)
            try:
                await ex.send(request)
            except ProxyUnansweredError:
                ex.close()
                if ex.reused and not ex.received and method in IDEMPOTENT:
                    continue
                raise
            except BaseException:
                ex.close()
                raise
            return ex

    def keep(self, ex: UpstreamConnection) -> None:
        """:meth:`UpstreamConnection.release`: ``ex`` waits for the next request to its address (or
        is closed, once :meth:`close` ran)."""
        self._busy.discard(ex)
        peer = ex.peer
        if peer is None or self._closed:
            ex.close()
            return
        self._idle.setdefault(peer, []).append(ex)
        self._expiry[ex] = asyncio.get_running_loop().call_later(self.keepalive, ex.close)

    def forget(self, ex: UpstreamConnection) -> None:
        """A connection closed: it is no longer offered, nor closed at shutdown."""
        self._busy.discard(ex)
        if (timer := self._expiry.pop(ex, None)) is not None:
            timer.cancel()
        for idle in self._idle.values():
            if ex in idle:
                idle.remove(ex)

    def close(self) -> None:
        """At shutdown: close every connection, idle or answering (a request still in flight
        ends as when LM Studio fails under it), and keep none from now on."""
        self._closed = True
        for ex in [*self._busy, *(ex for idle in self._idle.values() for ex in idle)]:
            ex.close()

    def _take(self, url: URL) -> UpstreamConnection | None:
        idle = self._idle.get(_peer(url))
        while idle:
            ex = idle.pop()
            if (timer := self._expiry.pop(ex, None)) is not None:
                timer.cancel()
            if not ex.closed:  # closed by its keepalive or by LM Studio's bytes, maybe not yet lost
                ex.reuse()
                return ex
        return None

    async def _connect(self, url: URL) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        host, port = _peer(url)
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, ex = await loop.create_connection(lambda: UpstreamConnection(loop, self), host, port)
        except (OSError, TimeoutError) as exc:
            raise ProxyUnreachedError(
                f"cannot connect to LM Studio at {url.host_port_subcomponent}: {str(exc) or 'timed out'}"
            ) from exc
        ex.peer = (host, port)
        return ex


def _peer(url: URL) -> tuple[str, int]:
    """LM Studio's ``(host, port)`` in ``url``: where to connect, and the pool's key."""
    return url.host or "127.0.0.1", url.port or 80
