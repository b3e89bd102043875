"""The running supervisor, as the native host sees it: its status socket and its snapshot.

The host never drives LM Studio behind a running supervisor's back: it reads the snapshot
(``GET /v1/status``, design §5) and asks for ``POST /v1/restart``, nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from lmsupervisor.errors import NativeHostError, StatusSocketError

SUPERVISOR_TIMEOUT = 2.0  # seconds for one status-socket request
UP_STATES = frozenset({"ready", "degraded"})  # server healthy (degraded: a declared model failed)
GONE_STATES = frozenset({"stopping", "stopped"})  # the supervisor is leaving: it no longer restarts anything


class SupervisorLink(Protocol):
    """What the host asks of a running supervisor (a fake implements it in tests)."""

    socket: str

    async def status(self) -> dict[str, Any] | None:
        """The snapshot (design §5), or None when no supervisor answers."""
        ...

    async def restart(self) -> None:
        """``POST /v1/restart``; raises :class:`NativeHostError` if refused."""
        ...


class SocketSupervisor:
    """The supervisor behind the status socket ``socket``, through :mod:`lmsupervisor.client`."""

    def __init__(self, socket: str, timeout: float = SUPERVISOR_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout

    async def _request(self, method: str, target: str) -> tuple[int, Any]:
        from lmsupervisor.client.sync import request  # noqa: PLC0415 - only when a supervisor is asked

        return await asyncio.to_thread(request, self.socket, method, target, self.timeout)

    async def status(self) -> dict[str, Any] | None:
        """``GET /v1/status`` within ``timeout`` seconds: the snapshot (design §5).

        None when nobody answers on the socket, it answers badly, or with a status other
        than 200; never raises for that.
        """
        try:
            code, body = await self._request("GET", "/v1/status")
        except StatusSocketError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    async def restart(self) -> None:
        """``POST /v1/restart`` within ``timeout`` seconds; the supervisor answers 202.

        Raises :class:`NativeHostError` with code ``unreachable`` when the socket does not
        answer, ``supervised`` when it answers anything but 202.
        """
        try:
            code, body = await self._request("POST", "/v1/restart")
        except StatusSocketError as exc:
            raise NativeHostError(f"the supervisor did not take the restart: {exc}", code="unreachable") from exc
        if code != 202:
            reason = body.get("error") if isinstance(body, dict) else None
            raise NativeHostError(f"the supervisor refused the restart ({code}: {reason})", code="supervised")


def supervisor_view(socket: str, snap: Mapping[str, Any] | None) -> dict[str, Any]:
    """The supervisor part of ``check_lmstudio``: whether it runs, and its state."""
    if snap is None:
        return {"running": False, "socket": socket}
    sup = snap.get("supervisor")
    sup = sup if isinstance(sup, dict) else {}
    return {
        "running": snap.get("state") not in GONE_STATES,
        "socket": socket,
        "state": snap.get("state"),
        "ready": snap.get("ready"),
        "since": snap.get("since"),
        "pid": sup.get("pid"),
        "version": sup.get("version"),
        "models": snap.get("models", []),
        "restarts": snap.get("restarts"),
        "problems": snap.get("problems", []),
    }
