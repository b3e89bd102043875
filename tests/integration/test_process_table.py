"""Process pinning: only a process that runs the install's executable is verified, and only a
verified process with the same create time is ever signalled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import structlog.testing

from lmsupervisor.clock import SystemClock
from lmsupervisor.core.observed import DaemonProcess
from lmsupervisor.core.states import State
from lmsupervisor.lmstudio.watch import OsProcessTable, runs
from tests.conftest import eventually
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_install, make_supervisor
from tests.scenarios.test_supervisor import CONFIG


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


# A stand-in for a PID that LM Studio's `lms` names but that runs something else: it counts
# the signals it gets (it survives SIGTERM), and answers each line on stdin with them.
UNRELATED = """
import signal, sys
seen = []
signal.signal(signal.SIGTERM, lambda *_: seen.append("SIGTERM"))
print("ready", flush=True)
for _ in sys.stdin:
    print(",".join(seen) or "none", flush=True)
"""


async def test_unverified_daemon_is_never_signalled(tmp_path: Path) -> None:
    """The supervisor's kill rung, reached while the daemon it pinned is a live process that
    does not run the install's executable (unverified), asks the real process table to
    terminate it, and that process never receives a signal.

    The supervisor runs on the fake clock against the fake LM Studio of the scenario tests;
    only the process table and the pinned process are real."""
    service = tmp_path / "llmster"  # the install's executable, which the pinned process does not run
    service.write_text("#!/bin/sh\n", encoding="utf-8")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UNRELATED, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert await child.stdout.readline() == b"ready\n"  # its SIGTERM handler is set
        clock, lm = FakeClock(), FakeLmStudio()
        lm.daemon_pid, lm.server = child.pid, True  # `lms daemon status` names it; the server answers
        install = replace(make_install(), service_path=service)
        sup = make_supervisor(CONFIG, lm, clock, detect=lambda _: install, processes=OsProcessTable(clock))
        with structlog.testing.capture_logs() as logs:
            runner = asyncio.create_task(sup.run())
            await clock.advance(0)
            assert (sup.state, sup.snapshot()["lmstudio"]["daemon_pid"]) == (State.READY, child.pid)
            lm.hung = True  # the server stops answering: three failed probes, then the ladder
            await clock.advance(15)
            await clock.advance(1)  # rung 1 (restart_server) fails: the server still does not answer
            # Then `lms` cannot stop the daemon or start the server either: a new cause, so the
            # ladder climbs past restart_daemon (which also tries to terminate) to kill_daemon.
            lm.fail[("daemon", "down")] = (1, "Error: Failed to connect to the LM Studio daemon.")
            lm.fail[("server", "start")] = (1, "Error: Failed to connect to the LM Studio daemon.")
            for _ in range(12):
                await clock.advance(5)
            sup.post("stop")
            await asyncio.wait_for(runner, 5)
        await sup.prober.aclose()
        try:
            child.stdin.write(b"?\n")
            await child.stdin.drain()
            answer = await child.stdout.readline()  # b"" if it was killed
        except (BrokenPipeError, ConnectionResetError):
            answer = b"killed"
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    # The rung is bound to each bring-up's log events: restart_daemon tries to terminate the daemon
    # when `daemon down` fails, kill_daemon always does; both find it unverified.
    asked = [(e["step"], e["pid"], e["verified"]) for e in logs if e["event"] == "daemon_termination_started"]
    assert (asked, answer) == ([("restart_daemon", child.pid, False), ("kill_daemon", child.pid, False)], b"none\n")
