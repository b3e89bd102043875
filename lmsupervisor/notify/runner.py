"""The notifier: follows the supervisor's events, judges (:mod:`~lmsupervisor.notify.incidents`)
and queues alerts on each receiver (:mod:`~lmsupervisor.notify.delivery`).

It reads the supervisor only through its event hub (``sup.subscribe()``), its status
document and its config, and answers only with :class:`~lmsupervisor.core.messages.Noted`
(``notify_failing`` while a receiver fails, cleared once every receiver delivers again):
the supervisor never waits for it. It judges at each event and, while an incident is
pending (a condition not yet held ``after`` seconds, an end not yet confirmed, a restart
still in the ``restarts_climbing`` window), at the next deadline on the clock; with
nothing pending it only waits for the next event.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import Config, NotifyConfig
from lmsupervisor.core.messages import Noted
from lmsupervisor.core.problems import NOTIFY_FAILING, notify_failing_problem
from lmsupervisor.errors import NotifyError
from lmsupervisor.notify.delivery import Receiver, deliver, label, resolve_url
from lmsupervisor.notify.incidents import Alert, History, Track, conditions, remember, step

log = structlog.get_logger("lmsupervisor.notify")


class Watched(Protocol):
    """What the notifier needs of :class:`lmsupervisor.supervisor.Supervisor`."""

    @property
    def config(self) -> Config:
        """The config in force (its ``notify`` targets)."""

    def snapshot(self) -> dict[str, Any]:
        """The status document of design §5."""

    def send(self, msg: Noted) -> None:
        """Enqueue a message for the reducer."""


@dataclass
class _Target:
    receiver: Receiver
    tracks: dict[str, Track] = field(default_factory=dict)


class Notifications:
    """Notifications for one supervisor: :meth:`run` with a queue from ``sup.subscribe()``
    (taken before ``sup.run()``), :meth:`aclose` at shutdown.

    ``transport`` replaces httpx's network (tests); ``count(kind, result)`` counts each
    try (``ok``, ``failed``) and each alert dropped from a full queue (``dropped``);
    ``host`` names this machine in every message (default: its host name).
    """

    def __init__(
        self,
        sup: Watched,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        count: Callable[[str, str], None] | None = None,
        host: str | None = None,
    ) -> None:
        self.sup = sup
        self.clock = clock
        self.client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self.count = count or (lambda kind, result: None)
        self.host = host or socket.gethostname()
        self.history = History()
        self.targets: dict[NotifyConfig, _Target] = {}
        self.failing: dict[Receiver, str] = {}  # receiver -> its last error
        self.deadline: float | None = None  # monotonic seconds of the next judgement (None: none pending)
        self.sent: list[Alert] = []  # every alert queued, in order (tests, the log)
        self._stopping: set[asyncio.Task[None]] = set()  # receivers a reload removed, still stopping

    async def run(self, events: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Judge now, then at every event and deadline, until the ``None`` of shutdown."""
        self._configure(self.sup.config.notify)
        self.judge()
        while True:
            try:
                if self.deadline is None:
                    event = await events.get()
                else:
                    event = await within(self.clock, events.get(), self.deadline - self.clock.monotonic())
            except TimeoutError:
                event = {}
            if event is None:
                return
            try:
                if event.get("type") == "config":
                    self._configure(self.sup.config.notify)
                self.judge()
            except Exception:  # a bug here must never end notifications, let alone supervision
                log.exception("notify_crashed")

    def judge(self) -> None:
        """Read the status once, step every receiver's incidents, queue their alerts."""
        status = self.sup.snapshot()
        now, wall = self.clock.monotonic(), self.clock.wall()
        self.history = remember(self.history, status, now)
        active = conditions(status, self.history)
        deadlines = [self.history.expires()]
        for target, t in self.targets.items():
            t.tracks, alerts, deadline = step(t.tracks, active, now, wall, target.after, target.events)
            deadlines.append(deadline)
            for alert in alerts:
                log.info("notification_queued", alert=alert.event, condition=alert.condition,
                         subject=alert.subject, receiver=t.receiver.index)  # fmt: skip
                self.sent.append(alert)
                t.receiver.put(alert)
        self.deadline = min((d for d in deadlines if d is not None), default=None)

    def _configure(self, wanted: tuple[NotifyConfig, ...]) -> None:
        """Follow ``wanted``: a target unchanged by a reload keeps its incidents and queue."""
        wanted = tuple(dict.fromkeys(wanted))
        if tuple(self.targets) == wanted:
            return
        old, self.targets = self.targets, {}
        for index, target in enumerate(wanted):
            kept = old.pop(target, None)
            if kept is None:
                kept = _Target(Receiver(index, target, self.client, self.clock, self.host, self._report, self.count))
                kept.receiver.start()
            kept.receiver.index = index
            self.targets[target] = kept
        for gone in old.values():
            self._stopping.add(asyncio.get_running_loop().create_task(gone.receiver.stop()))
            self._report(gone.receiver, None)

    def _report(self, receiver: Receiver, error: str | None) -> None:
        """A receiver's try: post ``notify_failing`` when the set of failing receivers changes."""
        before = dict(self.failing)
        if error is None:
            self.failing.pop(receiver, None)
        else:
            self.failing[receiver] = error
            if receiver not in before:
                log.warning("notification_failed", receiver=receiver.index, error=error)
        if self.failing.keys() != before.keys():
            problem = notify_failing_problem(list(self.failing.values())) if self.failing else None
            self.sup.send(Noted(NOTIFY_FAILING, problem))

    async def aclose(self) -> None:
        """Stop every sender and close the HTTP client."""
        for t in self.targets.values():
            await t.receiver.stop()
        await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.client.aclose()


async def send_tests(
    targets: tuple[NotifyConfig, ...], clock: Clock, transport: httpx.AsyncBaseTransport | None = None
) -> list[tuple[str, str | None]]:
    """`lmsupervisor notify test`: one ``test`` alert to each target, once, without retry;
    ``(receiver label, error or None)`` per target, in order."""
    host = socket.gethostname()
    wall = clock.wall()
    alert = Alert("test", "test", "a test message from lmsupervisor: notifications reach you", wall, wall)
    results: list[tuple[str, str | None]] = []
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        for i, target in enumerate(targets):
            name = f"notify[{i}] {target.kind}"
            try:
                name = f"notify[{i}] {label(target.kind, resolve_url(target))}"
                await deliver(client, target, alert, host)
            except NotifyError as exc:
                results.append((name, exc.message))
                continue
            results.append((name, None))
    return results
