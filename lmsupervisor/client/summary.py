"""Pure rendering of the status snapshot for people: the `status` summary.

The snapshot itself is the dict of design §5, built by ``Supervisor.snapshot()``; its
Prometheus metrics are :mod:`lmsupervisor.statusd.metrics`. This module imports only the
standard library: ``lmsupervisor status`` uses :func:`summary`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `status` must not pay for importing typing
if TYPE_CHECKING:
    from typing import Any


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
