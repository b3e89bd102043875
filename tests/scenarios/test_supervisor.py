"""The supervisor on a fake clock against a fake LM Studio: whole histories, no sleeps."""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog.testing

from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig
from lmsupervisor.core.observed import Install
from lmsupervisor.core.states import State
from lmsupervisor.lmstudio.lms import LmsResult
from lmsupervisor.supervisor import Supervisor
from tests.scenarios.fakes import (
    FakeClock,
    FakeLmStudio,
    make_install,
    make_supervisor,
    seconds_in_ready,
    settle,
)

CONFIG = Config(
    health=HealthConfig(interval=5, timeout=1, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=300, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two")),
)


class World:
    def __init__(self, config: Config = CONFIG) -> None:
        self.clock = FakeClock()
        self.lm = FakeLmStudio()
        self.installed = True
        self.sup: Supervisor = make_supervisor(config, self.lm, self.clock, lambda: self.installed)
        self.events: list[dict[str, Any]] = []

    @property
    def states(self) -> list[str]:
        return [e["state"] for e in self.events if e["type"] == "state"]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()

    async def record() -> None:
        async for event in w.sup.events():
            w.events.append(event)

    recorder = asyncio.create_task(record())
    runner = asyncio.create_task(w.sup.run())
    await settle()
    yield w
    w.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    recorder.cancel()
    await w.sup.prober.aclose()


async def test_cold_start_to_ready(world: World) -> None:
    """STOPPED -> STARTING -> LOADING_MODELS -> READY: daemon up, server start, two exact loads."""
    await world.clock.advance(0)
    assert world.states == ["starting", "loading_models", "ready"]
    loads = [c for c in world.lm.calls if c[0] == "load"]
    assert loads == [
        ("load", "a/one", "--exact", "--yes"),
        ("load", "hf/b-two-GGUF/two.gguf", "--exact", "--yes", "--identifier", "two"),
    ]
    assert sorted(m["identifier"] for m in world.lm.loaded) == ["a/one", "two"]


async def test_adopt_without_restart() -> None:
    """A healthy server at start is adopted: no `server start`, no duplicate loads."""
    w = World()
    w.lm.daemon_pid, w.lm.server = 7, True
    w.lm.loaded = [{**FakeLmStudio.MODELS[0], "identifier": "a/one"}]
    runner = asyncio.create_task(w.sup.run())
    await w.clock.advance(0)
    assert (w.sup.state, w.sup.snapshot()["lmstudio"]["daemon_pid"]) == (State.READY, 7)
    assert not [c for c in w.lm.calls if c[:2] == ("server", "start")]
    assert [c[1] for c in w.lm.calls if c[0] == "load"] == ["hf/b-two-GGUF/two.gguf"]
    w.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    await w.sup.prober.aclose()


async def test_daemon_exit_backs_off_then_recovers(world: World) -> None:
    """READY -> BACKOFF on the PID's exit, waits initial_delay, then STARTING -> ... -> READY."""
    await world.clock.advance(0)
    world.lm.exit_daemon()
    await settle()
    assert world.sup.state is State.BACKOFF
    snap = world.sup.snapshot()
    assert (snap["restarts"]["attempt"], snap["restarts"]["next_attempt_at"]) == (1, "2027-01-15T08:00:01.000Z")
    await world.clock.advance(0.999)
    assert world.sup.state is State.BACKOFF  # not a moment early
    await world.clock.advance(0.001)
    assert world.sup.state is State.READY
    assert (world.sup.snap.restarts.count, len(world.lm.loaded)) == (1, 2)
    assert world.states[-4:] == ["backoff", "starting", "loading_models", "ready"]


async def test_probe_failures_trigger_restart(world: World) -> None:
    """Three failed probes (interval 5 s) in READY -> BACKOFF; then the server is started again."""
    await world.clock.advance(0)
    world.lm.server = False
    await world.clock.advance(10)
    assert (world.sup.state, world.sup.snap.liveness.consecutive_failures) == (State.READY, 2)
    await world.clock.advance(5)
    assert world.sup.state is State.BACKOFF
    await world.clock.advance(1)
    assert world.sup.state is State.READY
    assert ("server", "stop") in world.lm.calls  # rung 1: the server is restarted


async def test_backoff_sequence_never_gives_up(world: World) -> None:
    """Failing bring-ups wait 1, 2, 4, ... capped at 300 s, climb the ladder, and keep trying."""
    await world.clock.advance(0)
    world.lm.fail[("server", "start")] = (1, "Failed to verify the server is running. Please try to use another port.")
    world.lm.exit_daemon()
    delays = []
    for _ in range(12):
        await settle()
        assert world.sup.state is State.BACKOFF
        delay = world.clock.next_deadline()
        assert delay is not None
        delays.append(delay - world.clock.now)
        await world.clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert world.sup.snapshot()["restarts"]["attempt"] == 13  # the 12th retry failed too
    assert "Failed to verify" in (world.sup.snap.restarts.last_reason or "")
    assert ("daemon", "down") in world.lm.calls  # rung 2 was tried
    world.lm.fail.clear()
    await world.clock.advance(300)
    assert world.sup.state is State.READY


async def test_backoff_resets_after_healthy_period(world: World) -> None:
    """After reset_after healthy seconds the next failure waits initial_delay again."""
    await world.clock.advance(0)
    world.lm.exit_daemon()
    await world.clock.advance(1)
    world.lm.exit_daemon()
    await settle()
    assert world.clock.next_deadline() == world.clock.now + 2  # second failure in a row
    await world.clock.advance(2)
    await world.clock.advance(61)  # healthy for longer than reset_after
    world.lm.exit_daemon()
    await settle()
    assert (world.sup.snap.restarts.attempt, world.clock.next_deadline()) == (1, world.clock.now + 1)


async def test_hung_daemon_is_terminated(world: World) -> None:
    """Rung 3 after repeated failures: the daemon's PID is terminated, then started again."""
    await world.clock.advance(0)
    pid = world.lm.daemon_pid
    world.lm.hung = True
    world.lm.fail[("daemon", "up")] = (1, "Error: Failed to start or connect to local LM Studio API server.")
    world.lm.fail[("daemon", "down")] = (1, "Daemon is not running.")
    await world.clock.advance(15)  # three failed probes
    await world.clock.advance(1)  # rung 1 fails (daemon up)
    del world.lm.fail[("daemon", "up")]
    await world.clock.advance(2)  # rung 2: daemon down fails, the live PID is terminated
    assert world.lm.terminated == [pid]
    assert world.sup.state is State.READY


async def test_model_drift_is_reloaded(world: World) -> None:
    """A declared model unloaded behind our back (TTL, eviction) is loaded again: READY -> LOADING_MODELS."""
    await world.clock.advance(0)
    world.lm.loaded = [m for m in world.lm.loaded if m["identifier"] != "two"]
    await world.clock.advance(5)
    assert world.states[-2:] == ["loading_models", "ready"]
    assert sorted(m["identifier"] for m in world.lm.loaded) == ["a/one", "two"]


async def test_failed_model_degrades_and_is_retried(world: World) -> None:
    """LOADING_MODELS -> DEGRADED with LM Studio's words; DEGRADED -> LOADING_MODELS on the retry timer."""
    world.lm.fail[("load", "a/one")] = (
        1,
        "Error: Failed to load model.\nModel loading was stopped due to insufficient system resources.",
    )
    world.lm.exit_daemon()
    await world.clock.advance(1)
    assert world.sup.state is State.DEGRADED
    assert world.sup.snapshot()["models"][0]["error"] == (
        "Failed to load model. Model loading was stopped due to insufficient system resources."
    )
    del world.lm.fail[("load", "a/one")]
    await world.clock.advance(1)
    assert world.sup.state is State.READY


async def test_not_installed_keeps_checking() -> None:
    """STARTING -> NOT_INSTALLED, rechecked under backoff until LM Studio appears."""
    w = World()
    w.installed = False
    runner = asyncio.create_task(w.sup.run())
    await w.clock.advance(0)
    assert w.sup.state is State.NOT_INSTALLED
    w.installed = True
    await w.clock.advance(1)
    assert w.sup.state is State.READY
    w.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    await w.sup.prober.aclose()


async def test_restart_request(world: World) -> None:
    """RESTART from READY: counted, the server stopped and started again."""
    await world.clock.advance(0)
    world.sup.post("restart", daemon=False, reason="asked")
    await world.clock.advance(0)
    assert (world.sup.state, world.sup.snap.restarts.count) == (State.READY, 1)
    assert world.states[-3:] == ["starting", "loading_models", "ready"]
    assert [c for c in world.lm.calls if c[:2] == ("server", "stop")] == [("server", "stop")]


async def test_stop_leaves_lmstudio_running(world: World) -> None:
    """STOP -> STOPPING -> STOPPED, with no `daemon down` or `server stop` on the way out."""
    await world.clock.advance(0)
    world.sup.post("stop", reason="SIGTERM")
    await settle()
    assert world.sup.state is State.STOPPED
    assert not [c for c in world.lm.calls if c[:2] in (("daemon", "down"), ("server", "stop"))]
    assert world.lm.daemon_pid is not None


FAULTS: list[BaseException] = [
    OSError(errno.EMFILE, "Too many open files"),
    OSError(errno.ENOEXEC, "Exec format error"),
    RuntimeError("a bug"),
    httpx.InvalidURL("Invalid port: 'localhost:1234'"),
    PermissionError(errno.EACCES, "Permission denied"),
]
SEAMS = ["detect", "lms version", "lms daemon", "lms server", "lms ps", "lms ls", "lms load", "http", "watch"]


@pytest.mark.parametrize("seam", SEAMS)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda e: type(e).__name__ + str(getattr(e, "errno", "") or ""))
async def test_any_exception_at_any_seam_backs_off_then_recovers(seam: str, fault: BaseException) -> None:
    """An exception outside our error tree from any I/O dependency, at any step of a cold start,
    becomes a failure: the supervisor reaches backoff, and ready once the fault is gone. A
    synchronous effect (watching the daemon's PID) that raises is not the bring-up's failure:
    it is the problem supervisor_error, and supervision goes on without a restart."""
    faulty = {"on": True}
    clock, lm = FakeClock(), FakeLmStudio()

    def detect(_: Config) -> Install:
        if seam == "detect" and faulty["on"]:
            raise fault
        return make_install()

    if seam.startswith("lms "):
        lm.raises[(seam.removeprefix("lms "),)] = fault
    elif seam == "http":
        lm.http_raises = fault
    watch = lm.watch

    def faulty_watch(pid: int, on_exit: Callable[[], None]) -> Callable[[], None]:
        if seam == "watch" and faulty["on"]:
            raise fault
        return watch(pid, on_exit)

    lm.watch = faulty_watch  # type: ignore[method-assign]
    sup = make_supervisor(CONFIG, lm, clock, detect=detect)
    states: list[str] = []
    queue = sup.subscribe()
    runner = asyncio.create_task(sup.run())
    await clock.advance(0)
    await clock.advance(2)
    faulty["on"] = False
    lm.raises.clear()
    lm.http_raises = None
    for _ in range(6):
        await clock.advance(5)
    while not queue.empty():
        event = queue.get_nowait()
        if event is not None and event["type"] == "state":
            states.append(event["state"])
    problems = [p["code"] for p in sup.snapshot()["problems"]]
    if seam == "watch":
        assert ("backoff" in states, sup.state, "supervisor_error" in problems) == (False, State.READY, True), states
    else:
        assert ("backoff" in states, sup.state) == (True, State.READY), states
    sup.post("stop")
    await asyncio.wait_for(runner, 5)
    await sup.prober.aclose()


