"""lmsupervisor's own state files, written atomically with one failure policy.

The state folder (:func:`lmsupervisor.paths.state_folder`: ``~/.local/state/lmsupervisor``
on Linux) holds what the supervisor remembers between runs:
``server.json`` (LM Studio's last good server settings), ``capabilities.json`` (what each
`lms` binary can do), ``hardware.json`` (the last good hardware survey, :class:`HardwareMemory`),
``speed.json`` (each model's speed baseline, :class:`SpeedMemory`) and ``homes/<hash>.json``
(who supervises which LM Studio home).

None of them is needed to supervise: losing one costs a re-detection or a remembered
setting, never LM Studio's uptime. So a write that fails (a read-only or full disk, a
folder with the wrong owner) never raises: it is logged ``state_file_write_failed`` once
per file and cause, and reported as the problem ``state_folder_unwritable`` with the fix
(through :attr:`StateFiles.listener`, which the supervisor turns into a ``Noted``
message). The supervisor calls :meth:`StateFiles.retry` each health round while the
problem stands: every failed write is tried again with its last text (a lock, its
acquisition), and the problem clears once all of them succeed, so a repaired folder
never leaves a stale warning (nor the alert built on it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from lmsupervisor import paths
from lmsupervisor.core.hardware import Hardware, hardware_from_json, hardware_to_json
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.speed import Baseline, baselines_from_json, baselines_to_json

PROBLEM = "state_folder_unwritable"


def default_folder() -> Path:
    """The per-user state folder (:func:`lmsupervisor.paths.state_folder`)."""
    return Path(paths.state_folder(os.environ))


class StateFiles:
    """Atomic writes (temp file in the same folder, then rename) that never fail the caller.

    ``listener`` receives the ``state_folder_unwritable`` problem when a write fails, and
    None once every file that failed has been written again; a listener attached later
    gets the current problem at once (see :meth:`attach`).
    """

    def __init__(self) -> None:
        self.listener: Callable[[Problem | None], None] | None = None
        self.problem: Problem | None = None
        self._failing: dict[Path, str] = {}  # file -> cause already logged
        self._again: dict[Path, Callable[[], bool]] = {}  # file -> its write (or lock) tried again
        self.log = structlog.get_logger("lmsupervisor")

    def attach(self, listener: Callable[[Problem | None], None]) -> None:
        """Send problems to ``listener`` from now on, starting with the current one."""
        self.listener = listener
        if self.problem is not None:
            listener(self.problem)

    def write(self, path: Path, text: str) -> bool:
        """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder (0700).

        Returns False, after logging and reporting, when the file could not be written;
        never raises ``OSError``.
        """
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # the same disk problem: nothing more to do about it
                tmp.unlink(missing_ok=True)
            self.failed(path, exc, again=lambda: self.write(path, text))
            return False
        self._written(path)
        return True

    def failed(self, path: Path, exc: OSError, again: Callable[[], bool] | None = None) -> None:
        """Log (once per file and cause) and report that ``path`` could not be written:
        for a state file that is not written with :meth:`write` (a lock file). ``again``
        tries once more (True: done), for :meth:`retry`."""
        cause = exc.strerror or type(exc).__name__
        if self._failing.get(path) != cause:
            self.log.warning("state_file_write_failed", path=str(path), error=cause)
        self._failing[path] = cause
        if again is not None:
            self._again[path] = again
        folder = path.parent
        self._report(
            Problem(
                PROBLEM,
                f"cannot write lmsupervisor's state file {path}: {cause}",
                f"make {folder} writable by this user and free space on its disk; meanwhile lmsupervisor "
                "supervises without remembering LM Studio's server settings and `lms` capabilities",
                "warning",
            )
        )

    def retry(self) -> None:
        """Try every failed write again; the problem clears when the last one succeeds.
        Cheap when nothing failed; never raises ``OSError``."""
        for path, again in list(self._again.items()):
            if again():
                self._written(path)

    def _written(self, path: Path) -> None:
        self._again.pop(path, None)
        if self._failing.pop(path, None) is not None and not self._failing:
            self._report(None)

    def _report(self, problem: Problem | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        if self.listener is not None:
            self.listener(problem)


def read_json(path: Path) -> tuple[Any, str | None]:
    """A state file's JSON: ``(data, None)``; ``(None, None)`` when there is no file;
    ``(None, why)`` when it cannot be read or is no JSON. Never raises: a state file is
    never a reason to fail."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"not readable JSON ({type(exc).__name__}: {exc})"


class JsonMemory:
    """One state file of JSON data: ``path`` (None: kept in memory only), written through
    ``files`` (this module's one policy); what it holds is its subclass's."""

    def __init__(self, path: Path | None, files: StateFiles | None = None) -> None:
        self.path = path
        self.files = files or StateFiles()
        self.log = structlog.get_logger("lmsupervisor")

    def read(self, what: str) -> Any:
        """The file's JSON, None when there is no file; one that cannot be read is logged
        ``<what>_memory_ignored`` and None."""
        if self.path is None:
            return None
        data, why = read_json(self.path)
        if why is not None:
            self.log.warning(f"{what}_memory_ignored", path=str(self.path), error=why)
        return data

    def write(self, data: Any) -> bool:
        """Write ``data`` as JSON atomically; False when it could not (reported by ``files``, never raised)."""
        if self.path is None:
            return True
        return self.files.write(self.path, json.dumps(data, indent=1))


class SpeedMemory(JsonMemory):
    """Each model's speed baseline per model key, LM Studio version and runtime
    (:mod:`lmsupervisor.core.speed`), kept in ``speed.json`` so a restart of lmsupervisor
    judges the models against the speed they had, not against their first answer after it."""

    def load(self) -> tuple[Baseline, ...]:
        """The remembered baselines, () when none (a file not what :meth:`save` writes is
        logged ``speed_memory_ignored`` and ignored: baselines are measured again)."""
        data = self.read("speed")
        if data is None:
            return ()
        found = baselines_from_json(data)
        if found is None:
            self.log.warning("speed_memory_ignored", path=str(self.path), error="not a list of speed baselines")
        return found or ()

    def save(self, baselines: tuple[Baseline, ...]) -> bool:
        """Write ``baselines`` (see :meth:`JsonMemory.write`)."""
        return self.write(baselines_to_json(baselines))


class HardwareMemory(JsonMemory):
    """The last good hardware survey (what ``[gpu] require = "auto"`` requires), kept in
    ``hardware.json`` (:func:`~lmsupervisor.core.hardware.hardware_to_json`) so a boot
    whose GPU driver is late is judged by what the machine had."""

    def load(self) -> Hardware | None:
        """The remembered survey, or None (no file; one not readable or not what :meth:`save`
        writes is logged ``hardware_memory_ignored`` and ignored: nothing is then required)."""
        data = self.read("hardware")
        found = hardware_from_json(data) if data is not None else None
        if found is None and data is not None:
            self.log.warning("hardware_memory_ignored", path=str(self.path), error="not a hardware survey")
        return found

    def save(self, hardware: Hardware) -> bool:
        """Write atomically; False when it could not (reported by ``files``, never raised)."""
        return self.write(hardware_to_json(hardware))
