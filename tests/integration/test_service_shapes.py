"""`lmsupervisor service install`, `status` and `uninstall` as they run on Windows and on
macOS, on this Linux machine: the real CLI in a Windows- or macOS-shaped interpreter
(``tests/shapes``, ``$LMSUPERVISOR_PLATFORM``), with fake ``schtasks`` and ``launchctl`` first
on PATH (:mod:`tests.fake_service_tool`). The fakes record every command line and refuse
what the real tools refuse: a command line off their documented syntax, a task file
outside Task Scheduler's schema rules, a plist launchd or lmsupervisor would not run. So
each test shows the command lines the CLI runs, in order, and that each one was accepted.

Not exercised here (a real Windows or Mac only): Task Scheduler and launchd themselves
(the logon trigger, restarts after a crash, ``launchctl bootout`` waiting for the job).
"""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_service_tool import Tools
from tests.service_units import plist_problems, task_xml_problems

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "tests" / "shapes"
NOT_READY, NOT_RUNNING = 1, 3  # `service status` exit codes: a unit active but no supervisor answering; none active


class ShapedCli:
    """`python -m lmsupervisor` in a ``shape`` interpreter whose user home is ``home``."""

    def __init__(self, shape: str, tmp_path: Path) -> None:
        self.shape = shape
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.tools = Tools(tmp_path / "bin")
        self.refused = tmp_path / "refused.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "LMSUPERVISOR_", "FAKE_"))}
        env.update(
            PATH=f"{self.tools.folder}{os.pathsep}/usr/bin{os.pathsep}/bin",
            HOME=str(self.home),
            PYTHONPATH=os.pathsep.join([str(SHAPES), str(REPO)]),
            LMSUPERVISOR_PLATFORM=shape,
        )
        if shape == "windows":
            env.update(
                USERPROFILE=str(self.home),
                LOCALAPPDATA=str(self.home / "AppData" / "Local"),
                LOGNAME="alice",
                USERDOMAIN="PC",
            )
        else:
            env.update(LMSUPERVISOR_TEST_SHAPE_HOME=str(self.home), FAKE_LAUNCHCTL_UID=str(os.getuid()))
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "LMSUPERVISOR_TEST_SHAPE": self.shape, "LMSUPERVISOR_TEST_SHAPE_LOG": str(self.refused)}
        return subprocess.run(
            [sys.executable, "-m", "lmsupervisor", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def refusals(self) -> list[str]:
        return self.refused.read_text().splitlines() if self.refused.exists() else []


def test_windows_service_install_status_uninstall(tmp_path: Path) -> None:
    """Windows: install registers the task from a UTF-16 file and runs it; a second install
    only asks; a new config ends, re-registers and runs it; status reads Task Scheduler's
    answer; uninstall ends and deletes it and its file. Every command line is schtasks'
    documented syntax, and no Unix-only call was made."""
    cli = ShapedCli("windows", tmp_path)
    xml = f"{cli.home}\\AppData\\Local\\lmsupervisor\\lmsupervisor.xml"  # ntpath under a Linux home
    query = ["schtasks", "/Query", "/TN", "lmsupervisor", "/V", "/FO", "LIST"]
    create = ["schtasks", "/Create", "/TN", "lmsupervisor", "/XML", xml, "/F"]
    run, end = ["schtasks", "/Run", "/TN", "lmsupervisor"], ["schtasks", "/End", "/TN", "lmsupervisor"]

    done = cli("service", "install")
    assert done.returncode == 0, done
    assert cli.tools.calls == [query, create, run]
    assert task_xml_problems(Path(xml).read_bytes()) == []
    assert "<UserId>PC\\alice</UserId>" in Path(xml).read_bytes().decode("utf-16")
    assert "lmsupervisor service install --user: schtasks lmsupervisor" in done.stdout

    cli.tools.reset_calls()
    again = cli("service", "install")
    assert (again.returncode, cli.tools.calls) == (0, [query]), again
    assert "already installed and running: lmsupervisor; nothing changed" in again.stdout

    cli.tools.reset_calls()
    config = tmp_path / "other.toml"
    config.write_text("", encoding="utf-8")
    changed = cli("service", "install", "--config", str(config))
    assert (changed.returncode, cli.tools.calls) == (0, [query, end, create, run]), changed
    assert f"--config {config}" in Path(xml).read_bytes().decode("utf-16")

    status = cli("service", "status", "--json")
    assert status.returncode == NOT_READY, status  # Running, but no supervisor answers here
    (unit,) = json.loads(status.stdout)["services"]
    assert (unit["manager"], unit["unit"], unit["loaded"], unit["active"], unit["state"]) == (
        "schtasks",
        "lmsupervisor",
        True,
        True,
        "Running",
    )

    cli.tools.reset_calls()
    gone = cli("service", "uninstall")
    assert gone.returncode == 0, gone
    assert cli.tools.calls == [query, end, ["schtasks", "/Delete", "/TN", "lmsupervisor", "/F"]]
    assert not Path(xml).exists()
    assert cli("service", "status").returncode == NOT_RUNNING
    assert cli.refusals() == []


def test_darwin_service_install_status_uninstall(tmp_path: Path) -> None:
    """macOS: install writes the agent and bootstraps it into gui/<uid>; a second install only
    asks; a new config boots it out and in again; status reads `launchctl print`; uninstall
    boots it out and removes the plist. Every command line is launchctl(1) syntax, and the
    plist passed launchd.plist(5)'s rules when it was bootstrapped."""
    cli = ShapedCli("darwin", tmp_path)
    service = f"gui/{os.getuid()}/org.lmsupervisor.agent"
    plist = cli.home / "Library" / "LaunchAgents" / "org.lmsupervisor.agent.plist"
    query, bootout = ["launchctl", "print", service], ["launchctl", "bootout", service]
    load = [["launchctl", "enable", service], ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(plist)]]

    done = cli("service", "install")
    assert done.returncode == 0, done
    assert cli.tools.calls == [query, *load]
    assert plist_problems(plist.read_bytes(), "org.lmsupervisor.agent") == []
    job = plistlib.loads(plist.read_bytes())
    assert job["StandardErrorPath"] == str(cli.home / "Library/Logs/lmsupervisor/lmsupervisor.log")
    assert (cli.home / "Library/Logs/lmsupervisor").is_dir()

    cli.tools.reset_calls()
    again = cli("service", "install")
    assert (again.returncode, cli.tools.calls) == (0, [query]), again

    cli.tools.reset_calls()
    config = tmp_path / "other.toml"
    config.write_text("", encoding="utf-8")
    changed = cli("service", "install", "--config", str(config))
    assert (changed.returncode, cli.tools.calls) == (0, [query, bootout, *load]), changed
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][-2:] == ["--config", str(config)]

    status = cli("service", "status")
    assert status.returncode == NOT_READY, status
    assert f"launchd {service}: running, enabled, PID 4242" in status.stdout

    cli.tools.reset_calls()
    gone = cli("service", "uninstall")
    assert gone.returncode == 0, gone
    assert cli.tools.calls == [query, bootout]
    assert not plist.exists()
    assert cli("service", "status").returncode == NOT_RUNNING
    assert cli.refusals() == []


