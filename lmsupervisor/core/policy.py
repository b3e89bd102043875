"""Backoff and escalation policy (pure: no asyncio, no I/O).

Delays are seconds: ``initial_delay * multiplier ** (attempt - 1)``, capped at
``max_delay``, then spread by ``+/- jitter`` (a fraction) so that many supervisors do
not retry in lockstep. The attempt count resets once the service has been healthy for
``reset_after`` seconds. It never gives up: past the cap every retry waits the cap.
"""

from __future__ import annotations

import enum
import random

from lmsupervisor.config import RestartConfig


class Step(enum.IntEnum):
    """The escalation ladder (design §6), one rung per consecutive failure."""

    START = 0  # adopt what runs, else `daemon up` + `server start`
    RESTART_SERVER = 1  # `daemon up` (no-op if it runs) + `server stop` + `server start`
    RESTART_DAEMON = 2  # `daemon down` (kill the PID if that fails) + `daemon up` + start
    KILL_DAEMON = 3  # terminate, wait, kill the daemon's PID, then up + start


def step_for(attempt: int) -> Step:
    """The rung for the bring-up after ``attempt`` consecutive failures (0 = first start)."""
    return Step(min(max(attempt, 0), Step.KILL_DAEMON))


class Backoff:
    """Capped exponential backoff with jitter; ``rng`` is injected for determinism."""

    def __init__(self, config: RestartConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.attempt = 0

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay in seconds before retry number ``attempt`` (1-based)."""
        c = self.config
        if attempt <= 0:
            return 0.0
        # Exponent capped so huge attempt counts cannot overflow a float.
        exponent = min(attempt - 1, 1024)
        try:
            raw = c.initial_delay * c.multiplier**exponent
        except OverflowError:
            raw = c.max_delay
        return min(c.max_delay, raw)

    def next_delay(self) -> float:
        """Count a failure and return how long to wait (seconds, jittered, >= 0)."""
        self.attempt += 1
        base = self.base_delay(self.attempt)
        spread = base * self.config.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        self.attempt = 0
