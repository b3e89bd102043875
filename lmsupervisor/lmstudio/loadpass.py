"""The load pass: make LM Studio hold the declared models (design §6).

:func:`load_models` performs a :class:`~lmsupervisor.core.effects.LoadModels` effect and
*returns* the message that ends it (``ModelsDone``); progress goes out through ``post``.
It writes no state: the reducer does. Level-triggered: it plans from what LM Studio lists,
so it may be repeated after any crash. Loads that an earlier pass started (LM Studio
finishes them even when `lms load` was killed) are waited for, never started twice.

"REST or `lms`?" is answered once per pass, by :func:`choose_backend`: a
:class:`ModelBackend` lists, unloads, downloads and loads for the whole pass, either
:class:`RestBackend` (REST v1, one local HTTP request per step, facts §8) or
:class:`LmsBackend`. Also here: :func:`ask`, the answer probe (deep readiness).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities, ttl_problem
from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.effects import LoadModels, Unload
from lmsupervisor.core.messages import (
    Answered,
    LoadSettled,
    LoadStarted,
    Message,
    ModelChanged,
    ModelDownload,
    ModelsDone,
    Noted,
)
from lmsupervisor.core.observed import DownloadedModel, DownloadProgress, LoadedModel, ProbeResult
from lmsupervisor.core.preload import Decision, Planned, instance_of, plan
from lmsupervisor.core.problems import download_paused_problem
from lmsupervisor.core.speed import tokens_per_second
from lmsupervisor.errors import LmsError, LmsExitError, LmsNotFoundError, LmsTimeoutError, RestError, RestTimeoutError
from lmsupervisor.lmstudio.facade import QUICK_TIMEOUT, LmStudio
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.lmsoutput import error_line
from lmsupervisor.lmstudio.rest import Listing, RestClient, token_problem

LOAD_TIMEOUT = 900.0  # seconds for one `lms load` (a large model on a slow disk)
DOWNLOAD_TIMEOUT = 6 * 3600.0  # seconds for `lms get`
IN_FLIGHT_POLL = 1.0  # seconds between `lms ps` checks while an earlier load finishes
DOWNLOAD_POLL = 1.0  # seconds between REST v1 download status requests

log = structlog.get_logger("lmsupervisor")


@dataclass
class PassNotes:
    """What one load pass learns as it goes: ``local`` (an LM Link `lms`: pass ``--local``)
    and the names whose download is ``paused``."""

    local: bool = False
    paused: list[str] = field(default_factory=list)


class ModelBackend(Protocol):
    """How one load pass reaches LM Studio's models. ``listing`` is what REST v1 listed
    when the backend was chosen (None: `lms`, which lists when asked)."""

    @property
    def listing(self) -> Listing | None:
        """REST v1's listing taken when the pass chose this backend; None for `lms`."""

    async def loaded(self) -> list[LoadedModel]:
        """The instances loaded now; raises LmsError or RestError."""

    async def downloaded(self) -> list[DownloadedModel]:
        """The models downloaded (for the plan); raises LmsError."""

    async def unload(self, identifier: str) -> None:
        """Unload instance ``identifier``; raises LmsError or RestError."""

    async def download(self, m: ModelConfig, progress: Callable[[DownloadProgress], None]) -> DownloadProgress | None:
        """Download ``m``: the REST v1 job as it ended (``progress`` gets each state), or
        None (`lms get`, no progress)."""

    async def locate(self, m: ModelConfig, path: str | None, run: PassNotes) -> str | None:
        """What :meth:`load` loads ``m`` from (``path`` from the plan, None once just
        downloaded); None when it cannot be found."""

    async def load(self, m: ModelConfig, path: str, run: PassNotes) -> None:
        """Load ``m`` from ``path``."""