def test_a_refused_unit_fails_the_install(tmp_path: Path) -> None:
    """What the tool refuses stops `service install` with exit 1 and the tool's own message:
    here a plist launchd would load into another user's domain."""
    cli = ShapedCli("darwin", tmp_path)
    cli.env["FAKE_LAUNCHCTL_UID"] = str(os.getuid() + 1)
    done = cli("service", "install")
    assert done.returncode == 1, done
    assert "Bootstrap failed: 125: Domain does not support specified action" in done.stderr


def test_notify_sends_on_a_mac_shaped_interpreter(tmp_path: Path) -> None:
    """sd_notify's datagram goes out where socket.SOCK_CLOEXEC does not exist (macOS)."""
    program = (
        "import os, socket, sys\n"
        "from lmsupervisor.service.notify import Notifier\n"
        "listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "listener.bind(sys.argv[1])\n"
        "print(hasattr(socket, 'SOCK_CLOEXEC'), Notifier(sys.argv[1]).send('READY=1'), listener.recv(64).decode())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHAPES), str(REPO)]), "LMSUPERVISOR_TEST_SHAPE": "darwin"}
    env["LMSUPERVISOR_PLATFORM"] = "darwin"
    short = Path(f"/tmp/lmsvn-{os.getpid()}-{tmp_path.name[-8:]}.sock")  # AF_UNIX paths are short
    try:
        done = subprocess.run(
            [sys.executable, "-c", program, str(short)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        short.unlink(missing_ok=True)
    assert done.stdout.split() == ["False", "True", "READY=1"], done
