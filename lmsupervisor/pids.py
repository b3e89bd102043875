"""Whether a process runs, with the standard library only: the status client and the
simulated `lms` ask it on every call, so it must not import psutil (about 30 ms)."""

from __future__ import annotations

import os
import sys


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped orphan counts as dead); a
    process of another user counts as running. This machine's answer, whatever
    ``$LMSUPERVISOR_PLATFORM`` says (the simulator asks it too): on Windows ``OpenProcess``
    plus ``GetExitCodeProcess`` (:meth:`lmsupervisor.platform.windows.Windows.pid_alive`),
    elsewhere ``kill(pid, 0)`` and ``/proc`` (:func:`lmsupervisor.platform.posix.pid_alive`)."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        from lmsupervisor.platform.windows import Windows  # noqa: PLC0415

        return Windows().pid_alive(pid)
    from lmsupervisor.platform.posix import pid_alive as alive  # noqa: PLC0415

    return alive(pid)


def pid_namespace() -> int | None:
    """The inode of this process's PID namespace (``/proc/self/ns/pid``), None where there
    is none to read (not Linux, or no procfs). Two processes compare PIDs only in the same one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``):
    with its PID it names one process, as a recycled PID has another. None without
    procfs (macOS, Windows) or when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name: field 3 onwards
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
