"""The layers are tested, not hoped for (style rule 19): read every module's imports and
calls, and fail when

- ``core/`` imports anything but ``core``, ``config``, ``errors`` and the pure parts of the
  standard library (no asyncio, httpx, psutil, sockets, processes), or touches files;
- code outside ``cli.py`` exits the process (``sys.exit``, ``os._exit``, ``SystemExit``);
  the simulator's programs (a fake `lms`, a fake daemon) are programs of their own and
  exit as programs do;
- the simulator imports the supervisor's LM Studio adapter (``lmsupervisor.lmstudio``),
  the code it exists to check (rule 20: the oracle is independent);
- the holding proxy imports the adapter, the runner, the health loop or the status server
  (it uses the supervisor through the snapshot and the messages, design §9).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmsupervisor"
CORE_MAY_IMPORT = {"lmsupervisor.core", "lmsupervisor.config", "lmsupervisor.errors"}
PURE_STDLIB = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "math",
    "pathlib",  # for the Path type: file access is checked below
    "re",
    "time",  # timefmt: wall seconds to ISO-8601, no clock reads in the reducer
    "typing",
}
FILE_ACCESS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink", "iterdir", "stat"}


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import, relative imports resolved to ``lmsupervisor.``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "lmsupervisor." + base  # the package uses absolute imports; flag it anyway
            yield node.lineno, base


def name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("path", modules(PACKAGE / "core"), ids=name)
def test_core_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = [
        f"{name(path)}:{line} imports {module}"
        for line, module in imported(tree)
        if not within(module, CORE_MAY_IMPORT | PURE_STDLIB)
    ]
    touches = [
        f"{name(path)}:{node.lineno} calls .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FILE_ACCESS
    ]
    assert wrong + touches == []


def exits(tree: ast.AST) -> Iterator[int]:
    """Lines that end the process: ``sys.exit()``, ``os._exit()``, ``exit()``, ``quit()``,
    ``raise SystemExit``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and (func.attr, getattr(func.value, "id", None))
                in (
                    ("exit", "sys"),
                    ("_exit", "os"),
                )
            ) or (isinstance(func, ast.Name) and func.id in ("exit", "quit")):
                yield node.lineno
        elif isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id == "SystemExit":
                yield node.lineno


SUPERVISOR_MODULES = [
    p for p in modules(PACKAGE) if p != PACKAGE / "cli.py" and "simulator" not in p.relative_to(PACKAGE).parts
]


@pytest.mark.parametrize("path", SUPERVISOR_MODULES, ids=name)
def test_only_the_cli_exits(path: Path) -> None:
    lines = list(exits(ast.parse(path.read_text(encoding="utf-8"))))
    assert lines == [], f"{name(path)} exits the process at lines {lines}: raise an error for cli.py to map"