@dataclass
class LmsBackend:
    """`lms` for everything: `ps`, `ls`, `unload`, `get`, and `load --exact` with
    ``--local`` on LM Link builds and ``--ttl`` only where this `lms` has it
    (``capabilities``, facts §8, §9)."""

    lms: LmsClient
    capabilities: CliCapabilities | None

    @property
    def listing(self) -> None:
        """Nothing: `lms` lists when asked."""

    async def loaded(self) -> list[LoadedModel]:
        """`lms ps --json`."""
        return await self.lms.ps(timeout=QUICK_TIMEOUT)

    async def downloaded(self) -> list[DownloadedModel]:
        """`lms ls --json`."""
        return await self.lms.ls(timeout=QUICK_TIMEOUT)

    async def unload(self, identifier: str) -> None:
        """`lms unload`."""
        await self.lms.unload(identifier, timeout=QUICK_TIMEOUT)

    async def download(self, m: ModelConfig, progress: Callable[[DownloadProgress], None]) -> DownloadProgress | None:
        """`lms get` (no progress): None."""
        await self.lms.get(m.key, timeout=DOWNLOAD_TIMEOUT)
        return None

    async def locate(self, m: ModelConfig, path: str | None, run: PassNotes) -> str | None:
        """``path``, else the path `lms ls` lists for ``m``."""
        return path if path is not None else await self.listed_path(m, run)

    async def listed_path(self, m: ModelConfig, run: PassNotes) -> str | None:
        """The path `lms ls` lists for ``m`` on this machine, never a linked device's copy
        (facts §9); a listing with LM Link's fields sets ``run.local``."""
        downloaded = await self.lms.ls(timeout=QUICK_TIMEOUT)
        run.local = run.local or any(d.lm_link for d in downloaded)
        here = (d for d in downloaded if d.device is None)
        return next((d.path for d in here if m.key in (d.model_key, d.path)), None)

    async def load(self, m: ModelConfig, path: str, run: PassNotes) -> None:
        """`lms load --exact <path>` with what ``m`` declares."""
        caps = self.capabilities
        await self.lms.load(
            path,
            identifier=m.identifier,
            context_length=m.context_length,
            gpu=m.gpu,
            ttl=m.ttl if caps is None or caps.ttl else None,
            local=run.local or bool(caps and caps.local),
            timeout=LOAD_TIMEOUT,
        )


@dataclass
class RestBackend:
    """REST v1 at ``url`` (0.4+): lists, unloads, downloads (with progress) and loads by
    key. What REST cannot express, a model with an ``identifier``, a ``ttl`` or a ``gpu``
    setting, is loaded with ``lms`` (`lms ls` for its path): :meth:`expresses`."""

    rest: RestClient
    url: str
    listing: Listing
    clock: Clock
    lms: LmsBackend | None

    @staticmethod
    def expresses(m: ModelConfig) -> bool:
        """Whether REST v1's ``/load`` can load ``m`` as declared (key and context length only)."""
        return m.identifier is None and m.ttl is None and m.gpu is None

    async def loaded(self) -> list[LoadedModel]:
        """``GET /api/v1/models``, its loaded instances."""
        return list((await self.rest.models(self.url, timeout=QUICK_TIMEOUT)).loaded)

    async def downloaded(self) -> list[DownloadedModel]:
        """The listing's downloaded models (no request)."""
        return list(self.listing.downloaded)

    async def unload(self, identifier: str) -> None:
        """``POST /api/v1/models/unload``."""
        await self.rest.unload(self.url, identifier, timeout=QUICK_TIMEOUT)

    async def download(self, m: ModelConfig, progress: Callable[[DownloadProgress], None]) -> DownloadProgress | None:
        """``POST /api/v1/models/download``, then its status every :data:`DOWNLOAD_POLL`
        seconds while it downloads; returns the job as it ended: ``completed``,
        ``already_downloaded``, or ``paused``, which waits for a person (facts §9) and is
        returned at once. Raises :class:`RestTimeoutError` after :data:`DOWNLOAD_TIMEOUT`
        seconds, :class:`RestError` when LM Studio says ``failed``."""
        job = await self.rest.download(self.url, m.key, timeout=QUICK_TIMEOUT)
        deadline = self.clock.monotonic() + DOWNLOAD_TIMEOUT
        while job.status == "downloading" and job.job_id:
            progress(job)
            if self.clock.monotonic() > deadline:
                raise RestTimeoutError(f"the download of {m.key} did not finish within {DOWNLOAD_TIMEOUT:g} s")
            await self.clock.sleep(DOWNLOAD_POLL)
            job = await self.rest.download_status(self.url, job.job_id, timeout=QUICK_TIMEOUT)
        if job.status == "failed":
            raise RestError(f"LM Studio's download of {m.key} failed")
        progress(job)
        return job

    async def locate(self, m: ModelConfig, path: str | None, run: PassNotes) -> str | None:
        """The key when REST loads ``m``; else the path `lms ls` lists (`lms load --exact`
        needs it, and REST v1 lists no paths)."""
        return m.key if self.expresses(m) else await self._lms().listed_path(m, run)

    async def load(self, m: ModelConfig, path: str, run: PassNotes) -> None:
        """``POST /api/v1/models/load`` when REST expresses ``m``, else `lms load`."""
        if self.expresses(m):
            await self.rest.load(self.url, m.key, m.context_length, timeout=LOAD_TIMEOUT)
        else:
            await self._lms().load(m, path, run)

    def _lms(self) -> LmsBackend:
        if self.lms is None:
            raise LmsNotFoundError("no lms found", hint="run `lmsupervisor doctor`")
        return self.lms


