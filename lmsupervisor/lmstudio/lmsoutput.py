"""What `lms` prints, parsed: pure functions from its stdout and stderr to the supervisor's
values (facts §3, §8, §9), with no process and no I/O (the runner is :mod:`lmsupervisor.lmstudio.lms`).

JSON comes from ``--json`` commands on stdout (:func:`parse_json`, then :func:`parse_ps`,
:func:`parse_ls`, :func:`parse_daemon_status`, :func:`parse_server_status`); LM Studio's own
message comes from the logger text on stderr (:func:`error_line`). Output that is not the
documented shape is :class:`~lmsupervisor.errors.LmsOutputError`, naming the command.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lmsupervisor.core.observed import DaemonStatus, DownloadedModel, LoadedModel, ServerStatus
from lmsupervisor.errors import LmsOutputError

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
ERROR_MAX = 500  # characters of LM Studio's message kept in the status


AUTH_FAILED = "Failed to authenticate:"  # BT#1566: printed before `Error: WebSocket connection closed`
# HEAD's friendlyErrorDeserializer: a heading, alone on its line or (the real 07b7252 CLI's
# `(!) SUGGESTION <text>`) followed by the block's first text on the same line
_TITLED_BLOCK = re.compile(r"^\(([!X])\) (SUGGESTION|CAUSE)(?:\s+(.*))?$")


def error_line(stderr: str) -> str:
    """LM Studio's own message from stderr, on one line, capped at :data:`ERROR_MAX` characters.

    ANSI codes are stripped and ``at ...`` stack frames dropped. Which part is the message
    depends on the shape (facts §8, §9):

    - an authentication failure (``... Failed to authenticate: Invalid passkey for lms CLI
      client`` on an earlier line, then ``Error: WebSocket connection closed``): from
      ``Failed to authenticate:`` on;
    - HEAD's titled load failure (``Error: <title>``, then ``(!) SUGGESTION`` and ``(X)
      CAUSE`` blocks): ``<title>: <cause> (suggestion: <suggestion>)``;
    - the SDK stack of shipped builds: the cause after the last ``- Caused By:``;
    - otherwise everything from the first ``Error: `` line on, without that prefix.
    """
    text = _ANSI.sub("", stderr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    auth = next((ln[ln.index(AUTH_FAILED) :] for ln in lines if AUTH_FAILED in ln), None)
    if auth is not None:
        lines = [auth]
    elif any(_TITLED_BLOCK.match(ln) for ln in lines):
        lines = [_titled(lines)]
    caused = [i for i, ln in enumerate(lines) if ln.startswith("- Caused By:")]
    if caused:
        lines = [lines[caused[-1]][len("- Caused By:") :].strip(), *lines[caused[-1] + 1 :]]
        lines = [ln for ln in lines if not ln.startswith("- ")]
    for i, line in enumerate(lines):
        if line.startswith("Error: "):
            lines = [line[len("Error: ") :], *lines[i + 1 :]]
            break
    one = re.sub(r"\s+", " ", " ".join(lines)).strip()
    return one if len(one) <= ERROR_MAX else one[: ERROR_MAX - 1] + "\u2026"


def _titled(lines: list[str]) -> str:
    """``<title>: <cause> (suggestion: <suggestion>)`` from HEAD's titled error blocks."""
    head: list[str] = []
    blocks: dict[str, list[str]] = {}
    current = head
    for line in lines:
        m = _TITLED_BLOCK.match(line)
        if m:
            current = blocks.setdefault(m[2], [])
            if m[3]:
                current.append(m[3])
        else:
            current.append(line)
    title = " ".join(head)
    title = title[len("Error: ") :] if title.startswith("Error: ") else title
    title = title.rstrip(".")  # `Failed to load model "x".` reads `Failed to load model "x": <cause>`
    cause, suggestion = " ".join(blocks.get("CAUSE", [])), " ".join(blocks.get("SUGGESTION", []))
    one = f"{title}: {cause}" if cause else title
    return f"{one} (suggestion: {suggestion})" if suggestion else one


NO_SUCH_COMMAND = ("unknown command", "Not a valid subcommand")  # Commander / cmd-ts (facts §8)
DAEMON_NOT_RUNNING = "Daemon is not running."  # `lms daemon down` with nothing to stop, exit 1 (facts §9)


def no_such_command(stderr: str) -> bool:
    """True when `lms` rejected the command itself (an `lms` without ``daemon``, 0.3.x)."""
    return any(marker in stderr for marker in NO_SUCH_COMMAND)


