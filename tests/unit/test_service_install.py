"""Installing and removing units with fake launchctl, schtasks and systemctl on PATH that
record their calls and refuse what the real tools refuse (:mod:`tests.fake_service_tool`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lmsupervisor.errors import ServiceError
from lmsupervisor.service.install import (
    Installer,
    Result,
    host_path,
    parse_launchctl_print,
    parse_schtasks_list,
    query,
    run_command,
)
from lmsupervisor.service.render import Target, render
from tests.fake_service_tool import Tools


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    fake = Tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.folder}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_ROOT", str(tmp_path / "root"))  # where the installers below write
    return fake


@pytest.fixture
def installer(tmp_path: Path) -> Callable[[], tuple[Installer, list[str]]]:
    def make() -> tuple[Installer, list[str]]:
        out: list[str] = []
        return Installer(runner=run_command, root=tmp_path / "root", out=out.append), out

    return make


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


DARWIN = Target("darwin", "user", ("/Users/alice/.local/bin/lmsupervisor",), "alice", "/Users/alice", uid=501)
WINDOWS = Target("windows", "user", ("C:\\Users\\alice\\Scripts\\lmsupervisorw.exe",), "PC\\alice", "C:\\Users\\alice")
PLIST = "/Users/alice/Library/LaunchAgents/org.lmsupervisor.agent.plist"
TASK_XML = "C:\\Users\\alice\\AppData\\Local\\lmsupervisor\\lmsupervisor.xml"


def test_launchd_install_is_idempotent_and_uninstall_removes_it(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]], tmp_path: Path
) -> None:
    """launchctl: enable + bootstrap gui/UID once; a second install runs only `print`; uninstall boots it out."""
    inst, out = installer()
    plan = render(DARWIN)
    assert inst.install(plan) is True
    assert tools.calls == [
        ["launchctl", "print", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "enable", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "bootstrap", "gui/501", PLIST],
    ]
    assert files_under(tmp_path / "root") == ["Users/alice/Library/LaunchAgents/org.lmsupervisor.agent.plist"]
    assert (tmp_path / "root/Users/alice/Library/Logs/lmsupervisor").is_dir()
    assert f"wrote      {PLIST}" in out and f"run        launchctl bootstrap gui/501 {PLIST}" in out

    tools.reset_calls()
    inst2, out2 = installer()
    assert inst2.install(plan) is False
    assert tools.calls == [["launchctl", "print", "gui/501/org.lmsupervisor.agent"]]
    assert out2[-1] == "already installed and running: gui/501/org.lmsupervisor.agent; nothing changed"

    tools.reset_calls()
    assert inst.uninstall(plan) is True
    assert tools.calls == [
        ["launchctl", "print", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "bootout", "gui/501/org.lmsupervisor.agent"],
    ]
    assert files_under(tmp_path / "root") == []
    tools.reset_calls()
    assert inst.uninstall(plan) is False  # nothing left to remove
    assert tools.calls == [["launchctl", "print", "gui/501/org.lmsupervisor.agent"]]


def test_launchd_changed_plist_is_reloaded(tools: Tools, installer: Callable[[], tuple[Installer, list[str]]]) -> None:
    """A new config path changes the plist: bootout, enable, bootstrap (bootstrap alone would fail on a loaded job)."""
    inst, _ = installer()
    inst.install(render(DARWIN))
    tools.reset_calls()
    changed = render(Target(**{**DARWIN.__dict__, "config": "/Users/alice/other.toml"}))
    assert inst.install(changed) is True
    assert tools.calls == [
        ["launchctl", "print", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "bootout", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "enable", "gui/501/org.lmsupervisor.agent"],
        ["launchctl", "bootstrap", "gui/501", PLIST],
    ]


def test_windows_install_is_idempotent_and_uninstall_removes_it(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]], tmp_path: Path
) -> None:
    """schtasks: /Create /XML + /Run once, the XML in UTF-16 with a BOM; uninstall ends and deletes the task."""
    inst, _ = installer()
    plan = render(WINDOWS)
    assert inst.install(plan) is True
    assert tools.calls == [
        ["schtasks", "/Query", "/TN", "lmsupervisor", "/V", "/FO", "LIST"],
        ["schtasks", "/Create", "/TN", "lmsupervisor", "/XML", TASK_XML, "/F"],
        ["schtasks", "/Run", "/TN", "lmsupervisor"],
    ]
    xml = host_path(tmp_path / "root", TASK_XML)
    assert xml == tmp_path / "root/C/Users/alice/AppData/Local/lmsupervisor/lmsupervisor.xml"
    assert xml.read_bytes()[:2] == b"\xff\xfe"  # UTF-16 LE BOM
    assert "\r\n" in xml.read_bytes().decode("utf-16")

    tools.reset_calls()
    assert inst.install(plan) is False
    assert tools.calls == [["schtasks", "/Query", "/TN", "lmsupervisor", "/V", "/FO", "LIST"]]

    tools.reset_calls()
    assert inst.uninstall(plan) is True
    assert tools.calls == [
        ["schtasks", "/Query", "/TN", "lmsupervisor", "/V", "/FO", "LIST"],
        ["schtasks", "/End", "/TN", "lmsupervisor"],
        ["schtasks", "/Delete", "/TN", "lmsupervisor", "/F"],
    ]
    assert files_under(tmp_path / "root") == []
    assert not xml.parent.exists()  # our own folder goes too


def test_windows_end_of_a_stopped_task_is_not_an_error(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]]
) -> None:
    """/End fails when the task does not run; uninstall goes on and deletes it."""
    inst, _ = installer()
    plan = render(WINDOWS)
    inst.install(plan)
    subprocess.run([str(tools.folder / "schtasks"), "/End", "/TN", "lmsupervisor"], check=True)
    inst.uninstall(plan)
    assert tools.calls[-1] == ["schtasks", "/Delete", "/TN", "lmsupervisor", "/F"]


def test_a_failing_command_raises_with_its_message(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that exits non-zero stops the install with its exit code and stderr."""
    monkeypatch.setenv("FAKE_FAIL", f"launchctl bootstrap gui/501 {PLIST}")
    inst, _ = installer()
    with pytest.raises(ServiceError, match="exited 5: Bootstrap failed: 5: Input/output error"):
        inst.install(render(DARWIN))


