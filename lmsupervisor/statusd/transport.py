"""How the status server listens: a Unix socket, or loopback TCP with a bearer token (design §5).

Two transports behind one small interface (:class:`Transport`), chosen by
``status.transport`` (:func:`lmsupervisor.config.status_transport`):

- :class:`UnixTransport`: the socket at ``status.socket`` (0600, or 0660 with
  ``status.group``) in a private folder. Read endpoints answer whoever can connect;
  control endpoints check the peer's uid (:func:`peer_uid`: ``SO_PEERCRED`` on Linux,
  ``LOCAL_PEERCRED`` on macOS and FreeBSD).
- :class:`TcpTransport` (Windows' default, selectable everywhere): ``127.0.0.1`` on a
  port the system picks; the port and a random token (256 bits) go to
  ``<socket>.tcp.json`` (:mod:`lmsupervisor.endpoint.tokenfile`, 0600 in the same private
  folder). Every request needs ``Authorization: Bearer <token>``, compared in constant time
  (:func:`hmac.compare_digest`); a missing or wrong token is answered 401.

Each transport also keeps its file (the socket, or the endpoint file) in place: the
server's periodic check calls :meth:`Transport.state` and :meth:`Transport.restore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from lmsupervisor.endpoint import tokenfile
from lmsupervisor.endpoint.peer import socket_peer_uid
from lmsupervisor.errors import ConfigError, StatusSocketError
from lmsupervisor.platform import current as this_os
from lmsupervisor.statusd.socketdir import prepare_socket_dir

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
READ_SIZE = 16 * 1024  # bytes: each connection's buffer limit
BACKLOG = 128


def peer_uid(sock: socket.socket | None, platform: str = sys.platform) -> int | None:
    """The uid of the process at the other end of a Unix socket, None where it cannot be read.

    Linux: ``SO_PEERCRED`` (``struct ucred``); macOS and FreeBSD: ``LOCAL_PEERCRED``
    (``struct xucred``, what ``getpeereid(3)`` reads). ``platform`` is ``sys.platform``,
    passed in so every branch is testable anywhere (the client reads it the same way).
    """
    return None if sock is None else socket_peer_uid(sock, platform)


def control_refusal(sock: socket.socket | None, platform: str = sys.platform, own_uid: int | None = None) -> str | None:
    """Why the peer on ``sock`` may not use a control verb (POST), or None: only our own uid
    and root may; a peer whose uid cannot be read is let through (the socket's mode guards it)."""
    uid = peer_uid(sock, platform)
    own = own_uid if own_uid is not None else this_os().uid()
    if uid is None or uid in (0, own):
        return None
    return f"uid {uid} may read but not control"


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
    with this_os().unix_socket() as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise StatusSocketError(
        f"another process answers on {path}", hint="stop the other lmsupervisor, or choose another status.socket"
    )


class Transport(Protocol):
    """What :class:`~lmsupervisor.statusd.server.StatusServer` needs of a way to listen."""

    kind: str  # "unix" or "tcp"
    file: Path  # what clients find: the socket, or the TCP endpoint file
    checks_peer: bool  # control verbs check the peer's uid (Unix sockets)

    def prepare(self) -> None:
        """Check or create the folder and remove leftovers of a crashed run (raises ConfigError)."""

    async def listen(self, handler: Handler) -> asyncio.AbstractServer:
        """Start listening, serving each connection with ``handler``; writes :attr:`file`."""

    def state(self) -> str:
        """``ours`` (the file we made), ``missing``, or ``replaced`` (anything else there)."""

    async def restore(self, handler: Handler) -> asyncio.AbstractServer | None:
        """Make :attr:`file` again; a new server that replaces the old one, or None (same one)."""

    def remove(self) -> None:
        """Remove :attr:`file` if it is still ours (at shutdown)."""

    def refusal(self, authorization: bytes | None) -> str | None:
        """Why a request with this ``Authorization`` header may not be answered, or None."""


def _file_state(path: Path, made: tuple[int, int] | None, want: Callable[[int], bool]) -> str:
    try:
        info = path.lstat()
    except OSError:  # gone, or its folder is gone or unreadable
        return "missing"
    return "ours" if want(info.st_mode) and (info.st_dev, info.st_ino) == made else "replaced"


class UnixTransport:
    """The socket at ``path``: 0600 in a 0700 folder, or 0660 in a 0750 folder of group ``gid``."""

    kind = "unix"
    checks_peer = True

    def __init__(self, path: Path, gid: int | None = None) -> None:
        self.file = path
        self.gid = gid
        self._made: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we listen on

    def prepare(self) -> None:
        """The folder (see :func:`prepare_socket_dir`); a stale socket and a stale TCP endpoint file go."""
        prepare_socket_dir(self.file, self.gid)
        remove_stale_socket(self.file)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tokenfile.token_path(self.file))  # a TCP run's leftover would mislead clients

    async def listen(self, handler: Handler) -> asyncio.AbstractServer:
        """Bind ``path`` with the right mode from the start (umask), then listen."""
        sock = this_os().unix_socket()
        old = os.umask(0o117 if self.gid is not None else 0o177)
        try:
            sock.bind(str(self.file))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        if self.gid is not None:
            os.chown(self.file, -1, self.gid)
        self.file.chmod(0o660 if self.gid is not None else 0o600)
        info = self.file.lstat()
        self._made = (info.st_dev, info.st_ino)
        return await this_os().serve_unix(handler, sock, BACKLOG, READ_SIZE)

    def state(self) -> str:
        """See :meth:`Transport.state`."""
        return _file_state(self.file, self._made, stat.S_ISSOCK)

    async def restore(self, handler: Handler) -> asyncio.AbstractServer | None:
        """Bind again (only we may write in our folder: whatever is at the path is stale)."""
        prepare_socket_dir(self.file, self.gid)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            self.file.unlink()
        return await self.listen(handler)

    def remove(self) -> None:
        """See :meth:`Transport.remove`."""
        if self.state() == "ours":
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()

    def refusal(self, authorization: bytes | None) -> str | None:
        """Nothing to check: whoever can reach the socket may read."""
        return None


