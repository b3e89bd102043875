"""A bounded chaos soak: the real `lmsupervisor run` against the simulator, random faults.

The full soak (200 faults, the figures) is ``bench/chaos.py``; this one runs 24
faults of the same catalogue (:mod:`chaos_soak.faults` in ``bench/``, every kind once, the
deterministic ones included) about three minutes on an idle machine. On failure the message is the soak's
report: each failed fault with its kind, variant and what happened; ``python
bench/chaos.py --seed SEED --kinds KIND`` replays one kind.
"""

from __future__ import annotations

import pytest
from chaos_soak.plan import DETERMINISTIC, KINDS, SoakConfig, config_text, fault_order, problem_bound
from chaos_soak.processes import scan_log_text
from chaos_soak.report import FaultResult, SoakReport
from chaos_soak.soak import run_soak

pytestmark = pytest.mark.integration

SEED = 6  # fixes the order and variants of the faults; the timings are real
FAULTS = 24  # a round of the catalogue (22 kinds) and two more: the deterministic kinds take 5-25 s each
# Every fault runs, however busy the machine: no fault-start cutoff by the clock (about 7 s a
# fault when idle, 12 s next to two CPU hogs). The hard limit is a safety net only: a soak that
# averages 30 s a fault is cut there and fails (its report names the fault that was cut).
HARD_LIMIT = FAULTS * 30.0
SOAK = SoakConfig(
    faults=FAULTS,
    seed=SEED,
    time_limit=HARD_LIMIT,
    hard_limit=HARD_LIMIT,
    time_scale=0.12,  # the slow model loads in 1.8 s: a restart during the load can duplicate it
    # From the soak's config (chaos.config_text): the slowest recovery, a hung daemon, spends
    # ~15 s in its own timeouts (`server stop` 3 s, `server start` 8 s, `daemon down` 3 s, the
    # probes) before the real work of a restart; the longest a healthy supervisor stays in one
    # state is ~12 s (stop, start, a probe). Twice that or more, for a busy machine.
    recover_timeout=60.0,
    wedge_after=30.0,
    status_rate=2.0,
)


# Supervisor misbehaviour the soak finds and that is not fixed yet: kind -> what. These kinds
# are still run and must name their problem and never restart LM Studio's daemon twice; their
# recovery and time to problem are reported, not asserted. (None now.)
KNOWN_FINDINGS: dict[str, str] = {}


def test_the_soak_covers_every_fault_kind() -> None:
    """The faults come in shuffled rounds of the catalogue: 24 faults hold every kind at least once."""
    order = fault_order(SOAK.seed, SOAK.faults)
    assert (len(order), set(order)) == (SOAK.faults, set(KINDS))


def test_a_task_that_died_counts_as_a_crash_and_a_handled_one_does_not() -> None:
    """The log scan: a stray traceback is a crash ending on its error; `action_crashed` is only counted."""
    log = "\n".join(
        [
            '{"event": "action_crashed", "exception": "Traceback (most recent call last): ...", "level": "error"}',
            '{"event": "state_changed", "state": "ready"}',
            "Task exception was never retrieved",
            "Traceback (most recent call last):",
            '  File "supervisor.py", line 530, in _set_model',
            "KeyError: 'qwen'",
            '{"event": "supervisor_exited"}',
        ]
    )
    crash, excerpt, handled = scan_log_text(log)
    assert (crash, excerpt.splitlines()[0], excerpt.splitlines()[-1], handled) == (
        True,
        "Task exception was never retrieved",
        "KeyError: 'qwen'",
        1,
    )
    assert scan_log_text('{"event": "action_crashed", "exception": "Traceback ..."}\n') == (False, "", 1)


def test_the_problem_bound_is_read_from_the_soak_config() -> None:
    """failures_before_restart x interval + timeout of the soak's config: 3 x 0.2 + 1 s."""
    assert problem_bound(config_text()) == pytest.approx(1.6)


def test_a_late_problem_or_a_second_daemon_restart_fails_the_fault_and_shows_in_the_report() -> None:
    """Deterministic faults: a problem past the bound, never seen, or two daemon restarts for one
    fault is a failed fault, counted per kind and in the totals, and named in the render."""

    def fault(n: int, kind: str, to_problem: float | None, restarts: int) -> FaultResult:
        return FaultResult(n, kind, recovered=True, seconds=1.0, problem=DETERMINISTIC[kind], problem_bound_s=1.6,
                           to_problem_s=to_problem, daemon_restarts=restarts)  # fmt: skip

    faults = [
        fault(1, "bad_network_interface", 0.5, 0),
        fault(2, "bad_network_interface", 2.5, 1),
        fault(3, "auth_without_token", None, 2),
    ]
    report = SoakReport(seed=1, config=SoakConfig(kinds=tuple(DETERMINISTIC)), faults=faults)
    assert [(f.failed, f.problem_late, f.harmful) for f in faults] == [
        (False, False, False),
        (True, True, False),
        (True, True, True),
    ]
    net, auth = report.by_kind()
    assert (net.problems_seen, net.problems_late, net.to_problem_max_s, net.daemon_restarts) == (2, 1, 2.5, 1)
    assert (auth.problems_seen, auth.problems_late, auth.harmful, auth.daemon_restarts_max) == (0, 1, 1, 2)
    assert (report.totals()["problems_late"], report.totals()["harmful"]) == (2, 1)
    text = report.render()
    assert "server_address_invalid after 2.50 s (bound 1.60 s)" in text
    assert "api_token_missing never seen" in text and "daemon restarted 2 times" in text


@pytest.mark.timeout(HARD_LIMIT + 60)  # + the start (its first steady state) and the end (processes killed)
def test_chaos_soak_recovers_from_every_fault() -> None:
    """24 random faults, one at a time: every one recovered, no duplicate, no wedge, no crash;
    each deterministic one named as its problem, and LM Studio's daemon restarted at most once
    for it (0 beyond the first). How soon the problem shows (bound: failures_before_restart x
    interval + timeout) is in the report, not asserted: it is wall time of a real process on a
    machine that may be busy; the scenario tests (tests/scenarios/test_never_harmful.py) hold
    the bound on the fake clock."""
    report = run_soak(SOAK)
    totals = report.totals()
    summary = report.render()
    assert report.aborted is None, summary
    assert totals["faults"] >= FAULTS, summary
    done = report.counted()
    known = [f for f in done if f.kind in KNOWN_FINDINGS]
    assert ([f.n for f in done if not f.recovered and f not in known], totals["duplicates"], totals["wedges"],
            totals["crashes"]) == ([], 0, 0, 0), summary  # fmt: skip
    assert totals["settings_lost"] == 0, summary
    deterministic = [f for f in done if f.problem is not None]
    assert {f.kind for f in deterministic} == set(DETERMINISTIC), summary
    assert [f.n for f in deterministic if f.harmful or f.daemon_restarts is None] == [], summary
    assert [f.n for f in deterministic if f.to_problem_s is None] == [], summary
