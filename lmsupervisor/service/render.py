"""Render the service files and commands for a platform: a pure function (style.md habit 2).

:func:`render` takes a :class:`Target` (platform, scope, the command that starts this
installation, config path, user) and returns a :class:`Plan`: the files to write, with
their content, and the commands that load, restart, unload and query the unit. It reads
only the templates shipped in ``units/`` (package data; the top-level ``service-units/``);
the installer (:mod:`lmsupervisor.service.install`) performs the plan. Every platform
renders on every platform, so the tests check launchd and Windows output from Linux.

Names (design §8): systemd ``lmsupervisor.service`` (user) and ``lmsupervisor@USER.service``
(system template); launchd ``org.lmsupervisor.agent`` (agent) and
``org.lmsupervisor.daemon.USER`` (LaunchDaemon); Windows task ``lmsupervisor`` (at logon)
and ``lmsupervisor-boot`` (at boot, S4U). Required content: service-facts.md.
"""

from __future__ import annotations

import functools
import ntpath
import posixpath
import re
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from xml.sax.saxutils import escape

from lmsupervisor.paths import SYSTEM_RUNTIME

PLATFORMS = ("linux", "darwin", "windows")
SCOPES = ("user", "system")

SYSTEMD_UNIT = "lmsupervisor.service"
SYSTEMD_TEMPLATE = "lmsupervisor@.service"
LAUNCHD_LABEL = "org.lmsupervisor.agent"
LAUNCHD_DAEMON_LABEL = "org.lmsupervisor.daemon"
TASK_NAME = "lmsupervisor"
BOOT_TASK_NAME = "lmsupervisor-boot"

RESTART_SEC = 2  # systemd: seconds between our exit and the restart
WATCHDOG_SEC = 10  # systemd: WATCHDOG=1 comes every 5 s from the event loop
TIMEOUT_START_SEC = 90  # systemd: until READY=1; extended while the loop lives (EXTEND_TIMEOUT_USEC)
TIMEOUT_STOP_SEC = 30  # systemd: the staged shutdown takes at most 3 x 5 s
THROTTLE_INTERVAL = 5  # launchd: seconds between respawns (its default is 10)
TASK_RESTART_INTERVAL = "PT1M"  # Task Scheduler: the minimum it accepts
TASK_RESTART_COUNT = 999  # Task Scheduler: the maximum it accepts
LAUNCHD_PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin"

