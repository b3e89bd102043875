"""The supervisor on a fake clock against fakes of other release lines (facts §8): what it
runs comes from the detected capabilities, REST v1 replaces `lms` on 0.4, the app is spared."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig, ServerConfig
from lmsupervisor.core.states import State
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_supervisor, seconds_in_ready, settle

CONFIG = Config(
    health=HealthConfig(interval=5, timeout=1, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=300, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"),),
)


class Line:
    """A fake LM Studio of one release line and a supervisor running against it."""

    def __init__(self, config: Config = CONFIG, token: str | None = None, **lm: object) -> None:
        self.clock = FakeClock()
        self.lm = FakeLmStudio()
        self.config = config  # what a reload reads
        for name, value in lm.items():
            setattr(self.lm, name, value)
        self.sup = make_supervisor(config, self.lm, self.clock, token=token, config_loader=lambda: self.config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Line:
        self.task = asyncio.create_task(self.sup.run())
        await self.clock.advance(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sup.post("stop")
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        await self.sup.prober.aclose()

    def problems(self) -> list[str]:
        return [p["code"] for p in self.sup.snapshot()["problems"]]


async def test_rest_v1_replaces_lms_when_idle_and_on_recovery() -> None:
    """On 0.4 the load pass and every drift check use REST v1; a recovery after kill -9 runs
    `daemon up` and `server start` and nothing else (version, status, ps, ls are known)."""
    async with Line(rest_v1=True) as line:
        assert line.sup.state is State.READY
        assert line.sup.snapshot()["lmstudio"]["capabilities"]["rest_drift"] is True
        line.lm.calls.clear()
        await line.clock.advance(60)  # twelve health rounds
        assert (line.lm.calls, line.lm.rest_calls.count("/api/v1/models") >= 12) == ([], True)
        line.lm.exit_daemon()
        await line.clock.advance(1)
        assert line.sup.state is State.READY
        assert [c[:2] for c in line.lm.calls] == [("daemon", "up"), ("server", "start")]


async def test_idle_round_on_rest_is_one_request() -> None:
    """On 0.4 with models declared, GET /api/v1/models is both the liveness probe and the
    drift check: one HTTP request per health round, no greeting beside it (issue 9: idle cost)."""
    async with Line(rest_v1=True) as line:
        line.lm.http_paths.clear()
        await line.clock.advance(60)  # twelve health rounds
        assert line.lm.http_paths == ["/api/v1/models"] * 12
        assert line.sup.state is State.READY


@pytest.mark.parametrize("how", ["stalled", "refused"])
async def test_rest_round_detects_a_hang_within_the_bound(how: str) -> None:
    """The REST round judges liveness: a server that stops answering it (hung, or refusing
    while the daemon lives) enters the ladder within failures * interval + timeout (3 * 5 + 1 s,
    counted from just after a good round), with no `lms ps` during the outage; a refusal costs
    only the listing, a hang the greeting that races it after half the timeout."""
    async with Line(rest_v1=True) as line:
        await line.clock.advance(5)  # a good round just ran
        line.lm.calls.clear()
        line.lm.http_paths.clear()
        if how == "stalled":
            line.lm.http_stalled = True
            line.lm.stalled = {("ps",), ("daemon",), ("server",)}
        else:
            line.lm.server = False
        stayed = await seconds_in_ready(line.clock, line.sup, step=0.25)
        assert (line.sup.state, stayed <= 3 * 5 + 1) == (State.BACKOFF, True)
        sent = set(line.lm.http_paths[:6])  # the three failing rounds
        expected = {"/api/v1/models", "/lmstudio-greeting"} if how == "stalled" else {"/api/v1/models"}
        assert (sent, [c for c in line.lm.calls if c[0] == "ps"]) == (expected, [])


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, {"error": "Unexpected endpoint or method. (GET /api/v1/models)"}), (500, {"error": "Internal error"})],
    ids=["unexpected_endpoint", "http_500"],
)
async def test_rest_error_answer_falls_back_to_the_greeting(status: int, body: object) -> None:
    """A listing that answers with an error (0.3's "Unexpected endpoint" after a downgrade, a
    500) is no verdict on liveness: the greeting decides, `lms ps` lists, nothing restarts."""
    async with Line(rest_v1=True) as line:
        line.lm.listing_error = (status, body)
        line.lm.calls.clear()
        line.lm.http_paths.clear()
        await line.clock.advance(30)
        assert (line.sup.state, line.sup.snapshot()["restarts"]["count"]) == (State.READY, 0)
        assert "/lmstudio-greeting" in line.lm.http_paths
        assert ("ps", "--json") in line.lm.calls


@pytest.mark.parametrize(("listing", "everything"), [(5.0, 0.0), (0.0, 0.6)], ids=["slow_listing", "slow_server"])
async def test_a_slow_live_server_is_not_restarted(listing: float, everything: float) -> None:
    """health.timeout is 1 s. A listing that takes 5 s while the greeting answers at once, or
    a server that takes 0.6 s for every request: after half the timeout the greeting races
    the listing, the first good answer decides, so nothing restarts; drift is still seen."""
    async with Line(rest_v1=True) as line:
        line.lm.listing_delay, line.lm.http_delay = listing, everything
        await line.clock.advance(60)
        assert (line.sup.state, line.sup.snapshot()["restarts"]["count"]) == (State.READY, 0)
        line.lm.listing_delay = min(listing, 0.7)  # past half the timeout, within it
        line.lm.loaded.clear()
        line.lm.rest_calls.clear()
        await line.clock.advance(10)
        assert "/api/v1/models/load" in line.lm.rest_calls


async def test_drift_seen_through_rest_is_reloaded_through_rest() -> None:
    """A model unloaded behind our back on 0.4 is noticed by GET /api/v1/models and loaded by
    POST /api/v1/models/load, without `lms`."""
    async with Line(rest_v1=True) as line:
        line.lm.calls.clear()
        line.lm.rest_calls.clear()
        line.lm.loaded.clear()
        await line.clock.advance(5)
        assert (line.sup.state, line.lm.calls) == (State.READY, [])
        assert "/api/v1/models/load" in line.lm.rest_calls


async def test_a_model_that_cannot_answer_is_unloaded_then_loaded_through_rest() -> None:
    """Deep readiness on 0.4: a model that stops answering is unloaded and loaded again in the
    same pass, judged on what LM Studio lists after the unload (the listing taken before the
    unload said it was still loaded: the pass kept it, then failed it as "not listed")."""
    health = HealthConfig(interval=5, timeout=1, failures_before_restart=3, answer_interval=10)
    config = Config(health=health, restart=CONFIG.restart, models=(ModelConfig("a/one", probe="answer"),))
    async with Line(config, rest_v1=True) as line:
        line.lm.answer_errors["a/one"] = "Model crashed while generating"
        line.lm.rest_calls.clear()
        await line.clock.advance(10)  # the next answer probe fails: unload, load, ask again
        unload = line.lm.rest_calls.index("/api/v1/models/unload")
        assert line.lm.rest_calls[unload:] == [
            "/api/v1/models/unload",
            "/api/v1/models",  # listed again after the unload: the earlier listing is stale
            "/api/v1/models/load",
            "/api/v1/models",
        ]
        [model] = line.sup.snapshot()["models"]
        assert (model["state"], model["error"]) == ("failed", "a/one did not answer: Model crashed while generating")
        del line.lm.answer_errors["a/one"]
        await line.clock.advance(60)  # the model backoff retries: it answers now
        assert (line.sup.state, line.sup.snapshot()["models"][0]["state"]) == (State.READY, "loaded")


async def test_wrong_token_is_a_problem_not_a_restart_loop() -> None:
    """A 401 from REST v1 is `api_token_invalid` with its fix; `lms` stands in, no restart."""
    async with Line(token="sk-lm-wrong", rest_v1=True) as line:  # noqa: S106 - a test value
        line.lm.token = "sk-lm-right"
        await line.clock.advance(30)
        snap = line.sup.snapshot()
        assert (line.sup.state, snap["restarts"]["count"]) == (State.READY, 0)
        problem = next(p for p in snap["problems"] if p["code"] == "api_token_invalid")
        assert "api_token" in problem["fix"]


async def test_hung_app_is_spared_and_reported() -> None:
    """The GUI app (isDaemon false) holding a hung service is never terminated with
    kill_app = false: every rung spares it and the status says app_hung."""
    async with Line(is_daemon=False) as line:
        line.lm.hung = True
        await line.clock.advance(15)  # three failed probes
        await line.clock.advance(30)  # rungs 1, 2, 3 and more
        assert (line.lm.terminated, line.lm.signalled) == ([], [])
        assert "app_hung" in line.problems()


async def test_hung_app_is_restarted_with_kill_app() -> None:
    """With [restart] kill_app = true the last rung terminates the hung app."""
    config = Config(
        health=CONFIG.health, restart=RestartConfig(initial_delay=1, jitter=0, kill_app=True), models=CONFIG.models
    )
    async with Line(config, is_daemon=False) as line:
        pid = line.lm.daemon_pid
        line.lm.hung = True
        await line.clock.advance(15)
        await line.clock.advance(30)
        assert line.lm.terminated == [pid]
        assert line.sup.state is State.READY


@pytest.mark.parametrize("bind_flag", [True, False])
async def test_bind_only_when_supported(bind_flag: bool) -> None:
    """`--bind` is passed only to an `lms` that has it; without it a differing declared bind
    is the bind_unsupported problem and the server keeps LM Studio's saved interface."""
    config = Config(server=ServerConfig(bind="0.0.0.0"), health=CONFIG.health, restart=CONFIG.restart)
    async with Line(config, bind_flag=bind_flag) as line:
        [start] = [c for c in line.lm.calls if c[:2] == ("server", "start")]
        assert ("--bind" in start, "bind_unsupported" in line.problems()) == (bind_flag, not bind_flag)
        assert line.sup.snapshot()["server"]["bind"] == ("0.0.0.0" if bind_flag else "127.0.0.1")


