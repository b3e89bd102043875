"""Whether a process runs, with the standard library only: the status client and the
simulated `lms` ask it on every call, so it must not import psutil (about 30 ms)."""

from __future__ import annotations

import os
import sys


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped orphan counts as dead); a
    process of another user counts as running.

    ``kill(pid, 0)`` succeeds on a zombie, so on Linux the state in ``/proc/PID/stat``
    decides (orphans are not always reaped promptly: containers whose PID 1 is no init).
    On Windows ``os.kill(pid, 0)`` would terminate the process: ``OpenProcess`` plus
    ``GetExitCodeProcess`` answer there (``STILL_ACTIVE``).
    """
    if sys.platform == "win32":
        import _winapi  # noqa: PLC0415 - Windows only

        try:
            handle = _winapi.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        except OSError as exc:
            return getattr(exc, "winerror", None) == 5  # ERROR_ACCESS_DENIED: it exists
        try:
            return bool(_winapi.GetExitCodeProcess(handle) == 259)  # STILL_ACTIVE
        finally:
            _winapi.CloseHandle(handle)
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