async def test_hang_is_detected_within_failures_times_interval_plus_timeout(world: World) -> None:
    """A hang that lands while a drift check waits on `lms ps` still enters the ladder within
    failures_before_restart * interval + timeout (3 * 5 + 1 = 16 s), not after the `lms` timeout."""
    await world.clock.advance(0)
    await world.clock.advance(2.5)  # between two probes
    world.lm.stalled = {("ps",), ("daemon",), ("server",)}
    world.lm.http_stalled = True
    stayed = await seconds_in_ready(world.clock, world.sup)
    assert (world.sup.state, stayed <= 3 * 5 + 1) == (State.BACKOFF, True)


async def test_restart_mid_load_creates_no_duplicate() -> None:
    """A restart that lands while `lms load` runs: LM Studio finishes that load, and the next
    pass waits for it instead of loading the model again (no `:2`)."""
    w = World()
    slow = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    real_run = w.lm.run

    async def run(*args: str, timeout: float | None = None) -> Any:
        if args[:1] == ("load",) and args[1] == "hf/b-two-GGUF/two.gguf" and not slow.is_set():
            slow.set()
            w.lm.calls.append(args)

            async def lmstudio_loads() -> None:  # LM Studio's side: it finishes even if `lms load` is killed
                await w.clock.sleep(30)
                w.lm.loaded.append({**FakeLmStudio.MODELS[1], "identifier": "two"})

            background.append(asyncio.create_task(lmstudio_loads()))
            await asyncio.shield(background[-1])
            return LmsResult(("lms", *args), 0, "", "", 1.0)
        return await real_run(*args, timeout=timeout)

    w.lm.run = run  # type: ignore[method-assign]
    runner = asyncio.create_task(w.sup.run())
    await w.clock.advance(0)
    assert (w.sup.state, slow.is_set()) == (State.LOADING_MODELS, True)
    w.sup.post("restart", reason="systemctl restart")
    for _ in range(10):
        await w.clock.advance(5)
    identifiers = sorted(m["identifier"] for m in w.lm.loaded)
    assert (w.sup.state, identifiers) == (State.READY, ["a/one", "two"])
    w.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    await w.sup.prober.aclose()


PAST_TENSE = re.compile(r"^[a-z]+(_[a-z0-9]+)*_?(ed|held|reset|overran|bound|unloaded)$")


async def test_log_events_are_past_tense_with_bound_context() -> None:
    """Every event logged through a cold start, a drift and a crash is a snake_case past-tense
    name with its context as fields (model=..., state=...), never an f-string."""
    w = World()
    with structlog.testing.capture_logs() as logs:
        runner = asyncio.create_task(w.sup.run())
        await w.clock.advance(0)
        w.lm.loaded = [m for m in w.lm.loaded if m["identifier"] != "two"]
        await w.clock.advance(5)
        w.lm.exit_daemon()
        await w.clock.advance(2)
        w.sup.post("stop")
        await asyncio.wait_for(runner, 5)
    await w.sup.prober.aclose()
    names = {entry["event"] for entry in logs}
    assert [n for n in sorted(names) if not PAST_TENSE.match(n)] == []
    loaded = [e for e in logs if e["event"] == "model_loaded"]
    assert {e["model"] for e in loaded} == {"a/one", "two"}
    assert {"state_changed", "model_drifted", "daemon_exited", "supervision_failed"} <= names
