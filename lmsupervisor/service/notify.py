"""sd_notify(3) without libsystemd, and what lmsupervisor tells systemd, when.

Three layers, each testable alone:

- :class:`Notifier` sends ``KEY=VALUE`` lines, one datagram per call, to ``$NOTIFY_SOCKET``
  (``AF_UNIX``/``SOCK_DGRAM``; a leading ``@`` means the abstract namespace). Without
  ``NOTIFY_SOCKET`` it is a no-op, so ``run`` behaves the same outside systemd.
- :func:`on_event`, :func:`on_reload` and :func:`heartbeat` are pure: they map a supervisor
  event (``sup.subscribe()``), a SIGHUP or a heartbeat tick to the lines to send.
- :class:`ServiceNotifier` is the runner: it follows the supervisor's events and ticks a
  heartbeat from the event loop itself, so a blocked loop stops the ``WATCHDOG=1`` pings
  and systemd kills and restarts us (``WatchdogSec=``, service-facts.md).

What is sent (design §8): ``READY=1`` once the status socket serves and the first
reconcile ran (the first state event in :data:`FIRST_RECONCILE`); ``STATUS=`` with one line
on every state change; ``WATCHDOG=1`` at half of ``WATCHDOG_USEC``; ``EXTEND_TIMEOUT_USEC=``
with every tick until ``READY=1`` (a first bring-up that loads large models may outlast
``TimeoutStartSec=`` while the loop is alive; a hung loop stops extending it);
``RELOADING=1`` + ``MONOTONIC_USEC=`` on SIGHUP, then ``READY=1`` when the ``config`` event
says the reload was applied or rejected; ``STOPPING=1`` at shutdown. ``MAINPID=`` is never
sent: the supervisor is the main process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from lmsupervisor.clock import Clock
from lmsupervisor.platform import current as this_os

FIRST_RECONCILE = frozenset({"ready", "degraded", "backoff", "not_installed"})
NO_WATCHDOG_PERIOD = 10.0  # seconds between heartbeat ticks when systemd asked for no watchdog
EXTEND_FACTOR = 3  # each start-up extension covers this many heartbeat periods
MAX_STATUS = 200  # characters of a STATUS= line (systemctl shows one line)
ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

log = structlog.get_logger("lmsupervisor")


def socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value: a path, or ``\\0name`` for
    ``@name`` (abstract namespace); None for anything else (relative paths are refused
    like libsystemd does)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends sd_notify datagrams; every method is a no-op when ``address`` is None.

    ``address`` is a filesystem path or ``\\0name``; ``watchdog_usec`` the watchdog
    interval systemd asked for (microseconds), None without a watchdog. Sending never
    raises: a failed notification is logged (``sd_notify_failed``) and supervision goes on.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], pid: int | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and remove them
        from ``environ``, so children (``lms daemon up`` and LM Studio) never inherit them.

        The watchdog counts only when ``WATCHDOG_PID`` is unset or ``pid`` (default: ours),
        as ``sd_watchdog_enabled(3)`` decides."""
        values = {k: environ.pop(k, "") for k in ENV_KEYS}
        address = socket_address(values["NOTIFY_SOCKET"]) if values["NOTIFY_SOCKET"] else None
        if values["NOTIFY_SOCKET"] and address is None:
            log.warning("notify_socket_ignored", value=values["NOTIFY_SOCKET"], expected="an absolute path or @name")
        watchdog: int | None = None
        pid = os.getpid() if pid is None else pid
        ours = not values["WATCHDOG_PID"] or values["WATCHDOG_PID"] == str(pid)
        if ours and values["WATCHDOG_USEC"].isdigit() and int(values["WATCHDOG_USEC"]) > 0:
            watchdog = int(values["WATCHDOG_USEC"])
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        """True when ``NOTIFY_SOCKET`` gave an address, so datagrams are sent."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE``) as one datagram; True when it was sent."""
        if self.address is None or not lines:
            return False
        try:
            if self._sock is None:
                # not inherited by LM Studio's processes: Python makes every socket so (PEP 446),
                # without the Linux-only SOCK_CLOEXEC flag that macOS' socket module lacks
                self._sock = this_os().unix_socket(socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # a full queue drops one ping, never blocks the loop
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), lines=[line.split("=", 1)[0] for line in lines])
            return False
        return True

    def close(self) -> None:
        """Close the datagram socket, if one was opened; :meth:`send` opens a new one when needed."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# -- pure: what to send -----------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """What systemd has been told so far."""

    started: bool = False  # READY=1 sent after the first reconcile
    reloading: bool = False  # RELOADING=1 sent, READY=1 not yet
    stopping: bool = False  # STOPPING=1 sent


def status_line(state: str, snap: dict[str, Any], reason: str | None = None) -> str:
    """One line for ``STATUS=``: ``ready: 2/2 models, http://127.0.0.1:1234``, then
    ``reason`` in parentheses when given. Newlines are flattened (one datagram holds
    newline-separated fields) and the line is cut at :data:`MAX_STATUS` characters."""
    models = snap.get("models") or []
    loaded = sum(1 for m in models if m.get("state") == "loaded")
    endpoint = (snap.get("server") or {}).get("api_endpoint") or "no server"
    line = f"{state}: {loaded}/{len(models)} models, {endpoint}"
    if reason:
        line += f" ({reason})"
    line = " ".join(line.split())
    return line if len(line) <= MAX_STATUS else line[: MAX_STATUS - 1] + "…"


def on_event(p: Progress, event: dict[str, Any], snap: dict[str, Any]) -> tuple[Progress, list[str]]:
    """The lines for one supervisor event (shapes of ``Supervisor.subscribe()``)."""
    kind = event.get("type")
    if kind == "state":
        state = str(event.get("state"))
        reason = None if state in ("ready", "stopped") else event.get("reason")
        lines = [f"STATUS={status_line(state, snap, reason)}"]
        if state in ("stopping", "stopped"):
            if not p.stopping:
                return replace(p, stopping=True), ["STOPPING=1", *lines]
            return p, lines
        if not p.started and state in FIRST_RECONCILE:
            return replace(p, started=True), ["READY=1", *lines]
        return p, lines
    if kind == "config" and p.reloading:
        state = str(snap.get("state"))
        reason = f"config rejected: {event['error']}" if event.get("error") else None
        return replace(p, reloading=False), ["READY=1", f"STATUS={status_line(state, snap, reason)}"]
    return p, []


def on_reload(p: Progress, monotonic_usec: int) -> tuple[Progress, list[str]]:
    """SIGHUP: ``RELOADING=1`` with ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, microseconds).

    Nothing before ``READY=1`` or after ``STOPPING=1``: systemd only reloads a running unit."""
    if not p.started or p.stopping:
        return p, []
    return replace(p, reloading=True), [
        "RELOADING=1",
        f"MONOTONIC_USEC={monotonic_usec}",
        "STATUS=reloading the configuration",
    ]


def heartbeat(p: Progress, watchdog: bool, period: float) -> list[str]:
    """The lines of one heartbeat tick, ``period`` seconds apart."""
    lines = ["WATCHDOG=1"] if watchdog else []
    if (not p.started or p.reloading) and not p.stopping:
        lines.append(f"EXTEND_TIMEOUT_USEC={int(period * EXTEND_FACTOR * 1_000_000)}")
    return lines


def heartbeat_period(watchdog_usec: int | None) -> float:
    """Seconds between ticks: half the watchdog interval (sd_watchdog_enabled(3)), else
    :data:`NO_WATCHDOG_PERIOD`."""
    return watchdog_usec / 2_000_000 if watchdog_usec else NO_WATCHDOG_PERIOD


# -- the runner -------------------------------------------------------------------------
class Observed(Protocol):
    """What the runner needs of :class:`lmsupervisor.supervisor.Supervisor`."""

    def snapshot(self) -> dict[str, Any]:
        """The status snapshot (design §5 shape), read for each ``STATUS=`` line."""
        ...


class ServiceNotifier:
    """Tells systemd about a supervisor: :meth:`follow` its events, :meth:`beat` from the
    event loop, :meth:`reloading` from the SIGHUP handler. A no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, notifier: Notifier, clock: Clock) -> None:
        self.notifier = notifier
        self.clock = clock
        self.progress = Progress()

    def _send(self, lines: list[str]) -> None:
        if lines:
            self.notifier.send(*lines)

    def handle(self, event: dict[str, Any], sup: Observed) -> None:
        """Apply one event (synchronously: tests call it directly)."""
        self.progress, lines = on_event(self.progress, event, sup.snapshot())
        self._send(lines)
        if lines and lines[0] == "READY=1" and event.get("type") == "state":
            log.info("service_ready_notified", state=event.get("state"))

    async def follow(self, sup: Observed, events: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Consume ``events`` (from ``sup.subscribe()``, taken before ``sup.run()`` starts,
        so the first state change is not missed) until the ``None`` of shutdown."""
        while (event := await events.get()) is not None:
            self.handle(event, sup)

    def reloading(self) -> None:
        """Call from the SIGHUP handler, before posting ``reload``."""
        usec = int(self.clock.monotonic() * 1_000_000)
        self.progress, lines = on_reload(self.progress, usec)
        self._send(lines)

    async def beat(self) -> None:
        """Tick forever at :func:`heartbeat_period`; runs on the event loop, so it stops
        when the loop is blocked. Returns at once when not under systemd."""
        if not self.notifier.enabled:
            return
        period = heartbeat_period(self.notifier.watchdog_usec)
        watchdog = self.notifier.watchdog_usec is not None
        while True:
            self._send(heartbeat(self.progress, watchdog, period))
            await self.clock.sleep(period)

    async def run(self, sup: Observed, events: asyncio.Queue[dict[str, Any] | None]) -> None:
        """:meth:`follow` and :meth:`beat` together; returns once the events end."""
        beating = asyncio.create_task(self.beat())
        try:
            await self.follow(sup, events)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            self.notifier.close()
