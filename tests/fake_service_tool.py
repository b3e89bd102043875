"""Fake ``launchctl``, ``schtasks``, ``systemctl`` and ``loginctl`` for the service tests.

:class:`Tools` puts one small script per tool in a folder (first on ``PATH`` in the tests);
each runs :func:`main`, which appends its argv to ``calls.jsonl`` and answers as the real
tool does: the command line is checked against the documented syntax first
(:func:`tests.service_units.schtasks_usage`, :func:`~tests.service_units.launchctl_usage`:
the real tools' usage errors otherwise), ``schtasks /Create /XML`` reads the file and
refuses what Task Scheduler's schema refuses, ``launchctl bootstrap`` loads the plist and
refuses a job launchd or lmsupervisor would not run; ``launchctl print`` exits 113 for an
unknown service, ``schtasks /Query`` exits 1 for an unknown task. Whether the unit is
loaded (running) is kept in ``state.json`` beside the scripts.

Environment: ``FAKE_ROOT`` maps the plans' absolute paths under a folder (as the
installer's ``root`` does); ``FAKE_LAUNCHCTL_UID`` is the only ``gui/<uid>`` domain
bootstrap accepts; ``FAKE_FAIL`` is one command line (space-joined) that fails with exit 5.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("launchctl", "schtasks", "systemctl", "loginctl")


class Tools:
    """Fake tools in ``folder``; :attr:`calls` is every command line they were given."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True)
        for name in TOOLS:
            path = folder / name
            # -S: starts in a few ms; the checks come from the repository's tests package
            path.write_text(
                f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                "from tests.fake_service_tool import main\nmain()\n"
            )
            path.chmod(0o755)

    @property
    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def reset_calls(self) -> None:
        (self.folder / "calls.jsonl").unlink(missing_ok=True)

    @property
    def state(self) -> dict[str, object]:
        state = self.folder / "state.json"
        loaded: dict[str, object] = json.loads(state.read_text()) if state.exists() else {}
        return loaded


def _file(path: str) -> Path:
    root = os.environ.get("FAKE_ROOT")
    if not root or Path(path).exists():
        return Path(path)
    from lmsupervisor.service.install import host_path

    return host_path(Path(root), path)


def _option(args: list[str], switch: str) -> str | None:
    upper = [a.upper() for a in args]
    return args[upper.index(switch) + 1] if switch in upper and upper.index(switch) + 1 < len(args) else None


def _schtasks(args: list[str], state: dict[str, object]) -> int:
    from tests.service_units import schtasks_usage, task_xml_problems

    if problems := schtasks_usage(args):
        print(f'ERROR: Invalid syntax. {problems[0]}\nType "SCHTASKS {args[0] if args else ""} /?" for usage.')
        return 1
    op, name = args[0].upper(), _option(args, "/TN")
    tasks: dict[str, dict[str, bool]] = state.setdefault("tasks", {})  # type: ignore[assignment]
    forced = "/F" in (a.upper() for a in args)
    if op == "/CREATE":
        try:
            data = _file(_option(args, "/XML") or "").read_bytes()
        except OSError:
            print("ERROR: The system cannot find the file specified.", file=sys.stderr)
            return 1
        if problems := task_xml_problems(data):
            print(
                f"ERROR: The task XML contains a value which is incorrectly formatted or out of range.\n{problems[0]}"
            )
            return 1
        if name in tasks and not forced:  # the real one would wait for an answer on the console
            print(f'WARNING: The task name "{name}" already exists. Do you want to replace it (Y/N)?')
            return 1
        tasks[str(name)] = {"running": bool(tasks.get(str(name), {}).get("running"))}
        print(f'SUCCESS: The scheduled task "{name}" has successfully been created.')
        return 0
    task = tasks.get(str(name))
    if op == "/QUERY" and task is not None:
        status = "Running" if task["running"] else "Ready"
        print(
            f"HostName:                             PC\nTaskName:                             \\{name}\n"
            f"Status:                               {status}\nLast Result:                          0\n"
            "Scheduled Task State:                 Enabled"
        )
        return 0
    if task is None:
        print("ERROR: The system cannot find the file specified.", file=sys.stderr)
        return 1
    if op == "/RUN":
        task["running"] = True
        print(f'SUCCESS: Attempted to run the scheduled task "{name}".')
    elif op == "/END":
        if not task["running"]:
            print(f'ERROR: The scheduled task "{name}" is not running.', file=sys.stderr)
            return 1
        task["running"] = False
    elif op == "/DELETE":
        if not forced:
            print(f'WARNING: Are you sure you want to remove the task "{name}" (Y/N)?')
            return 1
        del tasks[str(name)]
    return 0


