"""A bounded chaos soak: the real `lmsupervisor run` against the simulator, random faults.

The full soak (200 faults, the figures) is ``bench/chaos.py``; this one runs at least 30
faults of the same catalogue (:mod:`lmsupervisor.simulator.chaos`) in under three minutes.
On failure the message is the soak's report: each failed fault with its kind, variant and
what happened; ``python bench/chaos.py --seed SEED --kinds KIND`` replays one kind.
"""

from __future__ import annotations

import pytest

from lmsupervisor.simulator.chaos import KINDS, SoakConfig, fault_order, run_soak, scan_log_text

pytestmark = pytest.mark.integration

SEED = 6  # fixes the order and variants of the faults; the timings are real
SOAK = SoakConfig(
    faults=30,
    seed=SEED,
    time_limit=160.0,  # no fault starts after this
    hard_limit=175.0,  # a fault still in progress is cut here (not counted)
    time_scale=0.12,  # the slow model loads in 1.8 s: a restart during the load can duplicate it
    recover_timeout=30.0,
    wedge_after=15.0,
    status_rate=2.0,
)


def test_the_soak_covers_every_fault_kind() -> None:
    """The faults come in shuffled rounds of the catalogue: 30 faults hold every kind at least once."""
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


@pytest.mark.timeout(240)
def test_chaos_soak_recovers_from_every_fault() -> None:
    """At least 30 random faults, one at a time: every one recovered, no duplicate, no wedge, no crash."""
    report = run_soak(SOAK)
    totals = report.totals()
    summary = report.render()
    assert report.aborted is None, summary
    assert totals["faults"] >= 30, summary
    assert (totals["recovered"], totals["duplicates"], totals["wedges"], totals["crashes"]) == (
        totals["faults"],
        0,
        0,
        0,
    ), summary
    assert totals["settings_lost"] == 0, summary
