"""The status socket: HTTP/1.1 + JSON over a Unix domain socket (design §5), on h11.

Read endpoints answer whoever can connect (the socket is 0600 in a 0700 folder, or
0660 for ``status.group``); POST endpoints also check the peer's uid with
``SO_PEERCRED`` (Linux): only the same uid or root may restart or reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import h11
import structlog

from lmsupervisor.api.status import metrics
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.supervisor import Supervisor

MAX_REQUEST = 64 * 1024  # bytes: requests here are tiny
READ_TIMEOUT = 30.0  # seconds a client may take to send its request

ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/status": ("GET",),
    "/v1/health": ("GET",),
    "/v1/events": ("GET",),
    "/metrics": ("GET",),
    "/v1/restart": ("POST",),
    "/v1/reload": ("POST",),
}


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's folder 0700, or check an existing one is ours and private.

    Raises :class:`StatusSocketError` if it belongs to someone else.
    """
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise StatusSocketError(
            f"{folder} belongs to uid {info.st_uid}, not to us",
            hint="choose another status.socket, or remove that folder",
        )
    if stat.S_IMODE(info.st_mode) & 0o077 and folder.name == "lmsupervisor":
        folder.chmod(0o700)


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a crashed run: one nobody answers on. Never a regular file."""
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise StatusSocketError(
            f"{path} exists and is not a socket", hint="move it away or choose another status.socket"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
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


class StatusServer:
    def __init__(self, supervisor: Supervisor, path: Path, group: str = "") -> None:
        self.supervisor = supervisor
        self.path = path
        self.group = group
        self.log = structlog.get_logger("lmsupervisor.api.statusd")
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        prepare_socket_dir(self.path)
        remove_stale_socket(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        if self.group:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            self.path.chmod(0o660)
        else:
            self.path.chmod(0o600)
        self.log.info("status_socket_listening", path=str(self.path))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end event streams, wait up to ``timeout`` s, remove the socket."""
        if self._server is not None:
            self._server.close()
            for task in list(self._streams):
                task.cancel()
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            except TimeoutError:
                self.log.warning("status_socket_close_overran", timeout=timeout)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(MAX_REQUEST), READ_TIMEOUT)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    while not isinstance(conn.next_event(), h11.EndOfMessage):  # drain any body
                        if conn.their_state is h11.ERROR:
                            return
                        data = await asyncio.wait_for(reader.read(MAX_REQUEST), READ_TIMEOUT)
                        conn.receive_data(data)
                    await self._respond(conn, event, reader, writer)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    continue
                return  # ConnectionClosed, or anything unexpected
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._streams.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Server", "lmsupervisor"),
            *(extra or []),
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _json(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, value: Any) -> None:
        await self._send(conn, writer, status, json.dumps(value).encode() + b"\n")

    async def _respond(
        self, conn: h11.Connection, req: h11.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        method = req.method.decode("latin-1")
        sup = self.supervisor
        if path not in ROUTES:
            await self._json(conn, writer, 404, {"error": f"no such endpoint: {path}"})
            return
        if method not in ROUTES[path]:
            body = json.dumps({"error": f"{method} not allowed on {path}"}).encode() + b"\n"
            await self._send(conn, writer, 405, body, extra=[("Allow", ", ".join(ROUTES[path]))])
            return
        if method == "POST":
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid is not None and uid not in (0, os.getuid()):
                await self._json(conn, writer, 403, {"error": f"uid {uid} may read but not control"})
                return
            if path == "/v1/restart":
                sup.post("restart", daemon="daemon=1" in query.split("&"), reason="restart requested on the socket")
            else:
                sup.post("reload")
            await self._json(conn, writer, 202, {"accepted": True})
            return
        if path == "/v1/status":
            await self._json(conn, writer, 200, sup.snapshot())
        elif path == "/v1/health":
            await self._json(conn, writer, 200 if sup.ready else 503, {"ready": sup.ready, "state": sup.state.value})
        elif path == "/metrics":
            await self._send(
                conn, writer, 200, metrics(sup.snapshot()).encode(), "text/plain; version=0.0.4; charset=utf-8"
            )
        else:
            await self._stream_events(conn, writer, reader)

    async def _stream_events(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> None:
        """NDJSON, one event a line, until the client leaves or the supervisor stops."""
        subscription = self.supervisor.subscribe()  # before the head: a client that saw it misses nothing
        writer.write(
            conn.send(
                h11.Response(
                    status_code=200, headers=[("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache")]
                )
            )
            or b""
        )
        await writer.drain()
        left = asyncio.ensure_future(reader.read(1))  # EOF: the client went away
        events = self.supervisor.events(subscription)
        try:
            while True:
                nxt = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({nxt, left}, return_when=asyncio.FIRST_COMPLETED)
                if left in done:
                    nxt.cancel()
                    return
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                writer.write(conn.send(h11.Data(data=json.dumps(event).encode() + b"\n")) or b"")
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        finally:
            left.cancel()
            await events.aclose()
