"""Process watching: the LM Studio daemon is not our child, so we watch its PID.

The platform's exit watch (:meth:`~lmsupervisor.platform.base.OsPlatform.watch_exit`:
a pidfd on Linux, kqueue on macOS, a waited process handle on Windows) reports the exit
within milliseconds, including a process left as an unreaped zombie; where it has none,
psutil is polled. Also the process table operations of the escalation ladder
(terminate, wait, kill) on processes pinned by PID and create time, signalled only when
verified as running the detected install's executable (issue: an unrelated process whose
command line merely mentioned the app's path was once adopted and SIGTERMed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psutil

from lmsupervisor.clock import Clock
from lmsupervisor.core.observed import DaemonProcess
from lmsupervisor.platform import current as this_os
from lmsupervisor.platform.base import OsPlatform

POLL_INTERVAL = 0.5  # seconds, psutil fallback


class PidWatcher(Protocol):
    """Reports the exit of a process that is not our child (LM Studio's daemon or app)."""

    def watch(self, pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_exit`` once when ``pid`` exits; returns a function that cancels the watch."""


class ProcessTable(Protocol):
    """The process operations of the escalation ladder, on pinned processes only."""

    def identify(self, pid: int, service_path: Path | None, is_daemon: bool | None = None) -> DaemonProcess | None:
        """Pin ``pid`` (PID + create time); ``verified`` if it runs ``service_path``.
        None when no such process is alive."""

    def alive(self, proc: DaemonProcess) -> bool:
        """True while ``proc`` runs (same PID *and* create time)."""

    def find_running(self, service_path: Path) -> DaemonProcess | None:
        """The process that runs ``service_path`` itself (see :func:`runs`), verified;
        for LM Studio 0.3, whose `lms` names no PID. None when there is none."""

    async def wait_exit(self, proc: DaemonProcess, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``proc`` to exit; True if it is gone."""

    async def terminate(self, proc: DaemonProcess, grace: float) -> bool:
        """SIGTERM ``proc`` and its children, wait ``grace`` seconds, then SIGKILL; True if
        gone. Does nothing (False) for an unverified process or a recycled PID."""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; we may not look at it


class OsPidWatcher:
    """The platform's instant exit watch (pidfd on Linux, kqueue on macOS, a waited handle on
    Windows: :meth:`~lmsupervisor.platform.base.OsPlatform.watch_exit`), psutil polling where
    it has none."""

    def __init__(self, clock: Clock, system: OsPlatform | None = None) -> None:
        self.clock = clock
        self.system = system or this_os()

    def watch(self, pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_exit`` once, on the running loop, when ``pid`` exits or is a zombie.

        Uses the platform's watch; where it has none (or cannot open this PID) polls psutil
        every :data:`POLL_INTERVAL` seconds of clock time. A PID that is already gone fires
        on the next loop iteration. Returns a function that cancels the watch. Must be
        called from a running event loop (:class:`RuntimeError` otherwise).
        """
        loop = asyncio.get_running_loop()
        fired = False

        def fire() -> None:
            nonlocal fired
            if not fired:
                fired = True
                on_exit()

        cancel = self.system.watch_exit(loop, pid, fire)
        if cancel is not None:
            return cancel

        async def poll() -> None:
            while _alive(pid):
                await self.clock.sleep(POLL_INTERVAL)
            fire()

        task = loop.create_task(poll())

        def cancel_poll() -> None:
            task.cancel()

        return cancel_poll


_INTERPRETERS = ("python", "node", "bun", "sh", "bash")


def runs(cmdline: list[str], exe: str | None, service_path: Path) -> bool:
    """Whether a process with ``cmdline``/``exe`` runs ``service_path``: as its executable,
    its ``argv[0]``, or the script an interpreter (python, node, bun, sh) was given. An
    argument elsewhere on the command line (an editor opening the file) does not count."""
    target = os.path.realpath(service_path)
    candidates = [exe or "", *cmdline[:1]]
    if cmdline and os.path.basename(cmdline[0]).startswith(_INTERPRETERS):
        script = next((a for a in cmdline[1:] if not a.startswith("-")), "")
        candidates.append(script)
    return any(c and os.path.realpath(c) == target for c in candidates)


class OsProcessTable:
    """:class:`ProcessTable` over psutil; the clock paces the waits."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def identify(self, pid: int, service_path: Path | None, is_daemon: bool | None = None) -> DaemonProcess | None:
        """Pin ``pid`` by its psutil create time; ``verified`` when it :func:`runs` ``service_path``.

        None when the process is gone, a zombie, or cannot be read at all; a process whose
        command line we may not read (:class:`psutil.AccessDenied`) is pinned but unverified.
        """
        try:
            proc = psutil.Process(pid)
            if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return None
            created = proc.create_time()
            try:
                cmdline, exe = proc.cmdline(), proc.exe()
            except psutil.AccessDenied:
                cmdline, exe = [], None
        except psutil.Error:
            return None
        verified = service_path is not None and runs(cmdline, exe, service_path)
        return DaemonProcess(pid, created, verified, is_daemon)

    def find_running(self, service_path: Path) -> DaemonProcess | None:
        """The first live process in the table that :func:`runs` ``service_path``, verified; else None."""
        for proc in psutil.process_iter(["cmdline", "exe", "status", "create_time"]):
            info = proc.info
            if info["status"] == psutil.STATUS_ZOMBIE or not info["create_time"]:
                continue
            if runs(info["cmdline"] or [], info["exe"], service_path):
                return DaemonProcess(int(proc.pid), float(info["create_time"]), True)
        return None

    def alive(self, proc: DaemonProcess) -> bool:
        """True while ``proc.pid`` runs with the same create time and is no zombie.

        A process we may not inspect counts as alive: it exists.
        """
        try:
            p = psutil.Process(proc.pid)
            return p.create_time() == proc.create_time and p.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True  # it exists; we may not look at it

    async def wait_exit(self, proc: DaemonProcess, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds of clock time, checking every 0.05 s; True if ``proc`` is gone."""
        deadline = self.clock.monotonic() + timeout
        while self.alive(proc):
            if self.clock.monotonic() >= deadline:
                return False
            await self.clock.sleep(0.05)
        return True

    async def terminate(self, proc: DaemonProcess, grace: float) -> bool:
        """SIGTERM ``proc`` and its children, wait ``grace`` seconds, then SIGKILL and wait 5 s.

        Returns True once the process is gone. An unverified process or a recycled PID is
        never signalled: the result then only says whether it is already gone. Never raises
        for a process that vanishes midway.
        """
        if not proc.verified or not self.alive(proc):
            return not self.alive(proc)
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return not self.alive(proc)
        # psutil's terminate()/kill(): SIGTERM/SIGKILL on Unix, TerminateProcess on Windows (no
        # grace there); psutil checks the create time, so a recycled PID is not signalled
        for hard, wait in ((False, grace), (True, 5.0)):
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    if hard:
                        p.kill()
                    else:
                        p.terminate()
            if await self.wait_exit(proc, wait):
                return True
        return not self.alive(proc)