@pytest.mark.parametrize("path", modules(PACKAGE / "simulator"), ids=name)
def test_the_simulator_does_not_import_the_adapter_it_checks(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = [f"{name(path)}:{line} imports {m}" for line, m in imported(tree) if within(m, {"lmsupervisor.lmstudio"})]
    assert wrong == []


def test_the_layer_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """The checks themselves: each finds the thing it forbids in a sample."""
    sample = ast.parse(
        "import sys, os\nimport httpx\nfrom lmsupervisor.lmstudio.homedir import resolve_home\n"
        "def f(p):\n    p.read_text()\n    sys.exit(1)\n    os._exit(0)\n    raise SystemExit(2)\n"
    )
    found = [m for _, m in imported(sample)]
    assert (found, sorted(exits(sample))) == (
        ["sys", "os", "httpx", "lmsupervisor.lmstudio.homedir"],
        [6, 7, 8],
    )
    assert [within(m, CORE_MAY_IMPORT | PURE_STDLIB) for m in found] == [False, False, False, False]


FRONT_FACE_AND_VOICE = (
    "proxy",
    "notify",
    "dashboard",
)  # design §9: they use the supervisor through its snapshot, events and messages


@pytest.mark.parametrize("path", [p for folder in FRONT_FACE_AND_VOICE for p in modules(PACKAGE / folder)], ids=name)
def test_the_proxy_notifications_and_the_dashboard_use_the_supervisor_through_its_messages_only(path: Path) -> None:
    """The proxy, notifications and the dashboard (design §9 layers) read the snapshot, the
    status and the event hub and post messages: they never reach LM Studio's adapter, the
    runner, the health loop or the status server behind the supervisor's back."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    forbidden = {"lmsupervisor.lmstudio", "lmsupervisor.supervisor", "lmsupervisor.health", "lmsupervisor.statusd"}
    wrong = [f"{name(path)}:{line} imports {m}" for line, m in imported(tree) if within(m, forbidden)]
    assert wrong == []


# -- every Unix-only module and call goes through the platform seam (issue 20) --------------
UNIX_ONLY_MODULES = {"fcntl", "grp", "pwd", "termios", "resource", "posix"}
UNIX_ONLY_NAMES = {
    "os": {"getuid", "getgid", "geteuid", "getegid", "killpg", "setsid", "setpgid", "getpgid", "pidfd_open", "fork"},
    "socket": {"AF_UNIX", "SOCK_CLOEXEC", "SOCK_NONBLOCK"},  # the flags are Linux's: not on macOS either
    "asyncio": {"open_unix_connection", "start_unix_server"},  # defined only where AF_UNIX is
    "signal": {"SIGHUP", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGALRM", "SIGPIPE"},
    "time": {"clock_gettime", "CLOCK_BOOTTIME", "CLOCK_UPTIME_RAW", "CLOCK_MONOTONIC"},  # none on Windows
}
UNIX_ONLY_METHODS = {"add_reader", "remove_reader", "add_signal_handler", "remove_signal_handler"}
UNIX_ONLY_KEYWORDS = {"start_new_session", "process_group", "preexec_fn"}
PLATFORM_MODULES = {"posix.py", "linux.py", "darwin.py"}  # the Unix rooms of lmsupervisor/platform/


def unix_only(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every Unix-only import, attribute (``os.getuid``, ``socket.AF_UNIX``,
    ``loop.add_signal_handler``), ``Popen`` keyword (``start_new_session``), and name asked
    of ``hasattr``/``getattr`` (``hasattr(os, "getuid")``)."""
    forbidden = {name for names in UNIX_ONLY_NAMES.values() for name in names} | UNIX_ONLY_METHODS
    for line, module in imported(tree):
        if module.split(".")[0] in UNIX_ONLY_MODULES:
            yield line, f"import {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in UNIX_ONLY_NAMES:
            for alias in node.names:
                if alias.name in UNIX_ONLY_NAMES[node.module]:
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in UNIX_ONLY_METHODS or (owner in UNIX_ONLY_NAMES and node.attr in UNIX_ONLY_NAMES[owner]):
                yield node.lineno, f"{owner or '...'}.{node.attr}"
        elif isinstance(node, ast.keyword) and node.arg in UNIX_ONLY_KEYWORDS:
            yield node.value.lineno, f"{node.arg}="
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            asked = node.args[1] if len(node.args) > 1 else None
            if isinstance(asked, ast.Constant) and asked.value in forbidden:
                yield node.lineno, f"{node.func.id}(..., {asked.value!r})"


OUTSIDE_THE_SEAM = [
    p
    for p in modules(PACKAGE)
    if "simulator" not in p.relative_to(PACKAGE).parts
    and not (p.parent.name == "platform" and p.parent.parent == PACKAGE and p.name in PLATFORM_MODULES)
]


@pytest.mark.parametrize("path", OUTSIDE_THE_SEAM, ids=name)
def test_unix_only_calls_go_through_the_platform_seam(path: Path) -> None:
    """Outside ``lmsupervisor/platform/`` (and the simulator, which models LM Studio), nothing
    imports a Unix-only module or touches a Unix-only call: Windows would fail there."""
    found = [f"{name(path)}:{line} {what}" for line, what in unix_only(ast.parse(path.read_text(encoding="utf-8")))]
    assert found == [], "reach these through lmsupervisor.platform.current()"


def test_the_unix_only_check_sees_what_it_forbids() -> None:
    """Each kind of Unix-only use in a sample is found, once, on its line; Windows-safe code is not."""
    sample = ast.parse(
        "import fcntl\nfrom os import killpg\nos.getuid()\nsocket.socket(socket.AF_UNIX)\n"
        "loop.add_signal_handler(signal.SIGHUP, f)\nPopen(a, start_new_session=True)\n"
        "hasattr(os, 'geteuid')\nimport pwd as p\nos.getpid()\nsignal.SIGINT\nloop.call_soon(f)\n"
        "await asyncio.open_unix_connection(p)\nsocket.socket(socket.AF_INET, socket.SOCK_CLOEXEC)\n"
        "asyncio.open_connection(h, p)\n"
    )
    assert sorted(unix_only(sample)) == [
        (1, "import fcntl"),
        (2, "from os import killpg"),
        (3, "os.getuid"),
        (4, "socket.AF_UNIX"),
        (5, "loop.add_signal_handler"),
        (5, "signal.SIGHUP"),
        (6, "start_new_session="),
        (7, "hasattr(..., 'geteuid')"),
        (8, "import pwd"),
        (12, "asyncio.open_unix_connection"),
        (13, "socket.SOCK_CLOEXEC"),
    ]
    assert {p.name for p in OUTSIDE_THE_SEAM} >= {"run.py", "__init__.py", "base.py", "windows.py"}
    assert not {p.name for p in OUTSIDE_THE_SEAM} & PLATFORM_MODULES
