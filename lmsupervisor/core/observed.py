"""What the supervisor observes of LM Studio, as plain frozen data (no I/O).

The shapes come from `lms ps --json`, `lms ls --json`, `lms daemon status --json` and
`lms server status --json` (lmstudio-facts.md §3); :mod:`lmsupervisor.lmstudio.lms`
parses them, the core plans with them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadedModel:
    """One instance from `lms ps --json` (facts §3 ``ps --json`` line)."""

    identifier: str
    model_key: str
    path: str
    type: str
    status: str
    context_length: int | None
    ttl_ms: int | None
    size_bytes: int


@dataclass(frozen=True)
class DownloadedModel:
    """One model from `lms ls --json` (``ModelInfo``)."""

    model_key: str
    path: str
    type: str
    size_bytes: int
    display_name: str


@dataclass(frozen=True)
class DaemonStatus:
    """`lms daemon status --json`: ``{"status":"running","pid","isDaemon"}`` or
    ``{"status":"not-running"}``. ``supported`` is False for an `lms` without the
    ``daemon`` command (LM Studio 0.3.x, before 2025-11)."""

    running: bool
    pid: int | None = None
    is_daemon: bool | None = None
    supported: bool = True


@dataclass(frozen=True)
class ServerStatus:
    """`lms server status --json`: ``{"running":bool,"port":int}``; ``{"running":false}``
    when LM Studio has no server config yet. Always exit 0, so only the JSON counts."""

    running: bool
    port: int | None
