"""Never silent, never harmful (issue 14), on the fake clock: a failure the supervisor cannot
fix is a named problem at once, and the same cause never makes it stop or kill LM Studio's
daemon a second time."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig, ServerConfig
from lmsupervisor.core.observed import ServerSettings
from lmsupervisor.core.states import State
from lmsupervisor.supervisor import ServerMemory, Supervisor
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_install, make_supervisor, settle

CONFIG = Config(
    health=HealthConfig(interval=5, timeout=1, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=30, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"),),
)


class World:
    """A supervisor over the fake LM Studio whose install (and its server settings) a test sets."""

    def __init__(self, config: Config = CONFIG, bind: str = "127.0.0.1") -> None:
        self.clock = FakeClock()
        self.lm = FakeLmStudio()
        self.bind = bind
        self.sup: Supervisor = make_supervisor(config, self.lm, self.clock, detect=self.detect)
        self.events: list[dict[str, Any]] = []

    def detect(self, _: Config) -> Any:
        return replace(make_install(), server=ServerSettings(bind=self.bind, found=True))

    def problems(self) -> dict[str, dict[str, Any]]:
        return {p["code"]: p for p in self.sup.snapshot()["problems"]}

    def daemon_stops(self) -> int:
        """Times the supervisor asked LM Studio's daemon to stop, or signalled it."""
        return sum(c[:2] == ("daemon", "down") for c in self.lm.calls) + len(self.lm.signalled)

    def lms_calls_since(self, mark: int) -> list[tuple[str, ...]]:
        return self.lm.calls[mark:]


async def started(w: World) -> AsyncIterator[World]:
    queue = w.sup.subscribe()

    async def record() -> None:
        while (event := await queue.get()) is not None:
            w.events.append(event)

    recorder = asyncio.create_task(record())
    runner = asyncio.create_task(w.sup.run())
    await settle()
    yield w
    w.sup.post("stop")
    await asyncio.wait_for(runner, 5)
    recorder.cancel()
    await w.sup.prober.aclose()


@pytest.fixture
async def bad_address() -> AsyncIterator[World]:
    async for w in started(World(bind="localhost:1234")):
        yield w


@pytest.mark.parametrize("value", ["localhost:1234", "999.1.1.1", "127.0.0.1\n", "0.0.0.0 ", "not a host", "5"])
async def test_an_unusable_inherited_address_is_named_at_once_and_never_restarts_anything(value: str) -> None:
    """LM Studio's own networkInterface cannot be bound: `server_address_invalid` (naming the
    file, the value and the fix) from the first bring-up; retries under backoff run no `lms`
    that stops, restarts or kills anything, and no `server start` with the bad address."""
    async for w in started(World(bind=value)):
        await w.clock.advance(0)
        problem = w.problems().get("server_address_invalid")
        assert (w.sup.state, problem is not None) == (State.BACKOFF, True), w.sup.snapshot()
        assert problem is not None
        assert (repr(value) in problem["message"], "http-server-config.json" in problem["message"]) == (True, True)
        assert "[server] bind" in problem["fix"]
        for _ in range(12):
            await w.clock.advance(30)
        stopping = [c for c in w.lm.calls if c[:2] in (("daemon", "down"), ("server", "stop"), ("server", "start"))]
        assert (stopping, w.lm.signalled, w.sup.state) == ([], [], State.BACKOFF)
        assert w.sup.snap.restarts.count >= 5  # it keeps trying, at the capped delay
        assert [e["type"] for e in w.events].count("problems") == 1  # shown once, no flicker
        w.bind = "127.0.0.1"  # the user fixes LM Studio's setting: the next retry succeeds
        await w.clock.advance(30)
        assert (w.sup.state, "server_address_invalid" in w.problems()) == (State.READY, False)


async def test_a_declared_bind_wins_over_an_unusable_inherited_one() -> None:
    """With `[server] bind` declared, LM Studio's broken setting is not used at all."""
    config = replace(CONFIG, server=ServerConfig(bind="127.0.0.1"))
    async for w in started(World(config, bind="localhost:1234")):
        await w.clock.advance(0)
        assert (w.sup.state, w.problems()) == (State.READY, {})
        assert ("server", "start", "--port", "1234", "--bind", "127.0.0.1") in w.lm.calls


