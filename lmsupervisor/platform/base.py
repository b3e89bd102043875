"""The interface every platform implements (:class:`OsPlatform`) and the data it returns.
Imported by the implementations for :class:`Account` only: no asyncio here at run time.

Shapes and units are given per method; no method raises for an ordinary answer ("no such
user", "lock held", "cannot watch that PID"): those are ``None`` or ``False``.
"""

from __future__ import annotations

import socket
import time
from typing import Any, NamedTuple, Protocol

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: asyncio stays out of `lmsupervisor status`
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Mapping

    StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Account(NamedTuple):
    """A user from the password database: ``uid``, primary ``gid``, ``home`` folder, and the
    primary group's name (None when the group has no entry)."""

    uid: int
    gid: int
    home: str
    group: str | None


class OsPlatform(Protocol):
    """What lmsupervisor's own process does differently per OS (see :mod:`lmsupervisor.platform`)."""

    name: str  # "linux", "darwin" or "windows"
    unix_sockets: bool  # an AF_UNIX status socket can be served and reached (else TCP + token)
    posix_files: bool  # owner uids and mode bits mean something (the socket folder, the token file)
    default_transport: str  # "unix" or "tcp": status.transport when the config names none
    stop_signals: tuple[str, ...]  # the signal names that stop `run` here, for messages

    # -- who we are
    def uid(self) -> int | None:
        """Our real uid; None where there are no uids (Windows)."""

    def is_root(self) -> bool:
        """True when our effective uid is 0 (never on Windows)."""

    def account(self, user: str) -> Account | None:
        """``user``'s entry in the password database, None when there is none (or no database)."""

    def user_name(self) -> str | None:
        """The name of our own uid, None without one."""

    def group_id(self, group: str) -> int | None:
        """The gid of the group named (or numbered) ``group``; None when no such group exists.
        Raises :class:`~lmsupervisor.errors.ConfigError` (key ``status.group``) where there
        are no groups."""

    # -- where our files are
    def config_folder(self, env: Mapping[str, str]) -> str:
        """The folder of the default ``config.toml``."""

    def state_folder(self, env: Mapping[str, str]) -> str:
        """lmsupervisor's own state folder (statefile, the home locks)."""

    def runtime_folder(self, env: Mapping[str, str]) -> str:
        """Where the status socket (or the TCP endpoint file) goes without ``$XDG_RUNTIME_DIR``."""

    # -- the status socket and the instance locks
    def unix_socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new ``AF_UNIX`` socket of ``kind``. Raises OSError where there are none."""

    async def open_unix_stream(
        self, path: str, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An asyncio stream connected to the Unix socket at ``path`` (``limit``: the
        reader's buffer, bytes). Raises OSError: the connect's, or EAFNOSUPPORT where there
        are no Unix sockets."""

    async def serve_unix(
        self, handler: StreamHandler, sock: socket.socket, backlog: int, limit: int
    ) -> asyncio.AbstractServer:
        """Serve ``handler`` on ``sock`` (bound by the caller, from :meth:`unix_socket`);
        ``backlog`` connections may wait, ``limit`` is each reader's buffer (bytes)."""

    def open_lock(self, path: str) -> int:
        """Open (create 0600) the lock file at ``path`` without following a symlink; its fd.
        Raises OSError (``errno.ELOOP`` for a symlink)."""

    def try_lock(self, fd: int) -> bool:
        """Take an exclusive lock on ``fd`` without waiting; False when another holds it.
        Closing ``fd`` (or the process ending) drops it."""

    # -- signals
    def on_signals(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None], reload: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``stop(signal name)`` or ``reload()`` on ``loop`` when this OS asks us to stop
        or reread the config; returns a function that restores what was there."""

    # -- processes
    def watch_exit(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_exit: Callable[[], None]
    ) -> Callable[[], None] | None:
        """Call ``on_exit`` on ``loop`` (maybe more than once: callers dedupe) when ``pid``
        exits, including as an unreaped zombie; a PID already gone fires on the next loop
        iteration. Returns a function that cancels the watch, or None when this OS cannot
        watch ``pid`` (the caller polls)."""

    def pid_alive(self, pid: int) -> bool:
        """True if ``pid`` runs and is no zombie; a process of another user counts as running."""

    def new_group_options(self) -> dict[str, Any]:
        """``subprocess.Popen`` keywords that start a child in a process group of its own."""

    def kill_group(self, pid: int) -> None:
        """Kill what is left of the process group started with :meth:`new_group_options`
        for child ``pid`` (nothing, normally). Never raises for processes already gone."""

    def raise_fd_limit(self) -> tuple[int, int] | None:
        """Raise the soft open-files limit to the hard one: ``(old soft, new soft)``, or None
        when nothing changed or there is no such limit."""

    # -- time asleep
    def sleep_gap(self) -> float:
        """Seconds that grow by the time the machine spends asleep (suspend, hibernation) and
        stay still while it runs: a clock that counts sleep minus one that does not (Linux
        ``CLOCK_BOOTTIME - CLOCK_MONOTONIC``; macOS ``CLOCK_MONOTONIC - CLOCK_UPTIME_RAW``;
        Windows ``GetTickCount64 - QueryUnbiasedInterruptTime``), else the wall clock minus
        the monotonic one (a wall-clock step then reads as sleep). Only the difference
        between two readings means anything. Never raises."""


def wall_gap() -> float:
    """``time.time() - time.monotonic()`` (seconds): grows by the time asleep where the
    monotonic clock stops meanwhile, and by any step of the wall clock (NTP, a person
    setting the time), which therefore reads as sleep. The fallback of
    :meth:`OsPlatform.sleep_gap`."""
    return time.time() - time.monotonic()
