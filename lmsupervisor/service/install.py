"""Perform a :class:`~lmsupervisor.service.render.Plan`: write the files, run the
platform's own tool, and ask it for the unit's state.

Every file written and every command run is reported through ``out`` (the CLI prints
it). Installing twice changes nothing the second time and says so; uninstalling stops,
disables and removes exactly what installing created. Commands run through a
:class:`Runner` (tests put fake ``launchctl``/``schtasks`` on PATH, or pass a fake runner);
files are written under ``root`` (``/`` for real; a temporary folder in tests, like
``DESTDIR``), so a Windows or macOS plan can be performed on Linux in tests.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Protocol

from lmsupervisor.errors import ServiceError
from lmsupervisor.platform import current as this_os
from lmsupervisor.service.render import SYSTEMD_TEMPLATE, Command, Plan, Target, UnitFile, render

COMMAND_TIMEOUT = 120.0  # seconds: `systemctl enable --now` waits for READY=1


@dataclass(frozen=True)
class Result:
    """A finished command: exit code and its output."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    """How the installer runs a command: :func:`run_command` for real, a fake in tests (style.md habit 3)."""

    def __call__(self, argv: Command) -> Result:
        """Run ``argv`` (found on PATH) to completion. Raises nothing for a non-zero exit;
        a missing program is exit code 127 with the reason in ``stderr``."""


def run_command(argv: Command, env: Mapping[str, str] | None = None) -> Result:
    """The real :class:`Runner`: a subprocess with :data:`COMMAND_TIMEOUT`."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, env=env)
    except FileNotFoundError as exc:
        return Result(127, "", f"{argv[0]}: not found ({exc.strerror})")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]}: no answer within {COMMAND_TIMEOUT:g} s")
    return Result(done.returncode, done.stdout, done.stderr)


def show(argv: Command) -> str:
    """A command as a shell would read it."""
    return shlex.join(argv)


# -- the running installation ---------------------------------------------------------------
def current_platform() -> str:
    """This process's platform as the renderers name it: ``"windows"``, ``"darwin"`` or
    ``"linux"`` (:func:`lmsupervisor.platform.name`: ``$LMSUPERVISOR_PLATFORM`` or this machine's)."""
    return this_os().name


def find_program(platform: str | None = None) -> tuple[str, ...]:
    """The absolute command that starts *this* installation (a pipx or venv path), never a
    bare ``lmsupervisor``: the console script next to the running interpreter (on Windows
    the windowless ``lmsupervisorw.exe`` first), else ``sys.argv[0]`` when it is the console
    script, else ``python -m lmsupervisor`` with this interpreter."""
    platform = platform or current_platform()
    names = ["lmsupervisorw.exe", "lmsupervisor.exe"] if platform == "windows" else ["lmsupervisor"]
    folders = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for folder in folders:
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return (os.path.abspath(path),)
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) in names and os.path.isfile(argv0):
        return (argv0,)
    return (os.path.abspath(sys.executable), "-m", "lmsupervisor")


