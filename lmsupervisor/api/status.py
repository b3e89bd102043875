"""Pure renderings of the status snapshot: Prometheus text and the `status` summary.

The snapshot itself is the dict of design §5, built by ``Supervisor.snapshot()``. This
module imports only the standard library: ``lmsupervisor status`` uses :func:`summary`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `status` must not pay for importing typing
if TYPE_CHECKING:
    from typing import Any

STATES = ("not_installed", "starting", "loading_models", "ready", "degraded", "backoff", "stopping", "stopped")


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(snap: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4 of a snapshot."""
    lines = [
        "# HELP lmsupervisor_ready 1 when LM Studio is ready with every declared model.",
        "# TYPE lmsupervisor_ready gauge",
        f"lmsupervisor_ready {int(bool(snap['ready']))}",
        "# HELP lmsupervisor_state 1 for the current supervisor state.",
        "# TYPE lmsupervisor_state gauge",
        *[f'lmsupervisor_state{{state="{s}"}} {int(snap["state"] == s)}' for s in STATES],
        "# HELP lmsupervisor_restarts_total Recoveries and requested restarts of LM Studio.",
        "# TYPE lmsupervisor_restarts_total counter",
        f"lmsupervisor_restarts_total {int(snap['restarts']['count'])}",
        "# HELP lmsupervisor_probe_failures Consecutive failed probes of LM Studio's server.",
        "# TYPE lmsupervisor_probe_failures gauge",
        f"lmsupervisor_probe_failures {int(snap['server']['consecutive_failures'])}",
    ]
    if snap["server"]["last_probe_ms"] is not None:
        lines += [
            "# HELP lmsupervisor_probe_latency_seconds Latency of the last greeting probe.",
            "# TYPE lmsupervisor_probe_latency_seconds gauge",
            f"lmsupervisor_probe_latency_seconds {snap['server']['last_probe_ms'] / 1000:.6f}",
        ]
    lines += [
        "# HELP lmsupervisor_model_loaded 1 when the declared model is loaded.",
        "# TYPE lmsupervisor_model_loaded gauge",
    ]
    for m in snap["models"]:
        lines.append(
            f'lmsupervisor_model_loaded{{key="{_label(m["key"])}",'
            f'identifier="{_label(m["identifier"] or "")}"}} {int(m["state"] == "loaded")}'
        )
    return "\n".join(lines) + "\n"


def summary(snap: dict[str, Any]) -> str:
    """The compact human summary `lmsupervisor status` prints."""
    server = snap["server"]
    lm = snap["lmstudio"]
    rows = [("state", f"{snap['state']} since {snap['since']}")]
    if snap["state"] == "backoff" and snap["restarts"]["next_attempt_at"]:
        rows[0] = (
            "state",
            f"backoff (attempt {snap['restarts'].get('attempt')}), next attempt at "
            f"{snap['restarts']['next_attempt_at']}",
        )
    probe = f", probe {server['last_probe_ms']:.1f} ms" if server["last_probe_ms"] is not None else ""
    rows.append(
        (
            "server",
            f"{server['api_endpoint']} {'running' if server['running'] else 'down'}"
            f"{probe}{', CORS on' if server['cors'] else ''}",
        )
    )
    rows.append(("daemon", f"PID {lm['daemon_pid']}" if lm["daemon_pid"] else "unknown"))
    for m in snap["models"]:
        name = m["key"] + (f" as {m['identifier']}" if m["identifier"] else "")
        rows.append(("model", f"{name}: {m['state']}" + (f" ({m['error']})" if m["error"] else "")))
    r = snap["restarts"]
    rows.append(("restarts", f"{r['count']}" + (f", last {r['last_at']}: {r['last_reason']}" if r["last_at"] else "")))
    if snap["supervisor"]["config_error"]:
        rows.append(("config", f"rejected, old config kept: {snap['supervisor']['config_error']}"))
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for p in snap["problems"]:
        out.append(f"problem  {p['code']}: {p['message']}\n         fix: {p['fix']}")
    return "\n".join(out)
