"""The transition table as data: every edge, every illegal pair, and the backoff policy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmsupervisor.config import RestartConfig
from lmsupervisor.core.policy import Rung, retry_delay, rung_for
from lmsupervisor.core.states import TRANSITIONS, State, Trigger, accepts, next_state
from lmsupervisor.errors import IllegalTransition

S, T = State, Trigger

# The edges design.md §1, §5 and §6 call for, written out one by one here rather than read from
# TRANSITIONS: the oracle the table is checked against (an edge added, dropped or re-pointed in
# the table fails a test below until this list agrees).
EXPECTED: dict[tuple[State, Trigger], State] = {
    # start, detect, bring up, load (§1 steps 1-3)
    (S.STOPPED, T.START): S.STARTING,
    (S.STARTING, T.NOT_INSTALLED): S.NOT_INSTALLED,
    (S.NOT_INSTALLED, T.TIMER): S.STARTING,  # never gives up: LM Studio is looked for again
    (S.STARTING, T.SERVER_UP): S.LOADING_MODELS,
    (S.LOADING_MODELS, T.MODELS_LOADED): S.READY,
    (S.LOADING_MODELS, T.MODEL_FAILED): S.DEGRADED,  # "server healthy, a declared model failed"
    # drift and the model retry (§1 step 3: "reload any that drift away")
    (S.READY, T.DRIFT): S.LOADING_MODELS,
    (S.DEGRADED, T.DRIFT): S.LOADING_MODELS,
    (S.DEGRADED, T.TIMER): S.LOADING_MODELS,
    # failure, backoff, retry (§1: "never gives up ... backoff")
    (S.STARTING, T.FAILED): S.BACKOFF,
    (S.LOADING_MODELS, T.FAILED): S.BACKOFF,
    (S.READY, T.FAILED): S.BACKOFF,
    (S.DEGRADED, T.FAILED): S.BACKOFF,
    (S.BACKOFF, T.TIMER): S.STARTING,
    # the GPU gate (§9 [gpu] wait): no GPU for that long, LM Studio's daemon is restarted once
    (S.LOADING_MODELS, T.GPU_WAIT_OVER): S.STARTING,
    # a hot config change (§6: parse, diff, apply): server settings restart the server,
    # declared models are reconciled without a restart
    (S.STARTING, T.RECONFIGURE_SERVER): S.STARTING,
    (S.LOADING_MODELS, T.RECONFIGURE_SERVER): S.STARTING,
    (S.READY, T.RECONFIGURE_SERVER): S.STARTING,
    (S.DEGRADED, T.RECONFIGURE_SERVER): S.STARTING,
    (S.LOADING_MODELS, T.RECONFIGURE_MODELS): S.LOADING_MODELS,
    (S.READY, T.RECONFIGURE_MODELS): S.LOADING_MODELS,
    (S.DEGRADED, T.RECONFIGURE_MODELS): S.LOADING_MODELS,
    # POST /v1/restart (§5), from anywhere the supervisor runs
    (S.STARTING, T.RESTART): S.STARTING,
    (S.LOADING_MODELS, T.RESTART): S.STARTING,
    (S.READY, T.RESTART): S.STARTING,
    (S.DEGRADED, T.RESTART): S.STARTING,
    (S.BACKOFF, T.RESTART): S.STARTING,
    (S.NOT_INSTALLED, T.RESTART): S.STARTING,
    # SIGTERM/SIGINT (§6 "Shutdown"), from anywhere the supervisor runs
    (S.STARTING, T.STOP): S.STOPPING,
    (S.LOADING_MODELS, T.STOP): S.STOPPING,
    (S.READY, T.STOP): S.STOPPING,
    (S.DEGRADED, T.STOP): S.STOPPING,
    (S.BACKOFF, T.STOP): S.STOPPING,
    (S.NOT_INSTALLED, T.STOP): S.STOPPING,
    (S.STOPPING, T.STOPPED): S.STOPPED,
}
RUNNING = {S.NOT_INSTALLED, S.STARTING, S.LOADING_MODELS, S.READY, S.DEGRADED, S.BACKOFF}
FAILURE_STATES = {S.BACKOFF, S.DEGRADED, S.NOT_INSTALLED}


# What the user or the service manager asks for; the rest the supervisor meets by itself.
REQUESTS = frozenset({T.START, T.STOP, T.RESTART, T.RECONFIGURE_SERVER, T.RECONFIGURE_MODELS})


def reachable(start: State, triggers: frozenset[Trigger] = frozenset(Trigger)) -> set[State]:
    """The states TRANSITIONS leads to from ``start`` (itself included) along ``triggers`` only."""
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for (src, trigger), dst in TRANSITIONS.items():
            if src is here and trigger in triggers and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


@pytest.mark.parametrize(
    ("edge", "target"),
    list(EXPECTED.items()),
    ids=[f"{s.value}_to_{d.value}_on_{t.value}" for (s, t), d in EXPECTED.items()],
)
def test_transition(edge: tuple[State, Trigger], target: State) -> None:
    """Each edge the design calls for leads where the design says."""
    assert next_state(*edge) == target


def test_table_has_no_edges_beyond_the_design() -> None:
    """TRANSITIONS holds exactly the expected edges: an extra one (a FAILED out of BACKOFF, a
    STOP out of STOPPED) is as wrong as a missing one."""
    assert sorted(f"{s.value} --{t.value}--> {d.value}" for (s, t), d in TRANSITIONS.items()) == sorted(
        f"{s.value} --{t.value}--> {d.value}" for (s, t), d in EXPECTED.items()
    )


def test_illegal_transitions_raise() -> None:
    """Every (state, trigger) pair the design has no edge for raises IllegalTransition, naming
    both, and accepts() says False for it."""
    illegal = [(s, t) for s in State for t in Trigger if (s, t) not in EXPECTED]
    assert (S.BACKOFF, T.FAILED) in illegal and (S.STOPPED, T.STOP) in illegal
    for state, trigger in illegal:
        with pytest.raises(IllegalTransition) as raised:
            next_state(state, trigger)
        assert (raised.value.state, raised.value.trigger, accepts(state, trigger)) == (state, trigger, False)
        assert f"{state.value!r}" in str(raised.value) and f"{trigger.value!r}" in str(raised.value)


def test_every_state_is_reachable_from_stopped() -> None:
    """A supervisor that starts can end up in any state: none is unreachable (dead table rows)."""
    assert reachable(S.STOPPED) == set(State)


def test_no_dead_ends() -> None:
    """Every state has an edge out (STOPPED's is START), and from every state the supervisor can
    still shut down (reach STOPPED)."""
    assert [s for s in State if not any(src is s for src, _ in TRANSITIONS)] == []
    assert [s for s in State if S.STOPPED not in reachable(s)] == []


def test_ready_is_reachable_after_every_failure_without_being_asked() -> None:
    """From each failure state (backoff, degraded, not installed) and every other running state
    the supervisor gets back to READY by itself: along its own triggers (timers, probes, loads),
    with no restart, reload or stop requested by anyone."""
    own = frozenset(Trigger) - REQUESTS
    assert FAILURE_STATES <= RUNNING
    assert [s.value for s in RUNNING if S.READY not in reachable(s, own)] == []


def test_every_trigger_is_used() -> None:
    """Each Trigger labels at least one edge: a trigger with no edge would always raise."""
    assert {t for _, t in TRANSITIONS} == set(Trigger)


def test_every_running_state_can_stop_and_restart() -> None:
    """STOP and RESTART are accepted in every running state and lead to STOPPING and STARTING;
    STOPPING and STOPPED accept neither (a restart cannot undo a shutdown)."""
    assert {s for s in State if accepts(s, T.STOP)} == RUNNING
    assert {s for s in State if accepts(s, T.RESTART)} == RUNNING
    assert {next_state(s, T.STOP) for s in RUNNING} == {S.STOPPING}
    assert {next_state(s, T.RESTART) for s in RUNNING} == {S.STARTING}


def test_only_stopping_leads_to_stopped() -> None:
    """The shutdown is one path: nothing enters STOPPED but STOPPING's STOPPED edge, and STOPPING
    has no other way out."""
    assert [(s, t) for (s, t), d in TRANSITIONS.items() if d is S.STOPPED] == [(S.STOPPING, T.STOPPED)]
    assert [t for (s, t) in TRANSITIONS if s is S.STOPPING] == [T.STOPPED]


def test_ladder() -> None:
    """Rungs by consecutive failures: start, restart server, restart daemon, kill daemon, and stay there."""
    assert [rung_for(n) for n in range(6)] == [
        Rung.START,
        Rung.RESTART_SERVER,
        Rung.RESTART_DAEMON,
        Rung.KILL_DAEMON,
        Rung.KILL_DAEMON,
        Rung.KILL_DAEMON,
    ]


@given(st.floats(0.01, 10), st.floats(1.0, 4.0), st.floats(0.0, 0.99), st.integers(1, 2000), st.floats(-1, 1))
def test_jitter_bounds(initial: float, multiplier: float, jitter: float, attempt: int, sample: float) -> None:
    """Every delay is within +/- jitter of the capped exponential base, and never negative."""
    cfg = RestartConfig(initial_delay=initial, max_delay=300, multiplier=multiplier, jitter=jitter)
    delay = retry_delay(cfg, attempt, sample)
    # Reference in log space, so huge attempt counts cannot overflow the oracle itself.
    capped = math.log(initial) + (attempt - 1) * math.log(multiplier) >= math.log(300)
    base = 300.0 if capped else initial * multiplier ** (attempt - 1)
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


def test_retry_delays_double_to_the_cap() -> None:
    """Without jitter the delays are 1, 2, 4, ... capped at max_delay; attempt 0 waits nothing."""
    cfg = RestartConfig(initial_delay=1, max_delay=300, jitter=0)
    assert [retry_delay(cfg, n) for n in range(11)] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_readme_state_diagram_is_current() -> None:
    """The README's diagram is the one generated from TRANSITIONS and ON_ENTER (regenerate with
    `python -m lmsupervisor.core.states` when the tables change)."""
    from pathlib import Path

    from lmsupervisor.core.states import diagram

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- state-diagram:begin -->\n", "\n<!-- state-diagram:end -->"
    assert readme[readme.index(begin) + len(begin) : readme.index(end)] == diagram()


def test_every_state_has_entry_actions_listed() -> None:
    """ON_ENTER names every state, so entering one is never silently a no-op by omission."""
    from lmsupervisor.core.states import ON_ENTER

    assert set(ON_ENTER) == set(State)
