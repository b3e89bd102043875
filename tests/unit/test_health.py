"""What counts as alive (:func:`lmsupervisor.health.judge`): one table, no I/O."""

from __future__ import annotations

import pytest

from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.errors import RestAuthError, RestConnectError, RestError, RestTimeoutError, RestUnsupportedError
from lmsupervisor.health import Judgement, judge
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
