"""``GET /healthz`` (design §9): the one thing the proxy and metrics ports say about the
supervisor without a token, for Docker, Kubernetes and uptime monitors."""

from __future__ import annotations

from typing import Any

from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.proxy.hold import view_of


def healthz(snap: Snapshot) -> tuple[int, dict[str, Any]]:
    """``(200, {"ready": true, "state": "ready"})`` when ready, else ``(503, {"ready":
    false, "state": ...})`` with the supervisor's state (design §5)."""
    view = view_of(snap)
    return (200 if view.ready else 503), {"ready": view.ready, "state": view.state}