def choose_backend(
    rest: RestBackend | None, models: Sequence[ModelConfig], lms: LmsBackend | None
) -> ModelBackend | None:
    """REST or `lms` for one whole load pass. Pure: ``rest`` is REST v1 with the listing
    it gave (None: no REST v1, or it did not list). REST stands in for `lms` only when
    every declared key is a REST model key, or will be once downloaded (``download``): a
    declared path is no key (REST v1 lists no paths). Else `lms`; None when there is no
    `lms` either."""
    if rest is not None:
        keys = {d.model_key for d in rest.listing.downloaded}
        if all(m.key in keys or m.download for m in models):
            return rest
    return lms


async def load_models(lm: LmStudio, eff: LoadModels, post: Callable[[Message], None]) -> Message:
    """Unload what we owe, wait for loads in flight, load what is missing, verify by
    listing again; returns ModelsDone (raises LmsError/RestError when nothing can list).

    With REST v1 (``eff.rest``) listing, loads and downloads go over HTTP, one request
    each; `lms` loads only what REST cannot express (an ``identifier``, a ``ttl``, a
    ``gpu`` setting), and lists when a declared key is not a REST model key (a path).

    Problems go out as :class:`Noted` (set, or cleared when gone): ``ttl_unsupported``
    when a declared ``ttl`` cannot be passed (an `lms` before 0.3.9: loaded without it),
    ``download_paused`` when a REST v1 download this pass needed is paused (facts §9).
    """
    caps = eff.capabilities
    if caps is not None:
        dropped = [model_name(m) for m in eff.models if m.ttl] if not caps.ttl else []
        post(Noted("ttl_unsupported", ttl_problem(dropped, caps) if dropped else None))
    backend = await _backend(lm, eff)
    for identifier in eff.unload:
        try:
            await backend.unload(identifier)
            log.info("model_unloaded", identifier=identifier)
        except (LmsError, RestError) as exc:
            log.warning("model_unload_failed", identifier=identifier, error=exc.message)
    listing = backend.listing
    # After unloads the REST listing taken before them is stale (even a timed-out unload
    # may finish in LM Studio): list again.
    loaded = list(listing.loaded) if listing is not None and not eff.unload else await backend.loaded()
    if not eff.models:
        post(Noted("download_paused", None))  # nothing declared: nothing to wait for
        return ModelsDone(eff.action, tuple(loaded), rest=listing is not None)
    loaded = await _await_in_flight(lm.clock, eff, post, backend.loaded, loaded)
    kept = all(i.decision is Decision.KEEP for i in plan(eff.models, loaded, []))
    downloaded = [] if kept else await backend.downloaded()  # KEEP never depends on what is downloaded
    # LM Link builds (facts §9) list `deviceIdentifier`: they have the hidden `load --local`.
    run = PassNotes(
        local=bool(caps and caps.local) or any(d.lm_link for d in downloaded) or any(i.lm_link for i in loaded)
    )
    started: list[ModelConfig] = []
    for item in plan(eff.models, loaded, downloaded):
        if await _apply(eff, post, backend, item, run):
            started.append(item.model)
    # Every declared model was planned: a download not paused now (done, resumed, or the
    # model removed) no longer holds anything up.
    post(Noted("download_paused", download_paused_problem(run.paused) if run.paused else None))
    loaded = await backend.loaded()
    ours = tuple(i.identifier for m in started if (i := instance_of(m, loaded)) is not None)
    answers = await _ask_all(lm, eff, loaded)
    return ModelsDone(eff.action, tuple(loaded), ours, answers, rest=listing is not None)