def parse_json(stdout: str, argv: Sequence[str]) -> Any:
    """The JSON value `lms` printed: the whole stdout, else its last line that parses."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    raise LmsOutputError(
        f"`{' '.join(argv)}` printed no JSON: {text[:200]!r}",
        list(argv),
        hint="check that this lms is LM Studio's CLI (`lms -v`)",
    )


def _field(item: Mapping[str, Any], name: str, kind: type, argv: Sequence[str]) -> Any:
    value = item.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise LmsOutputError(
            f"`{' '.join(argv)}`: item field {name!r}: expected {kind.__name__}, got {value!r}", list(argv)
        )
    return value


def _str_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _objects(data: Any, argv: Sequence[str]) -> list[dict[str, Any]]:
    """``data`` as a JSON array of objects (what `ps --json` and `ls --json` print)."""
    if not isinstance(data, list):
        raise LmsOutputError(f"`{' '.join(argv)}`: expected a JSON array, got {type(data).__name__}", list(argv))
    if not all(isinstance(item, dict) for item in data):
        raise LmsOutputError(f"`{' '.join(argv)}`: expected objects in the array", list(argv))
    return data


def _device(item: Mapping[str, Any]) -> dict[str, Any]:
    """``device`` (``deviceIdentifier``, None for this machine) and ``lm_link`` (the key is
    there: an LM Link build, which has the hidden ``load --local``), facts §9."""
    device = item.get("deviceIdentifier")
    return {"device": device if isinstance(device, str) else None, "lm_link": "deviceIdentifier" in item}


def parse_ps(data: Any, argv: Sequence[str] = ("lms", "ps", "--json")) -> list[LoadedModel]:
    """Parse `lms ps --json` output (a JSON array); raises :class:`LmsOutputError`.

    Both shapes of facts §8: instance info with ``modelKey`` (≈0.3.11+), and the older
    ``{identifier, path}`` items, whose model key is then taken to be the path. Instances
    on LM Link devices are kept, with their ``device`` (facts §9).
    """
    out = []
    for item in _objects(data, argv):
        if "modelKey" not in item and isinstance(item.get("path"), str):  # before ≈0.3.11: {identifier, path}
            key = item["path"]
        else:
            key = _field(item, "modelKey", str, argv)
        out.append(
            LoadedModel(
                identifier=_field(item, "identifier", str, argv),
                model_key=key,
                path=_str_or(item.get("path"), key),
                type=str(item.get("type", "llm")),
                status=str(item.get("status", "idle")),
                context_length=_opt_int(item.get("contextLength")),
                ttl_ms=_opt_int(item.get("ttlMs")),
                size_bytes=_opt_int(item.get("sizeBytes")) or 0,
                **_device(item),
            )
        )
    return out


def parse_ls(data: Any, argv: Sequence[str] = ("lms", "ls", "--json")) -> list[DownloadedModel]:
    """Parse `lms ls --json` output; raises :class:`LmsOutputError`. Items without
    ``modelKey`` (before 2025-01-28, facts §8) are keyed by their ``path``; models on LM
    Link devices are kept, with their ``device`` (facts §9)."""
    out = []
    for item in _objects(data, argv):
        if "modelKey" not in item and isinstance(item.get("path"), str):  # before [js] 52ff1cbe (2025-01)
            key = item["path"]
        else:
            key = _field(item, "modelKey", str, argv)
        out.append(
            DownloadedModel(
                model_key=key,
                path=_str_or(item.get("path"), key),
                type=str(item.get("type", "llm")),
                size_bytes=_opt_int(item.get("sizeBytes")) or 0,
                display_name=str(item.get("displayName") or key),
                **_device(item),
            )
        )
    return out


def parse_daemon_status(data: Any, argv: Sequence[str]) -> DaemonStatus:
    """Parse the JSON of `lms daemon status --json` or `lms daemon up --json` (facts §3).

    ``{"status":"running","pid":n,"isDaemon":bool}`` gives a running :class:`DaemonStatus`,
    any other ``status`` (``"not-running"``) a stopped one; a missing or odd ``pid`` or
    ``isDaemon`` becomes None. Raises :class:`LmsOutputError` (naming ``argv``) when
    ``data`` is not an object with a string ``status``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise LmsOutputError(f'`{" ".join(argv)}`: expected {{"status": ...}}, got {data!r}', list(argv))
    if data["status"] != "running":
        return DaemonStatus(running=False)
    is_daemon = data.get("isDaemon")
    version = data.get("version")  # `daemon up --json` only: the app/llmster version (facts §8)
    return DaemonStatus(
        True,
        _opt_int(data.get("pid")),
        is_daemon if isinstance(is_daemon, bool) else None,
        version=version if isinstance(version, str) else None,
    )


def parse_server_status(data: Any, argv: Sequence[str]) -> ServerStatus:
    """Parse the JSON of `lms server status --json` (facts §3): ``{"running":bool,"port":int}``.

    ``port`` is None when absent (``{"running":false}`` before LM Studio has a server
    config). Raises :class:`LmsOutputError` (naming ``argv``) when ``running`` is not a bool.
    """
    if not isinstance(data, dict) or not isinstance(data.get("running"), bool):
        raise LmsOutputError(f'`{" ".join(argv)}`: expected {{"running": bool}}, got {data!r}', list(argv))
    return ServerStatus(data["running"], _opt_int(data.get("port")))
