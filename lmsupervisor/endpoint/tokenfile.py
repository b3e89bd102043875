"""The TCP transport's endpoint file: where a client finds the port and the bearer token.

With ``status.transport = "tcp"`` (design §4, §5; the Windows default) the status server
listens on ``127.0.0.1`` on a port the system picks, and writes ``<socket>.tcp.json``
beside where the socket would be: ``{"port": int, "token": str, "pid": int,
"pid_namespace": int | null, "started": int | null}`` (the writer's PID namespace and start
time, see :mod:`lmsupervisor.pids`), mode 0600
in the socket's private folder (0700, see :mod:`lmsupervisor.statusd.socketdir`), so only the
user can read the token. Every request must carry ``Authorization: Bearer <token>``.

The file is written to a temporary name and renamed over the old one, so a reader never
sees half of it. Standard library only: ``lmsupervisor status`` reads it.
"""

from __future__ import annotations

import json
import os
import stat

from lmsupervisor.errors import StatusSocketError
from lmsupervisor.pids import pid_namespace, start_ticks
from lmsupervisor.platform import current as this_os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `status` must not pay for importing typing
if TYPE_CHECKING:
    from typing import Any

SUFFIX = ".tcp.json"
HOST = "127.0.0.1"  # the only address the TCP transport binds or connects to


def token_path(socket_path: str | os.PathLike[str]) -> str:
    """The endpoint file of the TCP transport for ``socket_path`` (``<socket>.tcp.json``)."""
    return os.fspath(socket_path) + SUFFIX


def write(path: str | os.PathLike[str], port: int, token: str, pid: int, host: str | None = None) -> os.stat_result:
    """Write the endpoint file atomically with mode 0600; returns the new file's stat.
    ``host`` is added as ``"host"`` when given (the dashboard's file: its listen address).

    Raises OSError when the folder cannot be written (the caller maps it).
    """
    path = os.fspath(path)
    tmp = f"{path}.{pid}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if os.path.lexists(tmp):  # left by a crash between the write and the rename (our folder: no race)
        os.unlink(tmp)
    fd = os.open(tmp, flags | os.O_EXCL, 0o600)
    try:
        body = {"port": port, "token": token, "pid": pid, "pid_namespace": pid_namespace(), "started": start_ticks(pid)}
        if host is not None:
            body["host"] = host
        os.write(fd, json.dumps(body).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return os.lstat(path)


def read(path: str, trusted: set[int]) -> tuple[int, str]:
    """``(port, token)`` from the endpoint file at ``path`` (:func:`read_endpoint`)."""
    value = read_endpoint(path, trusted)
    return value["port"], value["token"]


def read_endpoint(path: str, trusted: set[int]) -> dict[str, Any]:
    """The endpoint file at ``path`` as written (``port`` and ``token`` checked, ``host``
    when it has one).

    Refused with :class:`StatusSocketError`: a file that is not a regular file, one owned
    by a uid not in ``trusted`` (another user may be impersonating the supervisor) or
    readable by group or others (the token is no secret any more), and a file whose content
    is not ``{"port": 1..65535, "token": str}``, and a file whose ``pid`` is not running (a
    killed supervisor's: another program may hold its port now) or now names a process
    started at another time (a recycled PID), checked only when the file's
    ``pid_namespace`` is ours. ``FileNotFoundError`` passes through.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StatusSocketError(f"{path} is not a file", hint="check status.socket / --socket")
        if this_os().posix_files:  # Windows: the private folder's ACL guards it
            if trusted and info.st_uid not in trusted:
                raise StatusSocketError(
                    f"refusing {path}: it belongs to uid {info.st_uid}, not to you or root; "
                    "another user may be impersonating the supervisor",
                    hint="use a socket folder only you control",
                )
            if info.st_mode & 0o077:
                raise StatusSocketError(
                    f"refusing {path}: its mode {stat.S_IMODE(info.st_mode):04o} lets others read the token",
                    hint="restart `lmsupervisor run`, which writes it 0600",
                )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
        port, token = value["port"], value["token"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StatusSocketError(f"{path}: not an endpoint file of lmsupervisor") from exc
    if not (
        isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 and isinstance(token, str) and token
    ):
        raise StatusSocketError(f"{path}: not an endpoint file of lmsupervisor")
    pid, namespace, started = value.get("pid"), value.get("pid_namespace"), value.get("started")
    ours = namespace == pid_namespace()  # a PID means nothing in another namespace (a container)
    if ours and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        # Left by a killed supervisor: whoever listens on the port now must not get the token.
        if not this_os().pid_alive(pid):
            raise StatusSocketError(
                f"{path} is stale: the supervisor that wrote it (PID {pid}) is not running",
                hint="start `lmsupervisor run`",
            )
        now = start_ticks(pid)
        if isinstance(started, int) and now is not None and now != started:
            raise StatusSocketError(
                f"{path} is stale: the supervisor that wrote it (PID {pid}) is not running; "
                "that PID belongs to another process now",
                hint="start `lmsupervisor run`",
            )
    return dict(value)
