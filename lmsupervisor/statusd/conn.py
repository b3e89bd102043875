"""What the status server keeps per connection: whether it is being answered, and its read deadline.

:class:`Conn` tells the connection cap which connection may be dropped (one not being
answered); :class:`Watchdog` bounds how long a connection may take to send a request
(idle and request timeouts) without a timer operation per keep-alive request.
"""

from __future__ import annotations

import asyncio
import math


class Conn:
    """One client connection: ``busy`` while a request of it is being answered."""

    __slots__ = ("busy", "linger", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.busy = False
        self.linger = False  # refused mid-request: drain the rest before closing


class Watchdog:
    """Fails a connection's pending read with TimeoutError once :attr:`deadline` passes.

    Moving the deadline is an attribute write; one timer per connection re-arms itself
    only when it fires early, so a keep-alive request costs no timer operations.
    """

    __slots__ = ("_handle", "_loop", "_reader", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader) -> None:
        self._loop = loop
        self._reader = reader
        self._handle: asyncio.TimerHandle | None = None
        self.deadline = math.inf

    def arm(self, deadline: float) -> None:
        """Time out the reads from now on at ``deadline`` (loop time)."""
        self.deadline = deadline
        if self._handle is None or self._handle.when() > deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(deadline, self._check)

    def disarm(self) -> None:
        """No deadline (while answering, or streaming events)."""
        self.deadline = math.inf

    def cancel(self) -> None:
        """Drop the timer (the connection is over)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self.deadline == math.inf:
            return
        if self._loop.time() >= self.deadline:
            self._reader.set_exception(TimeoutError())
        else:
            self._handle = self._loop.call_at(self.deadline, self._check)
