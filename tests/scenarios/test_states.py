"""The transition table as data: every edge, every illegal pair, and the backoff policy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmsupervisor.config import RestartConfig
from lmsupervisor.core.policy import Step, retry_delay, step_for
from lmsupervisor.core.states import TRANSITIONS, State, Trigger, next_state
from lmsupervisor.errors import IllegalTransition


@pytest.mark.parametrize(
    ("edge", "target"), list(TRANSITIONS.items()), ids=[f"{s.value}-{t.value}" for s, t in TRANSITIONS]
)
def test_transition(edge: tuple[State, Trigger], target: State) -> None:
    """Each edge of the table leads where the table says."""
    assert next_state(*edge) == target


def test_illegal_transitions_raise() -> None:
    """Every (state, trigger) pair not in the table raises IllegalTransition."""
    illegal = [(s, t) for s in State for t in Trigger if (s, t) not in TRANSITIONS]
    assert len(illegal) > 0
    for state, trigger in illegal:
        with pytest.raises(IllegalTransition):
            next_state(state, trigger)


def test_every_state_can_stop_and_is_reachable() -> None:
    """Every state except the two shutdown states accepts STOP, and every state is entered by some edge."""
    assert {s for s in State if (s, Trigger.STOP) in TRANSITIONS} == set(State) - {State.STOPPING, State.STOPPED}
    assert set(TRANSITIONS.values()) == set(State)


def test_ladder() -> None:
    """Rungs by consecutive failures: start, restart server, restart daemon, kill daemon, and stay there."""
    assert [step_for(n) for n in range(6)] == [
        Step.START,
        Step.RESTART_SERVER,
        Step.RESTART_DAEMON,
        Step.KILL_DAEMON,
        Step.KILL_DAEMON,
        Step.KILL_DAEMON,
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