def _launchctl(args: list[str], state: dict[str, object]) -> int:
    from tests.service_units import launchctl_usage, plist_problems

    if problems := launchctl_usage(args):
        print(f"Usage: launchctl {args[0] if args else ''} ... ({problems[0]})", file=sys.stderr)
        return 64
    jobs: dict[str, dict[str, str]] = state.setdefault("jobs", {})  # type: ignore[assignment]
    if args[0] == "bootstrap":
        domain = args[1]
        uid = os.environ.get("FAKE_LAUNCHCTL_UID")
        if uid is not None and domain.startswith("gui/") and domain != f"gui/{uid}":
            print("Bootstrap failed: 125: Domain does not support specified action", file=sys.stderr)
            return 125
        for path in args[2:]:
            try:
                data = _file(path).read_bytes()
            except OSError:
                print(f"Bootstrap failed: 5: Input/output error ({path}: No such file or directory)", file=sys.stderr)
                return 5
            import plistlib

            label = Path(path).name.removesuffix(".plist")
            if problems := plist_problems(data, label):
                print(f"Bootstrap failed: 5: Input/output error ({problems[0]})", file=sys.stderr)
                return 5
            service = f"{domain}/{plistlib.loads(data)['Label']}"
            if service in jobs:
                print("Bootstrap failed: 5: Input/output error", file=sys.stderr)  # already loaded
                return 5
            jobs[service] = {"path": path}
        return 0
    service = args[-1]
    if args[0] == "print":
        if service not in jobs:
            print(f'Could not find service "{service.rsplit("/", 1)[-1]}" in domain for port', file=sys.stderr)
            return 113
        print(
            f"{service} = {{\n\tactive count = 1\n\tpath = {jobs[service]['path']}\n\tstate = running\n"
            "\tpid = 4242\n\truns = 3\n\tlast exit code = 0\n\tendpoints = {\n\t\tstate = nested\n\t}\n}"
        )
    elif args[0] == "bootout":
        if service not in jobs:
            print(f"Boot-out failed: 3: No such process ({service})", file=sys.stderr)
            return 3
        del jobs[service]
    elif args[0] == "kickstart" and service not in jobs:
        print(f'Could not find service "{service}"', file=sys.stderr)
        return 113
    return 0


def _systemctl(args: list[str], state: dict[str, object]) -> int:
    args = [a for a in args if a != "--user"]
    units: dict[str, dict[str, bool]] = state.setdefault("units", {})  # type: ignore[assignment]
    if args[0] == "show":
        u = units.get(args[1], {})
        print(
            f"LoadState={'loaded' if u else 'not-found'}\nActiveState={'active' if u.get('active') else 'inactive'}\n"
            f"SubState={'running' if u.get('active') else 'dead'}\n"
            f"UnitFileState={'enabled' if u.get('enabled') else 'disabled'}\nMainPID=0\nNRestarts=0\n"
            "ExecMainCode=0\nExecMainStatus=0\nStatusText="
        )
    elif args[:2] == ["enable", "--now"]:
        units[args[2]] = {"enabled": True, "active": True}
    elif args[:2] == ["disable", "--now"]:
        units[args[2]] = {"enabled": False, "active": False}
    return 0


def main() -> None:
    """Run as the tool named by ``argv[0]``; exits with the tool's exit code."""
    here = Path(sys.argv[0]).resolve().parent
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    with open(here / "calls.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps([tool, *args]) + "\n")
    if os.environ.get("FAKE_FAIL") == " ".join([tool, *args]):
        print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
        sys.exit(5)
    state_file = here / "state.json"
    state: dict[str, object] = json.loads(state_file.read_text()) if state_file.exists() else {}
    if tool == "loginctl":
        print("Linger=no")
        sys.exit(0)
    answer = {"schtasks": _schtasks, "launchctl": _launchctl, "systemctl": _systemctl}[tool]
    code = answer(args, state)
    state_file.write_text(json.dumps(state))
    sys.exit(code)