class TcpTransport:
    """``127.0.0.1`` on a free port, announced with a token in ``<socket>.tcp.json``."""

    kind = "tcp"
    checks_peer = False  # the token is the credential

    def __init__(self, socket_path: Path, pid: int, token: str | None = None) -> None:
        self.socket_path = socket_path
        self.file = Path(tokenfile.token_path(socket_path))
        self.pid = pid
        self.token = token or secrets.token_urlsafe(32)
        self._expected = self.token.encode()
        self.port = 0
        self._made: tuple[int, int] | None = None

    def prepare(self) -> None:
        """The private folder of the socket path; a stale Unix socket there goes (clients would try it first)."""
        prepare_socket_dir(self.socket_path)
        if this_os().unix_sockets:
            remove_stale_socket(self.socket_path)

    async def listen(self, handler: Handler) -> asyncio.AbstractServer:
        """Listen on ``127.0.0.1:0``, then write the endpoint file (0600) with the port and token."""
        server = await asyncio.start_server(
            handler, tokenfile.HOST, 0, backlog=BACKLOG, limit=READ_SIZE, reuse_address=False
        )
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            self._write()
        except OSError:
            server.close()
            raise
        return server

    def _write(self) -> None:
        info = tokenfile.write(self.file, self.port, self.token, self.pid)
        self._made = (info.st_dev, info.st_ino)

    def state(self) -> str:
        """See :meth:`Transport.state`."""
        return _file_state(self.file, self._made, stat.S_ISREG)

    async def restore(self, handler: Handler) -> asyncio.AbstractServer | None:
        """Write the endpoint file again (same port and token); the listener goes on."""
        prepare_socket_dir(self.socket_path)
        self._write()
        return None

    def remove(self) -> None:
        """See :meth:`Transport.remove`."""
        if self.state() == "ours":
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()

    def refusal(self, authorization: bytes | None) -> str | None:
        """Missing or wrong bearer token (constant-time comparison), else None."""
        if authorization is None:
            return f"missing `Authorization: Bearer <token>`; the token is in {self.file}"
        scheme, _, credentials = authorization.strip().partition(b" ")
        # RFC 7235 §2.1: the scheme is case-insensitive; the token itself is compared exactly.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self._expected):
            return "wrong bearer token"
        return None