async def test_a_bracketed_ipv6_address_is_used_without_brackets() -> None:
    """`[::1]` (LM Studio's saved form may carry brackets) is bound as ::1 and probed at http://[::1]:1234."""
    async for w in started(World(bind="[::1]")):
        await w.clock.advance(0)
        assert (w.sup.state, w.sup.snapshot()["server"]["api_endpoint"]) == (State.READY, "http://[::1]:1234")
        assert ("server", "start", "--port", "1234", "--bind", "::1") in w.lm.calls  # as Node's listen() takes it


async def test_the_same_cause_never_stops_the_daemon_twice() -> None:
    """A `server start` that fails the same way on every rung: the ladder climbs to a daemon
    restart once, then never stops or kills the daemon again for that cause; the failure is a
    named problem from the first bring-up, in LM Studio's words."""
    async for w in started(World()):
        await w.clock.advance(0)
        assert w.sup.state is State.READY
        w.lm.fail[("server", "start")] = (1, "Error: Failed to verify the server is running. Please try another port.")
        w.lm.server = False
        for _ in range(4):
            await w.clock.advance(5)
        assert w.sup.state is State.BACKOFF
        problem = w.problems().get("bring_up_failed")
        for _ in range(20):
            await w.clock.advance(30)
        assert w.daemon_stops() == 1, w.lm.calls
        assert w.sup.snap.restarts.count >= 10
        assert problem is not None and "Failed to verify the server is running" in problem["message"]
        w.lm.fail.clear()
        await w.clock.advance(30)
        assert (w.sup.state, "bring_up_failed" in w.problems()) == (State.READY, False)


async def test_a_crash_of_our_own_bring_up_is_named_and_harms_nothing() -> None:
    """An exception in our bring-up code (a bug) is the problem `supervisor_error` at once;
    retries only try to start: nothing of LM Studio's is stopped or killed, however often."""
    boom = {"on": True}
    w = World()

    def detect(_: Config) -> Any:
        if boom["on"]:
            raise KeyError("networkInterface")
        return make_install()

    w.sup = make_supervisor(CONFIG, w.lm, w.clock, detect=detect)
    async for _ in started(w):
        await w.clock.advance(0)
        assert (w.sup.state, "supervisor_error" in w.problems()) == (State.BACKOFF, True)
        assert "KeyError" in w.problems()["supervisor_error"]["message"]
        for _ in range(15):
            await w.clock.advance(30)
        assert (w.daemon_stops(), [c for c in w.lm.calls if c[:2] == ("server", "stop")]) == (0, [])
        boom["on"] = False
        await w.clock.advance(30)
        assert (w.sup.state, "supervisor_error" in w.problems()) == (State.READY, False)


async def test_a_hung_app_is_shown_while_the_bring_up_still_runs() -> None:
    """The GUI app holds a hung service: `app_hung` is in the status while the bring-up is
    still running (not when it ends), `server start` against it gets the ladder's short
    timeout instead of start_timeout (120 s), and the app is never signalled."""
    world = World(replace(CONFIG, server=ServerConfig(start_timeout=120)))
    world.lm.is_daemon = False  # the app holds the service
    async for w in started(world):
        await w.clock.advance(0)
        assert w.sup.state is State.READY
        w.lm.hung = True
        w.lm.stalled = {("server",), ("daemon",), ("ps",)}  # the app answers nothing
        while w.sup.state is not State.STARTING:
            await w.clock.advance(1)
        began = w.clock.monotonic()
        while "app_hung" not in w.problems() and w.clock.monotonic() - began < 200:
            await w.clock.advance(0.5)
        seen = w.clock.monotonic() - began
        assert (w.sup.state, seen <= 5) == (State.STARTING, True), seen  # shown while the bring-up runs
        while w.sup.state is State.STARTING and w.clock.monotonic() - began < 200:
            await w.clock.advance(1)
        assert (w.sup.state, w.clock.monotonic() - began < 30) == (State.BACKOFF, True)
        for _ in range(10):
            await w.clock.advance(30)
        assert ("app_hung" in w.problems(), w.lm.signalled) == (True, [])


