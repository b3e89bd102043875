"""The pure core driven directly: no event loop, one test per edge of the table, and the
behaviours of issue 6 (truthful models, held config, no duplicates) at the reducer level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from lmsupervisor.config import ModelConfig, ServerConfig, StatusConfig
from lmsupervisor.core.effects import (
    Ask,
    BringUp,
    CancelAction,
    Effect,
    Health,
    LoadModels,
    Publish,
    Schedule,
    Unload,
    Watch,
)
from lmsupervisor.core.messages import (
    ActionCrashed,
    Answered,
    BringUpFailed,
    ConfigChanged,
    DaemonExited,
    LoadPassFailed,
    LoadStarted,
    Message,
    ModelsDone,
    NotInstalled,
    Now,
    Observed,
    Probed,
    RestartRequested,
    ServerUp,
    Start,
    StopRequested,
    TimerFired,
)
from lmsupervisor.core.observed import ProbeResult, ServerSettings
from lmsupervisor.core.policy import Rung
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.reducer import reduce
from lmsupervisor.core.snapshot import HardwareSeen, Liveness, LmStudioSeen, ModelStatus, Restarts, Snapshot, initial
from lmsupervisor.core.states import TRANSITIONS, State, Trigger
from tests.scenarios.coredata import CFG, DAEMON, INSTALL, NOW, ONE, TWO, WORK, at
from tests.scenarios.fakes import make_install

S = State
E = TypeVar("E")


def step(snap: Snapshot, msg: Message, now: Now = NOW) -> tuple[Snapshot, tuple[Effect, ...]]:
    return reduce(snap, msg, now)


def transitions(effects: tuple[Effect, ...]) -> list[tuple[str, str]]:
    """The (previous, state) pairs of the state events, in order."""
    return [
        (e.event["previous"], e.event["state"])
        for e in effects
        if isinstance(e, Publish) and e.event["type"] == "state"
    ]


def of(kind: type[E], effects: tuple[Effect, ...]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


PORT_CHANGED = replace(CFG, server=ServerConfig(port=4321))
MODELS_CHANGED = replace(CFG, models=(ModelConfig("a/one"), ModelConfig("c/three")))

# One case per edge: the snapshot to start from and the message that takes the edge.
EDGE_CASES: dict[tuple[State, Trigger], tuple[Callable[[], Snapshot], Message]] = {
    (S.STOPPED, Trigger.START): (lambda: initial(CFG, 0.0), Start()),
    (S.STARTING, Trigger.NOT_INSTALLED): (lambda: at(S.STARTING), NotInstalled(5, make_install(False), "none")),
    (S.NOT_INSTALLED, Trigger.TIMER): (lambda: at(S.NOT_INSTALLED), TimerFired(3)),
    (S.STARTING, Trigger.SERVER_UP): (lambda: at(S.STARTING), ServerUp(5, INSTALL, ServerSettings(), DAEMON, "up")),
    (S.LOADING_MODELS, Trigger.MODELS_LOADED): (lambda: at(S.LOADING_MODELS), ModelsDone(5, (ONE, TWO))),
    (S.LOADING_MODELS, Trigger.MODEL_FAILED): (lambda: at(S.LOADING_MODELS), ModelsDone(5, (ONE,))),
    (S.READY, Trigger.DRIFT): (lambda: at(S.READY, loaded=True), Observed(2, (ONE,))),
    (S.DEGRADED, Trigger.DRIFT): (lambda: at(S.DEGRADED, loaded=True), Observed(2, (TWO,))),
    (S.DEGRADED, Trigger.TIMER): (lambda: at(S.DEGRADED), TimerFired(3)),
    (S.BACKOFF, Trigger.TIMER): (lambda: at(S.BACKOFF, restarts=Restarts(attempt=1)), TimerFired(3)),
    (S.READY, Trigger.RECONFIGURE_MODELS): (lambda: at(S.READY, loaded=True), ConfigChanged(MODELS_CHANGED)),
    (S.DEGRADED, Trigger.RECONFIGURE_MODELS): (lambda: at(S.DEGRADED), ConfigChanged(MODELS_CHANGED)),
    (S.LOADING_MODELS, Trigger.RECONFIGURE_MODELS): (
        lambda: at(S.LOADING_MODELS, pending_config=MODELS_CHANGED),
        ModelsDone(5, (ONE, TWO)),
    ),
    (S.STARTING, Trigger.FAILED): (lambda: at(S.STARTING), BringUpFailed(5, "lms server start failed")),
    (S.LOADING_MODELS, Trigger.FAILED): (lambda: at(S.LOADING_MODELS), DaemonExited(77)),
    (S.READY, Trigger.FAILED): (
        lambda: at(S.READY, loaded=True, liveness=Liveness(consecutive_failures=2)),
        Probed(2, ProbeResult(False, 1.0, None, "refused")),
    ),
    (S.DEGRADED, Trigger.FAILED): (lambda: at(S.DEGRADED), DaemonExited(77)),
    **{
        (s, Trigger.RECONFIGURE_SERVER): ((lambda s=s: at(s)), ConfigChanged(PORT_CHANGED))  # type: ignore[misc]
        for s in (S.STARTING, S.LOADING_MODELS, S.READY, S.DEGRADED)
    },
    **{
        (s, Trigger.RESTART): ((lambda s=s: at(s)), RestartRequested(False, "asked"))  # type: ignore[misc]
        for s in (S.STARTING, S.LOADING_MODELS, S.READY, S.DEGRADED, S.BACKOFF, S.NOT_INSTALLED)
    },
    **{
        (s, Trigger.STOP): ((lambda s=s: at(s)), StopRequested("SIGTERM"))  # type: ignore[misc]
        for s in (S.STARTING, S.LOADING_MODELS, S.READY, S.DEGRADED, S.BACKOFF, S.NOT_INSTALLED)
    },
    (S.STOPPING, Trigger.STOPPED): (lambda: at(S.READY), StopRequested("SIGTERM")),
    (S.LOADING_MODELS, Trigger.GPU_WAIT_OVER): (
        lambda: at(S.LOADING_MODELS, hardware=HardwareSeen(waiting_since=0.0, attempt=5)),
        TimerFired(3),
    ),
}


def test_every_edge_has_a_case() -> None:
    """The cases below cover exactly the edges of TRANSITIONS: a new edge needs a new case."""
    assert set(EDGE_CASES) == set(TRANSITIONS)


@pytest.mark.parametrize(
    "edge", list(EDGE_CASES), ids=[f"{s.value}_to_{TRANSITIONS[(s, t)].value}_on_{t.value}" for s, t in EDGE_CASES]
)
def test_transition(edge: tuple[State, Trigger]) -> None:
    """The message of each case takes exactly its edge (the state event names both ends)."""
    make, msg = EDGE_CASES[edge]
    src, _ = edge
    _, effects = step(make(), msg)
    assert (src.value, TRANSITIONS[edge].value) in transitions(effects)


def test_stopped_to_starting_begins_a_bring_up() -> None:
    """STOPPED -> STARTING: one BringUp at rung START, probes off, a new action and epoch."""
    snap, effects = step(initial(CFG, 0.0), Start())
    (bring_up,) = of(BringUp, effects)
    assert (snap.state, bring_up.step, bring_up.action, snap.work.epoch) == (S.STARTING, Rung.START, 1, 1)
    assert of(Health, effects) == [Health(probe=False, drift=False, epoch=0)]


def test_starting_to_loading_models_watches_probes_and_loads() -> None:
    """STARTING -> LOADING_MODELS: the daemon is watched, the server probed meanwhile, models loaded."""
    snap, effects = step(at(S.STARTING), ServerUp(5, INSTALL, ServerSettings(port=1234), DAEMON, "up"))
    assert of(Watch, effects) == [Watch(DAEMON)]
    assert of(Health, effects) == [Health(probe=True, drift=False, epoch=2)]
    (load,) = of(LoadModels, effects)
    assert (snap.state, load.action, [m.key for m in load.models]) == (S.LOADING_MODELS, 6, ["a/one", "b/two"])


def test_ready_to_backoff_on_daemon_exit_marks_models_pending() -> None:
    """READY -> BACKOFF when the daemon dies: no model is reported loaded any more, at once."""
    snap, effects = step(at(S.READY, loaded=True), DaemonExited(77))
    assert (snap.state, [m.state for m in snap.models], snap.lmstudio.daemon) == (
        S.BACKOFF,
        ["pending", "pending"],
        None,
    )
    assert of(Schedule, effects) == [Schedule(4, 1.0)]


def test_loading_models_to_backoff_on_probe_failures() -> None:
    """LOADING_MODELS keeps probing: a server that stops answering during a long load enters the ladder."""
    snap = at(S.LOADING_MODELS)
    for _ in range(3):
        snap, effects = step(snap, Probed(2, ProbeResult(False, 1.0, None, "no answer")))
    assert (snap.state, of(CancelAction, effects) != []) == (S.BACKOFF, True)


def test_restart_with_daemon_takes_the_daemon_rung() -> None:
    """RESTART with daemon=1 climbs to `daemon down` + `up` (never straight to a kill)."""
    _, effects = step(at(S.READY), RestartRequested(daemon=True, reason="asked"))
    assert [b.step for b in of(BringUp, effects)] == [Rung.RESTART_DAEMON]


def test_backoff_to_starting_climbs_the_ladder() -> None:
    """BACKOFF -> STARTING at the rung of the attempt count, counted as a restart."""
    snap, effects = step(at(S.BACKOFF, restarts=Restarts(attempt=3)), TimerFired(3))
    assert ([b.step for b in of(BringUp, effects)], snap.restarts.count) == ([Rung.KILL_DAEMON], 1)


def test_stale_messages_change_nothing() -> None:
    """Results of a cancelled action, an old timer or an old server epoch are ignored."""
    cases: list[tuple[Snapshot, Message]] = [
        (at(S.LOADING_MODELS), ModelsDone(4, (ONE, TWO))),
        (at(S.BACKOFF), TimerFired(2)),
        (at(S.READY, liveness=Liveness(consecutive_failures=2)), Probed(1, ProbeResult(False, 1.0, None, "x"))),
        (at(S.STARTING), ServerUp(4, INSTALL, ServerSettings(), DAEMON, "late")),
        (at(S.READY), DaemonExited(78)),
    ]
    for snap, msg in cases:
        assert step(snap, msg) == (snap, ())


def test_config_change_while_loading_is_held_then_applied() -> None:
    """A models change during LOADING_MODELS waits for the pass; a removed model is dropped, an added one loads."""
    snap, _ = step(at(S.LOADING_MODELS), ConfigChanged(MODELS_CHANGED))
    assert (snap.pending_config, [m.name for m in snap.models]) == (MODELS_CHANGED, ["a/one", "two"])
    snap, effects = step(snap, ModelsDone(5, (ONE, TWO)))
    (load,) = of(LoadModels, effects)
    assert (snap.state, snap.pending_config, [m.key for m in load.models]) == (
        S.LOADING_MODELS,
        None,
        ["a/one", "c/three"],
    )
    assert [m.name for m in snap.models] == ["a/one", "c/three"]


def test_server_change_while_starting_restarts_the_bring_up() -> None:
    """A server change during STARTING is not lost: a new bring-up runs with the new port."""
    snap, effects = step(at(S.STARTING), ConfigChanged(PORT_CHANGED))
    (bring_up,) = of(BringUp, effects)
    assert (snap.state, bring_up.config.server.port, bring_up.action) == (S.STARTING, 4321, 6)


def test_removed_model_is_unloaded_only_when_ours_and_configured() -> None:
    """unload_removed unloads a removed model we loaded; without it, it is only forgotten."""
    keep_only_one = replace(CFG, models=(ModelConfig("a/one"),))
    base = at(S.READY, loaded=True, work=replace(WORK, ours=frozenset({"two"})))
    snap, effects = step(base, ConfigChanged(keep_only_one))
    assert ([m.name for m in snap.models], of(LoadModels, effects)[0].unload) == (["a/one"], ())
    with_unload = replace(keep_only_one, reconcile=replace(CFG.reconcile, unload_removed=True))
    _, effects = step(base, ConfigChanged(with_unload))
    assert of(LoadModels, effects)[0].unload == ("two",)


def test_rekeyed_model_unloads_the_old_instance() -> None:
    """A new key under the same identifier unloads the instance we loaded before loading the new one."""
    rekeyed = replace(CFG, models=(ModelConfig("a/one"), ModelConfig("c/three", identifier="two")))
    snap, effects = step(at(S.READY, loaded=True, work=replace(WORK, ours=frozenset({"two"}))), ConfigChanged(rekeyed))
    assert (of(LoadModels, effects)[0].unload, snap.model("two")) == (("two",), ModelStatus("c/three", "two"))


def test_status_change_needs_a_restart() -> None:
    """status.* cannot change live: config_error says it applies at the next lmsupervisor start."""
    snap, _ = step(at(S.READY), ConfigChanged(replace(CFG, status=StatusConfig(group="wheel"))))
    assert (snap.config_error or "").startswith("status.group: changed; applies when lmsupervisor restarts")


def test_ttl_unload_is_idle_not_drift() -> None:
    """A declared model with ttl that LM Studio unloaded is idle_unloaded, not reloaded as drift."""
    cfg = replace(CFG, models=(ModelConfig("a/one", ttl=60), ModelConfig("b/two", identifier="two")))
    snap = replace(at(S.READY, loaded=True), config=cfg)
    snap, effects = step(snap, Observed(2, (TWO,)))
    assert (snap.state, snap.model("a/one"), of(LoadModels, effects)) == (
        S.READY,
        ModelStatus("a/one", None, "idle_unloaded"),
        [],
    )
    snap, effects = step(snap, RestartRequested(False, "asked"))
    assert snap.model("a/one") == ModelStatus("a/one", None, "pending")


def test_load_in_flight_is_carried_into_the_next_pass() -> None:
    """A load started before a restart is handed to the next pass as in flight, never started again."""
    snap, _ = step(at(S.LOADING_MODELS), LoadStarted("two"))
    snap, _ = step(snap, RestartRequested(False, "systemctl restart"))
    snap, effects = step(snap, ServerUp(6, INSTALL, ServerSettings(), DAEMON, "adopted", adopted=True))
    (load,) = of(LoadModels, effects)
    assert [f.name for f in load.in_flight] == ["two"]


def test_in_flight_load_is_forgotten_when_the_daemon_dies() -> None:
    """A dead daemon finishes no load: nothing stays in flight."""
    snap, _ = step(at(S.LOADING_MODELS), LoadStarted("two"))
    snap, _ = step(snap, DaemonExited(77))
    assert snap.work.in_flight == ()


def test_duplicate_we_created_is_unloaded() -> None:
    """`two:2` beside `two`, where we loaded `two`: the duplicate is unloaded; a stranger's is not."""
    dup = replace(TWO, identifier="two:2")
    _, effects = step(
        at(S.READY, loaded=True, work=replace(WORK, ours=frozenset({"two"}))), Observed(2, (ONE, TWO, dup))
    )
    assert [u.identifier for u in of(Unload, effects)] == ["two:2"]
    _, effects = step(at(S.READY, loaded=True), Observed(2, (ONE, TWO, dup)))
    assert of(Unload, effects) == []


