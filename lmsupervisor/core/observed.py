"""What the supervisor observes of LM Studio, as plain frozen data (no I/O).

The shapes come from `lms ps --json`, `lms ls --json`, `lms daemon status --json` and
`lms server status --json` (lmstudio-facts.md §3); :mod:`lmsupervisor.lmstudio.lms`
parses them, the core plans with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lmsupervisor.config import server_address
from lmsupervisor.core.problems import Problem, address_problem

# LM Studio's defaults ([docs] headless.md): port 1234, bind 127.0.0.1, CORS off, JIT on.
DEFAULT_PORT = 1234
DEFAULT_BIND = "127.0.0.1"


@dataclass(frozen=True)
class LoadedModel:
    """One instance from `lms ps --json` (facts §3 ``ps --json`` line).

    ``device`` is its ``deviceIdentifier``: None for this machine, else the LM Link device
    that holds it (facts §9; such an instance is not loaded *here*). ``lm_link`` is True
    when the entry carries the key at all: this `lms` is an LM Link build with ``--local``.
    """

    identifier: str
    model_key: str
    path: str
    type: str
    status: str
    context_length: int | None
    ttl_ms: int | None
    size_bytes: int
    device: str | None = None
    lm_link: bool = False


@dataclass(frozen=True)
class DownloadedModel:
    """One model from `lms ls --json` (``ModelInfo``); ``device`` and ``lm_link`` as in
    :class:`LoadedModel` (a model on a linked device is not on this machine, facts §9)."""

    model_key: str
    path: str
    type: str
    size_bytes: int
    display_name: str
    device: str | None = None
    lm_link: bool = False


@dataclass(frozen=True)
class DaemonStatus:
    """`lms daemon status --json`: ``{"status":"running","pid","isDaemon"}`` or
    ``{"status":"not-running"}``. ``supported`` is False for an `lms` without the
    ``daemon`` command (LM Studio 0.3.x, before 2025-11)."""

    running: bool
    pid: int | None = None
    is_daemon: bool | None = None
    supported: bool = True
    version: str | None = None  # `daemon up --json` only: the app/llmster version


@dataclass(frozen=True)
class ServerStatus:
    """`lms server status --json`: ``{"running":bool,"port":int}``; ``{"running":false}``
    when LM Studio has no server config yet. Always exit 0, so only the JSON counts."""

    running: bool
    port: int | None


@dataclass(frozen=True)
class ServerSettings:
    """LM Studio's HTTP server settings from ``.internal/http-server-config.json`` (§2).

    ``found`` is False when the file is missing or corrupt; the values are then LM
    Studio's defaults. ``jit`` and ``auto_start`` are None when the key is absent.
    """

    port: int = DEFAULT_PORT
    bind: str = DEFAULT_BIND
    cors: bool = False
    jit: bool | None = None
    auto_start: bool | None = None
    found: bool = False


@dataclass(frozen=True)
class Install:
    """What :func:`detect` found. Paths are absolute; ``None`` means not found.

    ``kind`` is ``"llmster"`` (0.4 headless daemon), ``"app"`` (the GUI app, headless via
    ``--run-as-service``) or ``None``. ``api_server`` is ``.internal/http-server.json``
    ``{"host","pid","port"}`` (2026+), a hint that may name a dead PID.
    """

    home: Path
    home_source: str
    home_exists: bool
    lms: Path | None
    lms_source: str | None
    bootstrapped: bool
    kind: str | None
    service_path: Path | None
    server: ServerSettings
    local_service_enabled: bool | None
    api_server: dict[str, Any] | None
    problems: tuple[Problem, ...]

    @property
    def installed(self) -> bool:
        """True when the LM Studio home exists and `lms` or a service (app or llmster) was found."""
        return self.home_exists and (self.lms is not None or self.kind is not None)

    def to_json(self) -> dict[str, Any]:
        """The install as JSON for ``doctor --json``: paths as strings, None when not found.

        Keys: ``installed``, ``bootstrapped``, ``home``, ``home_source``, ``lms``, ``kind``,
        ``service_path``, ``local_service_enabled``.
        """
        return {
            "installed": self.installed,
            "bootstrapped": self.bootstrapped,
            "home": str(self.home),
            "home_source": self.home_source,
            "lms": str(self.lms) if self.lms else None,
            "kind": self.kind,
            "service_path": str(self.service_path) if self.service_path else None,
            "local_service_enabled": self.local_service_enabled,
        }


def effective_server(bind: str | None, port: int | None, cors: bool | None, found: ServerSettings) -> ServerSettings:
    """The server settings to run with: the declared ones, else LM Studio's own
    ``http-server-config.json`` (``found``), else LM Studio's defaults (design §4).

    This is what keeps a restart from resetting the user's CORS/LAN choice (BT#1334).
    """
    return ServerSettings(
        port=port if port is not None else found.port,
        bind=bind if bind is not None else found.bind,
        cors=cors if cors is not None else found.cors,
        jit=found.jit,
        auto_start=found.auto_start,
        found=found.found,
    )


def usable_server(server: ServerSettings, install: Install, declarable: bool = True) -> ServerSettings | Problem:
    """``server`` (the settings in force, :func:`effective_server`) with its bind spelled
    as :func:`~lmsupervisor.config.server_address` returns it (``[::1]`` becomes ``::1``),
    ready for :func:`base_url`; or, when that bind is no address LM Studio's server can
    bind, ``server_address_invalid`` (:func:`~lmsupervisor.core.problems.address_problem`,
    for ``install``; ``declarable``: whether declaring ``[server] bind`` would fix it): such
    a server cannot be reached, and is not started."""
    bind = server_address(server.bind)
    if bind is None:
        return address_problem(install.home, server.bind, declarable=declarable)
    return replace(server, bind=bind)


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe. ``latency_ms`` is wall milliseconds; ``error`` is a
    one-line reason when ``ok`` is False (refused, timed out, wrong body); ``tokens`` the
    completion tokens an answer probe's reply counted (``usage.completion_tokens``; None:
    not told, or not an answer probe)."""

    ok: bool
    latency_ms: float
    status: int | None = None
    error: str | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class DaemonProcess:
    """LM Studio's daemon (llmster) or app process, pinned by PID *and* create time.

    The PID comes only from LM Studio's own sources (`lms daemon status --json`,
    ``.internal/http-server.json``). ``verified`` is True when the process's executable or
    command line names the detected install's service path: only a verified process is
    ever signalled, and only while its create time (seconds since the epoch, from psutil)
    still matches, so a recycled PID is never touched. ``is_daemon`` is LM Studio's
    ``isDaemon`` (False: the GUI app holds the service).
    """

    pid: int
    create_time: float
    verified: bool
    is_daemon: bool | None = None


def base_url(bind: str, port: int) -> str:
    """The URL to reach a server bound to ``bind``: a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(bind, bind)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class DownloadProgress:
    """A REST v1 download job (``/api/v1/models/download/status/:job_id``, facts §4).

    ``bytes`` and ``total`` are bytes, ``rate`` bytes per second and ``eta`` the
    estimated completion as LM Studio writes it (ISO-8601), None when not given.
    """

    job_id: str | None
    status: str
    bytes: int = 0
    total: int | None = None
    rate: float | None = None
    eta: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"job_id", "status", "bytes", "total", "rate", "eta"}`` (``models[].download``)."""
        return asdict(self)
