"""The holding proxy's view of the supervisor: what it needs of it (:class:`Supervised`), and
the :class:`Gate` that wakes every held request when LM Studio's state changes (no polling)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from lmsupervisor.config import Config
from lmsupervisor.core.messages import Message
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.proxy.hold import alive, view_of


class Supervised(Protocol):
    """What the proxy needs of :class:`lmsupervisor.supervisor.Supervisor`."""

    @property
    def snap(self) -> Snapshot:
        """The current snapshot (read through :func:`~lmsupervisor.proxy.hold.view_of`)."""

    @property
    def config(self) -> Config:
        """The config in force (``[proxy]`` is read per request: a reload applies at once)."""

    def observe(self, observer: Callable[[Message, Snapshot], None]) -> None:
        """Call ``observer(message, snapshot)`` after every reduced message."""


class Gate:
    """The proxy's view of LM Studio, and a wake-up for everything held on it.

    ``view`` is the :class:`~lmsupervisor.proxy.hold.View` of the last snapshot; ``signs`` counts signs that LM
    Studio answers (a successful probe, a return to serving): an unanswered request waits
    for the next one. Waiters call :meth:`changed` and await it; every change of the view
    or of ``signs`` wakes them all."""

    def __init__(self, snap: Snapshot) -> None:
        self.view = view_of(snap)
        self.signs = 0
        self._snap = snap
        self._event = asyncio.Event()

    def update(self, message: Message, snap: Snapshot) -> None:
        """``Supervisor.observe`` callback."""
        changed = alive(message)
        if snap is not self._snap:
            self._snap = snap
            view = view_of(snap)
            if view != self.view:
                changed = changed or (view.serving and not self.view.serving)
                self.view = view
                self._wake()
        if changed:
            self.signs += 1
            self._wake()

    def changed(self) -> asyncio.Event:
        """An event set at the next change."""
        return self._event

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
