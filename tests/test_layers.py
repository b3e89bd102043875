"""The layers are tested, not hoped for (style rule 19): read every module's imports and
calls, and fail when

- ``core/`` imports anything but ``core``, ``config``, ``errors`` and the pure parts of the
  standard library (no asyncio, httpx, psutil, sockets, processes), or touches files;
- code outside ``cli.py`` exits the process (``sys.exit``, ``os._exit``, ``SystemExit``);
  the simulator's programs (a fake `lms`, a fake daemon) are programs of their own and
  exit as programs do;
- the simulator imports the supervisor's LM Studio adapter (``lmsupervisor.lmstudio``),
  the code it exists to check (rule 20: the oracle is independent).
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


FACE_AND_VOICE = ("notify", "dashboard")  # design §9: they use the supervisor through its events, status and messages


@pytest.mark.parametrize("path", [p for folder in FACE_AND_VOICE for p in modules(PACKAGE / folder)], ids=name)
def test_notifications_and_the_dashboard_reach_the_supervisor_through_its_messages_only(path: Path) -> None:
    """Notifications and the dashboard read the status and the event hub and post messages:
    they never reach LM Studio's adapter, the runner, the health loop or the status server."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    forbidden = {"lmsupervisor.lmstudio", "lmsupervisor.supervisor", "lmsupervisor.health", "lmsupervisor.statusd"}
    wrong = [f"{name(path)}:{line} imports {m}" for line, m in imported(tree) if within(m, forbidden)]
    assert wrong == []
