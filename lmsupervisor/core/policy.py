"""Backoff and escalation policy (pure: no asyncio, no I/O).

Delays are seconds: ``initial_delay * multiplier ** (attempt - 1)``, capped at
``max_delay``, then spread by ``+/- jitter`` (a fraction) so that many supervisors do
not retry in lockstep. The attempt count resets once the service has been healthy for
``reset_after`` seconds. It never gives up: past the cap every retry waits the cap.
"""

from __future__ import annotations

import enum

from lmsupervisor.config import RestartConfig


class Rung(enum.IntEnum):
    """The escalation ladder (design §6), one rung per consecutive failure."""

    START = 0  # adopt what runs, else `daemon up` + `server start`
    RESTART_SERVER = 1  # `daemon up` (no-op if it runs) + `server stop` + `server start`
    RESTART_DAEMON = 2  # `daemon down` (kill the PID if that fails) + `daemon up` + start
    KILL_DAEMON = 3  # terminate, wait, kill the daemon's PID, then up + start


def rung_for(attempt: int) -> Rung:
    """The rung for the bring-up after ``attempt`` consecutive failures (0 = first start)."""
    return Rung(min(max(attempt, 0), Rung.KILL_DAEMON))


def retry_delay(config: RestartConfig, attempt: int, jitter_sample: float = 0.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based; 0 waits nothing).

    ``jitter_sample`` in ``[-1, 1]`` picks the point in the ``+/- jitter`` spread: the
    caller draws it (the reducer gets it with each message), so this stays pure.
    """
    if attempt <= 0:
        return 0.0
    exponent = min(attempt - 1, 1024)  # capped so huge attempt counts cannot overflow a float
    try:
        raw = config.initial_delay * config.multiplier**exponent
    except OverflowError:
        raw = config.max_delay
    base = min(config.max_delay, raw)
    return max(0.0, base + base * config.jitter * max(-1.0, min(1.0, jitter_sample)))


SURVEY_MAX_DELAY = 30.0  # seconds: the longest wait between re-surveys while the GPU gate is closed


def survey_delay(config: RestartConfig, attempt: int, jitter_sample: float = 0.0) -> float:
    """Seconds before re-survey number ``attempt`` while the GPU gate is closed: the restart
    backoff (:func:`retry_delay`), capped at :data:`SURVEY_MAX_DELAY` (a GPU that appears is
    seen within that, at the cost of one `lms runtime survey` per wait)."""
    return min(retry_delay(config, attempt, jitter_sample), SURVEY_MAX_DELAY)
