"""The status socket: HTTP/1.1 + JSON over a Unix domain socket (design §5), on h11.

Read endpoints answer whoever can connect (the socket is 0600 in a 0700 folder, or
0660 in a 0750 folder for ``status.group``); POST endpoints also check the peer's uid with
``SO_PEERCRED`` (Linux): only the same uid or root may restart or reload.

Hostile clients are bounded (issue 7): at most ``max_connections`` at once (past it the
oldest connection not being answered is dropped, else the new one is closed at once, so
``/v1/health`` still gets in); a connection waits at most ``idle_timeout`` s for a request
to begin and ``request_timeout`` s for the rest of it, whatever it trickles; heads are
capped at 16 KiB (431), bodies at 1 MiB (413); a client that does not read what it is sent
is dropped after ``write_timeout`` s. Every HTTP shape is answered (bodies with a length or
chunked, HEAD, pipelining) or refused with a status and ``{"error": ...}``; a failing
handler answers 500 and logs ``status_request_failed`` with its traceback. The socket file
is checked every ``check_interval`` s (and on :meth:`StatusServer.check_soon`): a missing or
replaced socket is bound again (``status_socket_recreated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import h11
import structlog

from lmsupervisor.api.socketdir import prepare_socket_dir
from lmsupervisor.api.status import metrics
from lmsupervisor.core.states import State
from lmsupervisor.errors import ConfigError, StatusSocketError

MAX_HEAD = 16 * 1024  # bytes: request line + headers (431 past it)
MAX_BODY = 1024 * 1024  # bytes: request bodies are read and dropped (413 past it)
MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 10.0  # seconds a connection may wait before a request begins (keep-alive too)
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last
WRITE_TIMEOUT = 10.0  # seconds a client may take to read what we send
LINGER = 1.0  # seconds we read and drop input after refusing a request, so the client sees why
READ_SIZE = 16 * 1024  # bytes read at a time, and each connection's buffer limits

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


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a crashed run: one nobody answers on.

    Raises :class:`ConfigError` (exit 78) for a path that is not a socket, and
    :class:`StatusSocketError` (exit 69) when another process answers on it.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            f"status.socket: {path} exists and is not a socket",
            key="status.socket",
            hint="move it away, or choose another status.socket",
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise StatusSocketError(
        f"another process answers on {path}", hint="stop the other lmsupervisor, or choose another status.socket"
    )


def peer_uid(sock: socket.socket | None) -> int | None:
    """The connecting process's uid (SO_PEERCRED), or None where it cannot be read."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


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
    """The status socket server; :meth:`start`, then :meth:`close` at shutdown."""

    def __init__(
        self,
        supervisor: Supervised,
        path: Path,
        gid: int | None = None,
        *,
        check_interval: float = 5.0,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        on_recreated: Callable[[], object] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.path = path
        self.gid = gid
        self.check_interval = check_interval
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.on_recreated = on_recreated
        self.log = structlog.get_logger("lmsupervisor.api.statusd")
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we listen on
        self._conns: dict[_Conn, asyncio.Task[Any] | None] = {}  # oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._check_lock = asyncio.Lock()
        self._refused = 0
        self._refused_logged_at = -1e9

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen. Raises :class:`ConfigError` (bad path or folder) or
        :class:`StatusSocketError` (another process answers on the path)."""
        prepare_socket_dir(self.path, self.gid)
        remove_stale_socket(self.path)
        await self._bind()
        self.log.info("status_socket_bound", path=str(self.path))
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
        if self._is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    def check_soon(self) -> None:
        """Check the socket file now (SIGHUP): see :meth:`ensure_socket`."""
        self._spawn(self.ensure_socket())

    async def ensure_socket(self) -> bool:
        """Bind again if the socket file is missing or is not ours any more; True if it was.

        Logs ``status_socket_recreated`` (reason ``missing`` or ``replaced``), or
        ``status_socket_recreate_failed`` and tries again at the next check.
        """
        async with self._check_lock:
            reason = self._socket_state()
            if self._server is None or reason == "ours":
                return False
            try:
                prepare_socket_dir(self.path, self.gid)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    self.path.unlink()  # only we may write in our folder: whatever is there is stale
                old = self._server
                await self._bind()
                old.close()  # the old listening socket; its open connections go on
            except (OSError, ConfigError) as exc:
                self.log.error("status_socket_recreate_failed", path=str(self.path), reason=reason, error=str(exc))
                return False
            self.log.warning("status_socket_recreated", path=str(self.path), reason=reason)
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

    def _socket_state(self) -> str:
        """``ours`` (the socket we listen on), ``missing``, or ``replaced`` (anything else there)."""
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return "missing"
        except OSError:  # the folder itself is gone or unreadable
            return "missing"
        return "ours" if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == self._bound else "replaced"

    def _is_ours(self) -> bool:
        return self._socket_state() == "ours"

    async def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117 if self.gid is not None else 0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)
        self.path.chmod(0o660 if self.gid is not None else 0o600)
        info = self.path.lstat()
        self._bound = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, backlog=128, limit=READ_SIZE)

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
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid is not None and uid not in (0, os.getuid()):
                await self._json(h, writer, 403, {"error": f"uid {uid} may read but not control"})
                return True
            if path == "/v1/restart":
                sup.post("restart", daemon="daemon=1" in query.split("&"), reason="restart requested on the socket")
            else:
                sup.post("reload")
            await self._json(h, writer, 202, {"accepted": True})
            return True
        if path == "/v1/status":
            await self._json(h, writer, 200, sup.snapshot(), head)
        elif path == "/v1/health":
            ready = sup.ready
            await self._json(h, writer, 200 if ready else 503, {"ready": ready, "state": sup.state.value}, head)
        elif path == "/metrics":
            text = metrics(sup.snapshot()).encode()
            await self._send(h, writer, 200, text, "text/plain; version=0.0.4; charset=utf-8", head_only=head)
        else:
            return await self._stream_events(h, reader, writer, head)
        return True

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