async def test_no_daemon_command_means_no_daemon_calls() -> None:
    """An `lms` without `daemon` (cmd-ts, 0.3.x) is never asked `daemon up/down/status`."""
    async with Line(daemon_commands=()) as line:
        line.lm.daemon_pid = 5  # the app, woken by `server start`
        line.lm.exit_daemon()
        await settle()
        await line.clock.advance(10)
        assert [c for c in line.lm.calls if c[0] == "daemon"] == []


@pytest.mark.parametrize("lm_link", [True, False])
async def test_lm_link_copies_are_not_here_and_local_is_known_from_the_listing(lm_link: bool) -> None:
    """LM Link (facts §9): `load --help` hides `--local`, a `deviceIdentifier` in `lms ls
    --json` reveals it; a model loaded on a linked device does not satisfy a declared one,
    and `--exact` never picks the remote copy. An `lms` without LM Link gets no `--local`
    (older ones would reject the whole command)."""
    async with Line(lm_link=lm_link) as line:
        [load] = [c for c in line.lm.calls if c[0] == "load"]
        assert (load[1], "--local" in load, line.lm.remote_loads, line.sup.state) == (
            "a/one",
            lm_link,
            [],
            State.READY,
        )
        assert [i["identifier"] for i in line.lm.loaded] == ["a/one"]


