"""The status document of design §5 (``GET /v1/status``), rendered from a
:class:`~lmsupervisor.core.snapshot.Snapshot`. Pure."""

from __future__ import annotations

from typing import Any

from lmsupervisor.core.hardware import Hardware
from lmsupervisor.core.observed import base_url
from lmsupervisor.core.snapshot import LmStudioSeen, ModelStatus, Snapshot
from lmsupervisor.core.timefmt import iso


def render(
    snap: Snapshot, *, version: str, pid: int, config_path: str | None, proxy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The status document of design §5 (``GET /v1/status``); times as UTC ISO-8601.
    ``proxy`` is the holding proxy's part (design §9: ``listen``, ``held``, ``in_flight``),
    None when it is off."""
    lm, live, restarts = snap.lmstudio, snap.liveness, snap.restarts
    inst = lm.install
    server = lm.server
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
            "version": lm.lms_version,
            "cli_version": lm.capabilities.cli_version if lm.capabilities else None,
            "daemon_pid": lm.daemon.pid if lm.daemon else None,
            "local_service_enabled": inst.local_service_enabled if inst else None,
            "kind": inst.kind if inst else None,
            "capabilities": _capabilities(lm),
        },
        "server": {
            "running": live.running,
            "bind": server.bind,
            "port": server.port,
            "cors": server.cors,
            "api_endpoint": base_url(server.bind, server.port),
            "last_probe_ms": None if live.last_probe_ms is None else round(live.last_probe_ms, 3),
            "consecutive_failures": live.consecutive_failures,
        },
        "models": [
            {
                "key": m.key,
                "identifier": m.identifier,
                "state": m.state,
                "error": m.error,
                "last_answer_ms": m.last_answer_ms,
                "download": m.download.to_json() if m.download else None,
                "tokens_per_second": m.tokens_per_second,
                "baseline_tokens_per_second": _baseline(snap, m),
            }
            for m in snap.models
        ],
        "restarts": {
            "count": restarts.count,
            "last_reason": restarts.last_reason,
            "last_at": iso(restarts.last_at),
            "next_attempt_at": iso(restarts.next_attempt_at),
            "attempt": restarts.attempt,
        },
        "problems": [p.to_json() for p in snap.all_problems],
        "proxy": proxy,
        "hardware": _hardware(snap),
    }


def _baseline(snap: Snapshot, m: ModelStatus) -> float | None:
    """``models[].baseline_tokens_per_second`` (design §9): the model's baseline under this
    LM Studio and runtime, None before one (see :mod:`lmsupervisor.core.speed`)."""
    baseline = snap.baseline(m)
    return baseline.tokens_per_second if baseline is not None else None


def _hardware(snap: Snapshot) -> dict[str, Any] | None:
    """``hardware`` (design §9): this run's last survey, else the last good one remembered
    in the state folder; None before any, and where this `lms` has no `runtime survey`
    (nothing is gated there)."""
    caps = snap.lmstudio.capabilities
    hw: Hardware | None = snap.hardware.survey
    if hw is None and (caps is None or caps.survey):
        hw = snap.hardware.last_good
    return None if hw is None else hardware_json(hw)


def hardware_json(hw: Hardware) -> dict[str, Any]:
    """One survey as design §9 shows it: ``gpus[]`` (``name``, ``platform``,
    ``integration``, ``vram_bytes``), ``runtime`` (``name``, ``version``, ``engine``; None:
    no runtime), ``compatibility`` (``status``, ``message``), ``surveyed_at`` (UTC ISO-8601)."""
    return {
        "gpus": [
            {"name": g.name, "platform": g.platform, "integration": g.integration, "vram_bytes": g.vram_bytes}
            for g in hw.gpus
        ],
        "runtime": None
        if hw.runtime is None
        else {"name": hw.runtime.name, "version": hw.runtime.version, "engine": hw.runtime.engine},
        "compatibility": {"status": hw.compatibility.status, "message": hw.compatibility.message or None},
        "surveyed_at": iso(hw.surveyed_at),
    }


def _capabilities(lm: LmStudioSeen) -> dict[str, Any] | None:
    """``lmstudio.capabilities``: the `lms` binary's (facts §8), REST v1 and the install kind."""
    if lm.capabilities is None and lm.rest is None:
        return None
    caps = lm.capabilities.to_json() if lm.capabilities else {}
    caps.pop("cli_version", None)  # shown as lmstudio.cli_version
    return {
        **caps,
        "rest_v1": lm.rest,
        "rest_drift": lm.rest_drift,
        "install_kind": lm.install.kind if lm.install else None,
    }
