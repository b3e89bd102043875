"""Timestamps for people: UTC ISO-8601 with milliseconds (design §5). Pure."""

from __future__ import annotations

import time


def iso(wall: float | None) -> str | None:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2026-11-21T10:00:00.000Z``."""
    if wall is None:
        return None
    secs = int(wall)
    ms = round((wall - secs) * 1000)
    if ms == 1000:
        secs, ms = secs + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"
