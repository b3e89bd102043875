"""The status socket: HTTP/1.1 + JSON over a Unix domain socket or loopback TCP (design §5), on h11.

How it listens is a :mod:`~lmsupervisor.api.transport`: on a Unix socket, read endpoints
answer whoever can connect (the socket is 0600 in a 0700 folder, or 0660 in a 0750 folder
for ``status.group``) and POST endpoints also check the peer's uid (``SO_PEERCRED`` on
Linux, ``LOCAL_PEERCRED`` on macOS): only the same uid or root may restart or reload. On
TCP (``status.transport = "tcp"``) every request needs the bearer token (401 without it).

``/v1/status`` is encoded once per change of the supervisor's snapshot, not per request:
the JSON body is cached, keyed by the identity of ``supervisor.snap`` (a new frozen object
after every change). ``/metrics`` is rendered by :class:`~lmsupervisor.api.metrics.Metrics`.

Hostile clients are bounded (issue 7): at most ``max_connections`` at once (past it the
oldest connection not being answered is dropped, else the new one is closed at once, so
``/v1/health`` still gets in); a connection waits at most ``idle_timeout`` s for a request
to begin and ``request_timeout`` s for the rest of it, whatever it trickles; heads are
capped at 16 KiB (431), bodies at 1 MiB (413); a client that does not read what it is sent
is dropped after ``write_timeout`` s. Every HTTP shape is answered (bodies with a length or
chunked, HEAD, pipelining) or refused with a status and ``{"error": ...}``; a failing
handler answers 500 and logs ``status_request_failed`` with its traceback. The socket file
is checked every ``check_interval`` s (and on :meth:`StatusServer.check_soon`): a missing or
replaced socket is bound again, a missing TCP endpoint file written again
(``status_socket_recreated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import h11
import structlog

from lmsupervisor.api.metrics import CONTENT_TYPE as METRICS_TYPE
from lmsupervisor.api.metrics import Metrics
from lmsupervisor.api.transport import (
    READ_SIZE,
    TcpTransport,
    Transport,
    UnixTransport,
    control_refusal,
    peer_uid,
    remove_stale_socket,
)
from lmsupervisor.clock import SystemClock
from lmsupervisor.core.states import State
from lmsupervisor.errors import ConfigError

__all__ = ["ROUTES", "StatusServer", "Supervised", "peer_uid", "remove_stale_socket"]

MAX_HEAD = 16 * 1024  # bytes: request line + headers (431 past it)
MAX_BODY = 1024 * 1024  # bytes: request bodies are read and dropped (413 past it)
MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 10.0  # seconds a connection may wait before a request begins (keep-alive too)
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last
WRITE_TIMEOUT = 10.0  # seconds a client may take to read what we send
LINGER = 1.0  # seconds we read and drop input after refusing a request, so the client sees why

GET = ("GET", "HEAD")
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/status": GET,
    "/v1/health": GET,
    "/v1/events": GET,
    "/metrics": GET,
    "/v1/restart": ("POST",),
    "/v1/reload": ("POST",),
}


class Supervised(Protocol):
    """What the server needs of :class:`lmsupervisor.supervisor.Supervisor`."""

    @property
    def state(self) -> State:
        """The lifecycle state, shown by ``/v1/health``."""

    @property
    def ready(self) -> bool:
        """True in ``ready``: ``/v1/health`` answers 200 then, 503 otherwise."""

    def post(self, kind: str, **data: Any) -> None:
        """Enqueue a request by name; the server posts ``"restart"`` (``daemon``, ``reason``) and ``"reload"``."""

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of every event from now on, None at shutdown (``/v1/events``)."""

    def events(self, q: asyncio.Queue[dict[str, Any] | None] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Event dicts as they happen until shutdown, from ``q`` (see :meth:`subscribe`) or a new queue."""

    def snapshot(self) -> dict[str, Any]:
        """The status document of design §5, served as ``GET /v1/status`` and read by ``/metrics``."""

    @property
    def snap(self) -> object:
        """The supervisor's state: a new object after every change (keys the cached ``/v1/status``)."""


def _header(req: h11.Request, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case), None when absent."""
    for key, value in req.headers:
        if key == name:
            return bytes(value)
    return None


class _Refused(Exception):
    """A request answered with an error status; the connection closes after it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Conn:
    """One client connection: ``busy`` while a request of it is being answered."""

    __slots__ = ("busy", "linger", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.busy = False
        self.linger = False  # refused mid-request: drain the rest before closing


class StatusServer:
    """The status server; :meth:`start`, then :meth:`close` at shutdown.

    ``path`` is the socket path (with ``transport="tcp"`` the endpoint file goes beside it,
    see :mod:`lmsupervisor.api.transport`); ``gid`` the group of ``status.group``;
    ``metrics`` what ``/metrics`` serves (default: the snapshot's metrics only);
    ``platform`` is ``sys.platform`` (how the peer's uid is read).
    """

    def __init__(
        self,
        supervisor: Supervised,
        path: Path,
        gid: int | None = None,
        *,
        transport: str = "unix",
        metrics: Metrics | None = None,
        check_interval: float = 5.0,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        on_recreated: Callable[[], object] | None = None,
        platform: str = sys.platform,
    ) -> None:
        self.supervisor = supervisor
        self.path = path
        self.gid = gid
        self.transport: Transport = TcpTransport(path, os.getpid()) if transport == "tcp" else UnixTransport(path, gid)
        self.metrics = metrics or Metrics(supervisor.snapshot, SystemClock())
        self.check_interval = check_interval
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.on_recreated = on_recreated
        self.platform = platform
        self.log = structlog.get_logger("lmsupervisor.api.statusd")
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[_Conn, asyncio.Task[Any] | None] = {}  # oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._check_lock = asyncio.Lock()
        self._refused = 0
        self._refused_logged_at = -1e9
        self._status_key: object = None  # the supervisor.snap the cached body was rendered from
        self._status_body = b""
        self.status_encodings = 0  # how many times /v1/status was encoded (tests, the bench)

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen. Raises :class:`ConfigError` (bad path or folder) or
        :class:`StatusSocketError` (another process answers on the path)."""
        self.transport.prepare()
        self._server = await self.transport.listen(self._serve)
        extra = {"port": self.transport.port} if isinstance(self.transport, TcpTransport) else {}
        self.log.info("status_socket_listening", path=str(self.transport.file), transport=self.transport.kind, **extra)
        if self.check_interval > 0:
            self._spawn(self._watch())

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (event streams too), remove our socket file."""
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        conns = [t for t in self._conns.values() if t is not None]
        for task in conns:
            task.cancel()
        if conns:
            _, pending = await asyncio.wait(conns, timeout=timeout)
            if pending:
                self.log.warning("status_socket_close_overran", timeout=timeout, connections=len(pending))
        self.transport.remove()

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    def check_soon(self) -> None:
        """Check the socket file now (SIGHUP): see :meth:`ensure_socket`."""
        self._spawn(self.ensure_socket())

    async def ensure_socket(self) -> bool:
        """Bind again (or rewrite the TCP endpoint file) if the file is missing or is not
        ours any more; True if it was.

        Logs ``status_socket_recreated`` (reason ``missing`` or ``replaced``), or
        ``status_socket_recreate_failed`` and tries again at the next check.
        """
        async with self._check_lock:
            reason = self.transport.state()
            if self._server is None or reason == "ours":
                return False
            path = str(self.transport.file)
            try:
                new = await self.transport.restore(self._serve)
            except (OSError, ConfigError) as exc:
                self.log.error("status_socket_recreate_failed", path=path, reason=reason, error=str(exc))
                return False
            if new is not None:
                old, self._server = self._server, new
                old.close()  # the old listening socket; its open connections go on
            self.log.warning("status_socket_recreated", path=path, reason=reason)
            if self.on_recreated is not None:
                self.on_recreated()
            return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self.ensure_socket()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections -----------------------------------------------------------
    def _admit(self) -> bool:
        if len(self._conns) < self.max_connections:
            return True
        for conn in self._conns:  # oldest first
            if not conn.busy:
                conn.writer.transport.abort()
                del self._conns[conn]
                return True
        return False

    def _count_refused(self) -> None:
        self._refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._refused_logged_at >= 10.0:
            self.log.warning("status_connections_capped", limit=self.max_connections, refused=self._refused)
            self._refused_logged_at, self._refused = now, 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit():
            self._count_refused()
            writer.transport.abort()
            return
        writer.transport.set_write_buffer_limits(high=READ_SIZE)  # drain() waits past it: memory per client stays small
        conn = _Conn(writer)
        self._conns[conn] = asyncio.current_task()
        try:
            await self._session(conn, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.CancelledError, h11.RemoteProtocolError):
            pass
        except Exception:  # any other failure is ours: say so, never let asyncio print it
            self.log.exception("status_connection_failed")
        finally:
            self._conns.pop(conn, None)
            await self._hang_up(reader, writer, conn.linger)

    async def _hang_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: bool) -> None:
        """Close once what we sent is flushed; abort a client that does not read it.

        After a refusal the unread rest of the request is read and dropped for up to
        :data:`LINGER` s (and :data:`MAX_BODY` bytes): closing with unread input resets the
        connection, and the client would lose the answer that says why.
        """
        if linger and not writer.transport.is_closing():
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                writer.write_eof()
                async with asyncio.timeout(LINGER):
                    dropped = 0
                    while dropped <= MAX_BODY and (data := await reader.read(READ_SIZE)):
                        dropped += len(data)
        writer.close()
        try:
            async with asyncio.timeout(self.write_timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError, asyncio.CancelledError):
            writer.transport.abort()

    async def _session(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            conn.busy = False
            deadline = loop.time() + self.idle_timeout
            started = False
            try:
                while True:
                    event = h.next_event()
                    if event is not h11.NEED_DATA:
                        break
                    if not started and h.trailing_data[0]:
                        started, deadline = True, loop.time() + self.request_timeout
                    data = await self._read(reader, deadline)
                    if data and not started:
                        started, deadline = True, loop.time() + self.request_timeout
                    h.receive_data(data)
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed: the client is done
                conn.busy = True
                await self._read_body(h, reader, event, loop.time() + self.request_timeout)
            except h11.RemoteProtocolError as exc:
                conn.linger = True
                await self._refuse(h, writer, exc.error_status_hint, str(exc) or "malformed request")
                return
            except _Refused as exc:
                conn.linger = True
                await self._refuse(h, writer, exc.status, str(exc))
                return
            keep = await self._respond(h, event, reader, writer)
            if not keep or h.our_state is h11.MUST_CLOSE or h.their_state is not h11.DONE:
                return
            h.start_next_cycle()

    async def _read(self, reader: asyncio.StreamReader, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            return await reader.read(READ_SIZE)

    async def _read_body(
        self, h: h11.Connection, reader: asyncio.StreamReader, req: h11.Request, deadline: float
    ) -> None:
        """Read and drop the body (nothing here takes one); 431/411/413 where it cannot be."""
        head_size = len(req.target) + sum(len(name) + len(value) + 4 for name, value in req.headers)
        if head_size > MAX_HEAD:  # h11 caps only heads that arrive in pieces
            raise _Refused(431, f"request headers may have at most {MAX_HEAD} bytes")
        headers = dict(req.headers)
        length = headers.get(b"content-length")
        if length is not None and int(length) > MAX_BODY:
            raise _Refused(413, f"a request body may have at most {MAX_BODY} bytes")
        if req.method == b"POST" and req.http_version == b"1.0" and length is None:
            raise _Refused(411, "an HTTP/1.0 POST needs a Content-Length")
        size = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await self._read(reader, deadline))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise _Refused(413, f"a request body may have at most {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return
            else:  # ConnectionClosed mid-body
                raise ConnectionResetError("closed mid-request")

    # -- answers ---------------------------------------------------------------
    async def _write(self, writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if data:
            writer.write(data)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _send(
        self,
        h: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
        head_only: bool = False,
    ) -> None:
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Server", "lmsupervisor"),
            *(extra or []),
        ]
        out = h.send(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)) or b""
        if not head_only and body:
            out += h.send(h11.Data(data=body)) or b""
        out += h.send(h11.EndOfMessage()) or b""
        await self._write(writer, out)

    async def _json(
        self, h: h11.Connection, writer: asyncio.StreamWriter, status: int, value: Any, head_only: bool = False
    ) -> None:
        await self._send(h, writer, status, json.dumps(value).encode() + b"\n", head_only=head_only)

    async def _refuse(self, h: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        """Answer an error and close, where h11 still lets us answer."""
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": message}).encode() + b"\n"
        with contextlib.suppress(h11.LocalProtocolError):
            await self._send(h, writer, status, body, extra=[("Connection", "close")])

    async def _respond(
        self, h: h11.Connection, req: h11.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close after it."""
        method = req.method.decode("latin-1")
        path, _, query = req.target.decode("latin-1").partition("?")
        refusal = self.transport.refusal(_header(req, b"authorization"))
        if refusal is not None:
            body = json.dumps({"error": refusal}).encode() + b"\n"
            extra = [("WWW-Authenticate", 'Bearer realm="lmsupervisor"'), ("Connection", "close")]
            await self._send(h, writer, 401, body, extra=extra, head_only=method == "HEAD")
            return False
        try:
            return await self._route(h, method, path, query, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self.log.exception("status_request_failed", method=method, path=path)
            await self._refuse(h, writer, 500, f"internal error: {type(exc).__name__}")
            return False

    async def _route(
        self,
        h: h11.Connection,
        method: str,
        path: str,
        query: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        sup = self.supervisor
        head = method == "HEAD"
        if path not in ROUTES:
            await self._json(h, writer, 404, {"error": f"no such endpoint: {path}"}, head)
            return True
        if method not in ROUTES[path]:
            body = json.dumps({"error": f"{method} not allowed on {path}"}).encode() + b"\n"
            await self._send(h, writer, 405, body, extra=[("Allow", ", ".join(ROUTES[path]))], head_only=head)
            return True
        if method == "POST":
            refusal = (
                control_refusal(writer.get_extra_info("socket"), self.platform) if self.transport.checks_peer else None
            )
            if refusal is not None:
                await self._json(h, writer, 403, {"error": refusal})
                return True
            if path == "/v1/restart":
                sup.post("restart", daemon="daemon=1" in query.split("&"), reason="restart requested on the socket")
            else:
                sup.post("reload")
            await self._json(h, writer, 202, {"accepted": True})
            return True
        if path == "/v1/status":
            await self._send(h, writer, 200, self.status_body(), head_only=head)
        elif path == "/v1/health":
            ready = sup.ready
            await self._json(h, writer, 200 if ready else 503, {"ready": ready, "state": sup.state.value}, head)
        elif path == "/metrics":
            await self._send(h, writer, 200, self.metrics.render(), METRICS_TYPE, head_only=head)
        else:
            return await self._stream_events(h, reader, writer, head)
        return True

    def status_body(self) -> bytes:
        """The JSON of ``/v1/status``, encoded again only when ``supervisor.snap`` changed."""
        key = self.supervisor.snap
        if key is not self._status_key or not self._status_body:
            self._status_body = json.dumps(self.supervisor.snapshot()).encode() + b"\n"
            self._status_key = key
            self.status_encodings += 1
            self.metrics.status_encodings.inc()
        return self._status_body

    async def _stream_events(
        self, h: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head_only: bool
    ) -> bool:
        """NDJSON, one event a line, until the client leaves or the supervisor stops."""
        headers = [("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache"), ("Server", "lmsupervisor")]
        if head_only:
            await self._write(writer, h.send(h11.Response(status_code=200, headers=headers, reason="OK")))
            await self._write(writer, h.send(h11.EndOfMessage()))
            return True
        queue = self.supervisor.subscribe()  # before the head: a client that saw it misses nothing
        events = self.supervisor.events(queue)
        try:
            await self._write(writer, h.send(h11.Response(status_code=200, headers=headers, reason="OK")))
            pump = asyncio.ensure_future(self._pump(h, writer, events))
            left = asyncio.ensure_future(self._until_eof(reader))
            try:
                done, _ = await asyncio.wait({pump, left}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pump.cancel()
                left.cancel()
                await asyncio.gather(pump, left, return_exceptions=True)
            return pump in done and not pump.cancelled() and pump.exception() is None and left not in done
        finally:
            await self._unsubscribe(queue, events)

    async def _pump(
        self, h: h11.Connection, writer: asyncio.StreamWriter, events: AsyncIterator[dict[str, Any]]
    ) -> None:
        async for event in events:
            await self._write(writer, h.send(h11.Data(data=json.dumps(event).encode() + b"\n")))
        await self._write(writer, h.send(h11.EndOfMessage()))

    @staticmethod
    async def _until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(READ_SIZE):
            pass  # anything a subscriber sends is ignored

    @staticmethod
    async def _unsubscribe(queue: asyncio.Queue[dict[str, Any] | None], events: AsyncIterator[dict[str, Any]]) -> None:
        """End the subscription through its own generator (never ``aclose()`` one that may be running)."""
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
        async for _ in events:
            pass
