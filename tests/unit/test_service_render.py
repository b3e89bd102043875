"""Rendering units for every platform from Linux: systemd-analyze, plistlib and an XML parser check them."""

from __future__ import annotations

import os
import plistlib
import pwd
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lmsupervisor.service.install import find_program
from lmsupervisor.service.render import (
    SCOPES,
    Target,
    fill,
    render,
    systemd_env,
    systemd_quote,
    template,
)

TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def target(platform: str, scope: str = "user", **kw: object) -> Target:
    homes = {"linux": "/home/alice", "darwin": "/Users/alice", "windows": "C:\\Users\\alice"}
    programs = {
        "linux": ("/home/alice/.local/pipx/venvs/lmsupervisor/bin/lmsupervisor",),
        "darwin": ("/Users/alice/.local/bin/lmsupervisor",),
        "windows": ("C:\\Users\\alice\\pipx\\venvs\\lmsupervisor\\Scripts\\lmsupervisorw.exe",),
    }
    values: dict[str, object] = {
        "platform": platform,
        "scope": scope,
        "program": programs[platform],
        "user": "PC\\alice" if platform == "windows" else "alice",
        "home": homes[platform],
        "uid": 501,
        "group": "staff",
        **kw,
    }
    return Target(**values)  # type: ignore[arg-type]


def systemd_lines(content: str) -> list[str]:
    return [line for line in content.splitlines() if line and not line.startswith("#")]


def test_user_unit_has_the_required_settings() -> None:
    """The user unit: notify, main-only access, restart forever, watchdog, KillMode=process, default.target."""
    plan = render(target("linux", config="/home/alice/my config.toml"))
    (unit,) = plan.files
    assert unit.path == "/home/alice/.config/systemd/user/lmsupervisor.service"
    lines = systemd_lines(unit.content)
    for required in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=always",
        "RestartSec=2",
        "WatchdogSec=10",
        "TimeoutStartSec=90",
        "KillMode=process",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StartLimitIntervalSec=0",
        "WantedBy=default.target",
        "ExecStart=/home/alice/.local/pipx/venvs/lmsupervisor/bin/lmsupervisor run"
        ' --config "/home/alice/my config.toml"',
    ):
        assert required in lines
    assert not any(k in unit.content for k in ("ProtectSystem=", "PrivateTmp=", "ProtectHome=", "RestartSteps"))
    assert plan.start == (("systemctl", "--user", "enable", "--now", "lmsupervisor.service"),)
    assert plan.reload == (("systemctl", "--user", "daemon-reload"),)
    assert plan.linger == ("loginctl", "show-user", "alice", "--property=Linger")


def test_system_unit_is_a_template_with_a_per_user_dropin() -> None:
    """--system: lmsupervisor@.service with User=%i and multi-user.target, and a drop-in with HOME."""
    plan = render(target("linux", "system", config="/etc/lmsupervisor/alice.toml"))
    template_file, dropin = plan.files
    assert (template_file.path, template_file.shared) == ("/etc/systemd/system/lmsupervisor@.service", True)
    assert dropin.path == "/etc/systemd/system/lmsupervisor@alice.service.d/lmsupervisor.conf"
    lines = systemd_lines(template_file.content)
    for required in ("User=%i", "WantedBy=multi-user.target", "KillMode=process", "RuntimeDirectory=lmsupervisor/%i"):
        assert required in lines
    assert systemd_lines(dropin.content) == [
        "[Service]",
        'Environment="HOME=/home/alice"',
        'Environment="LMSUPERVISOR_CONFIG=/etc/lmsupervisor/alice.toml"',
    ]
    assert plan.start == (("systemctl", "enable", "--now", "lmsupervisor@alice.service"),)
    assert (plan.before_login, plan.linger) == (True, None)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("scope", SCOPES)