@pytest.mark.parametrize("ttl_flag", [True, False])
async def test_ttl_only_where_the_cli_has_it(ttl_flag: bool) -> None:
    """`load --ttl` arrived in 0.3.9 (facts §9): an older `lms` loads the model without it
    (rather than failing the whole load) and the status names ttl_unsupported with its fix."""
    config = Config(health=CONFIG.health, restart=CONFIG.restart, models=(ModelConfig("a/one", ttl=600),))
    async with Line(config, ttl_flag=ttl_flag) as line:
        [load] = [c for c in line.lm.calls if c[0] == "load"]
        problem = next((p for p in line.sup.snapshot()["problems"] if p["code"] == "ttl_unsupported"), None)
        assert ("--ttl" in load, line.sup.state, problem is None) == (ttl_flag, State.READY, ttl_flag)
        assert problem is None or ("a/one" in problem["message"] and "0.3.9" in problem["fix"])


async def test_ttl_unsupported_clears_once_no_model_declares_ttl() -> None:
    """The problem stands while a declared ttl cannot be passed, and goes with the ttl."""
    config = Config(health=CONFIG.health, restart=CONFIG.restart, models=(ModelConfig("a/one", ttl=600),))
    async with Line(config, ttl_flag=False) as line:
        assert "ttl_unsupported" in line.problems()
        line.config = CONFIG  # the same model, without ttl
        line.sup.post("reload")
        await line.clock.advance(5)
        assert (line.sup.state, "ttl_unsupported" in line.problems()) == (State.READY, False)


@pytest.mark.parametrize("completed", ["on_a_later_pass", "in_lmstudio"])
async def test_a_paused_download_is_a_problem_until_it_resumes(completed: str) -> None:
    """A paused REST v1 download waits for a person (facts §9): the model fails at once with
    download_paused (no hours-long wait), and both clear once it completes, whether a later
    pass sees the job complete or finds the model already downloaded."""
    config = Config(
        health=CONFIG.health,
        restart=CONFIG.restart,
        models=(ModelConfig("a/one"), ModelConfig("c/three", download=True)),
    )
    async with Line(config, rest_v1=True, hub={"c/three": "paused"}) as line:
        for _ in range(50):  # bounded: until the first pass has ended (it retries under backoff)
            if line.sup.state is State.DEGRADED:
                break
            await line.clock.advance(0.1)
        snap = line.sup.snapshot()
        three = next(m for m in snap["models"] if m["key"] == "c/three")
        problem = next((p for p in snap["problems"] if p["code"] == "download_paused"), None)
        assert (line.sup.state, three["state"], "paused" in (three["error"] or "")) == (State.DEGRADED, "failed", True)
        assert problem is not None and "c/three" in problem["message"]
        if completed == "in_lmstudio":
            line.lm.MODELS.append({"modelKey": "c/three", "path": "c/three", "type": "llm", "sizeBytes": 9})
        else:
            line.lm.hub["c/three"] = "completed"
        await line.clock.advance(120)  # the failed model is retried under its backoff
        snap = line.sup.snapshot()
        assert (line.sup.state, [p["code"] for p in snap["problems"] if p["code"] == "download_paused"]) == (
            State.READY,
            [],
        )