def current_target(
    scope: str,
    config: Path | None = None,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Target:
    """The :class:`Target` for this machine and user. For ``system`` run through sudo, the
    user is ``$SUDO_USER`` (the one whose LM Studio it supervises), not root. ``home``
    overrides the user's home from the password database (doctor passes its own)."""
    env = os.environ if env is None else env
    platform = platform or current_platform()
    user = getpass.getuser()
    user_home = str(Path.home())
    uid: int | None = this_os().uid()
    group: str | None = None
    if platform != "windows":
        if scope == "system" and env.get("SUDO_USER"):
            user = env["SUDO_USER"]
        entry = this_os().account(user)
        if entry is None:
            raise KeyError(f"getpwnam(): name not found: {user!r}")
        user_home, uid, group = entry.home, entry.uid, entry.group
    else:
        domain = env.get("USERDOMAIN")
        user = f"{domain}\\{user}" if domain else user
    return Target(
        platform=platform,
        scope=scope,
        program=find_program(platform),
        user=user,
        home=str(home) if home is not None else user_home,
        uid=uid,
        group=group,
        config=str(config.expanduser().absolute()) if config is not None else None,
        path=env.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin",
    )


def host_path(root: Path, path: str) -> Path:
    """Where a plan's ``path`` lives under ``root``: ``path`` itself for root ``/``, else
    ``root/<path without its anchor>`` (``C:\\Users\\a`` becomes ``root/C/Users/a``)."""
    if root == Path("/") and not PureWindowsPath(path).drive:
        return Path(path)
    pure = PureWindowsPath(path) if PureWindowsPath(path).drive else PurePosixPath(path)
    parts = [p.rstrip(":\\/") for p in pure.parts]
    return root.joinpath(*[p for p in parts if p])


# -- state ------------------------------------------------------------------------------------
@dataclass
class UnitState:
    """What the service manager says about our unit.

    ``installed``: our files exist. ``loaded``: the manager knows the unit (launchd: it is
    bootstrapped; Task Scheduler: the task exists). ``enabled``: starts at boot/login;
    ``active``: running now. ``before_login``: starts before anyone logs in (Linux user
    units: lingering; None when unknown; ``linger_fix`` the command that turns it on).
    ``fields``: the manager's raw answer (systemd
    properties, ``launchctl print`` or ``schtasks /Query`` keys).
    """

    manager: str
    unit: str
    installed: bool
    loaded: bool = False
    enabled: bool | None = None
    active: bool | None = None
    state: str = "unknown"
    main_pid: int | None = None
    restarts: int | None = None
    last_exit: str | None = None
    status_text: str | None = None
    before_login: bool | None = None
    linger: bool | None = None
    linger_fix: str | None = None
    error: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The ``service status --json`` dict for this unit: every field but ``fields`` and ``linger_fix``."""
        return {
            "manager": self.manager,
            "unit": self.unit,
            "installed": self.installed,
            "loaded": self.loaded,
            "enabled": self.enabled,
            "active": self.active,
            "state": self.state,
            "main_pid": self.main_pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "status_text": self.status_text,
            "before_login": self.before_login,
            "linger": self.linger,
            "error": self.error,
        }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_systemd_show(text: str) -> dict[str, str]:
    """``systemctl show -p ...`` output: ``Key=Value`` lines."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_launchctl_print(text: str) -> dict[str, str]:
    """The top-level ``key = value`` lines of ``launchctl print`` (nested blocks skipped)."""
    found: dict[str, str] = {}
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("{"):
            depth += 1
            continue
        if stripped == "}":
            depth -= 1
            continue
        if depth <= 1 and " = " in stripped:
            key, value = stripped.split(" = ", 1)
            found.setdefault(key.strip(), value.strip())
    return found


def parse_schtasks_list(text: str) -> dict[str, str]:
    """``schtasks /Query /V /FO LIST``: ``Key:   Value`` lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith(" "):
            found.setdefault(key.strip(), value.strip())
    return found


def query(plan: Plan, runner: Runner = run_command, root: Path = Path("/")) -> UnitState:
    """Ask the manager about ``plan``'s unit; never raises (a failure fills ``error``)."""
    installed = all(host_path(root, f.path).exists() for f in plan.files)
    st = UnitState(plan.manager, plan.unit, installed, before_login=plan.before_login)
    res = runner(plan.query)
    if plan.manager == "systemd":
        if res.returncode != 0:
            st.error = (res.stderr or res.stdout).strip() or f"exit {res.returncode}"
            return st
        f = st.fields = parse_systemd_show(res.stdout)
        st.loaded = f.get("LoadState") == "loaded"
        st.enabled = f.get("UnitFileState") in ("enabled", "enabled-runtime", "linked")
        st.active = f.get("ActiveState") in ("active", "reloading")
        st.state = f"{f.get('ActiveState', '?')} ({f.get('SubState', '?')})"
        st.main_pid = _int(f.get("MainPID")) or None
        st.restarts = _int(f.get("NRestarts"))
        code, status = f.get("ExecMainCode"), f.get("ExecMainStatus")
        if code and code != "0":
            st.last_exit = {"1": "exited", "2": "killed", "3": "dumped"}.get(code, code) + f" {status}"
        st.status_text = f.get("StatusText") or None
        if plan.linger is not None:
            st.linger_fix = f"loginctl enable-linger {plan.linger[2]}"
            lres = runner(plan.linger)
            if lres.returncode == 0 and "Linger=" in lres.stdout:
                st.linger = parse_systemd_show(lres.stdout).get("Linger") == "yes"
                st.before_login = st.linger
    elif plan.manager == "launchd":
        st.loaded = res.returncode == 0
        if st.loaded:
            f = st.fields = parse_launchctl_print(res.stdout)
            st.state = f.get("state", "unknown")
            st.active = st.state == "running"
            st.enabled = True  # bootstrapped with RunAtLoad: starts at every login/boot
            st.main_pid = _int(f.get("pid"))
            st.restarts = _int(f.get("runs"))
            st.restarts = st.restarts - 1 if st.restarts else st.restarts
            st.last_exit = f.get("last exit code")
        else:
            st.state = "not loaded"
            st.enabled = False if installed else None
    else:
        st.loaded = res.returncode == 0
        if st.loaded:
            f = st.fields = parse_schtasks_list(res.stdout)
            st.state = f.get("Status", "unknown")
            st.active = st.state == "Running"
            st.enabled = f.get("Scheduled Task State", "Enabled") == "Enabled"
            st.last_exit = f.get("Last Result")
        else:
            st.state = "not registered"
    return st


# -- install / uninstall ------------------------------------------------------------------------
def _read(path: Path, unit: UnitFile) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return data.decode("utf-16" if unit.encoding == "utf-16" else "utf-8")
    except UnicodeDecodeError:
        return None


def _encode(unit: UnitFile) -> bytes:
    if unit.encoding == "utf-16":
        return unit.content.replace("\n", "\r\n").encode("utf-16")  # BOM included
    return unit.content.encode("utf-8")


def _decoded(unit: UnitFile) -> str:
    return _encode(unit).decode("utf-16" if unit.encoding == "utf-16" else "utf-8")


@dataclass
class Installer:
    """Performs plans. ``out`` receives one line per file and command (the CLI prints them).

    ``owner``: (uid, gid) to give the folders in ``plan.dirs`` when running as root (the
    LaunchDaemon's log folder belongs to its user), None to leave them as created.
    """

    runner: Runner = run_command
    root: Path = Path("/")
    out: Callable[[str], None] = print
    owner: tuple[int, int] | None = None

    def _run(self, plan: Plan, argv: Command, dry_run: bool) -> None:
        if dry_run:
            self.out(f"would run  {show(argv)}")
            return
        self.out(f"run        {show(argv)}")
        res = self.runner(argv)
        if res.returncode != 0 and argv not in plan.may_fail:
            detail = (res.stderr or res.stdout).strip()
            raise ServiceError(
                f"`{show(argv)}` exited {res.returncode}" + (f": {detail}" if detail else ""),
                hint="see the message above; --system needs root (sudo) or an elevated prompt",
            )

    def install(self, plan: Plan, dry_run: bool = False) -> bool:
        """Write the files and load the unit; returns False when nothing had to change.

        Raises :class:`ServiceError` when a command fails or a file cannot be written."""
        changed = [f for f in plan.files if _read(host_path(self.root, f.path), f) != _decoded(f)]
        state = query(plan, self.runner, self.root)  # read-only: also for --dry-run
        if plan.manager == "systemd":
            settled = state.loaded and bool(state.active) and bool(state.enabled)
        else:  # a bootstrapped agent or a registered task runs at every login (or boot)
            settled = state.loaded
        if not changed and settled:
            for f in plan.files:
                self.out(f"unchanged  {f.path}")
            self.out(f"already installed and running: {plan.unit}; nothing changed")
            return False
        for d in plan.dirs:
            self._mkdir(d, dry_run)
        for f in plan.files:
            self._write(f, f in changed, dry_run)
        commands: list[Command] = []
        if changed or not state.loaded:
            commands += plan.reload
        if state.loaded and changed and (bool(state.active) or plan.manager != "systemd"):
            commands += plan.restart
        else:
            commands += plan.start
        for argv in commands:
            self._run(plan, argv, dry_run)
        return True

    def uninstall(self, plan: Plan, dry_run: bool = False) -> bool:
        """Stop and unload the unit, remove its files (a shared template only when no other
        instance uses it); returns False when nothing was installed."""
        present = [f for f in plan.files if host_path(self.root, f.path).exists()]
        state = query(plan, self.runner, self.root)
        if not present and not state.loaded:
            self.out(f"not installed: {plan.unit}; nothing to remove")
            return False
        if state.loaded:
            for argv in plan.stop:
                self._run(plan, argv, dry_run)
        for f in sorted(present, key=lambda f: f.shared):  # our own drop-in first, then the shared template
            path = host_path(self.root, f.path)
            if f.shared and self._still_used(path):
                self.out(f"kept       {f.path} (other instances use it)")
                continue
            self.out(f"{'would remove' if dry_run else 'removed'}    {f.path}")
            if not dry_run:
                path.unlink()
                if "lmsupervisor" in path.parent.name and not any(path.parent.iterdir()):
                    path.parent.rmdir()
        if present:
            for argv in plan.reload:
                self._run(plan, argv, dry_run)
        return True

    @staticmethod
    def _still_used(template: Path) -> bool:
        """Another ``lmsupervisor@USER.service.d/lmsupervisor.conf`` next to the systemd template."""
        if template.name != SYSTEMD_TEMPLATE:
            return False
        return any(template.parent.glob("lmsupervisor@?*.service.d/lmsupervisor.conf"))

    def _mkdir(self, folder: str, dry_run: bool) -> None:
        path = host_path(self.root, folder)
        if path.is_dir():
            return
        self.out(f"{'would create' if dry_run else 'created'}    {folder}/")
        if not dry_run:
            path.mkdir(parents=True, exist_ok=True)
            if self.owner is not None and hasattr(os, "chown"):
                os.chown(path, *self.owner)

    def _write(self, f: UnitFile, changed: bool, dry_run: bool) -> None:
        if not changed:
            self.out(f"unchanged  {f.path}")
            return
        if dry_run:
            self.out(f"would write {f.path}:")
            for line in f.content.rstrip("\n").splitlines():
                self.out(f"    {line}")
            return
        path = host_path(self.root, f.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(_encode(f))
            tmp.chmod(f.mode)
            tmp.replace(path)
        except OSError as exc:
            raise ServiceError(
                f"cannot write {f.path}: {exc.strerror}", hint="--system needs root (sudo) or an elevated prompt"
            ) from exc
        self.out(f"wrote      {f.path}")


def plan_for(scope: str, config: Path | None = None, platform: str | None = None, home: Path | None = None) -> Plan:
    """The plan for this machine and user (``render(current_target(...))``)."""
    return render(current_target(scope, config, platform, home=home))


def installed_services(
    home: Path | None = None, runner: Runner = run_command, root: Path = Path("/"), platform: str | None = None
) -> list[UnitState]:
    """Our units that exist (files written) or that the manager knows, user scope first."""
    found = []
    for scope in ("user", "system"):
        try:
            plan = plan_for(scope, platform=platform, home=home)
        except (KeyError, OSError):  # no password entry for the user: nothing to find
            continue
        if not any(host_path(root, f.path).exists() for f in plan.files if not f.shared):
            continue
        found.append(query(plan, runner, root))
    return found
