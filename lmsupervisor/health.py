"""Health: the probe cadence, and what counts as alive.

Two halves, as everywhere in this codebase (reduce, then perform):

- :func:`judge` is the one answer to "what counts as alive?": from what one check saw (the
  REST listing's outcome, the greeting's) it decides the liveness verdict to send
  (:class:`~lmsupervisor.core.messages.Probed`), the listing to observe, and whether `lms`
  must list instead. Pure.
- :class:`HealthChecks` runs the checks on a fixed cadence (``health.interval`` seconds),
  each bounded by ``health.timeout``, so a hang is noticed within
  ``failures_before_restart * interval + timeout`` whatever is in flight; it performs the
  reducer's :class:`~lmsupervisor.core.messages.Health` and
  :class:`~lmsupervisor.core.messages.Ask` effects and sends every result as a message. It
  keeps no state the reducer needs: which models are due an answer probe is in the
  snapshot (``ModelStatus.asked_at``), decided by the reducer.
- :func:`timing` is the one answer to "is this probe's result a verdict on LM Studio at
  all?": a probe whose deadline passed while the supervisor's own event loop was stalled
  (a machine at load 19, a SIGSTOP) could not have been given its time, so it is no verdict
  and the cadence probes again at once; only failures of probes started at least one
  interval apart count as consecutive. Pure.

On 0.4 with models declared, one ``GET /api/v1/models`` is both the liveness probe and
the drift check (facts §4, §8): an idle round costs one local HTTP request and no `lms`
process. Elsewhere the greeting (``GET /lmstudio-greeting``) is the probe and
`lms ps --json` the drift check.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from lmsupervisor.clock import RESUME_MIN, within
from lmsupervisor.core.effects import Ask, Health
from lmsupervisor.core.messages import HEALTH_ACTION, ActionCrashed, Message, Observed, Probed, Resumed
from lmsupervisor.core.observed import LoadedModel, ProbeResult, base_url
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.errors import LmsError, RestAuthError, RestConnectError, RestError, RestTimeoutError
from lmsupervisor.lmstudio.facade import LmStudio
from lmsupervisor.lmstudio.loadpass import ask
from lmsupervisor.lmstudio.rest import Listing, RestClient, token_problem
from lmsupervisor.statefile import StateFiles


@dataclass(frozen=True)
class Judgement:
    """What one REST health check concluded (see :func:`judge`).

    ``probed`` is the liveness verdict to send (None: none, or already sent); ``observed``
    the loaded instances the listing showed; ``drift`` whether `lms ps` must list instead
    (``problem``: the token refusal to report with that list); ``greet`` that no verdict
    can be given without the greeting; ``failed`` why the REST drift check gave nothing
    (logged ``drift_check_failed``)."""

    probed: ProbeResult | None = None
    observed: tuple[LoadedModel, ...] | None = None
    drift: bool = False
    problem: Problem | None = None
    greet: bool = False
    failed: str | None = None


def judge(
    listing: Listing | BaseException | None,
    greeting: ProbeResult | None,
    *,
    url: str,
    ms: float,
    timeout: float,
    alive_sent: bool = False,
) -> Judgement:
    """What counts as alive, from one check of the server at ``url``.

    ``listing`` is the outcome of ``GET /api/v1/models``: a :class:`Listing`, the
    exception it raised, or None when it had not answered within ``timeout`` seconds;
    ``greeting`` the greeting probe's result when it was sent (None: not sent, or not
    back); ``ms`` the check's duration; ``alive_sent`` that the greeting's ok was sent
    already (the listing was slow). Rules:

    - a listing: alive, and observed;
    - a 401 (the server answered; our token is refused): alive, reported, `lms ps` lists;
    - any other error answer (a 500, 0.3's "Unexpected endpoint"): no verdict by itself;
      the greeting decides (``greet`` when it was not sent), and `lms ps` lists when it
      is ok;
    - a good greeting while the listing is late or could not connect: alive;
    - no connection, or no answer: dead (the greeting's words when it failed).

    Raises nothing; an exception that is not a :class:`~lmsupervisor.errors.RestError` is
    a bug the caller re-raises unless the greeting was good (see
    :meth:`HealthChecks.probe_rest`).
    """
    exc = listing if isinstance(listing, BaseException) else None

    def alive(result: ProbeResult) -> ProbeResult | None:
        return None if alive_sent else result

    if isinstance(listing, Listing):
        return Judgement(probed=alive(ProbeResult(True, ms, 200)), observed=listing.loaded)
    if isinstance(exc, RestAuthError):
        problem = token_problem(exc.code, exc.message)
        return Judgement(probed=alive(ProbeResult(True, ms, 401)), drift=True, problem=problem)
    if isinstance(exc, RestError) and not isinstance(exc, (RestTimeoutError, RestConnectError)):
        if greeting is None:  # an answer, but not a listing: no verdict on liveness yet
            return Judgement(greet=True, failed=exc.message)
        return Judgement(probed=alive(greeting) if greeting.ok else greeting, drift=greeting.ok, failed=exc.message)
    if greeting is not None and greeting.ok:  # alive; the listing failed or is late
        return Judgement(probed=alive(greeting), failed=str(exc or f"no listing within {timeout:g} s"))
    why = exc.message if isinstance(exc, RestConnectError) else f"no answer from {url} within {timeout:g} s"
    return Judgement(probed=ProbeResult(False, ms, None, (greeting and greeting.error) or why))


STALL_SLACK = 1.0
"""Seconds a probe may end past its timeout before the overrun is the supervisor's own stall:
every probe is bounded by ``health.timeout`` on the supervisor's clock, so only an event loop
that did not run (no CPU for the process, a SIGSTOP) lets one end later. Above a busy
machine's scheduling delays (tenths of a second at load 19 on 2 cores)."""

SAME_ROUND = 1e-3
"""Seconds by which two probes' starts may fall short of one interval and still count as
a round apart (a timer may fire up to the loop's clock resolution early)."""


class Timing(enum.Enum):
    """Whether a probe's result is a verdict on LM Studio (see :func:`timing`)."""

    COUNTS = "counts"  # a verdict: sent to the reducer as Probed
    STALLED = "stalled"  # its deadline passed while our loop was stalled: no verdict, probe again at once
    TOO_SOON = "too_soon"  # a failure less than one interval from the last counted one: no verdict


def timing(
    ok: bool, *, started: float, ended: float, timeout: float, interval: float, failed_at: float | None
) -> Timing:
    """Whether a probe's result counts, from when it ran.

    ``ok`` is the probe's result; ``started``/``ended`` are the monotonic seconds at which it
    was launched and gave its result, ``timeout`` the seconds it was given
    (``health.timeout``), ``interval`` the cadence (``health.interval``), ``failed_at`` the
    start of the last probe whose failure counted (None: none since the last good one).
    Rules:

    - a good answer always counts (LM Studio answered);
    - a failure that ended more than ``timeout + STALL_SLACK`` after it started is
      ``STALLED``: its deadline passed while the supervisor's event loop was not running, so
      it could not have been given its time; it says nothing about LM Studio;
    - a failure of a probe started less than ``interval`` (less ``SAME_ROUND``) from the
      last counted failure's is ``TOO_SOON``: consecutive failures are probes one interval
      apart, never a burst that one slow moment fails together;
    - any other failure counts.
    """
    if ok:
        return Timing.COUNTS
    if ended - started > timeout + STALL_SLACK:
        return Timing.STALLED
    if failed_at is not None and abs(started - failed_at) < interval - SAME_ROUND:
        return Timing.TOO_SOON
    return Timing.COUNTS


class HealthChecks:
    """The health loop of one supervisor: performs ``Health`` (start, change or stop the
    cadence) and ``Ask`` effects against ``lmstudio``; results go to ``send`` as messages.

    ``snapshot()`` gives the reducer's snapshot (server, config, install, notes, read at
    each round so a reload applies at the next one); ``spawn`` starts a task the
    supervisor cancels at shutdown; ``files`` are the state files, retried each round
    while they fail (:meth:`~lmsupervisor.statefile.StateFiles.retry`). Anything a check
    raises becomes ``ActionCrashed`` of the health loop (counted like a failed probe),
    never a dead task. A probe's result goes to the reducer only when :func:`timing` says
    it counts; a probe stalled past its deadline is replaced at once by a fresh one.
    """

    def __init__(
        self,
        lmstudio: LmStudio,
        *,
        send: Callable[[Message], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        snapshot: Callable[[], Snapshot],
        files: StateFiles,
    ) -> None:
        self.lm = lmstudio
        self.clock = lmstudio.clock
        self.rest = lmstudio.rest
        self.send = send
        self.spawn = spawn
        self.snapshot = snapshot
        self.files = files
        self._asleep = self.clock.asleep()  # the clock's seconds asleep when the loop last woke
        self.log = structlog.get_logger("lmsupervisor")
        self.mode = Health(probe=False, drift=False, epoch=0)
        self._loop: asyncio.Task[None] | None = None
        self._drift: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._again: asyncio.Task[None] | None = None  # the probe replacing stalled ones
        self._failed_at: tuple[int, float] | None = None  # (epoch, start) of the last counted failure

    def set_mode(self, mode: Health) -> None:
        """Perform a ``Health`` effect: start the loop, or stop it and every check in flight."""
        self.mode = mode
        if not mode.probe:
            for task in (self._loop, self._drift, *self._probes):
                if task is not None and not task.done():
                    task.cancel()
            self._loop = self._drift = None
        elif self._loop is None or self._loop.done():
            self._loop = self.spawn(self._run())

    def ask(self, effect: Ask) -> None:
        """Perform an ``Ask`` effect: one answer probe, sent back as ``Answered``."""
        url = base_url(self.snapshot().lmstudio.server.bind, self.snapshot().lmstudio.server.port)
        work = partial(
            ask, self.lm, effect.epoch, effect.name, url, effect.instance, effect.kind, effect.timeout, effect.tokens
        )

        async def asked() -> None:
            self.send(await work())

        self._check("ask", asked)

    def _woke(self) -> None:
        """The loop woke: when the machine slept meanwhile (the clock's
        :meth:`~lmsupervisor.clock.Clock.asleep` grew by :data:`~lmsupervisor.clock.RESUME_MIN`
        seconds or more), ``Resumed`` goes out before this round's probe. Nothing new is
        polled: a suspend is noticed within one ``health.interval`` of the resume (the
        monotonic clock the loop sleeps on did not count the time asleep)."""
        asleep = self.clock.asleep()
        if asleep - self._asleep >= RESUME_MIN:
            self.send(Resumed(asleep - self._asleep))
        self._asleep = asleep

    async def _run(self) -> None:
        while True:
            snap = self.snapshot()
            health = snap.config.health  # read each round: a reload applies at the next one
            await self.clock.sleep(health.interval)
            mode, snap = self.mode, self.snapshot()
            if not mode.probe:
                return
            self._woke()
            if self.files.problem is not None:
                self.files.retry()  # a repaired state folder clears state_folder_unwritable
            drift = mode.drift and bool(snap.config.models)
            rest = self._listing(mode, snap)
            if len(self._probes) < health.failures_before_restart:  # a slow server: never a pile-up
                self._probe(mode.epoch, health.timeout, rest)
            if drift and rest is None:
                token_refused = any(p.code.startswith("api_token_") for p in snap.notes)
                recheck = self.rest if token_refused else None
                self._start_drift_check(mode.epoch, health.timeout, recheck=recheck)

    def _listing(self, mode: Health, snap: Snapshot) -> RestClient | None:
        """The REST client when the listing is the probe (0.4 with models declared and drift
        checks on), else None: the greeting is."""
        return self.rest if mode.drift and snap.config.models and snap.lmstudio.rest_drift else None

    def _probe(self, epoch: int, timeout: float, rest: RestClient | None) -> asyncio.Task[None]:
        """Launch one liveness probe of server ``epoch`` now: the REST listing with ``rest``,
        else the greeting; its result goes through :meth:`_report`."""
        started = self.clock.monotonic()
        if rest is not None:
            probe = self._check("probe", partial(self.probe_rest, rest, epoch, timeout, started))
        else:
            probe = self._check("probe", partial(self._greet, epoch, timeout, started))
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)
        return probe

    def _report(self, epoch: int, result: ProbeResult, started: float, timeout: float) -> None:
        """Send the liveness verdict of a probe launched at ``started`` that was given
        ``timeout`` seconds, when :func:`timing` says it is one; a probe stalled past its
        deadline is replaced by a fresh probe at once (one at a time)."""
        health = self.snapshot().config.health
        last = self._failed_at[1] if self._failed_at is not None and self._failed_at[0] == epoch else None
        ended = self.clock.monotonic()
        kind = timing(
            result.ok, started=started, ended=ended, timeout=timeout, interval=health.interval, failed_at=last
        )
        if kind is Timing.COUNTS:
            self._failed_at = None if result.ok else (epoch, started)
            self.send(Probed(epoch, result))
            return
        say = self.log.warning if kind is Timing.STALLED else self.log.info
        say("probe_discarded", why=kind.value, seconds=round(ended - started, 3), error=result.error)
        mode = self.mode
        again = self._again is not None and not self._again.done()
        if kind is Timing.STALLED and mode.probe and mode.epoch == epoch and not again:
            self._again = self._probe(epoch, health.timeout, self._listing(mode, self.snapshot()))

    def _check(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run one check; ``work`` is a factory so a check cancelled before it starts
        leaves no un-awaited coroutine behind."""

        async def guarded() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("action_crashed", effect=name)
                self.send(ActionCrashed(HEALTH_ACTION, name, describe(exc)))

        return self.spawn(guarded())

    def _start_drift_check(
        self, epoch: int, timeout: float, problem: Problem | None = None, recheck: RestClient | None = None
    ) -> None:
        """`lms ps --json` as a drift check, unless one is still running; with ``recheck``,
        REST is asked first whether it still refuses our token (:meth:`_recheck_token`)."""
        if self._drift is None or self._drift.done():
            if recheck is not None:
                work = partial(self._recheck_token, recheck, epoch, timeout)
            else:
                work = partial(self._check_drift, epoch, timeout, problem)
            self._drift = self._check("drift_check", work)

    async def _recheck_token(self, rest: RestClient, epoch: int, timeout: float) -> None:
        """While a token problem stands and drift checks use `lms` (the load pass fell back
        to it): one ``GET /api/v1/models`` (within ``timeout`` seconds) tells whether LM
        Studio still refuses our token, so a token set by a reload, or made in LM Studio,
        clears the problem without a restart. The `lms ps` drift check carries the verdict:
        the refusal (``api_token_*``), or None when REST answered. No verdict (no answer,
        another error) leaves the problem as it is."""
        server = self.snapshot().lmstudio.server
        try:
            await within(self.clock, rest.models(base_url(server.bind, server.port), timeout=timeout), timeout)
        except RestAuthError as exc:
            await self._check_drift(epoch, timeout, token_problem(exc.code, exc.message))
        except (RestError, TimeoutError) as exc:
            self.log.info("token_recheck_failed", error=str(exc))
            await self._check_drift(epoch, timeout)
        else:
            await self._check_drift(epoch, timeout, checked=True)

    async def _greet(self, epoch: int, timeout: float, started: float) -> None:
        server = self.snapshot().lmstudio.server
        self._report(epoch, await self.lm.greet(base_url(server.bind, server.port), timeout), started, timeout)

    async def probe_rest(self, rest: RestClient, epoch: int, timeout: float, started: float) -> None:
        """On 0.4 (REST v1, facts §4, §8): one ``GET /api/v1/models`` is the liveness probe
        *and* the drift check. The whole check ends within ``timeout`` seconds of
        ``started`` (monotonic seconds, when it was launched); when no listing has come after
        ``timeout / 2`` (many models, a slow disk) the greeting is sent too, and the first
        good answer of the two decides (a listing that still comes is observed). What the
        outcomes mean is :func:`judge`'s; whether the verdict counts, :func:`timing`'s."""
        server = self.snapshot().lmstudio.server
        url = base_url(server.bind, server.port)

        def left() -> float:
            return timeout - (self.clock.monotonic() - started)

        async def until(futures: set[asyncio.Future[Any]], seconds: float) -> None:
            """Wait for the first of ``futures`` or ``seconds`` of clock time (one timer, no
            task: this runs every idle round)."""
            timer = self.clock.timer(seconds)
            try:
                await asyncio.wait({*futures, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()

        listing = asyncio.ensure_future(rest.models(url, timeout=timeout))
        greeting: asyncio.Future[ProbeResult] | None = None
        alive_sent = False
        try:
            await until({listing}, timeout / 2)
            if not listing.done():  # slow: the greeting races the listing until the deadline
                greeting = asyncio.ensure_future(self.lm.greet(url, left(), timeout))
                while not listing.done() and not (greeting.done() and greeting.result().ok) and left() > 0:
                    await until({f for f in (listing, greeting) if not f.done()}, left())
                if greeting.done() and greeting.result().ok and not listing.done():
                    self._report(epoch, greeting.result(), started, timeout)
                    alive_sent = True
                    await until({listing}, left())
            outcome: Listing | BaseException | None = None
            if listing.done():
                outcome = listing.exception() or listing.result()
            greeted = greeting.result() if greeting is not None and greeting.done() else None
            bug = isinstance(outcome, BaseException) and not isinstance(outcome, RestError)
            if bug and isinstance(outcome, BaseException) and not (greeted and greeted.ok):
                raise outcome  # a bug, not an answer: the health guard reports it
            ms = (self.clock.monotonic() - started) * 1000

            def verdict(greeted: ProbeResult | None) -> Judgement:
                return judge(outcome, greeted, url=url, ms=ms, timeout=timeout, alive_sent=alive_sent)

            found = verdict(greeted)
            if found.greet:
                found = verdict(await self.lm.greet(url, left(), timeout))
            if found.failed is not None:
                self.log.info("drift_check_failed", error=found.failed)
            if found.probed is not None:
                self._report(epoch, found.probed, started, timeout)
            if found.observed is not None:
                self.send(Observed(epoch, found.observed, rest=True))
            if found.drift:
                self._start_drift_check(epoch, timeout, found.problem)
        finally:
            for future in (listing, greeting):
                discard(future)

    async def _check_drift(
        self, epoch: int, timeout: float, problem: Problem | None = None, checked: bool = False
    ) -> None:
        """What LM Studio has loaded, from `lms ps --json` (releases without REST v1, or while
        REST refuses our token: then ``problem`` is that refusal, reported with the list;
        ``checked``: REST accepted our token, which clears a refusal reported before)."""
        install = self.snapshot().lmstudio.install
        if install is None or install.lms is None:
            return
        limit = max(timeout, 1.0)
        try:
            lms = self.lm.lms(install.lms)
            loaded = await within(self.clock, lms.ps(timeout=limit), limit)
            self.send(Observed(epoch, tuple(loaded), problem, rest=problem is not None or checked))
        except (LmsError, TimeoutError) as exc:
            self.log.info("drift_check_failed", error=str(exc))  # the liveness probe judges liveness


def discard(future: asyncio.Future[Any] | None) -> None:
    """Cancel ``future`` and make sure its exception is read whenever it ends: a check cancelled
    just as its request failed (a daemon exit stops the health loop) must leave no "Task
    exception was never retrieved". (Python 3.11's ``wait_for`` may even finish a cancelled
    task with the inner exception instead of ``CancelledError``.)"""
    if future is None:
        return
    future.cancel()
    future.add_done_callback(_read_outcome)


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` (the type alone when the message is empty), as failures show it."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
