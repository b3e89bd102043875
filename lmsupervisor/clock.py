"""Time, behind a tiny interface so tests advance a fake clock instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock: for intervals and deadlines."""

    def wall(self) -> float:
        """Seconds since the epoch (UTC): only for timestamps shown to people."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def iso(wall: float | None) -> str | None:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2026-11-21T10:00:00.000Z``."""
    if wall is None:
        return None
    secs = int(wall)
    ms = round((wall - secs) * 1000)
    if ms == 1000:
        secs, ms = secs + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"
