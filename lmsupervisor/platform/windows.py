"""Windows: no uids, no Unix sockets, no process groups to signal, no SIGHUP.

- **Stop**: ``signal.signal`` for SIGINT (Ctrl-C) and SIGBREAK (Ctrl-Break), each handing
  over to the loop with ``call_soon_threadsafe`` (the proactor loop has no
  ``add_signal_handler``); with a console, ``SetConsoleCtrlHandler`` for the close, logoff
  and shutdown events, holding Windows off until the shutdown stages ran (up to
  :data:`CLOSE_GRACE` s). Reload is ``lmsupervisor reload`` or a config file change.
- **Lock**: ``msvcrt.locking`` on the first byte of the lock file (dropped when it closes).
- **Exit watch**: ``OpenProcess(SYNCHRONIZE)`` and ``WaitForSingleObject`` in a thread.
- **Process tree**: psutil's children of the process, then the process, killed.
- **Status**: loopback TCP with a bearer token (:mod:`lmsupervisor.statusd.transport`).
- **Folders**: platformdirs (``%LOCALAPPDATA%\\lmsupervisor``).

``winapi`` and ``msvcrt`` are passed in (default: the real modules), so tests run every
line on Linux with stand-ins (``tests/shapes/winfakes.py``); the ctypes console handler and
the platformdirs known-folder lookup run only on a real Windows.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading

from lmsupervisor.errors import ConfigError
from lmsupervisor.platform.base import wall_gap

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping
    from typing import Any

    from lmsupervisor.platform.base import Account, StreamHandler

APP = "lmsupervisor"
SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STILL_ACTIVE = 259
WAIT_OBJECT_0 = 0
ERROR_ACCESS_DENIED = 5
WAIT_SLICE_MS = 500  # the watch thread looks at its cancel flag this often
CLOSE_GRACE = 4.5  # seconds; Windows ends a process 5 s after CTRL_CLOSE_EVENT
_CONSOLE_EVENTS = {2: "CTRL_CLOSE_EVENT", 5: "CTRL_LOGOFF_EVENT", 6: "CTRL_SHUTDOWN_EVENT"}


def _module(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


class Windows:
    """:class:`~lmsupervisor.platform.base.OsPlatform` for Windows."""

    name = "windows"
    unix_sockets = False
    posix_files = False
    default_transport = "tcp"
    stop_signals: tuple[str, ...] = ("SIGINT", "SIGBREAK", "CTRL_CLOSE_EVENT")

    def __init__(self, winapi: Any = None, msvcrt: Any = None, kernel32: Any = None) -> None:
        self.winapi = winapi or _module("_winapi")
        self.msvcrt = msvcrt or _module("msvcrt")
        self.kernel32 = kernel32  # None: ctypes' kernel32, loaded at the first sleep_gap()

    # -- who we are: nobody, as far as uids go
    def uid(self) -> int | None:
        """None: Windows has no uids (the private folder's ACL guards our files)."""
        return None

    def is_root(self) -> bool:
        """False: elevation is no uid 0 (schtasks asks for it itself)."""
        return False

    def account(self, user: str) -> Account | None:
        """None: no password database."""
        return None

    def user_name(self) -> str | None:
        """None: no uid to name."""
        return None

    def group_id(self, group: str) -> int | None:
        """Raises :class:`ConfigError` (key ``status.group``): groups of a socket exist only on Unix."""
        raise ConfigError("status.group: groups exist only on Unix", key="status.group", hint="remove status.group")

    # -- where our files are
    def _local_app_data(self, env: Mapping[str, str]) -> str:
        if sys.platform == "win32":  # pragma: no cover - the known-folder API needs Windows
            from platformdirs.windows import Windows as Dirs  # noqa: PLC0415

            return os.path.dirname(Dirs(APP, appauthor=False).user_data_dir)
        # what platformdirs falls back to without the API: the environment (the seam on Linux)
        profile = env.get("USERPROFILE") or os.path.expanduser("~")
        return env.get("LOCALAPPDATA") or os.path.join(profile, "AppData", "Local")

    def config_folder(self, env: Mapping[str, str]) -> str:
        """``%LOCALAPPDATA%\\lmsupervisor`` (platformdirs' ``user_config_dir``)."""
        return os.path.join(self._local_app_data(env), APP)

    def state_folder(self, env: Mapping[str, str]) -> str:
        """``%LOCALAPPDATA%\\lmsupervisor`` (platformdirs' ``user_state_dir``)."""
        return os.path.join(self._local_app_data(env), APP)

    def runtime_folder(self, env: Mapping[str, str]) -> str:
        """``%LOCALAPPDATA%\\Temp\\lmsupervisor`` (platformdirs' ``user_runtime_dir``)."""
        return os.path.join(self._local_app_data(env), "Temp", APP)

    # -- the status socket and the instance locks
    def unix_socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """Raises OSError (EAFNOSUPPORT): Python has no AF_UNIX on Windows."""
        raise OSError(errno.EAFNOSUPPORT, "no Unix sockets on Windows: the status transport is TCP")

    async def open_unix_stream(
        self, path: str, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Raises OSError (EAFNOSUPPORT), as :meth:`unix_socket` does."""
        raise OSError(errno.EAFNOSUPPORT, "no Unix sockets on Windows: the status transport is TCP")

    async def serve_unix(
        self, handler: StreamHandler, sock: socket.socket, backlog: int, limit: int
    ) -> asyncio.AbstractServer:
        """Raises OSError (EAFNOSUPPORT), as :meth:`unix_socket` does."""
        raise OSError(errno.EAFNOSUPPORT, "no Unix sockets on Windows: the status transport is TCP")

    def open_lock(self, path: str) -> int:
        """Open (create) ``path`` for the lock; ELOOP for a symlink (checked first: no O_NOFOLLOW)."""
        if os.path.islink(path):
            raise OSError(errno.ELOOP, "is a symlink", path)
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0), 0o600)

    def try_lock(self, fd: int) -> bool:
        """``msvcrt.locking(fd, LK_NBLCK, 1)`` on the first byte; False when another holds it."""
        if self.msvcrt is None:  # pragma: no cover - every Windows has msvcrt
            raise OSError(errno.ENOSYS, "msvcrt is missing")
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            self.msvcrt.locking(fd, self.msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    # -- signals
    def on_signals(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None], reload: Callable[[], None]
    ) -> Callable[[], None]:
        """SIGINT and SIGBREAK (where defined) stop through ``call_soon_threadsafe``; the
        console's close/logoff/shutdown events too (a real Windows console only). There is
        no reload signal: ``reload`` is never called here."""
        import signal  # noqa: PLC0415

        previous: dict[int, Any] = {}
        for sig_name in ("SIGINT", "SIGBREAK"):
            sig = getattr(signal, sig_name, None)
            if sig is None:
                continue

            def handler(_signum: int, _frame: object, sig_name: str = sig_name) -> None:
                loop.call_soon_threadsafe(stop, sig_name)

            previous[sig] = signal.signal(sig, handler)
        console = _console_close(loop, stop)

        def restore() -> None:
            for sig, old in previous.items():
                with contextlib.suppress(ValueError, TypeError):  # not the main thread any more
                    signal.signal(sig, old)
            if console is not None:  # pragma: no cover - a real Windows console
                console()

        return restore

    # -- processes
    def watch_exit(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_exit: Callable[[], None]
    ) -> Callable[[], None] | None:
        """A handle with SYNCHRONIZE rights, waited on in a thread in slices of
        :data:`WAIT_SLICE_MS` ms (to notice a cancel); the exit is handed to the loop with
        ``call_soon_threadsafe``. None when the process cannot be opened for waiting (access
        denied: the caller polls); a PID that cannot be opened otherwise is gone."""
        api = self.winapi
        if api is None:
            return None
        try:
            handle = api.OpenProcess(SYNCHRONIZE, False, pid)
        except OSError as exc:
            if getattr(exc, "winerror", None) == ERROR_ACCESS_DENIED:
                return None
            loop.call_soon(on_exit)
            return lambda: None
        cancelled = threading.Event()

        def fire() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
                loop.call_soon_threadsafe(on_exit)

        def wait() -> None:
            try:
                while not cancelled.is_set():
                    try:
                        if api.WaitForSingleObject(handle, WAIT_SLICE_MS) == WAIT_OBJECT_0:
                            fire()
                            return
                    except OSError:  # WAIT_FAILED: ask the exit code instead, as pid_alive does
                        if not self.pid_alive(pid):
                            fire()
                            return
                        cancelled.wait(WAIT_SLICE_MS / 1000)
            finally:
                api.CloseHandle(handle)

        threading.Thread(target=wait, name=f"watch-exit-{pid}", daemon=True).start()
        return cancelled.set

    def pid_alive(self, pid: int) -> bool:
        """``OpenProcess`` plus ``GetExitCodeProcess`` (``STILL_ACTIVE``): ``kill(pid, 0)``
        would terminate the process here. Access denied means it exists."""
        api = self.winapi
        if api is None:  # pragma: no cover - every Windows has _winapi
            raise OSError(errno.ENOSYS, "_winapi is missing")
        try:
            handle = api.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        except OSError as exc:
            return getattr(exc, "winerror", None) == ERROR_ACCESS_DENIED
        try:
            return bool(api.GetExitCodeProcess(handle) == STILL_ACTIVE)
        finally:
            api.CloseHandle(handle)

    def new_group_options(self) -> dict[str, Any]:
        """``creationflags=CREATE_NEW_PROCESS_GROUP`` (0 where subprocess has no such flag:
        the seam on Linux, where ``Popen`` accepts no other value)."""
        import subprocess  # noqa: PLC0415

        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}

    def kill_group(self, pid: int) -> None:
        """Kill ``pid``'s children (psutil, recursively), then ``pid``: Windows has no group
        to signal. After ``pid`` exited nothing is found (its children cannot be told apart)."""
        import psutil  # noqa: PLC0415 - not on the status path

        try:
            root = psutil.Process(pid)
            tree = [*root.children(recursive=True), root]
        except psutil.Error:
            return
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()  # psutil checks the create time: a recycled PID is not killed

    def raise_fd_limit(self) -> tuple[int, int] | None:
        """None: no RLIMIT_NOFILE (handles are not limited that way)."""
        return None

    # -- time asleep
    def sleep_gap(self) -> float:
        """``GetTickCount64`` (milliseconds since boot, sleep included) minus
        ``QueryUnbiasedInterruptTime`` (100 ns units, "does not include time the system
        spends in sleep or hibernation"), in seconds: two counts no person or time service
        adjusts. Without kernel32 (a Windows-shaped interpreter elsewhere) the wall clock
        minus the monotonic one (:func:`~lmsupervisor.platform.base.wall_gap`)."""
        if self.kernel32 is None:
            self.kernel32 = _kernel32()
        if self.kernel32 is None:
            return wall_gap()
        import ctypes  # noqa: PLC0415 - only where kernel32 is

        unbiased = ctypes.c_ulonglong(0)
        if not self.kernel32.QueryUnbiasedInterruptTime(ctypes.byref(unbiased)):
            return wall_gap()
        return int(self.kernel32.GetTickCount64()) / 1e3 - unbiased.value / 1e7


def _kernel32() -> Any:
    """kernel32 through ctypes, ``GetTickCount64`` returning 64 bits; None off Windows."""
    import ctypes  # noqa: PLC0415

    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        return None
    kernel32 = win_dll("kernel32")  # pragma: no cover - Windows only
    kernel32.GetTickCount64.restype = ctypes.c_ulonglong  # pragma: no cover
    return kernel32  # pragma: no cover


def _console_close(
    loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]
) -> Callable[[], None] | None:  # pragma: no cover - needs a Windows console
    """``SetConsoleCtrlHandler`` for close, logoff and shutdown (Ctrl-C and Ctrl-Break are the
    signals above): posts the stop and holds Windows off until :func:`restore` (called when
    the shutdown stages are done) or :data:`CLOSE_GRACE` s. None off Windows."""
    import ctypes  # noqa: PLC0415

    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:  # not Windows
        return None
    from ctypes import wintypes  # noqa: PLC0415

    done = threading.Event()

    def handler(event: int) -> bool:
        if event not in _CONSOLE_EVENTS:
            return False  # Ctrl-C / Ctrl-Break: Python's own handler turns them into signals
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop, _CONSOLE_EVENTS[event])
        done.wait(CLOSE_GRACE)  # Windows ends the process once this returns
        return True

    routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(handler)  # type: ignore[attr-defined,unused-ignore]
    kernel32 = win_dll("kernel32", use_last_error=True)
    if not kernel32.SetConsoleCtrlHandler(routine, True):
        return None

    def restore() -> None:
        done.set()
        kernel32.SetConsoleCtrlHandler(routine, False)

    return restore
