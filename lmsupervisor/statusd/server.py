"""The status socket: HTTP/1.1 + JSON over a Unix domain socket or loopback TCP (design §5).

Requests are parsed by httptools (llhttp) in :mod:`lmsupervisor.statusd.http1`.

How it listens is a :mod:`~lmsupervisor.statusd.transport`: on a Unix socket, read endpoints
answer whoever can connect (the socket is 0600 in a 0700 folder, or 0660 in a 0750 folder
for ``status.group``) and POST endpoints also check the peer's uid (``SO_PEERCRED`` on
Linux, ``LOCAL_PEERCRED`` on macOS): only the same uid or root may restart or reload. On
TCP (``status.transport = "tcp"``) every request needs the bearer token (401 without it).

``/v1/status`` is encoded once per change of the supervisor's snapshot, not per request:
the JSON body is cached, keyed by the identity of ``supervisor.snap`` (a new frozen object
after every change). ``/metrics`` is rendered by :class:`~lmsupervisor.statusd.metrics.Metrics`.

Hostile clients are bounded (issue 7): at most ``max_connections`` at once (past it the
oldest connection not being answered is dropped, else the new one is closed at once, so
``/v1/health`` still gets in); a connection waits at most ``idle_timeout`` s for a request
to begin and ``request_timeout`` s for the rest of it, whatever it trickles; heads are
capped at 16 KiB (431), bodies at 1 MiB (413); a client that does not read what it is sent
is dropped after ``write_timeout`` s. Every HTTP shape is answered (bodies with a length or
chunked, HEAD, pipelining) or refused with a status and ``{"error": ...}``; a failing
handler answers 500 and logs ``status_request_failed`` with its traceback. The socket file
is checked at each health round (:meth:`StatusServer.check_now`, called in that round's
wakeup: an idle supervisor wakes once per interval, not twice), at the latest
``check_interval * FALLBACK`` s after the last check (its own timer, while no round runs),
and on :meth:`StatusServer.check_soon`: a missing or replaced socket is bound again, a
missing TCP endpoint file written again (``status_socket_recreated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from lmsupervisor.clock import SystemClock
from lmsupervisor.core.states import State
from lmsupervisor.errors import ConfigError, HttpError
from lmsupervisor.statusd.broadcast import Broadcast, Stream
from lmsupervisor.statusd.conn import Conn, Watchdog
from lmsupervisor.statusd.http1 import MAX_BODY, MAX_HEAD, Request, RequestParser, chunk, response, stream_head
from lmsupervisor.statusd.metrics import CONTENT_TYPE as METRICS_TYPE
from lmsupervisor.statusd.metrics import Metrics
from lmsupervisor.statusd.transport import (
    READ_SIZE,
    TcpTransport,
    Transport,
    UnixTransport,
    control_refusal,
    peer_uid,
    remove_stale_socket,
)

__all__ = ["MAX_BODY", "MAX_HEAD", "ROUTES", "StatusServer", "Supervised", "peer_uid", "remove_stale_socket"]

MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 10.0  # seconds a connection may wait before a request begins (keep-alive too)
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last
WRITE_TIMEOUT = 10.0  # seconds a client may take to read what we send
LINGER = 1.0  # seconds we read and drop input after refusing a request, so the client sees why
FALLBACK = 1.5  # check intervals after the last check before the server's own timer checks the socket

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

    def events(self, q: asyncio.Queue[dict[str, Any] | None] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Event dicts as they happen until shutdown, from ``q`` (see :meth:`subscribe`) or a new queue."""

    def snapshot(self) -> dict[str, Any]:
        """The status document of design §5, served as ``GET /v1/status`` and read by ``/metrics``."""

    @property
    def snap(self) -> object:
        """The supervisor's state: a new object after every change (keys the cached ``/v1/status``)."""