def test_dry_run_changes_nothing(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]], tmp_path: Path
) -> None:
    """--dry-run prints the file and the commands, writes nothing and runs only the read-only query."""
    inst, out = installer()
    inst.install(render(WINDOWS), dry_run=True)
    assert files_under(tmp_path / "root") == []
    assert tools.calls == [["schtasks", "/Query", "/TN", "lmsupervisor", "/V", "/FO", "LIST"]]
    assert f"would write {TASK_XML}:" in out
    assert f"would run  schtasks /Create /TN lmsupervisor /XML '{TASK_XML}' /F" in out


def test_systemd_system_uninstall_keeps_a_template_others_use(
    tools: Tools, installer: Callable[[], tuple[Installer, list[str]]], tmp_path: Path
) -> None:
    """Two users' --system instances share lmsupervisor@.service: removing one keeps it, removing both removes it."""
    inst, _ = installer()
    plans = [render(Target("linux", "system", ("/opt/l/bin/lmsupervisor",), u, f"/home/{u}")) for u in ("a", "b")]
    for plan in plans:
        inst.install(plan)
    assert ["systemctl", "enable", "--now", "lmsupervisor@b.service"] in tools.calls
    etc = tmp_path / "root/etc/systemd/system"
    inst.uninstall(plans[0])
    assert files_under(etc) == ["lmsupervisor@.service", "lmsupervisor@b.service.d/lmsupervisor.conf"]
    inst.uninstall(plans[1])
    assert files_under(etc) == []
    assert tools.calls[-2:] == [
        ["systemctl", "disable", "--now", "lmsupervisor@b.service"],
        ["systemctl", "daemon-reload"],
    ]


def test_systemd_user_install_commands(tools: Tools, installer: Callable[[], tuple[Installer, list[str]]]) -> None:
    """--user: daemon-reload then enable --now; the second install changes nothing."""
    inst, _ = installer()
    plan = render(Target("linux", "user", ("/home/a/.venv/bin/lmsupervisor",), "a", "/home/a"))
    inst.install(plan)
    assert [c for c in tools.calls if c[0] == "systemctl" and c[2] != "show"] == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "lmsupervisor.service"],
    ]
    tools.reset_calls()
    assert inst.install(plan) is False
    assert [c[2] for c in tools.calls if c[0] == "systemctl"] == ["show"]


def test_parsers() -> None:
    """launchctl print's top-level keys (nested blocks skipped) and schtasks' LIST lines."""
    text = "gui/501/x = {\n\tstate = running\n\tpid = 7\n\tendpoints = {\n\t\tstate = inner\n\t}\n\truns = 2\n}"
    assert parse_launchctl_print(text) == {"state": "running", "pid": "7", "runs": "2"}
    assert parse_schtasks_list("Status:   Ready\nLast Result:  267011\n")["Last Result"] == "267011"


def test_query_reads_the_managers_answer(tools: Tools, tmp_path: Path) -> None:
    """State of an agent: loaded, running, its PID, restarts (runs - 1) and last exit code."""
    plan = render(DARWIN)
    Installer(root=tmp_path / "root", out=lambda _: None).install(plan)
    st = query(plan, run_command, tmp_path / "root")
    assert (st.installed, st.loaded, st.active, st.main_pid, st.restarts, st.last_exit) == (
        True,
        True,
        True,
        4242,
        2,
        "0",
    )


def test_missing_tool_is_exit_127() -> None:
    """A manager that is not installed answers 127 with the reason, it does not raise."""
    res = run_command(("lmsupervisor-no-such-tool",))
    assert (res.returncode, "not found" in res.stderr) == (127, True)
    assert isinstance(res, Result)


def test_cli_dry_run_prints_the_unit_and_the_linger_fix(tools: Tools, capsys: pytest.CaptureFixture[str]) -> None:
    """`service install --user --dry-run`: the unit with this installation's path, the commands, and how to linger."""
    from lmsupervisor.cli import main
    from lmsupervisor.service.install import find_program

    assert main(["service", "install", "--user", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"    ExecStart={find_program()[0]} run" in out
    assert "would run  systemctl --user enable --now lmsupervisor.service" in out
    assert "note: lingering is off: the unit starts at your first login, not at boot" in out
    assert "`loginctl enable-linger " in out
    assert [c for c in tools.calls if c[1:2] == ["--user"] and c[2] != "show"] == []  # nothing was changed


def test_cli_system_needs_root_unless_dry_run(
    tools: Tools, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--system without root exits 1 and says to use sudo; nothing is written."""
    from lmsupervisor.cli import main

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["service", "install", "--system"]) == 1
    assert "run it with sudo" in capsys.readouterr().err
