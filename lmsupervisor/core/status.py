"""The status document of design §5 (``GET /v1/status``), rendered from a
:class:`~lmsupervisor.core.snapshot.Snapshot`. Pure."""

from __future__ import annotations

from typing import Any

from lmsupervisor.core.observed import base_url
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.core.timefmt import iso


def render(
    snap: Snapshot, *, version: str, pid: int, config_path: str | None, proxy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The status document of design §5 (``GET /v1/status``); times as UTC ISO-8601.
    ``proxy`` is the holding proxy's part (design §9: ``listen``, ``held``, ``in_flight``),
    None when it is off."""
    inst = snap.install
    server = snap.server
    return {
        "state": snap.state.value,
        "ready": snap.ready,
        "since": iso(snap.since),
        "supervisor": {
            "version": version,
            "pid": pid,
            "started_at": iso(snap.started_at),
            "config_path": config_path,
            "config_error": snap.config_error,
        },
        "lmstudio": {
            "installed": bool(inst and inst.installed),
            "bootstrapped": bool(inst and inst.bootstrapped),
            "home": str(inst.home) if inst else None,
            "lms": str(inst.lms) if inst and inst.lms else None,
            "version": snap.lms_version,
            "cli_version": snap.capabilities.cli_version if snap.capabilities else None,
            "daemon_pid": snap.daemon.pid if snap.daemon else None,
            "local_service_enabled": inst.local_service_enabled if inst else None,
            "kind": inst.kind if inst else None,
            "capabilities": _capabilities(snap),
        },
        "server": {
            "running": snap.server_running,
            "bind": server.bind,
            "port": server.port,
            "cors": server.cors,
            "api_endpoint": base_url(server.bind, server.port),
            "last_probe_ms": None if snap.last_probe_ms is None else round(snap.last_probe_ms, 3),
            "consecutive_failures": snap.consecutive_failures,
        },
        "models": [
            {
                "key": m.key,
                "identifier": m.identifier,
                "state": m.state,
                "error": m.error,
                "last_answer_ms": m.last_answer_ms,
                "download": m.download.to_json() if m.download else None,
            }
            for m in snap.models
        ],
        "restarts": {
            "count": snap.restart_count,
            "last_reason": snap.last_restart_reason,
            "last_at": iso(snap.last_restart_at),
            "next_attempt_at": iso(snap.next_attempt_at),
            "attempt": snap.attempt,
        },
        "problems": [p.to_json() for p in snap.all_problems],
        "proxy": proxy,
    }


def _capabilities(snap: Snapshot) -> dict[str, Any] | None:
    """``lmstudio.capabilities``: the `lms` binary's (facts §8), REST v1 and the install kind."""
    if snap.capabilities is None and snap.rest is None:
        return None
    caps = snap.capabilities.to_json() if snap.capabilities else {}
    caps.pop("cli_version", None)  # shown as lmstudio.cli_version
    return {
        **caps,
        "rest_v1": snap.rest,
        "rest_drift": snap.rest_drift,
        "install_kind": snap.install.kind if snap.install else None,
    }
