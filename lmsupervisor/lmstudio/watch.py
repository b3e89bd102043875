"""Process watching: the LM Studio daemon is not our child, so we watch its PID.

On Linux a pidfd (``os.pidfd_open``) registered with the event loop's reader reports
the exit within milliseconds, including a process left as an unreaped zombie. Elsewhere
psutil is polled. Also the process table operations of the escalation ladder
(terminate, wait, kill) and finding the 0.3 app's PID by its executable path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psutil

from lmsupervisor.clock import Clock

POLL_INTERVAL = 0.5  # seconds, psutil fallback


class PidWatcher(Protocol):
    def watch(self, pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_exit`` once when ``pid`` exits; returns a function that cancels the watch."""


class ProcessTable(Protocol):
    def alive(self, pid: int) -> bool: ...

    async def terminate(self, pid: int, grace: float) -> bool:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; True if it is gone."""

    def find_by_executable(self, path: Path) -> int | None: ...


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; we may not look at it


class OsPidWatcher:
    """pidfd on Linux (instant), psutil polling elsewhere."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def watch(self, pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        fired = False

        def fire() -> None:
            nonlocal fired
            if not fired:
                fired = True
                on_exit()

        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                loop.call_soon(fire)
                return lambda: None
            except OSError:
                fd = -1
            if fd >= 0:

                def readable() -> None:
                    loop.remove_reader(fd)
                    os.close(fd)
                    fire()

                loop.add_reader(fd, readable)

                def cancel() -> None:
                    if not fired:
                        with contextlib.suppress(ValueError, OSError):
                            loop.remove_reader(fd)
                            os.close(fd)

                return cancel

        async def poll() -> None:  # pragma: no cover - exercised off Linux
            while _alive(pid):
                await self.clock.sleep(POLL_INTERVAL)
            fire()

        task = loop.create_task(poll())

        def cancel_poll() -> None:
            task.cancel()

        return cancel_poll


class OsProcessTable:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def alive(self, pid: int) -> bool:
        return _alive(pid)

    async def terminate(self, pid: int, grace: float) -> bool:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
            deadline = self.clock.monotonic() + wait
            while self.clock.monotonic() < deadline:
                if not _alive(pid):
                    return True
                await self.clock.sleep(0.02)
        return not _alive(pid)

    def find_by_executable(self, path: Path) -> int | None:
        """The PID of a process whose executable or script is ``path`` (the 0.3 app)."""
        target = str(path)
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if target in (proc.info["cmdline"] or []):
                    return int(proc.pid)
        return None
