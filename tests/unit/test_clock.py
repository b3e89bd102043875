"""The clock's deadline helpers: :func:`lmsupervisor.clock.within` and ``Clock.timer``."""

from __future__ import annotations

import asyncio

import pytest

from lmsupervisor.clock import SystemClock, within
from tests.scenarios.fakes import FakeClock


async def test_within_gives_the_result_or_times_out_at_the_deadline_of_the_clock() -> None:
    """Work done before the deadline gives its result; work still running at the deadline
    (5 s of fake time) is cancelled and TimeoutError is raised then, not later."""
    clock = FakeClock()

    async def work(seconds: float) -> str:
        await clock.sleep(seconds)
        return "done"

    quick = asyncio.ensure_future(within(clock, work(1), 5))
    slow = asyncio.ensure_future(within(clock, work(9), 5))
    await clock.advance(5)
    assert (quick.result(), isinstance(slow.exception(), TimeoutError), clock.now) == ("done", True, 5.0)


async def test_the_system_timer_resolves_at_once_for_no_time_and_can_be_dropped() -> None:
    """``SystemClock.timer`` is a future: resolved after 0 s (or a negative time); a
    cancelled one stays cancelled and is never resolved later."""
    clock = SystemClock()
    await asyncio.wait_for(clock.timer(0), 5)
    await asyncio.wait_for(clock.timer(-3), 5)
    late = clock.timer(3600)
    late.cancel()
    await asyncio.sleep(0)
    assert late.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await late
