"""Time asleep: the platform seam's readings (:meth:`OsPlatform.sleep_gap`) and the clock
that turns them into seconds asleep, with its test seam (``$LMSUPERVISOR_ASLEEP_FILE``)."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.clock import ASLEEP_ENV, SystemClock
from lmsupervisor.platform.darwin import Darwin
from lmsupervisor.platform.linux import Linux
from lmsupervisor.platform.windows import Windows


def test_linux_reads_boottime_minus_monotonic() -> None:
    """On Linux the gap is CLOCK_BOOTTIME - CLOCK_MONOTONIC, still while the machine runs
    (two readings a moment apart differ by far less than a second). Its value means nothing
    by itself (a container's time namespace may offset either clock)."""
    first = Linux().sleep_gap()
    time.sleep(0.05)
    second = Linux().sleep_gap()
    boot = time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
    assert (abs(second - first) < 0.01, abs(boot - second) < 0.01) == (True, True)


def test_without_the_clocks_the_gap_is_the_wall_clock_jump(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Unix without CLOCK_UPTIME_RAW (this Linux, as darwin) falls back to wall minus
    monotonic, which a wall-clock step moves as a sleep would."""
    assert not hasattr(time, "CLOCK_UPTIME_RAW")
    wall = [1000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic", lambda: 10.0)
    before = Darwin().sleep_gap()
    wall[0] += 3600
    assert Darwin().sleep_gap() - before == 3600


class Kernel32:
    """kernel32's two counts: ticks since boot (milliseconds, sleep included) and the
    unbiased interrupt time (100 ns units, sleep excluded)."""

    def __init__(self) -> None:
        self.ticks_ms, self.unbiased = 5_000, 40_000_000

    def GetTickCount64(self) -> int:
        return self.ticks_ms

    def QueryUnbiasedInterruptTime(self, out: Any) -> int:
        ctypes.cast(out, ctypes.POINTER(ctypes.c_ulonglong)).contents.value = self.unbiased
        return 1


def test_windows_reads_ticks_minus_unbiased_interrupt_time() -> None:
    """Windows: GetTickCount64 - QueryUnbiasedInterruptTime in seconds; an hour asleep moves
    the ticks only, so the gap grows by 3600 s; awake, both move and it stays."""
    k = Kernel32()
    win = Windows(kernel32=k)
    assert win.sleep_gap() == 1.0
    k.ticks_ms += 10_000
    k.unbiased += 10 * 10**7  # ten seconds awake
    assert win.sleep_gap() == 1.0
    k.ticks_ms += 3_600_000  # an hour asleep
    assert win.sleep_gap() == 3601.0


class Platform:
    def __init__(self) -> None:
        self.gap = 100.0

    def sleep_gap(self) -> float:
        return self.gap


def test_the_clock_counts_seconds_asleep_from_its_first_reading_plus_the_seam(tmp_path: Path) -> None:
    """``asleep()`` is 0 at the first call, then grows with the platform's gap; the file
    named by $LMSUPERVISOR_ASLEEP_FILE adds its seconds (missing or not a number: 0)."""
    seam = tmp_path / "asleep"
    fake = Platform()
    c = SystemClock(fake.sleep_gap, {ASLEEP_ENV: str(seam)})
    assert c.asleep() == 0.0
    fake.gap += 30
    assert c.asleep() == 30.0
    seam.write_text("3600\n")
    assert c.asleep() == 3630.0
    seam.write_text("soon")
    assert c.asleep() == 30.0


def test_without_the_seam_no_file_is_read(tmp_path: Path) -> None:
    """Unset, the clock reads the platform only: a file where the seam would point changes nothing."""
    fake = Platform()
    (tmp_path / "asleep").write_text("3600")
    c = SystemClock(fake.sleep_gap, {"HOME": str(tmp_path)})
    first = c.asleep()
    fake.gap += 5
    assert (first, c.asleep()) == (0.0, 5.0)


def test_the_real_clock_reads_this_machines_platform() -> None:
    """By default the platform in use: a machine that does not sleep reads (about) 0."""
    c = SystemClock(env={})
    assert c.asleep() == 0.0
    assert 0.0 <= c.asleep() < 0.01