def test_systemd_analyze_verify(scope: str, tmp_path: Path) -> None:
    """The rendered units (user, and system with its drop-in) pass `systemd-analyze verify` without a warning."""
    me = pwd.getpwuid(os.getuid()).pw_name
    t = Target("linux", scope, find_program("linux"), me, str(tmp_path), config=str(tmp_path / "c.toml"))
    units = tmp_path / "units"
    for f in render(t).files:
        rel = Path(f.path).name if scope == "user" else Path(f.path).relative_to("/etc/systemd/system")
        (units / rel).parent.mkdir(parents=True, exist_ok=True)
        (units / rel).write_text(f.content)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    name = "lmsupervisor.service" if scope == "user" else f"lmsupervisor@{me}.service"
    argv = ["systemd-analyze", *(["--user"] if scope == "user" else []), "verify", str(units / name)]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert (done.returncode, done.stderr.strip()) == (0, ""), done.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check can fail: an unknown key is reported (so the test above means something)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    f = render(target("linux", program=find_program("linux"))).files[0]
    path = tmp_path / "lmsupervisor.service"
    path.write_text(f.content.replace("KillMode=process", "KillMode=process\nRestartSteps=5"))
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
        check=False,
    )
    assert "RestartSteps" in done.stderr


def test_launch_agent_plist() -> None:
    """The LaunchAgent parses with plistlib and carries RunAtLoad, KeepAlive, Standard, AbandonProcessGroup, logs."""
    plan = render(target("darwin", program=("/Users/alice/my & <env>/bin/lmsupervisor",), config="/Users/a/c.toml"))
    (f,) = plan.files
    assert f.path == "/Users/alice/Library/LaunchAgents/org.lmsupervisor.agent.plist"
    plist = plistlib.loads(f.content.encode())
    assert plist == {
        "Label": "org.lmsupervisor.agent",
        "ProgramArguments": ["/Users/alice/my & <env>/bin/lmsupervisor", "run", "--config", "/Users/a/c.toml"],
        "EnvironmentVariables": {"HOME": "/Users/alice", "PATH": plist["EnvironmentVariables"]["PATH"]},
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 5,
        "ProcessType": "Standard",
        "AbandonProcessGroup": True,
        "StandardOutPath": "/Users/alice/Library/Logs/lmsupervisor/lmsupervisor.log",
        "StandardErrorPath": "/Users/alice/Library/Logs/lmsupervisor/lmsupervisor.log",
    }
    assert plan.start == (
        ("launchctl", "enable", "gui/501/org.lmsupervisor.agent"),
        ("launchctl", "bootstrap", "gui/501", f.path),
    )
    assert plan.dirs == ("/Users/alice/Library/Logs/lmsupervisor",)


def test_launch_daemon_plist() -> None:
    """--system on macOS: a LaunchDaemon in /Library/LaunchDaemons with UserName and GroupName, in the system domain."""
    plan = render(target("darwin", "system"))
    (f,) = plan.files
    assert f.path == "/Library/LaunchDaemons/org.lmsupervisor.daemon.alice.plist"
    plist = plistlib.loads(f.content.encode())
    assert (plist["UserName"], plist["GroupName"], plist["Label"]) == (
        "alice",
        "staff",
        "org.lmsupervisor.daemon.alice",
    )
    assert plan.start[-1] == ("launchctl", "bootstrap", "system", f.path)
    assert plan.before_login is True


def parse_task(content: str) -> ET.Element:
    data = content.replace("\n", "\r\n").encode("utf-16")
    return ET.fromstring(data)  # noqa: S314 - our own rendering


