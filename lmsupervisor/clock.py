"""Time, behind a tiny interface so tests advance a fake clock instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import time

from lmsupervisor.core.timefmt import iso

__all__ = ["Clock", "SystemClock", "iso", "within"]
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What the supervisor needs of time: monotonic and wall seconds, and a sleep.

    Every value is seconds as a float. :class:`SystemClock` is the real clock; tests pass
    a fake one that they advance by hand instead of sleeping.
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic clock: for intervals and deadlines."""

    def wall(self) -> float:
        """Seconds since the epoch (UTC): only for timestamps shown to people."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""

    def timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that resolves after ``seconds`` (now for a negative value): one timer,
        no task, for racing it against work (:func:`within`). Cancelling it drops the timer."""


class SystemClock:
    """The real :class:`Clock`: :func:`time.monotonic`, :func:`time.time` and :func:`asyncio.sleep`."""

    def monotonic(self) -> float:
        """Seconds on :func:`time.monotonic`: only differences between two readings mean anything."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (UTC), from :func:`time.time`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` with :func:`asyncio.sleep`; a negative value waits not at all."""
        await asyncio.sleep(max(0.0, seconds))

    def timer(self, seconds: float) -> asyncio.Future[None]:
        """A future resolved by one :meth:`~asyncio.loop.call_later` handle after ``seconds``;
        cancelling the future cancels the handle (no wakeup for a timer nobody waits on)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(max(0.0, seconds), _resolve, fut)
        fut.add_done_callback(lambda _: handle.cancel())
        return fut


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def within(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` for at most ``seconds`` of ``clock`` time.

    Unlike :func:`asyncio.wait_for` the deadline runs on the injected clock, so a fake
    clock drives it in tests. Raises :class:`TimeoutError` (the awaitable is cancelled
    and awaited) when the time runs out; cancelling the caller cancels both.
    """
    work = asyncio.ensure_future(awaitable)
    timer = clock.timer(seconds)
    racing: set[asyncio.Future[Any]] = {work, timer}
    try:
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        elif not work.cancelled():
            work.exception()  # retrieved: a caller cancelled just as it failed must not leave it unread
    if work.cancelled():
        raise TimeoutError(f"no result within {seconds:g} s")
    return work.result()
