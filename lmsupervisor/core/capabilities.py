"""What an `lms` binary and the LM Studio behind it can do (facts §8). Pure data and parsing.

Release lines differ: the CLI's argument-error dialect (Commander since 2025-08-20, cmd-ts
before), which ``daemon`` subcommands exist (``status`` since 2025-10-01, ``up``/``down``
since 2025-11-29), ``server start --bind`` (late 2025-11), ``load --local`` (LM Link,
2026-02), the JSON shapes of ``ps --json``/``ls --json`` (``{identifier, path}`` and no
``modelKey`` before about 0.3.11), and, on the server side, REST v1 and API tokens (0.4.0).

:class:`CliCapabilities` is detected once per `lms` binary (its path, size and mtime: a
new binary is detected again) from ``lms version --json``, ``lms daemon --help``,
``lms server start --help`` and ``lms load --help``; :func:`parse_help` turns those
outputs into it. :func:`bind_problem` says when the declared bind is one this `lms` cannot pass, with
its fix. The adapter that runs the commands and caches the
result is :mod:`lmsupervisor.lmstudio.capabilities`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmsupervisor.core.problems import Problem

DIALECTS = ("commander", "cmdts", "unknown")


@dataclass(frozen=True)
class CliCapabilities:
    """What one `lms` binary accepts (facts §8 table).

    ``binary`` is its path and ``stamp`` ``"<size>:<mtime_ns>"`` (a changed binary is
    detected again). ``cli_version`` is ``lms version --json`` (a commit; the CLI's own
    semver on 0.3.x), None when it could not be read. ``dialect`` is ``"commander"``,
    ``"cmdts"`` or ``"unknown"``. ``daemon`` holds the ``lms daemon`` subcommands among
    ``status``, ``up``, ``down``. ``ps_json`` is ``"instance"`` or ``"legacy"``
    (``{identifier, path}``), ``ls_model_key`` whether ``ls --json`` names ``modelKey``.
    """

    binary: str
    stamp: str
    cli_version: str | None
    dialect: str
    daemon: frozenset[str]
    bind: bool
    local: bool
    ps_json: str = "instance"
    ls_model_key: bool = True

    def to_json(self) -> dict[str, Any]:
        """``{"cli_version", "dialect", "daemon": [sorted], "bind", "local", "ps_json", "ls_model_key"}``."""
        return {
            "cli_version": self.cli_version,
            "dialect": self.dialect,
            "daemon": sorted(self.daemon),
            "bind": self.bind,
            "local": self.local,
            "ps_json": self.ps_json,
            "ls_model_key": self.ls_model_key,
        }

    @classmethod
    def from_json(cls, binary: str, stamp: str, data: Any) -> CliCapabilities | None:
        """The inverse of :meth:`to_json` (the on-disk cache); None for anything malformed."""
        if not isinstance(data, dict):
            return None
        try:
            daemon = frozenset(str(d) for d in data["daemon"])
            version = data["cli_version"]
            out = cls(
                binary,
                stamp,
                version if isinstance(version, str) else None,
                str(data["dialect"]),
                daemon,
                bool(data["bind"]),
                bool(data["local"]),
                str(data["ps_json"]),
                bool(data["ls_model_key"]),
            )
        except (KeyError, TypeError):
            return None
        return out if out.dialect in DIALECTS and out.ps_json in ("instance", "legacy") else None


@dataclass(frozen=True)
class HelpOutput:
    """One ``--help`` (or version) call: exit code and both streams."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """Both streams together (Commander prints help on stdout, cmd-ts errors on stderr)."""
        return f"{self.stdout}\n{self.stderr}"


def dialect_of(stderr: str) -> str:
    """``"cmdts"`` for cmd-ts's error box, ``"commander"`` for Commander's ``error: unknown ...``."""
    if "Not a valid subcommand name" in stderr or "Unknown arguments" in stderr or "error: found " in stderr:
        return "cmdts"
    if re.search(r"error: unknown (command|option) '", stderr):
        return "commander"
    return "unknown"


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def version_tuple(version: str | None) -> tuple[int, int, int] | None:
    """``(0, 3, 10)`` from ``"0.3.10"`` (or ``"v0.3.10-beta"``); None for a commit hash."""
    m = _SEMVER.match(version or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def parse_help(
    binary: str, stamp: str, version: str | None, daemon: HelpOutput, server_start: HelpOutput, load: HelpOutput
) -> CliCapabilities:
    """Capabilities from the outputs of ``lms daemon --help``, ``lms server start --help``
    and ``lms load --help`` (and ``version``, from ``lms version --json``).

    A ``daemon`` command that exists lists its subcommands; one that does not is rejected
    in the CLI's dialect, which names the dialect. Options are looked for as words
    (``--bind``, ``--local``) in either stream, whatever the exit code (cmd-ts exits 1
    after printing help on some builds).
    """
    subcommands: frozenset[str] = frozenset()
    dialect = "unknown"
    if daemon.returncode == 0 and "daemon" in daemon.text:
        words = set(re.findall(r"^\s+([a-z]+)\b", daemon.stdout, re.MULTILINE))
        subcommands = frozenset(words & {"status", "up", "down"})
        dialect = "commander"  # `daemon` only exists in Commander builds (2025-10+)
    else:
        dialect = dialect_of(daemon.text)
    if dialect == "unknown":
        dialect = dialect_of(server_start.text) if server_start.returncode else dialect
    semver = version_tuple(version)
    legacy = semver is not None and semver < (0, 3, 11)
    return CliCapabilities(
        binary=binary,
        stamp=stamp,
        cli_version=version,
        dialect=dialect,
        daemon=subcommands,
        bind=re.search(r"--bind\b", server_start.text) is not None,
        local=re.search(r"--local\b", load.text) is not None,
        ps_json="legacy" if legacy else "instance",
        ls_model_key=not legacy,
    )


def bind_problem(declared: str | None, saved: str, caps: CliCapabilities | None) -> Problem | None:
    """The problem when the declared bind differs from LM Studio's saved one and this `lms`
    cannot pass ``--bind`` (before late 2025-11: `server start` keeps the saved interface)."""
    if declared is None or caps is None or caps.bind or declared == saved:
        return None
    return Problem(
        "bind_unsupported",
        f"this LM Studio's lms ({caps.cli_version or 'an older build'}) cannot set the server's address "
        f"from the CLI: server.bind = {declared!r} is declared, LM Studio serves on {saved!r}",
        "turn on 'Serve on Local Network' in LM Studio's Developer settings (for 0.0.0.0), "
        "or update LM Studio; or remove server.bind",
        "warning",
    )
