"""What counts as alive (:func:`lmsupervisor.health.judge`) and which probe results are a
verdict at all (:func:`lmsupervisor.health.timing`): tables, no I/O."""

from __future__ import annotations

import pytest

from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.errors import RestAuthError, RestConnectError, RestError, RestTimeoutError, RestUnsupportedError
from lmsupervisor.health import STALL_SLACK, Judgement, Timing, judge, timing
from lmsupervisor.lmstudio.rest import Listing
from tests.scenarios.coredata import ONE

URL = "http://127.0.0.1:1234"
LISTING = Listing((), (ONE,))
GOOD = ProbeResult(True, 4.0, 200)
BAD = ProbeResult(False, 9.0, None, "cannot connect to http://127.0.0.1:1234/lmstudio-greeting")


def verdict(listing: Listing | BaseException | None, greeting: ProbeResult | None, sent: bool = False) -> Judgement:
    return judge(listing, greeting, url=URL, ms=12.0, timeout=5.0, alive_sent=sent)


def test_a_listing_is_alive_and_observed() -> None:
    assert (verdict(LISTING, None), verdict(LISTING, GOOD, sent=True)) == (
        Judgement(probed=ProbeResult(True, 12.0, 200), observed=(ONE,)),
        Judgement(observed=(ONE,)),  # the greeting's ok went out already
    )


@pytest.mark.parametrize(("token_sent", "code"), [(False, "api_token_missing"), (True, "api_token_invalid")])
def test_a_refused_token_is_alive_and_lms_lists(token_sent: bool, code: str) -> None:
    """A 401 is an answer: the server is alive; the refusal is reported with `lms ps`."""
    found = verdict(RestAuthError("Invalid LM Studio API token", code), None)
    assert (found.probed, found.drift, found.problem and found.problem.code) == (
        ProbeResult(True, 12.0, 401),
        True,
        code,
    )


@pytest.mark.parametrize(
    "error",
    [RestError("Internal error"), RestUnsupportedError("Unexpected endpoint or method. (GET /api/v1/models)")],
)
def test_an_error_answer_is_no_verdict_until_the_greeting_decides(error: RestError) -> None:
    assert (verdict(error, None), verdict(error, GOOD), verdict(error, BAD)) == (
        Judgement(greet=True, failed=error.message),
        Judgement(probed=GOOD, drift=True, failed=error.message),
        Judgement(probed=BAD, failed=error.message),
    )


def test_a_late_or_unreachable_listing_is_dead_unless_the_greeting_answered() -> None:
    refused = RestConnectError("GET http://127.0.0.1:1234/api/v1/models: cannot connect")
    late = RestTimeoutError("no answer within 5 s")
    assert [verdict(None, None).probed, verdict(refused, None).probed, verdict(late, BAD).probed] == [
        ProbeResult(False, 12.0, None, "no answer from http://127.0.0.1:1234 within 5 s"),
        ProbeResult(False, 12.0, None, refused.message),
        ProbeResult(False, 12.0, None, BAD.error),
    ]
    assert (verdict(None, GOOD), verdict(late, GOOD, sent=True)) == (
        Judgement(probed=GOOD, failed="no listing within 5 s"),
        Judgement(failed=str(late)),
    )


def test_a_bug_while_listing_is_alive_only_with_a_good_greeting() -> None:
    """An exception that is no answer (our bug) never passes for a dead server when the
    greeting answered; without one the caller re-raises it (the health guard reports it)."""
    assert verdict(KeyError("models"), GOOD) == Judgement(probed=GOOD, failed="'models'")


def when(ok: bool, started: float, ended: float, failed_at: float | None = None) -> Timing:
    return timing(ok, started=started, ended=ended, timeout=5.0, interval=5.0, failed_at=failed_at)


def test_a_probe_that_ended_past_its_timeout_was_stalled_unless_it_answered() -> None:
    """Every probe is bounded by its timeout on the supervisor's clock: one that ends later
    than timeout + slack was stalled by the supervisor's own loop (a 17 s stall), so its
    failure says nothing about LM Studio; a good answer always counts."""
    assert [
        when(False, 100.0, 105.0),
        when(False, 100.0, 105.0 + STALL_SLACK),
        when(False, 100.0, 105.001 + STALL_SLACK),
        when(False, 100.0, 122.0),
        when(True, 100.0, 122.0),
    ] == [Timing.COUNTS, Timing.COUNTS, Timing.STALLED, Timing.STALLED, Timing.COUNTS]


def test_only_failures_of_probes_an_interval_apart_are_consecutive() -> None:
    """A failure of a probe started less than one interval from the last counted failure's
    (either side: probes end out of order) is too soon; one interval apart counts."""
    assert [
        when(False, 103.0, 104.0, failed_at=100.0),
        when(False, 97.5, 102.0, failed_at=100.0),
        when(False, 105.0, 110.0, failed_at=100.0),
        when(False, 104.9995, 110.0, failed_at=100.0),  # a timer that fired a hair early
        when(True, 101.0, 101.1, failed_at=100.0),
    ] == [Timing.TOO_SOON, Timing.TOO_SOON, Timing.COUNTS, Timing.COUNTS, Timing.COUNTS]