Command = tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """What to render for.

    ``platform``: ``linux``, ``darwin`` or ``windows``; ``scope``: ``user`` (starts at
    login; on Linux at boot with lingering) or ``system`` (starts at boot as ``user``).
    ``program``: the absolute argv that starts this installation (its console script, or
    ``python -m lmsupervisor``), never a bare ``lmsupervisor``. ``config``: absolute path
    passed as ``--config``, None for the default. ``user``: login name (Windows:
    ``DOMAIN\\name``); ``home``: that user's home; ``uid``: numeric id (launchd's
    ``gui/UID`` domain); ``group``: primary group (LaunchDaemon ``GroupName``).
    ``path``: PATH for launchd jobs (launchd's own is ``/usr/bin:/bin:/usr/sbin:/sbin``).
    """

    platform: str
    scope: str
    program: tuple[str, ...]
    user: str
    home: str
    uid: int | None = None
    group: str | None = None
    config: str | None = None
    path: str = LAUNCHD_PATH

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform: expected one of {', '.join(PLATFORMS)}, got {self.platform!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope: expected one of {', '.join(SCOPES)}, got {self.scope!r}")
        if not self.program:
            raise ValueError("program: expected the absolute command that starts lmsupervisor, got nothing")


@dataclass(frozen=True)
class UnitFile:
    """A file the installer writes: ``content`` at ``path`` with ``mode``.

    ``encoding`` is ``utf-8``, or ``utf-16`` for Task Scheduler XML (written with a BOM).
    ``shared``: other installs may use it too (the systemd template), so uninstall removes
    it only when no other instance is left.
    """

    path: str
    content: str
    mode: int = 0o644
    encoding: str = "utf-8"
    shared: bool = False


@dataclass(frozen=True)
class Plan:
    """What installing means for one target; commands are argv tuples.

    ``manager``: ``systemd``, ``launchd`` or ``schtasks``. ``unit``: the name the manager
    knows (unit, ``gui/UID/LABEL`` service target, task name). ``dirs``: folders to create
    before the files (launchd's log folder); never removed. ``reload``: after the files
    changed (``daemon-reload``). ``start``: first start, enabled at boot or login.
    ``restart``: apply changed files to a loaded unit. ``stop``: stop and unload before the
    files are removed. ``query``: ask the manager for the unit's state. ``linger``: on Linux
    user units, the command whose ``Linger=yes`` means the unit starts before login.
    ``before_login``: starts before anyone logs in (None: only with lingering).
    ``may_fail``: commands whose failure is expected and harmless (ending a task that is
    not running).
    """

    manager: str
    unit: str
    files: tuple[UnitFile, ...]
    start: tuple[Command, ...]
    restart: tuple[Command, ...]
    stop: tuple[Command, ...]
    query: Command
    reload: tuple[Command, ...] = ()
    dirs: tuple[str, ...] = ()
    linger: Command | None = None
    before_login: bool | None = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    may_fail: frozenset[Command] = frozenset()


# -- templates ----------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@functools.cache
def template(name: str) -> str:
    """The text of ``units/<name>`` (package data). Raises FileNotFoundError for an unknown name."""
    return resources.files("lmsupervisor.service").joinpath("units", name).read_text(encoding="utf-8")


def fill(text: str, values: dict[str, str]) -> str:
    """Replace every ``{{name}}``; raises KeyError for a placeholder without a value, and
    ValueError for a value that is never used (a template and its renderer disagree)."""
    used: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        used.add(m.group(1))
        return values[m.group(1)]

    out = _PLACEHOLDER.sub(sub, text)
    if unused := set(values) - used:
        raise ValueError(f"template values never used: {', '.join(sorted(unused))}")
    return out


# -- quoting ------------------------------------------------------------------------------
def systemd_quote(arg: str) -> str:
    """One ExecStart= word: ``%`` and ``$`` escaped (specifiers, variables), double-quoted
    when it holds blanks, quotes or backslashes (systemd.syntax(7))."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r'[\s"\'\\;]', arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_env(name: str, value: str) -> str:
    """An ``Environment=`` line, quoted as a whole assignment (``%`` escaped)."""
    value = value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{name}={value}"'


def _run_args(target: Target) -> list[str]:
    return [*target.program, "run", *(["--config", target.config] if target.config else [])]


# -- systemd ------------------------------------------------------------------------------
def _systemd_values(target: Target, with_config: bool) -> dict[str, str]:
    args = [*target.program, "run", *(["--config", target.config] if with_config and target.config else [])]
    return {
        "exec_start": " ".join(systemd_quote(a) for a in args),
        "restart_sec": str(RESTART_SEC),
        "watchdog_sec": str(WATCHDOG_SEC),
        "timeout_start_sec": str(TIMEOUT_START_SEC),
        "timeout_stop_sec": str(TIMEOUT_STOP_SEC),
    }


def _systemd(target: Target) -> Plan:
    if target.scope == "user":
        path = posixpath.join(target.home, ".config", "systemd", "user", SYSTEMD_UNIT)
        content = fill(template(SYSTEMD_UNIT), _systemd_values(target, with_config=True))
        sc: tuple[str, ...] = ("systemctl", "--user")
        return Plan(
            manager="systemd",
            unit=SYSTEMD_UNIT,
            files=(UnitFile(path, content),),
            reload=((*sc, "daemon-reload"),),
            start=((*sc, "enable", "--now", SYSTEMD_UNIT),),
            restart=((*sc, "enable", SYSTEMD_UNIT), (*sc, "restart", SYSTEMD_UNIT)),
            stop=((*sc, "disable", "--now", SYSTEMD_UNIT),),
            query=(*sc, "show", SYSTEMD_UNIT, f"--property={','.join(SYSTEMD_PROPERTIES)}"),
            linger=("loginctl", "show-user", target.user, "--property=Linger"),
            before_login=None,
            notes=(
                "a user unit starts at boot only with lingering: "
                f"`loginctl enable-linger {target.user}` (else at your first login)",
            ),
        )
    unit = f"lmsupervisor@{target.user}.service"
    folder = "/etc/systemd/system"
    values = _systemd_values(target, with_config=False)
    env = [systemd_env("HOME", target.home)]
    if target.config:
        env.append(systemd_env("LMSUPERVISOR_CONFIG", target.config))
    dropin = fill(
        template("lmsupervisor-instance.conf"),
        {"unit": unit, "environment": "\n".join(env)},
    )
    sc = ("systemctl",)
    return Plan(
        manager="systemd",
        unit=unit,
        files=(
            UnitFile(posixpath.join(folder, SYSTEMD_TEMPLATE), fill(template(SYSTEMD_TEMPLATE), values), shared=True),
            UnitFile(posixpath.join(folder, f"{unit}.d", "lmsupervisor.conf"), dropin),
        ),
        reload=((*sc, "daemon-reload"),),
        start=((*sc, "enable", "--now", unit),),
        restart=((*sc, "enable", unit), (*sc, "restart", unit)),
        stop=((*sc, "disable", "--now", unit),),
        query=(*sc, "show", unit, f"--property={','.join(SYSTEMD_PROPERTIES)}"),
        before_login=True,
        notes=(
            f"the status socket is {posixpath.join(SYSTEM_RUNTIME, target.user, 'status.sock')}; {target.user}'s "
            "`lmsupervisor status` finds it when no per-user supervisor runs (others pass --socket)",
        ),
    )


SYSTEMD_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "NRestarts",
    "ExecMainStatus",
    "ExecMainCode",
    "Result",
    "StatusText",
    "FragmentPath",
)


# -- launchd ------------------------------------------------------------------------------
def _plist_string(value: str, indent: str) -> str:
    return f"{indent}<string>{escape(value)}</string>"


def _launchd(target: Target) -> Plan:
    log_dir = posixpath.join(target.home, "Library", "Logs", "lmsupervisor")
    if target.scope == "user":
        label = LAUNCHD_LABEL
        path = posixpath.join(target.home, "Library", "LaunchAgents", f"{label}.plist")
        domain = f"gui/{target.uid}"
        user_keys = ""
    else:
        label = f"{LAUNCHD_DAEMON_LABEL}.{target.user}"
        path = posixpath.join("/Library/LaunchDaemons", f"{label}.plist")
        domain = "system"
        user_keys = (
            f"\t<key>UserName</key>\n{_plist_string(target.user, chr(9))}\n"
            f"\t<key>GroupName</key>\n{_plist_string(target.group or 'staff', chr(9))}\n"
        )
    content = fill(
        template("org.lmsupervisor.agent.plist"),
        {
            "label": escape(label),
            "program_arguments": "\n".join(_plist_string(a, "\t\t") for a in _run_args(target)),
            "user_keys": user_keys,
            "home": escape(target.home),
            "path": escape(target.path),
            "throttle_interval": str(THROTTLE_INTERVAL),
            "log_path": escape(posixpath.join(log_dir, "lmsupervisor.log")),
        },
    )
    service = f"{domain}/{label}"
    return Plan(
        manager="launchd",
        unit=service,
        files=(UnitFile(path, content),),
        dirs=(log_dir,),
        # enable first: bootstrap of a service someone disabled fails ("Service is disabled")
        start=(("launchctl", "enable", service), ("launchctl", "bootstrap", domain, path)),
        restart=(
            ("launchctl", "bootout", service),
            ("launchctl", "enable", service),
            ("launchctl", "bootstrap", domain, path),
        ),
        stop=(("launchctl", "bootout", service),),
        query=("launchctl", "print", service),
        before_login=target.scope == "system",
        notes=() if target.scope == "user" else ("a LaunchDaemon has no GUI session; installing it needs root (sudo)",),
    )


# -- Windows Task Scheduler ---------------------------------------------------------------
def _windows(target: Target) -> Plan:
    name = TASK_NAME if target.scope == "user" else BOOT_TASK_NAME
    if target.scope == "user":
        trigger = (
            "    <LogonTrigger>\n      <Enabled>true</Enabled>\n"
            f"      <UserId>{escape(target.user)}</UserId>\n    </LogonTrigger>"
        )
        logon_type = "InteractiveToken"
    else:
        trigger = "    <BootTrigger>\n      <Enabled>true</Enabled>\n    </BootTrigger>"
        logon_type = "S4U"
    args = _run_args(target)
    content = fill(
        template("lmsupervisor.task.xml"),
        {
            "task_name": escape(name),
            "trigger": trigger,
            "user_id": escape(target.user),
            "logon_type": logon_type,
            "restart_interval": TASK_RESTART_INTERVAL,
            "restart_count": str(TASK_RESTART_COUNT),
            "command": escape(args[0]),
            "arguments": escape(subprocess.list2cmdline(args[1:])),
            "home": escape(target.home),
        },
    )
    path = ntpath.join(target.home, "AppData", "Local", "lmsupervisor", f"{name}.xml")
    return Plan(
        manager="schtasks",
        unit=name,
        files=(UnitFile(path, content, encoding="utf-16"),),
        start=(("schtasks", "/Create", "/TN", name, "/XML", path, "/F"), ("schtasks", "/Run", "/TN", name)),
        restart=(
            ("schtasks", "/End", "/TN", name),
            ("schtasks", "/Create", "/TN", name, "/XML", path, "/F"),
            ("schtasks", "/Run", "/TN", name),
        ),
        stop=(("schtasks", "/End", "/TN", name), ("schtasks", "/Delete", "/TN", name, "/F")),
        query=("schtasks", "/Query", "/TN", name, "/V", "/FO", "LIST"),
        before_login=target.scope == "system",
        may_fail=frozenset({("schtasks", "/End", "/TN", name)}),
        notes=()
        if target.scope == "user"
        else ("a boot task (S4U) runs without a session or network credentials; it needs an elevated prompt",),
    )


def render(target: Target) -> Plan:
    """The plan for ``target``; pure (reads only the packaged templates)."""
    return {"linux": _systemd, "darwin": _launchd, "windows": _windows}[target.platform](target)