def test_action_crash_while_starting_backs_off() -> None:
    """STARTING -> BACKOFF when the bring-up raised anything (EMFILE, InvalidURL, a bug)."""
    snap, _ = step(at(S.STARTING), ActionCrashed(5, "bring_up", "OSError: [Errno 24] Too many open files"))
    assert (snap.state, snap.restarts.last_reason) == (
        S.BACKOFF,
        "bring_up crashed: OSError: [Errno 24] Too many open files",
    )


def test_load_pass_that_cannot_list_degrades() -> None:
    """LOADING_MODELS -> DEGRADED when `lms ps` fails; the failed models carry the reason."""
    snap, _ = step(at(S.LOADING_MODELS), LoadPassFailed(5, "listing models failed: boom"))
    assert (snap.state, {m.error for m in snap.models}) == (S.DEGRADED, {"listing models failed: boom"})


def test_backoff_resets_after_a_healthy_period() -> None:
    """A failure after reset_after healthy seconds starts the backoff over at initial_delay."""
    snap = at(S.READY, loaded=True, restarts=Restarts(attempt=5), liveness=Liveness(healthy_since=NOW.mono - 61))
    snap, effects = step(snap, DaemonExited(77))
    assert (snap.restarts.attempt, of(Schedule, effects)) == (1, [Schedule(4, 1.0)])


