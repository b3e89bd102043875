"""Whether a process runs, with the standard library only: the status client and the
simulated `lms` ask it on every call, so it must not import psutil off Windows."""

from __future__ import annotations

import os
import sys


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped orphan counts as dead); a
    process of another user counts as running.

    ``kill(pid, 0)`` succeeds on a zombie, so on Linux the state in ``/proc/PID/stat``
    decides (orphans are not always reaped promptly: containers whose PID 1 is no init).
    On Windows ``os.kill(pid, 0)`` would terminate the process: psutil answers there.
    """
    if sys.platform == "win32":
        import psutil  # noqa: PLC0415 - Windows only

        return bool(psutil.pid_exists(pid))
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