class StatusServer:
    """The status server; :meth:`start`, then :meth:`close` at shutdown.

    ``path`` is the socket path (with ``transport="tcp"`` the endpoint file goes beside it,
    see :mod:`lmsupervisor.statusd.transport`); ``gid`` the group of ``status.group``;
    ``metrics`` what ``/metrics`` serves (default: the snapshot's metrics only);
    ``platform`` is ``sys.platform`` (how the peer's uid is read); ``status_changes`` counts changes of
    the status outside the snapshot (the proxy's counts): the cached ``/v1/status`` follows it too.
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
        status_changes: Callable[[], int] | None = None,
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
        self.status_changes = status_changes  # changes of the status outside the snapshot (the proxy's counts)
        self.log = structlog.get_logger("lmsupervisor.statusd.server")
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[Conn, asyncio.Task[Any] | None] = {}  # oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._check_lock = asyncio.Lock()
        self._refused = 0
        self._refused_logged_at = -1e9
        self._status_key: object = None  # the supervisor.snap the cached body was rendered from
        self._status_body = b""
        self._status_changes = 0  # status_changes() when the cached body was rendered
        self._status_answers = (b"", b"")  # (keep-alive, close) answers of the cached body
        self._broadcast: Broadcast | None = None  # while /v1/events streams are open
        self._fallback: asyncio.TimerHandle | None = None  # the next check when no round comes first
        self._checked_at = -1e9  # loop time of the last check
        self.status_encodings = 0  # how many times /v1/status was encoded (tests, the bench)

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen. Raises :class:`ConfigError` (bad path or folder) or
        :class:`StatusSocketError` (another process answers on the path)."""
        self.transport.prepare()
        self._server = await self.transport.listen(self._serve)
        extra = {"port": self.transport.port} if isinstance(self.transport, TcpTransport) else {}
        self.log.info("status_socket_bound", path=str(self.transport.file), transport=self.transport.kind, **extra)
        if self.check_interval > 0:
            self._arm()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (event streams too), remove our socket file."""
        if self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None
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
        if self._broadcast is not None:
            if not self._broadcast.closing:
                self._broadcast.close()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._broadcast.task, timeout)
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

    def check_now(self) -> None:
        """Check the socket file in the caller's wakeup (the health round calls this after
        each probe): a ``stat``, and :meth:`ensure_socket` only when it is missing or not ours.
        Checks less than half a ``check_interval`` apart are skipped; each check moves the
        server's own timer to ``check_interval * FALLBACK`` s later, so while rounds come it
        never fires. Does nothing before :meth:`start`, after :meth:`close`, or without a
        ``check_interval``."""
        if self._fallback is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._checked_at < self.check_interval / 2:
            return
        self._checked_at = now
        if self.transport.state() != "ours":
            self._spawn(self.ensure_socket())
        self._arm()

    def _arm(self) -> None:
        """(Re)start the fallback timer: :meth:`check_now` ``check_interval * FALLBACK`` s from now."""
        if self._fallback is not None:
            self._fallback.cancel()
        loop = asyncio.get_running_loop()
        self._fallback = loop.call_later(self.check_interval * FALLBACK, self._on_fallback)

    def _on_fallback(self) -> None:
        self._checked_at = -1e9  # no round came: check whatever the time since the last one
        self.check_now()

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
        conn = Conn(writer)
        self._conns[conn] = asyncio.current_task()
        try:
            await self._session(conn, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
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

    async def _session(self, conn: Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        parser = RequestParser(MAX_HEAD, MAX_BODY)
        watchdog = Watchdog(loop, reader)
        request_deadline: float | None = None
        try:
            while True:
                while parser.ready:  # pipelined requests are answered in order
                    req = parser.ready.popleft()
                    conn.busy = True
                    keep = await self._respond(req, reader, writer)
                    conn.busy = False
                    if not keep or not req.keep_alive:
                        return
                request_deadline = None
                if parser.error is not None:
                    conn.linger = True
                    await self._refuse(writer, parser.error)
                    return
                if parser.mid_request:
                    conn.busy = True
                    if request_deadline is None:
                        request_deadline = loop.time() + self.request_timeout
                    watchdog.arm(request_deadline)
                else:
                    watchdog.arm(loop.time() + self.idle_timeout)
                data = await reader.read(READ_SIZE)
                watchdog.disarm()
                if not data:
                    return  # the client is done (mid-request: it gave up)
                parser.feed(data)
                if parser.mid_request and request_deadline is None:
                    request_deadline = loop.time() + self.request_timeout
        finally:
            watchdog.cancel()

    # -- answers ---------------------------------------------------------------
    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Send ``data``; wait (at most ``write_timeout`` s) only when the client is not reading."""
        if writer.transport.is_closing():
            raise ConnectionResetError("the client left")
        writer.write(data)
        if writer.transport.get_write_buffer_size() > READ_SIZE:
            async with asyncio.timeout(self.write_timeout):
                await writer.drain()

    async def _json(
        self, writer: asyncio.StreamWriter, status: int, value: Any, head_only: bool = False, close: bool = False
    ) -> None:
        body = json.dumps(value).encode() + b"\n"
        await self._write(writer, response(status, body, close=close, head_only=head_only))

    async def _refuse(self, writer: asyncio.StreamWriter, error: HttpError) -> None:
        """Answer an error; the connection closes after it."""
        body = json.dumps({"error": str(error)}).encode() + b"\n"
        await self._write(writer, response(error.status, body, close=True))

    async def _respond(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close after it."""
        method = req.method
        path, _, query = req.target.partition("?")
        close = not req.keep_alive
        refusal = self.transport.refusal(req.headers.get(b"authorization"))
        if refusal is not None:
            body = json.dumps({"error": refusal}).encode() + b"\n"
            extra = (("WWW-Authenticate", 'Bearer realm="lmsupervisor"'),)
            await self._write(writer, response(401, body, extra=extra, close=True, head_only=method == "HEAD"))
            return False
        try:
            if method == "GET" and path == "/v1/status":  # the hot path: one write of cached bytes
                await self._write(writer, self.status_response(close))
                return True
            return await self._route(method, path, query, req, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self.log.exception("status_request_failed", method=method, path=path)
            await self._refuse(writer, HttpError(500, f"internal error: {type(exc).__name__}"))
            return False

    async def _route(
        self,
        method: str,
        path: str,
        query: str,
        req: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        sup = self.supervisor
        head = method == "HEAD"
        close = not req.keep_alive
        if path not in ROUTES:
            await self._json(writer, 404, {"error": f"no such endpoint: {path}"}, head, close)
            return True
        if method not in ROUTES[path]:
            body = json.dumps({"error": f"{method} not allowed on {path}"}).encode() + b"\n"
            allow = (("Allow", ", ".join(ROUTES[path])),)
            await self._write(writer, response(405, body, extra=allow, close=close, head_only=head))
            return True
        if method == "POST":
            refusal = (
                control_refusal(writer.get_extra_info("socket"), self.platform) if self.transport.checks_peer else None
            )
            if refusal is not None:
                await self._json(writer, 403, {"error": refusal}, close=close)
                return True
            if path == "/v1/restart":
                sup.post("restart", daemon="daemon=1" in query.split("&"), reason="restart requested on the socket")
            else:
                sup.post("reload")
            await self._json(writer, 202, {"accepted": True}, close=close)
            return True
        if path == "/v1/status":
            await self._write(writer, response(200, self.status_body(), close=close, head_only=head))
        elif path == "/v1/health":
            ready = sup.ready
            await self._json(writer, 200 if ready else 503, {"ready": ready, "state": sup.state.value}, head, close)
        elif path == "/metrics":
            await self._write(writer, response(200, self.metrics.render(), METRICS_TYPE, close=close, head_only=head))
        else:
            return await self._stream_events(req, reader, writer, head)
        return True

    def status_body(self) -> bytes:
        """The JSON of ``/v1/status``, encoded again only when ``supervisor.snap`` changed."""
        key = self.supervisor.snap
        changes = self.status_changes() if self.status_changes is not None else 0
        if key is not self._status_key or changes != self._status_changes or not self._status_body:
            self._status_changes = changes
            self._status_body = json.dumps(self.supervisor.snapshot()).encode() + b"\n"
            self._status_answers = (response(200, self._status_body), response(200, self._status_body, close=True))
            self._status_key = key
            self.status_encodings += 1
            self.metrics.status_encodings.inc()
        return self._status_body

    def status_response(self, close: bool = False) -> bytes:
        """The whole ``GET /v1/status`` answer, head included, cached with the body."""
        self.status_body()
        return self._status_answers[close]

    async def _stream_events(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head_only: bool
    ) -> bool:
        """NDJSON, one event a line, until the client leaves or the supervisor stops
        (written by the :class:`~lmsupervisor.statusd.broadcast.Broadcast`)."""
        chunked = req.version == "1.1"
        if head_only:
            await self._write(writer, stream_head("application/x-ndjson", chunked))
            await self._write(writer, chunk(b"") if chunked else b"")
            return chunked and req.keep_alive
        if self._broadcast is None or self._broadcast.closing:
            self._broadcast = Broadcast(self.supervisor)  # subscribed now: a client that saw the head misses nothing
        broadcast = self._broadcast
        stream = Stream(writer, chunked)
        broadcast.streams.add(stream)
        left = asyncio.ensure_future(self._until_eof(reader))
        try:
            await self._write(writer, stream_head("application/x-ndjson", chunked))
            waiters: set[asyncio.Future[Any]] = {stream.done, left}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            await asyncio.gather(left, return_exceptions=True)
            broadcast.streams.discard(stream)
            if not broadcast.streams and not broadcast.closing:
                broadcast.close()
        clean = stream.done.done() and stream.done.result() and left not in done
        return clean and chunked

    @staticmethod
    async def _until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(READ_SIZE):
            pass  # anything a subscriber sends is ignored