async def test_a_hung_app_that_lms_cannot_reach_is_named_at_the_first_rung() -> None:
    """`lms server stop` against a hung app may fail at once (its discovery gives up) instead
    of timing out: that is the same evidence, and app_hung is named while the restart_server
    rung still runs (not a rung later); the app is never signalled."""
    world = World()
    world.lm.is_daemon = False
    async for w in started(world):
        await w.clock.advance(0)
        mark = len(w.events)
        w.lm.hung = True
        w.lm.fail[("server", "stop")] = (1, "Error: Failed to start or connect to local LM Studio API server.")
        for _ in range(30):
            await w.clock.advance(1)
        state, reason = "ready", ""
        for event in w.events[mark:]:
            if event["type"] == "state":
                state, reason = event["state"], event["reason"]
            elif event["type"] == "problems" and "app_hung" in [p["code"] for p in event["problems"]]:
                break
        else:
            raise AssertionError(w.events[mark:])
        assert (state, reason) == ("starting", "retry 1: restart_server")
        assert w.lm.signalled == []


def app_0_3(world: World) -> World:
    """``world`` with a 0.3.31 GUI app running (`lms daemon status` only: the app is opened
    by its user, or woken by `server start`)."""
    world.lm.is_daemon = False
    world.lm.daemon_commands = ("status",)
    world.lm.daemon_pid = 4242
    return world


def hung_0_3_app(w: World) -> None:
    """0.3.31's `lms` (facts §8, §9: `daemon status` only) against its hung GUI app: `server
    stop` checks the HTTP server first and says "The server is not running." at once, without
    asking the app; what must ask it (discovery, with no timeout before 2025-11-27) never ends."""
    w.lm.hung = True
    w.lm.stalled = {("daemon",), ("server", "start"), ("ps",)}
    w.lm.fail[("server", "stop")] = (1, "Error: The server is not running.")


async def test_a_hung_0_3_app_is_named_by_its_daemon_status_at_the_first_rung() -> None:
    """0.3.31 publishes no API port and its `server stop` fails at once with "not running",
    which tells nothing of the app: `lms daemon status` not finishing within the ladder's
    timeout names app_hung while the restart_server rung runs, and `server start` gets the
    ladder's timeout, not start_timeout (120 s); the app is never signalled."""
    async for w in started(app_0_3(World(replace(CONFIG, server=ServerConfig(start_timeout=120))))):
        await w.clock.advance(0)
        assert w.sup.state is State.READY
        hung_0_3_app(w)
        while w.sup.state is not State.STARTING:
            await w.clock.advance(1)
        began = w.clock.monotonic()
        while "app_hung" not in w.problems() and w.clock.monotonic() - began < 200:
            await w.clock.advance(0.5)
        seen = w.clock.monotonic() - began
        assert (w.sup.state, seen <= 3.5) == (State.STARTING, True), seen  # one ladder timeout (3 s)
        while w.sup.state is State.STARTING and w.clock.monotonic() - began < 200:
            await w.clock.advance(1)
        assert (w.sup.state, w.clock.monotonic() - began < 30, w.lm.signalled) == (State.BACKOFF, True, [])


async def test_a_0_3_app_that_answers_is_not_hung_when_its_server_stopped() -> None:
    """0.3.31, the user stopped the server of a healthy app: `server stop` says "not running"
    and `daemon status` answers (the app is running), so the restart_server rung starts the
    server again without naming app_hung."""
    async for w in started(app_0_3(World())):
        await w.clock.advance(0)
        w.lm.server = False  # `lms server stop` behind the supervisor's back
        for _ in range(30):
            await w.clock.advance(1)
            assert "app_hung" not in w.problems()
        assert (w.sup.state, ("daemon", "status", "--json") in w.lm.calls) == (State.READY, True)


async def test_an_app_reopened_during_the_bring_up_is_not_reported_hung() -> None:
    """The user reopens the hung app while the bring-up that spared it still runs: that bring-up
    succeeds, and the status no longer says app_hung."""
    world = World()
    world.lm.is_daemon = False
    real_run = world.lm.run

    async def run(*args: str, timeout: float | None = None) -> Any:
        if args[:2] == ("server", "start") and w.lm.hung:  # the app comes back meanwhile
            w.lm.hung = False
            w.lm.stalled = set()
        return await real_run(*args, timeout=timeout)

    async for w in started(world):
        await w.clock.advance(0)
        w.lm.hung = True
        w.lm.stalled = {("server",)}
        for _ in range(60):
            await w.clock.advance(1)
            if "app_hung" in w.problems():
                break
        assert "app_hung" in w.problems()
        w.lm.run = run  # type: ignore[method-assign]
        for _ in range(60):
            await w.clock.advance(1)
            if w.sup.state is State.READY:
                break
        assert (w.sup.state, "app_hung" in w.problems()) == (State.READY, False)


