"""Never harmful when the supervisor itself stalls (a machine at load 15-19 on 2 cores): a
probe whose deadline passed while the supervisor's event loop did not run is no verdict on
LM Studio, while a real hang is still detected within failures_before_restart x interval +
timeout. On the fake clock: :meth:`FakeClock.stall` wakes every expired timer at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig
from lmsupervisor.core.states import State
from lmsupervisor.supervisor import Supervisor
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_supervisor, seconds_in_ready

# A probe every second, each given 5 s: on a slow machine three are in flight at once.
CONFIG = Config(
    health=HealthConfig(interval=1, timeout=5, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=30, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"),),
)


class Busy:
    """A supervisor over a fake LM Studio that answers every HTTP request after
    ``http_delay`` fake seconds (alive, but slow: the machine is busy)."""

    def __init__(self, rest_v1: bool) -> None:
        self.clock = FakeClock()
        self.lm = FakeLmStudio()
        self.lm.rest_v1 = rest_v1
        self.sup: Supervisor = make_supervisor(CONFIG, self.lm, self.clock)

    def restarts(self) -> int:
        return int(self.sup.snapshot()["restarts"]["count"])


@pytest.fixture(params=[True, False], ids=["rest_listing", "greeting"])
async def busy(request: pytest.FixtureRequest) -> AsyncIterator[Busy]:
    world = Busy(rest_v1=request.param)
    runner = asyncio.create_task(world.sup.run())
    await world.clock.advance(0)
    assert world.sup.state is State.READY
    yield world
    world.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    await world.sup.prober.aclose()


async def test_probes_timed_out_by_a_stalled_loop_never_restart_lm_studio(busy: Busy) -> None:
    """The finding: the machine stalls 17 s with probes in flight (LM Studio and the
    supervisor alike get no CPU); when the supervisor's loop resumes, their deadlines have
    all passed at once (consecutive=1,2,3 within 0.5 ms). None is a verdict: the supervisor
    probes again at once, LM Studio answers, and its daemon is neither stopped nor replaced."""
    busy.lm.http_delay = 2.4  # within the 5 s timeout: three probes are in flight
    await busy.clock.advance(10)
    daemon, calls = busy.lm.daemon_pid, len(busy.lm.calls)
    assert (busy.sup.state, busy.restarts()) == (State.READY, 0)
    busy.lm.freeze()
    await busy.clock.stall(17)
    busy.lm.thaw()
    await busy.clock.advance(10)
    assert (busy.sup.state, busy.restarts(), busy.lm.daemon_pid) == (State.READY, 0, daemon)
    assert [c for c in busy.lm.calls[calls:] if c[0] in ("daemon", "server")] == []


@pytest.mark.parametrize("when", ["during", "after"])
async def test_a_real_hang_around_a_stall_is_still_detected_within_the_bound(busy: Busy, when: str) -> None:
    """LM Studio hangs for real (accepts, never answers) while the loop is stalled, or just
    after: the supervisor leaves ready within failures_before_restart x interval + timeout
    (3 x 1 + 5 = 8 s) of the loop running again, and never before the probes it counts had
    their full 5 s."""
    busy.lm.http_delay = 2.4
    await busy.clock.advance(10)

    def hang() -> None:
        busy.lm.http_stalled = True
        busy.lm.stalled = {("ps",), ("daemon",), ("server",)}

    busy.lm.freeze()
    if when == "during":
        hang()
    await busy.clock.stall(17)
    busy.lm.thaw()
    if when == "after":
        await busy.clock.advance(3)
        hang()
    assert busy.sup.state is State.READY
    stayed = await seconds_in_ready(busy.clock, busy.sup, step=0.25)
    assert (busy.sup.state, 5 <= stayed <= 3 * 1 + 5) == (State.BACKOFF, True), stayed