async def test_answer_probe_under_require_authentication() -> None:
    """ "Require Authentication" on (the fake refuses every route but the greeting): a
    probe = "answer" model is asked with the resolved token, answers, and stays loaded."""
    config = replace(
        CONFIG, models=(ModelConfig("a/one", probe="answer"),), health=replace(CONFIG.health, answer_interval=10)
    )
    line = Line(config, token="sk-lm-right", rest_v1=True)  # noqa: S106 - a test value
    line.lm.token = "sk-lm-right"
    async with line:
        await line.clock.advance(60)  # six answer intervals
        snap = line.sup.snapshot()
        assert (line.sup.state, snap["models"][0]["state"], snap["problems"]) == (State.READY, "loaded", [])
        assert line.lm.http_paths.count("/v1/chat/completions") >= 6
        assert "/api/v1/models/unload" not in line.lm.rest_calls


class ListingFailsAfterLoad(FakeLmStudio):
    """REST v1 whose listing answers 500 from the first load on (``failing``), as an
    overloaded 0.4 server might while it loads."""

    failing = True

    async def http(self, request: httpx.Request) -> httpx.Response:
        if self.failing and request.url.path == "/api/v1/models/load":
            self.listing_error = (500, {"error": "Internal error"})
        return await super().http(request)


async def test_a_rest_error_in_the_load_pass_is_lm_studios_failure_not_ours() -> None:
    """The listing that verifies a REST load pass answers an error: the pass fails as LM
    Studio's failure (retried under the model backoff), never as `supervisor_error` ("a bug
    in lmsupervisor"); once the listing answers again, the models are ready."""
    line = Line(rest_v1=True)
    line.lm = ListingFailsAfterLoad()
    line.lm.rest_v1 = True
    line.sup = make_supervisor(CONFIG, line.lm, line.clock)
    async with line:
        await line.clock.advance(0)
        assert ("supervisor_error" in line.problems(), line.sup.state) == (False, State.DEGRADED)
        line.lm.failing, line.lm.listing_error = False, None
        await line.clock.advance(30)
        assert (line.sup.state, "supervisor_error" in line.problems()) == (State.READY, False)


@pytest.mark.parametrize(
    ("rest_v1", "key", "chosen"),
    [
        (True, "a/one", "rest"),  # 0.4, a REST model key: the pass loads over REST v1
        (True, "hf/b-two-GGUF/two.gguf", "lms"),  # 0.4, a path (no REST key): the pass uses `lms`
        (False, "a/one", "lms"),  # 0.3, no REST v1
    ],
)
async def test_a_duplicate_is_unloaded_through_the_backend_the_load_pass_chose(
    rest_v1: bool, key: str, chosen: str
) -> None:
    """A duplicate instance (`<name>:2` of a model we loaded) is unloaded between passes
    through the backend a load pass chooses on that line, REST v1 or `lms`, never the other."""
    config = replace(CONFIG, models=(ModelConfig(key),))
    async with Line(config, rest_v1=rest_v1) as line:
        assert line.sup.state is State.READY
        loads = {"rest": "/api/v1/models/load" in line.lm.rest_calls, "lms": any(c[0] == "load" for c in line.lm.calls)}
        duplicate = f"{line.lm.loaded[0]['identifier']}:2"
        line.lm.loaded.append({**line.lm.loaded[0], "identifier": duplicate})
        await line.clock.advance(5)  # one health round: the drift check sees the duplicate
        unloads = {"rest": "/api/v1/models/unload" in line.lm.rest_calls, "lms": ("unload", duplicate) in line.lm.calls}
        gone = all(i["identifier"] != duplicate for i in line.lm.loaded)
        assert ([k for k in loads if loads[k]], [k for k in unloads if unloads[k]], gone) == ([chosen], [chosen], True)