async def unload(lm: LmStudio, eff: Unload) -> None:
    """Unload instance ``eff.identifier`` between load passes (a duplicate we created)
    through the backend a load pass would choose now (:func:`_backend`, hence
    :func:`choose_backend`: REST or `lms` is decided there and nowhere else). Raises
    LmsError or RestError; :class:`LmsNotFoundError` when neither can list."""
    backend = await _backend(lm, eff)
    await backend.unload(eff.identifier)


async def _backend(lm: LmStudio, eff: LoadModels | Unload) -> ModelBackend:
    """The backend of a pass for ``eff.models`` (:func:`choose_backend`), after one
    ``GET /api/v1/models`` when the server has REST v1; raises :class:`LmsNotFoundError`
    when neither can list."""
    lms = LmsBackend(lm.lms(eff.lms), eff.capabilities) if eff.lms is not None else None
    rest = None
    if lm.rest is not None and eff.rest and eff.url:
        try:
            rest = RestBackend(lm.rest, eff.url, await lm.rest.models(eff.url, timeout=QUICK_TIMEOUT), lm.clock, lms)
        except RestError as exc:
            log.info("rest_listing_failed", error=exc.message)  # a 401 is reported by the bring-up
    backend = choose_backend(rest, eff.models, lms)
    if backend is None:
        raise LmsNotFoundError("no lms found", hint="run `lmsupervisor doctor`")
    return backend


async def _apply(
    eff: LoadModels, post: Callable[[Message], None], backend: ModelBackend, item: Planned, run: PassNotes
) -> bool:
    """Perform one planned item; True when this pass started a load LM Studio accepted."""
    name = model_name(item.model)
    if item.decision is Decision.KEEP:
        post(ModelChanged(eff.action, name, "loaded"))
        return False
    if item.decision in (Decision.MISSING, Decision.CONFLICT):
        post(ModelChanged(eff.action, name, "failed", item.detail))
        return False
    return await _load_one(eff, post, backend, item.model, item.path, run)


async def _await_in_flight(
    clock: Clock,
    eff: LoadModels,
    post: Callable[[Message], None],
    list_loaded: Callable[[], Awaitable[list[LoadedModel]]],
    loaded: list[LoadedModel],
) -> list[LoadedModel]:
    by_name = {model_name(m): m for m in eff.models}
    waiting = {f.name: f.deadline for f in eff.in_flight if f.name in by_name}

    def missing(now: float) -> list[str]:
        return [
            n for n, d in waiting.items() if d > now and plan([by_name[n]], loaded, [])[0].decision is not Decision.KEEP
        ]

    names = missing(clock.monotonic())
    for name in names:
        log.info("load_in_flight_awaited", model=name)
        post(ModelChanged(eff.action, name, "loading"))
    while names:
        await clock.sleep(IN_FLIGHT_POLL)
        loaded = await list_loaded()
        names = missing(clock.monotonic())
    return loaded


