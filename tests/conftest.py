"""Shared fixtures: simulated LM Studio installs that are always torn down."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from lmsupervisor.simulator.home import SimInstall, create_install

FAST = 0.02  # time_scale for tests: a 12 GB model loads in about 0.3 s

# No per-example deadline (hypothesis' default is 200 ms of wall time): an example that a busy
# machine descheduled is not a failure. The per-test timeout still bounds each test.
settings.register_profile("lmsupervisor", deadline=None)
settings.load_profile("lmsupervisor")

# The share of one core a test can count on while the suite runs: three workers, two CPU hogs
# and more on two cores (measured: a test needing 3 s of CPU took 60 s next to two hogs and
# other suites). A CPU-bound test's timeout is its CPU need (measured idle) over this share.
BUSY_SHARE = 1 / 50


def cpu_bound(cpu_seconds: float) -> pytest.MarkDecorator:
    """The timeout mark of a test that needs ``cpu_seconds`` of CPU (measured on an idle machine,
    its processes included): that need at :data:`BUSY_SHARE` of a core."""
    return pytest.mark.timeout(cpu_seconds / BUSY_SHARE)


# Opt-in, never set in CI: an executable real `lms` (built elsewhere from lmstudio-ai/lms)
# that becomes ``bin/lms`` of every simulated install whose profile stands for the CLI it
# was built from (HEAD 07b7252: the 0.4 profiles). Nothing in this repository builds it.
REAL_LMS = os.environ.get("LMSUPERVISOR_REAL_LMS", "")
REAL_LMS_PROFILES = ("0.4", "0.4-app")


def use_real_lms(sim: SimInstall) -> SimInstall:
    """Replace ``sim``'s fake `lms` with a wrapper running :data:`REAL_LMS`, when that is set
    and ``sim``'s profile is one of :data:`REAL_LMS_PROFILES`; returns ``sim``."""
    if REAL_LMS and sim.profile in REAL_LMS_PROFILES:
        sim.lms_path.write_text(f'#!/bin/sh\nexec "{REAL_LMS}" "$@"\n', encoding="utf-8")
        sim.lms_path.chmod(0o755)
    return sim


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., SimInstall]]:
    """Factory for simulated installs under ``tmp_path``; every daemon is killed at teardown."""
    made: list[SimInstall] = []

    def make(name: str = "home", **kwargs: Any) -> SimInstall:
        kwargs.setdefault("time_scale", FAST)
        kwargs.setdefault("lms_cost", (0.0, 0.0))  # benchmarks keep the default Node-like cost
        sim = use_real_lms(create_install(tmp_path / name, **kwargs))
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimInstall]) -> SimInstall:
    """A fresh LM Studio 0.4 install, nothing running."""
    return make_sim()


def ipv6_loopback() -> bool:
    """Whether this machine can bind ::1 (a container or host may have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NO_IPV6 = pytest.mark.skipif(
    not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1 cannot be bound): IPv6 binds cannot be served"
)


def eventually(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value.

    For conditions in another process that nothing can await (a PID dying, a file appearing).
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


SLOW_FIRST = ("test_chaos.py", "test_systemd_user.py", "test_hostile.py", "test_profiles.py", "test_static.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first: with several workers (pyproject's ``-n``) the long soak
    overlaps everything else instead of starting last (longest-processing-time first)."""
    items.sort(key=lambda item: 0 if item.nodeid.split("::")[0].endswith(SLOW_FIRST) else 1)