async def test_an_unwritable_state_file_never_restarts_lmstudio(tmp_path: Path) -> None:
    """The last-good-settings file cannot be written (its folder is a file): ready all the
    same, no restart, and `state_folder_unwritable` says why and how to fix it, until the
    folder is repaired: then the file is written and the problem is gone."""
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    w = World()
    w.sup = make_supervisor(CONFIG, w.lm, w.clock, detect=w.detect, memory=ServerMemory(blocker / "server.json"))
    async for _ in started(w):
        await w.clock.advance(0)
        for _ in range(5):
            await w.clock.advance(5)
        assert (w.sup.state, w.sup.snap.restarts.count) == (State.READY, 0)
        problem = w.problems()["state_folder_unwritable"]
        assert (str(blocker / "server.json") in problem["message"], str(blocker) in problem["fix"]) == (True, True)
        blocker.unlink()  # the user repairs the folder: the next health round writes the file and clears it
        blocker.mkdir()
        await w.clock.advance(5)
        remembered = ServerMemory(blocker / "server.json").load()
        assert ("state_folder_unwritable" in w.problems(), remembered is not None) == (False, True)
        assert remembered == w.sup.snap.lmstudio.last_good_server


@pytest.mark.parametrize(
    "remembered",
    [
        {"port": 99999, "bind": "127.0.0.1", "cors": False},
        {"port": True, "bind": "127.0.0.1", "cors": False},
        {"port": 1234, "bind": "localhost:1234", "cors": False},
    ],
    ids=["port-99999", "port-true", "bind-host-port"],
)
async def test_a_bad_remembered_setting_is_ignored(tmp_path: Path, remembered: dict[str, Any]) -> None:
    """LM Studio's http-server-config.json is missing and lmsupervisor's own server.json
    holds a value it never writes: the file is ignored, LM Studio's defaults apply (ready at
    http://127.0.0.1:1234, no restart), and nothing is blamed on LM Studio's file."""
    (tmp_path / "server.json").write_text(json.dumps(remembered))
    w = World()
    missing = replace(make_install(), server=ServerSettings())  # found=False: LM Studio's defaults
    w.sup = make_supervisor(
        CONFIG, w.lm, w.clock, detect=lambda _: missing, memory=ServerMemory(tmp_path / "server.json")
    )
    async for _ in started(w):
        await w.clock.advance(0)
        snap = w.sup.snapshot()
        assert (w.sup.state, snap["server"]["api_endpoint"], w.sup.snap.restarts.count, w.problems()) == (
            State.READY,
            "http://127.0.0.1:1234",
            0,
            {},
        )


class DyingLmStudio(FakeLmStudio):
    """LM Studio whose daemon dies while answering ``GET /api/v1/models`` (when ``dying``):
    the listing fails with "Server disconnected" in the same instant as the PID's exit."""

    dying = False

    async def http(self, request: httpx.Request) -> httpx.Response:
        if self.dying and request.url.path == "/api/v1/models":
            self.dying = False
            self.exit_daemon()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return await super().http(request)


async def test_a_probe_cancelled_after_its_listing_failed_leaves_no_unretrieved_exception() -> None:
    """On 0.4 the idle check is a REST listing; when the daemon exits while answering it, the
    listing fails and the health loop is stopped in the same instant: no "Task exception was
    never retrieved" (seen twice in a soak)."""
    w = World()
    w.lm = DyingLmStudio()
    w.lm.rest_v1 = True
    w.sup = make_supervisor(CONFIG, w.lm, w.clock, detect=w.detect)
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(
        lambda _loop, context: errors.append(f"{context.get('message')}: {context.get('future')!r}")
    )
    try:
        async for _ in started(w):
            await w.clock.advance(0)
            assert (w.sup.state, w.sup.snap.lmstudio.rest_drift) == (State.READY, True)
            for _ in range(3):
                w.lm.dying = True
                await w.clock.advance(5)  # the next idle round's listing meets the dying daemon
                for _ in range(5):
                    await w.clock.advance(10)
                assert w.sup.state is State.READY
                gc.collect()
                await settle()
        assert errors == []
    finally:
        loop.set_exception_handler(None)