def test_windows_logon_task() -> None:
    """The task XML parses, starts at logon, restarts on failure, has no time limit, quotes arguments."""
    plan = render(target("windows", config="C:\\Users\\alice\\my config.toml"))
    (f,) = plan.files
    assert (f.path, f.encoding) == ("C:\\Users\\alice\\AppData\\Local\\lmsupervisor\\lmsupervisor.xml", "utf-16")
    task = parse_task(f.content)
    assert task.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=TASK_NS) == "PC\\alice"
    assert task.findtext("t:Principals/t:Principal/t:LogonType", namespaces=TASK_NS) == "InteractiveToken"
    settings = task.find("t:Settings", TASK_NS)
    assert settings is not None
    assert settings.findtext("t:ExecutionTimeLimit", namespaces=TASK_NS) == "PT0S"
    assert settings.findtext("t:RestartOnFailure/t:Interval", namespaces=TASK_NS) == "PT1M"
    assert settings.findtext("t:RestartOnFailure/t:Count", namespaces=TASK_NS) == "999"
    assert settings.findtext("t:MultipleInstancesPolicy", namespaces=TASK_NS) == "IgnoreNew"
    assert settings.findtext("t:DisallowStartIfOnBatteries", namespaces=TASK_NS) == "false"
    exe = task.find("t:Actions/t:Exec", TASK_NS)
    assert exe is not None
    assert exe.findtext("t:Command", namespaces=TASK_NS) == target("windows").program[0]
    assert exe.findtext("t:Arguments", namespaces=TASK_NS) == 'run --config "C:\\Users\\alice\\my config.toml"'
    assert plan.start == (
        ("schtasks", "/Create", "/TN", "lmsupervisor", "/XML", f.path, "/F"),
        ("schtasks", "/Run", "/TN", "lmsupervisor"),
    )


def test_windows_boot_task() -> None:
    """--system on Windows: a BootTrigger and LogonType S4U, under its own task name."""
    plan = render(target("windows", "system"))
    task = parse_task(plan.files[0].content)
    assert task.find("t:Triggers/t:BootTrigger", TASK_NS) is not None
    assert task.find("t:Triggers/t:LogonTrigger", TASK_NS) is None
    assert task.findtext("t:Principals/t:Principal/t:LogonType", namespaces=TASK_NS) == "S4U"
    assert (plan.unit, plan.before_login) == ("lmsupervisor-boot", True)


def test_quoting() -> None:
    """ExecStart words escape % and $ and quote blanks; Environment= lines quote the assignment."""
    assert systemd_quote("/usr/bin/lmsupervisor") == "/usr/bin/lmsupervisor"
    assert systemd_quote("/a b/100%$x") == '"/a b/100%%$$x"'
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'
    assert systemd_env("HOME", "/home/a b%") == 'Environment="HOME=/home/a b%%"'


def test_fill_refuses_missing_and_unused_values() -> None:
    """A template and its renderer must agree: a missing or an unused value raises."""
    assert fill("a {{x}} b", {"x": "1"}) == "a 1 b"
    with pytest.raises(KeyError):
        fill("{{x}} {{y}}", {"x": "1"})
    with pytest.raises(ValueError, match="never used: z"):
        fill("{{x}}", {"x": "1", "z": "2"})


def test_target_validation() -> None:
    """An unknown platform, scope or an empty program is refused with the expected values."""
    with pytest.raises(ValueError, match="platform: expected one of linux, darwin, windows"):
        Target("beos", "user", ("/bin/x",), "a", "/home/a")
    with pytest.raises(ValueError, match="scope"):
        target("linux", "global")
    with pytest.raises(ValueError, match="program"):
        target("linux", program=())


def test_templates_are_package_data_and_the_top_level_folder() -> None:
    """The templates load through importlib.resources, and service-units/ at the top shows the same files."""
    top = Path(__file__).resolve().parents[2] / "service-units"
    names = sorted(p.name for p in top.iterdir())
    assert names == sorted(
        [
            "lmsupervisor-instance.conf",
            "lmsupervisor.service",
            "lmsupervisor.task.xml",
            "lmsupervisor@.service",
            "org.lmsupervisor.agent.plist",
        ]
    )
    for name in names:
        assert template(name) == (top / name).read_text()


def test_program_is_this_installation() -> None:
    """The command in the units is an absolute path of this installation, never a bare name."""
    program = find_program("linux")
    assert os.path.isabs(program[0])
    assert program[0] != "lmsupervisor"
    assert Path(program[0]).parent == Path(os.path.abspath(os.path.dirname(__import__("sys").executable))) or (
        program[1:] == ("-m", "lmsupervisor")
    )