def test_corrupt_server_config_keeps_the_last_good_settings_in_the_bring_up() -> None:
    """The last good server settings travel with every bring-up, so the action can use them."""
    good = ServerSettings(port=4321, bind="0.0.0.0", cors=True, found=True)
    _, effects = step(replace(initial(CFG, 0.0), lmstudio=LmStudioSeen(last_good_server=good)), Start())
    assert of(BringUp, effects)[0].last_good_server == good


ANSWERING = replace(CFG, models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two", probe="answer")))


def test_ready_to_loading_models_when_a_model_stops_answering() -> None:
    """READY -> LOADING_MODELS: a loaded model that cannot answer is failed with LM Studio's
    words and unloaded before it is loaded again; a good answer records its latency."""
    snap = replace(at(S.READY, loaded=True), config=ANSWERING)
    ok, _ = step(snap, Answered(2, "two", True, 12.3456))
    assert (ok.state, ok.model("two").last_answer_ms) == (S.READY, 12.346)  # type: ignore[union-attr]
    snap, effects = step(snap, Answered(2, "two", False, 30000.0, "Model crashed while generating"))
    (load,) = of(LoadModels, effects)
    assert (snap.state, snap.model("two").error, load.unload) == (  # type: ignore[union-attr]
        S.LOADING_MODELS,
        "Model crashed while generating",
        ("two",),
    )


def test_a_refused_answer_is_a_token_problem_and_the_model_stays_loaded() -> None:
    """A 401 to the answer probe ("Require Authentication" on, no token) is noted as the
    token's problem; the model is neither failed nor unloaded (no reload fixes a token),
    in READY and in the load pass alike; the next answer clears the problem."""
    refused = Problem("api_token_missing", "LM Studio refused lmsupervisor's request (HTTP 401)", "set one")
    snap = replace(at(S.READY, loaded=True), config=ANSWERING)
    snap, effects = step(snap, Answered(2, "two", False, 3.0, "token required", refused))
    assert (snap.state, snap.model("two").state, snap.work.unload_next, of(LoadModels, effects)) == (  # type: ignore[union-attr]
        S.READY,
        "loaded",
        (),
        [],
    )
    assert [p.code for p in snap.all_problems] == ["api_token_missing"]
    snap, _ = step(snap, Answered(2, "two", True, 12.0))
    assert snap.all_problems == ()
    fresh = replace(at(S.STARTING), config=ANSWERING)
    fresh, _ = step(fresh, ServerUp(5, INSTALL, ServerSettings(), DAEMON, "up"))
    fresh, _ = step(fresh, ModelsDone(6, (ONE, TWO), answers=(Answered(0, "two", False, 1.0, "401", refused),)))
    assert (fresh.state, fresh.model("two").state) == (S.READY, "loaded")  # type: ignore[union-attr]


def test_answer_probes_are_scheduled_by_the_reducer_one_interval_apart() -> None:
    """Deep readiness is the reducer's: a good probe in READY asks each loaded probe =
    "answer" model whose last ask is health.answer_interval old (one first seen loaded an
    interval later; the load pass's own ask counts), never a model that is not loaded."""
    cfg = replace(ANSWERING, health=replace(ANSWERING.health, answer_interval=60.0, answer_timeout=7.0))
    models = tuple(replace(m, state="loaded", instance=m.name, kind="llm") for m in at(S.READY).models)
    snap = replace(at(S.READY, loaded=True), config=cfg, models=models)
    alive = Probed(2, ProbeResult(True, 3.0, 200))

    def asks(snap: Snapshot, mono: float) -> tuple[Snapshot, list[Ask]]:
        snap, effects = step(snap, alive, replace(NOW, mono=mono))
        return snap, of(Ask, effects)

    snap, first = asks(snap, 1000.0)  # first seen: asked an interval from now
    snap, early = asks(snap, 1059.0)
    snap, due = asks(snap, 1060.0)
    snap, again = asks(snap, 1061.0)
    failing, _ = step(snap, Answered(2, "two", False, 1.0, "boom"))
    _, not_loaded = asks(failing, 2000.0)
    assert (first, early, due, again, not_loaded) == (
        [],
        [],
        [Ask(epoch=2, name="two", instance="two", kind="llm", timeout=7.0)],
        [],
        [],
    )
    _, effects = step(snap, Probed(2, ProbeResult(False, 1.0, None, "refused")), replace(NOW, mono=3000.0))
    assert of(Ask, effects) == []  # due, but the server did not answer its probe
    passed, _ = step(
        replace(at(S.LOADING_MODELS), config=cfg, models=models),
        ModelsDone(5, (ONE, TWO), answers=(Answered(0, "two", True, 2.0),)),
        replace(NOW, mono=5000.0),
    )
    assert [m.asked_at for m in passed.models] == [None, 5000.0]


def test_loading_models_to_degraded_when_a_fresh_load_cannot_answer() -> None:
    """LOADING_MODELS -> DEGRADED when the pass's own answer probe fails; the load pass asks it."""
    snap = replace(at(S.STARTING), config=ANSWERING)
    snap, effects = step(snap, ServerUp(5, INSTALL, ServerSettings(), DAEMON, "up"))
    assert of(LoadModels, effects)[0].ask == ("two",)
    snap, _ = step(snap, ModelsDone(6, (ONE, TWO), answers=(Answered(0, "two", False, 1.0, "boom"),)))
    assert (snap.state, snap.model("two").state, snap.work.unload_next) == (S.DEGRADED, "failed", ("two",))  # type: ignore[union-attr]


def test_probe_none_is_never_checked_for_drift() -> None:
    """A model declared with probe = "none" that disappears is not reloaded as drift."""
    cfg = replace(CFG, models=(ModelConfig("a/one", probe="none"), ModelConfig("b/two", identifier="two")))
    snap, effects = step(replace(at(S.READY, loaded=True), config=cfg), Observed(2, (TWO,)))
    assert (snap.state, of(LoadModels, effects)) == (S.READY, [])
