"""Detect an `lms` binary's capabilities once, and remember them (facts §8).

Detection runs five `lms` calls (``version --json``, ``daemon --help``, ``server start
--help``, ``load --help``, ``runtime --help``), which on a real install cost a Node/bun start each, so the
result is cached per binary: in memory, and in a JSON file in lmsupervisor's state folder
(``capabilities.json``, ``{"<path>": {"stamp": "<size>:<mtime_ns>", ...}}``), so neither
a recovery nor a supervisor restart runs them again. A binary whose size or mtime changed
(an LM Studio update) is detected again. Parsing is pure: :mod:`lmsupervisor.core.capabilities`.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from lmsupervisor.core.capabilities import CliCapabilities, HelpOutput, parse_help
from lmsupervisor.errors import LmsError, LmsNotFoundError
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.statefile import StateFiles

HELP_TIMEOUT = 15.0  # seconds per detection call


def stamp_of(path: Path) -> str | None:
    """``"<size>:<mtime_ns>"`` of ``path`` (following links), None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


class CapabilityCache:
    """Capabilities per `lms` binary, detected on first use; ``path`` is the JSON cache
    file (None: memory only); ``quiet`` logs nothing (doctor prints its own report)."""

    def __init__(self, path: Path | None = None, quiet: bool = False, files: StateFiles | None = None) -> None:
        self.path = path
        self.quiet = quiet
        self.files = files or StateFiles()
        self._memory: dict[str, CliCapabilities] = {}
        self.log = structlog.get_logger("lmsupervisor")

    def cached(self, binary: Path) -> CliCapabilities | None:
        """The capabilities remembered for ``binary`` as it is now on disk, else None."""
        stamp = stamp_of(binary) or "0:0"  # unreadable: remembered in memory, as detected
        key = str(binary)
        hit = self._memory.get(key)
        if hit is not None and hit.stamp == stamp:
            return hit
        entry = self._read().get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            found = CliCapabilities.from_json(key, stamp, entry)
            if found is not None:
                self._memory[key] = found
                return found
        return None

    async def get(self, binary: Path, lms: LmsClient) -> CliCapabilities:
        """The capabilities of ``binary``: cached, else detected with ``lms`` (five calls).

        Raises :class:`LmsNotFoundError` when the binary cannot run; any other `lms` failure
        of one call reads as "not supported" for what that call asks.
        """
        found = self.cached(binary)
        if found is not None:
            return found
        stamp = stamp_of(binary) or "0:0"
        version: str | None = None
        try:
            version = await lms.version(timeout=HELP_TIMEOUT)
        except LmsNotFoundError:
            raise
        except LmsError as exc:
            if not self.quiet:
                self.log.info("lms_version_unknown", error=exc.message)
        outputs = []
        for args in (("daemon", "--help"), ("server", "start", "--help"), ("load", "--help"), ("runtime", "--help")):
            try:
                r = await lms.runner.run(*args, timeout=HELP_TIMEOUT)
                outputs.append(HelpOutput(r.returncode, r.stdout, r.stderr))
            except LmsNotFoundError:
                raise
            except LmsError as exc:
                outputs.append(HelpOutput(1, "", exc.message))
        caps = parse_help(str(binary), stamp, version, *outputs)
        if not self.quiet:
            self.log.info("lms_capabilities_detected", lms=str(binary), **caps.to_json())
        self._memory[str(binary)] = caps
        self._write(caps)
        return caps

    def _read(self) -> dict[str, object]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, caps: CliCapabilities) -> None:
        """Atomically, through ``files``: a state folder we cannot write costs a re-detection
        at the next start, and is reported, never raised."""
        if self.path is None:
            return
        data = self._read()
        data[caps.binary] = {"stamp": caps.stamp, **caps.to_json()}
        self.files.write(self.path, json.dumps(data, indent=1))
