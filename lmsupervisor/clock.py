"""Time, behind a tiny interface so tests advance a fake clock instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time

from lmsupervisor.core.timefmt import iso

__all__ = ["Clock", "SystemClock", "iso", "within"]
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
TYPE_CHECKING = False  # as in lmsupervisor.platform: the names below are for annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Clock(Protocol):
    """What the supervisor needs of time: monotonic and wall seconds, and a sleep.

    Every value is seconds as a float. :class:`SystemClock` is the real clock; tests pass
    a fake one that they advance by hand instead of sleeping.
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic clock: for intervals and deadlines."""

    def wall(self) -> float:
        """Seconds since the epoch (UTC): only for timestamps shown to people."""

    def asleep(self) -> float:
        """Seconds the machine has spent asleep (suspended) since this clock's first reading
        of it: grows by the length of each suspend, stays still while the machine runs
        (the monotonic clock does not count that time). The health loop reads it when it
        wakes to notice a resume (see :meth:`SystemClock.asleep`)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""

    def timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that resolves after ``seconds`` (now for a negative value): one timer,
        no task, for racing it against work (:func:`within`). Cancelling it drops the timer."""


class SystemClock:
    """The real :class:`Clock`: :func:`time.monotonic`, :func:`time.time` and :func:`asyncio.sleep`."""

    def __init__(self, sleep_gap: Callable[[], float] | None = None, env: Mapping[str, str] | None = None) -> None:
        """``sleep_gap`` reads the platform's gap (default: :func:`lmsupervisor.platform.current`'s
        :meth:`~lmsupervisor.platform.base.OsPlatform.sleep_gap`); ``env`` holds the test seam
        (default :data:`os.environ`). Both are looked at only by :meth:`asleep`."""
        self._sleep_gap = sleep_gap
        self._env = env
        self._asleep_origin: float | None = None  # the platform's sleep gap at the first asleep()
        self._asleep_file: str | None = None  # the test seam's file ($LMSUPERVISOR_ASLEEP_FILE)

    def monotonic(self) -> float:
        """Seconds on :func:`time.monotonic`: only differences between two readings mean anything."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (UTC), from :func:`time.time`."""
        return time.time()

    def asleep(self) -> float:
        """Seconds asleep since the first call (0.0 then): the growth of the platform's
        :meth:`~lmsupervisor.platform.base.OsPlatform.sleep_gap` (Linux ``CLOCK_BOOTTIME -
        CLOCK_MONOTONIC``, macOS ``CLOCK_MONOTONIC - CLOCK_UPTIME_RAW``, Windows tick count
        minus unbiased interrupt time), plus the test seam's offset.

        Test seam: ``$LMSUPERVISOR_ASLEEP_FILE`` (:data:`ASLEEP_ENV`, read at the first
        call) names a file holding seconds added to every reading, as if the machine had
        slept that long; the simulator's ``SimInstall.suspend`` writes it, so an
        integration test suspends a real `run` without suspending the machine. Unset, no
        file is read; a missing or unreadable file adds 0."""
        if self._sleep_gap is None:
            from lmsupervisor import platform  # noqa: PLC0415 - only the health loop asks

            self._sleep_gap = platform.current().sleep_gap
        gap = self._sleep_gap()
        if self._asleep_origin is None:
            self._asleep_file = (os.environ if self._env is None else self._env).get(ASLEEP_ENV) or None
            self._asleep_origin = gap
        return max(0.0, gap - self._asleep_origin) + _offset(self._asleep_file)

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


ASLEEP_ENV = "LMSUPERVISOR_ASLEEP_FILE"  # test seam: seconds added to SystemClock.asleep()
RESUME_MIN = 2.0  # seconds asleep from which a wake of the health loop is a resume from sleep


def _offset(path: str | None) -> float:
    """The seconds in the test seam's file (0.0: no file named, none there, or not a number)."""
    if path is None:
        return 0.0
    try:
        with open(path, encoding="utf-8") as f:
            value = float(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


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
