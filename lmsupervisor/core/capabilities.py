"""What an `lms` binary and the LM Studio behind it can do (facts §8). Pure data and parsing.

Release lines differ: the CLI's argument-error dialect (Commander since 2025-08-20, cmd-ts
before), which ``daemon`` subcommands exist (``status`` since 2025-10-01, ``up``/``down``
since 2025-11-29), ``server start --bind`` (late 2025-11), ``load --local`` (LM Link,
2026-02), the JSON shapes of ``ps --json``/``ls --json`` (``{identifier, path}`` and no
``modelKey`` before about 0.3.11), and, on the server side, REST v1 and API tokens (0.4.0).

:class:`CliCapabilities` is detected once per `lms` binary (its path, size and mtime: a
new binary is detected again) from ``lms version --json``, ``lms daemon --help``,
``lms server start --help``, ``lms load --help`` and ``lms runtime --help`` (``runtime
ls``/``select`` since 2025-09-23, ``runtime survey`` since 2025-12-18, facts §9);
:func:`parse_help` turns those outputs into it. :func:`bind_problem` says when the
declared bind is one this `lms` cannot pass, with its fix. The adapter that runs the
commands and caches the result is :mod:`lmsupervisor.lmstudio.capabilities`.
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
    ``local`` is ``load --local`` as help shows it (it never does: the option is hidden,
    facts §9; the load pass learns it from ``deviceIdentifier``). ``ttl`` is ``load
    --ttl`` (0.3.9+; older CLIs reject it and the whole load fails). ``runtime`` is `lms
    runtime ls`/``select`` (2025-09-23+), ``survey`` `lms runtime survey --json` (2025-12-18+;
    without it the CLI answers ``unknown command 'survey'``), facts §9.
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
    ttl: bool = True
    runtime: bool = False
    survey: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"cli_version", "dialect", "daemon": [sorted], "bind", "local", "ps_json",
        "ls_model_key", "ttl", "runtime", "survey"}``."""
        return {
            "cli_version": self.cli_version,
            "dialect": self.dialect,
            "daemon": sorted(self.daemon),
            "bind": self.bind,
            "local": self.local,
            "ps_json": self.ps_json,
            "ls_model_key": self.ls_model_key,
            "ttl": self.ttl,
            "runtime": self.runtime,
            "survey": self.survey,
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
                bool(data["ttl"]),  # absent in caches written before it: detected again
                bool(data["runtime"]),  # so are these (issue 17)
                bool(data["survey"]),
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


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # CSI sequences: colours, bold (Commander under FORCE_COLOR)


def plain(output: HelpOutput) -> HelpOutput:
    """``output`` without ANSI escape sequences (facts §9: help is coloured under ``FORCE_COLOR``)."""
    return HelpOutput(output.returncode, ANSI.sub("", output.stdout), ANSI.sub("", output.stderr))


def help_dialect(text: str) -> str:
    """The dialect of a help text: Commander's ``Usage: ...``/``Options:``, or cmd-ts's
    ``OPTIONS:``/``FLAGS:`` blocks and its root help's ``can be one of:`` (facts §9)."""
    if re.search(r"^Usage: ", text, re.MULTILINE):
        return "commander"
    if re.search(r"^(OPTIONS|FLAGS|ARGUMENTS):\s*$", text, re.MULTILINE) or "can be one of:" in text:
        return "cmdts"
    return "unknown"


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def version_tuple(version: str | None) -> tuple[int, int, int] | None:
    """``(0, 3, 10)`` from ``"0.3.10"`` (or ``"v0.3.10-beta"``); None for a commit hash
    and for ``0.0.x``, the CLI package's own version that `version --json` printed before
    2026-01-02 (facts §9), which says nothing about the app's release line."""
    m = _SEMVER.match(version or "")
    if not m or (int(m[1]), int(m[2])) == (0, 0):
        return None
    return (int(m[1]), int(m[2]), int(m[3]))


def parse_help(
    binary: str,
    stamp: str,
    version: str | None,
    daemon: HelpOutput,
    server_start: HelpOutput,
    load: HelpOutput,
    runtime: HelpOutput | None = None,
) -> CliCapabilities:
    """Capabilities from the outputs of ``lms daemon --help``, ``lms server start --help``,
    ``lms load --help`` and ``lms runtime --help`` (None: not asked, no runtime command)
    (and ``version``, from ``lms version --json``).

    A ``daemon`` command that exists lists its subcommands; one that does not is rejected
    in the CLI's dialect, or answered with the root help (facts §9), and the dialect is
    then read from the help's own layout (:func:`help_dialect`). Options are looked for as
    words (``--bind``, ``--ttl``) in either stream, whatever the exit code (cmd-ts exits 1
    after every help). ANSI colours are stripped first. ``ttl`` is False only when a
    readable ``load --help`` lacks ``--ttl``.
    """
    daemon, server_start, load = plain(daemon), plain(server_start), plain(load)
    listed = _subcommands(daemon, "daemon", {"status", "up", "down"})
    runtime_commands = _subcommands(plain(runtime or HelpOutput(1, "", "")), "runtime", {"ls", "select", "survey"})
    runtime_commands = runtime_commands or frozenset()
    # `daemon` only exists in Commander builds (2025-10+)
    dialect = "commander" if listed is not None else dialect_of(daemon.text)
    if dialect == "unknown":
        dialect = dialect_of(server_start.text) if server_start.returncode else dialect
    for output in (daemon, server_start, load):
        dialect = help_dialect(output.text) if dialect == "unknown" else dialect
    semver = version_tuple(version)
    legacy = semver is not None and semver < (0, 3, 11)
    return CliCapabilities(
        binary=binary,
        stamp=stamp,
        cli_version=version,
        dialect=dialect,
        daemon=listed or frozenset(),
        bind=re.search(r"--bind\b", server_start.text) is not None,
        local=re.search(r"--local\b", load.text) is not None,
        ps_json="legacy" if legacy else "instance",
        ls_model_key=not legacy,
        ttl=re.search(r"--ttl\b", load.text) is not None or not _LOAD_HELP.search(load.text),
        runtime={"ls", "select"} <= runtime_commands,
        survey="survey" in runtime_commands,
    )


def _subcommands(output: HelpOutput, command: str, known: set[str]) -> frozenset[str] | None:
    """The subcommands among ``known`` that Commander's help of ``lms <command>`` lists; None
    when the help is not that command's (a CLI without it prints the root help, facts §9)."""
    if output.returncode != 0 or not re.search(rf"^Usage: lms {command}\b", output.stdout, re.MULTILINE):
        return None
    return frozenset(set(re.findall(r"^\s+([a-z]+)\b", output.stdout, re.MULTILINE)) & known)


_LOAD_HELP = re.compile(r"--(gpu|identifier|context-length|yes)\b")  # a `load --help` we could read


def ttl_problem(models: list[str], caps: CliCapabilities) -> Problem:
    """The ``ttl_unsupported`` warning: ``models`` (names) declare ``ttl``, this `lms` has no
    ``load --ttl`` (before 0.3.9, facts §9), so they are loaded without it and stay loaded."""
    return Problem(
        "ttl_unsupported",
        f"this LM Studio's lms ({caps.cli_version or 'an older build'}) has no `load --ttl`: "
        f"{', '.join(models)} {'is' if len(models) == 1 else 'are'} loaded without the declared ttl "
        "and stay loaded until unloaded",
        "update LM Studio (0.3.9 or later), or remove ttl from these models",
        "warning",
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
