"""What Linux and macOS share: uids and groups, flock, process groups, signals, rlimits.

:class:`Posix` is the base of :class:`~lmsupervisor.platform.linux.Linux` and
:class:`~lmsupervisor.platform.darwin.Darwin`, which add their folders and process
watching. The Unix-only modules (``fcntl``, ``grp``, ``pwd``, ``resource``) are imported
where used, so a Windows interpreter never loads this module's imports by accident.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from lmsupervisor.platform.base import Account, wall_gap

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    import signal
    from collections.abc import Callable
    from typing import Any

    from lmsupervisor.platform.base import StreamHandler

APP = "lmsupervisor"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped orphan counts as dead); a
    process of another user counts as running.

    ``kill(pid, 0)`` succeeds on a zombie, so where there is a ``/proc`` (Linux) the state
    in ``/proc/PID/stat`` decides (orphans are not always reaped promptly: containers whose
    PID 1 is no init); without one (macOS) ``kill(0)`` is all there is.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return True  # no procfs (macOS): kill(0) is all we have
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def clock_gap(counts_sleep: str, stops_asleep: str) -> float:
    """``clock_gettime(counts_sleep) - clock_gettime(stops_asleep)`` for two ``time.CLOCK_*``
    names; :func:`wall_gap` when this interpreter lacks either (another Unix)."""
    ours, theirs = getattr(time, counts_sleep, None), getattr(time, stops_asleep, None)
    if ours is None or theirs is None:
        return wall_gap()
    try:
        return time.clock_gettime(ours) - time.clock_gettime(theirs)
    except OSError:  # a kernel without that clock
        return wall_gap()


class Posix:
    """The Unix half of :class:`~lmsupervisor.platform.base.OsPlatform` (the subclasses add
    the folders and the exit watch)."""

    name = "posix"
    unix_sockets = True
    posix_files = True
    default_transport = "unix"
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGINT")

    # -- who we are
    def uid(self) -> int | None:
        """``os.getuid()``."""
        return os.getuid()

    def is_root(self) -> bool:
        """``os.geteuid() == 0``."""
        return os.geteuid() == 0

    def account(self, user: str) -> Account | None:
        """``pwd.getpwnam(user)`` with its primary group's name (``grp``); None for no such user."""
        import grp  # noqa: PLC0415 - Unix only
        import pwd  # noqa: PLC0415

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        try:
            group: str | None = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            group = None
        return Account(entry.pw_uid, entry.pw_gid, entry.pw_dir, group)

    def user_name(self) -> str | None:
        """Our uid's name (``pwd.getpwuid``), None for a uid without an entry (a container)."""
        import pwd  # noqa: PLC0415 - Unix only

        try:
            return pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            return None

    def group_id(self, group: str) -> int | None:
        """The gid of the group named ``group``, or numbered so (``grp``); None when neither exists."""
        import grp  # noqa: PLC0415 - Unix only

        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            pass
        if group.isdigit():
            with contextlib.suppress(KeyError):
                return grp.getgrgid(int(group)).gr_gid
        return None

    # -- the status socket and the instance locks
    def unix_socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """``socket.socket(AF_UNIX, kind)``."""
        return socket.socket(socket.AF_UNIX, kind)

    async def open_unix_stream(
        self, path: str, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_unix_connection(path, limit=limit)``."""
        import asyncio  # noqa: PLC0415 - not on the blocking path

        return await asyncio.open_unix_connection(path, limit=limit)

    async def serve_unix(
        self, handler: StreamHandler, sock: socket.socket, backlog: int, limit: int
    ) -> asyncio.AbstractServer:
        """``asyncio.start_unix_server`` on ``sock``."""
        import asyncio  # noqa: PLC0415

        return await asyncio.start_unix_server(handler, sock=sock, backlog=backlog, limit=limit)

    def open_lock(self, path: str) -> int:
        """``open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)``: ELOOP for a symlink."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def try_lock(self, fd: int) -> bool:
        """A non-blocking exclusive ``flock`` (held per open file, dropped when it closes)."""
        import fcntl  # noqa: PLC0415 - Unix only

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    # -- signals
    def on_signals(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None], reload: Callable[[], None]
    ) -> Callable[[], None]:
        """The loop's own signal handlers: SIGTERM and SIGINT stop, SIGHUP reloads."""
        import signal  # noqa: PLC0415 - not on the status path

        handlers: list[tuple[signal.Signals, Callable[[], None]]] = [
            (signal.SIGTERM, lambda: stop("SIGTERM")),
            (signal.SIGINT, lambda: stop("SIGINT")),
            (signal.SIGHUP, reload),
        ]
        for sig, handler in handlers:
            loop.add_signal_handler(sig, handler)

        def restore() -> None:
            for sig, _ in handlers:
                with contextlib.suppress(ValueError, RuntimeError):  # the loop may be closed
                    loop.remove_signal_handler(sig)

        return restore

    # -- processes
    def watch_exit(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_exit: Callable[[], None]
    ) -> Callable[[], None] | None:
        """No instant exit watch in plain POSIX: None (the caller polls)."""
        return None

    def pid_alive(self, pid: int) -> bool:
        """See :func:`pid_alive`."""
        return pid_alive(pid)

    def new_group_options(self) -> dict[str, Any]:
        """``start_new_session=True``: a session (and process group) of its own."""
        return {"start_new_session": True}

    def kill_group(self, pid: int) -> None:
        """``killpg(pid, SIGKILL)``; a group already gone (or not ours) is ignored."""
        import signal  # noqa: PLC0415 - not on the status path

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def sleep_gap(self) -> float:
        """The wall clock minus the monotonic one (:func:`wall_gap`): a Unix without a clock
        that counts sleep (the subclasses read one where the OS has it)."""
        return wall_gap()

    def raise_fd_limit(self) -> tuple[int, int] | None:
        """Raise the soft RLIMIT_NOFILE to the hard limit (services often start at 1024), or to
        10240 where the hard limit is infinite (macOS refuses more than OPEN_MAX)."""
        import resource  # noqa: PLC0415 - Unix only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        for want in (target, 10240):
            if want <= soft and soft != resource.RLIM_INFINITY:
                return None
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError):
                continue
            return soft, want
        return None
