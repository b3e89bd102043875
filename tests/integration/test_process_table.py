"""Process pinning: only a process that runs the install's executable is verified, and only a
verified process with the same create time is ever signalled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from lmsupervisor.clock import SystemClock
from lmsupervisor.core.observed import DaemonProcess
from lmsupervisor.lmstudio.watch import OsProcessTable, runs
from tests.conftest import eventually


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` and wait until its command line is readable: Popen returns once the
    exec began, but the kernel fills /proc/PID/cmdline a moment later (empty until then)."""
    proc = subprocess.Popen(argv)
    assert eventually(lambda: bool(psutil.Process(proc.pid).cmdline()), timeout=5)
    return proc


def test_runs_matches_the_executable_or_the_interpreted_script_only() -> None:
    """argv[0], the exe, or an interpreter's script count; an argument elsewhere does not."""
    app = Path("/opt/LM Studio/lm-studio")
    assert runs(["/opt/LM Studio/lm-studio", "--run-as-service"], None, app)
    assert runs(["/usr/bin/python3", "-S", "/opt/LM Studio/lm-studio"], "/usr/bin/python3.11", app)
    assert not runs(["/usr/bin/vim", "/opt/LM Studio/lm-studio"], "/usr/bin/vim", app)
    assert not runs(["/usr/bin/python3", "-S", "/tmp/other.py", "/opt/LM Studio/lm-studio"], None, app)


async def test_unrelated_process_mentioning_the_path_is_never_signalled(tmp_path: Path) -> None:
    """A process whose command line merely contains the app's path (issue 6, 0.3) is found
    unverified, not found by find_running, and survives terminate()."""
    app = tmp_path / "LM-Studio.AppImage"
    app.write_text("#!/bin/sh\n", encoding="utf-8")
    proc = spawn([sys.executable, "-c", "import time; time.sleep(30)", str(app)])
    try:
        table = OsProcessTable(SystemClock())
        pinned = table.identify(proc.pid, app)
        assert pinned is not None
        assert (pinned.verified, table.find_running(app)) == (False, None)
        assert await table.terminate(pinned, 0.1) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


async def test_verified_process_is_terminated_but_a_recycled_pid_is_not(tmp_path: Path) -> None:
    """A verified pin is terminated; the same PID with another create time is left alone."""
    script = tmp_path / "llmster"
    script.write_text("import time\ntime.sleep(30)\n", encoding="utf-8")
    proc = spawn([sys.executable, "-S", str(script)])
    try:
        table = OsProcessTable(SystemClock())
        pinned = table.identify(proc.pid, script)
        assert pinned is not None and pinned.verified
        found = table.find_running(script)
        assert found is not None and found.pid == proc.pid
        recycled = DaemonProcess(proc.pid, pinned.create_time - 100, True)
        assert (table.alive(recycled), await table.terminate(recycled, 0.1), proc.poll()) == (False, True, None)
        assert await table.terminate(pinned, 2.0) is True
        assert proc.wait(5) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