async def _load_one(
    eff: LoadModels,
    post: Callable[[Message], None],
    backend: ModelBackend,
    m: ModelConfig,
    path: str | None,
    run: PassNotes,
) -> bool:
    """Download if needed (``path`` None), find what to load, then load; True when LM
    Studio accepted it. ``run`` collects what the pass learns (``--local``, paused downloads)."""
    name = model_name(m)
    try:
        if path is None and not await _download(eff, post, backend, m, run):
            return False
        found = await backend.locate(m, path, run)
        if found is None:
            post(ModelChanged(eff.action, name, "failed", f"{m.key} was downloaded but `lms ls` does not list it"))
            return False
        post(LoadStarted(name))  # before the load: LM Studio may finish it whatever happens to us
        post(ModelChanged(eff.action, name, "loading"))
        try:
            await backend.load(m, found, run)
        except (LmsTimeoutError, RestTimeoutError, asyncio.CancelledError):
            raise  # LM Studio may still finish it: it stays in flight
        except BaseException:
            post(LoadSettled(name))  # refused, or never spawned: nothing in flight
            raise
    except LmsExitError as exc:
        post(ModelChanged(eff.action, name, "failed", exc.error_line))
        return False
    except (LmsError, RestError) as exc:
        post(ModelChanged(eff.action, name, "failed", error_line(exc.message)))
        return False
    post(ModelChanged(eff.action, name, "loaded"))
    return True


async def _download(
    eff: LoadModels, post: Callable[[Message], None], backend: ModelBackend, m: ModelConfig, run: PassNotes
) -> bool:
    """Download ``m`` (progress as ``ModelDownload``); False when LM Studio's download is
    ``paused`` (noted in ``run``, the model failed: it waits for a person)."""
    name = model_name(m)
    post(ModelChanged(eff.action, name, "downloading"))
    job = await backend.download(m, lambda progress: post(ModelDownload(eff.action, name, progress)))
    if job is not None and job.status == "paused":
        run.paused.append(name)
        post(
            ModelChanged(eff.action, name, "failed", f"the download of {m.key} is paused in LM Studio; resume it there")
        )
        return False
    return True


async def _ask_all(lm: LmStudio, eff: LoadModels, loaded: list[LoadedModel]) -> tuple[Answered, ...]:
    """Deep readiness after loading: each loaded model with probe = "answer" must answer
    one request for ``eff.answer_tokens`` tokens within ``eff.answer_timeout`` seconds."""
    answers = []
    for m in eff.models:
        name = model_name(m)
        inst = instance_of(m, loaded)
        if name not in eff.ask or inst is None or not eff.url:
            continue
        answers.append(
            await ask(lm, 0, name, eff.url, inst.identifier, inst.type, eff.answer_timeout, eff.answer_tokens)
        )
    return tuple(answers)


async def ask(
    lm: LmStudio, epoch: int, name: str, url: str, identifier: str, kind: str, timeout: float, tokens: int = 1
) -> Answered:
    """One answer probe of model ``name`` (instance ``identifier``, server ``epoch``) for
    ``tokens`` tokens (max_tokens), bounded by ``timeout`` seconds of clock time; its
    tokens per second when :func:`~lmsupervisor.core.speed.tokens_per_second` measures
    them (8 or more asked and generated). A 401 is not the model's failure: the answer is
    ok-less and carries the token problem (``api_token_missing`` or ``api_token_invalid``);
    the model stays loaded."""
    try:
        result = await within(lm.clock, lm.prober.ask(url, identifier, kind, timeout, tokens), timeout)
    except TimeoutError:
        result = ProbeResult(False, timeout * 1000, None, f"{identifier} did not answer within {timeout:g} s")
    problem = None
    if result.status == 401:
        code = "api_token_invalid" if lm.prober.token() else "api_token_missing"
        problem = token_problem(code, result.error or "HTTP 401")
    speed = tokens_per_second(tokens, result.tokens, result.latency_ms / 1000) if result.ok else None
    return Answered(epoch, name, result.ok, result.latency_ms, result.error, problem, speed)
