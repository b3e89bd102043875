"""The two long effects, performed against LM Studio: a bring-up and a load pass.

Each takes its effect value (:class:`~lmsupervisor.core.messages.BringUp`,
:class:`~lmsupervisor.core.messages.LoadModels`) and *returns* the message that ends it;
progress goes out through ``post``. Neither writes any state: the reducer does. Our own
errors (:class:`~lmsupervisor.errors.LmSupervisorError`) become failure messages here;
anything else escapes to the runner, which turns it into ``ActionCrashed``.

Both are level-triggered: a bring-up adopts a healthy server, a load pass plans from
`lms ps --json`, so either may be repeated after any crash without harm. Loads that an
earlier pass started (LM Studio finishes them even when `lms load` was killed) are
waited for, never started twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import Config, ModelConfig, server_address
from lmsupervisor.core.capabilities import CliCapabilities, bind_problem, ttl_problem
from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.messages import (
    Answered,
    BringUp,
    BringUpFailed,
    BringUpNoted,
    LoadModels,
    LoadSettled,
    LoadStarted,
    Message,
    ModelChanged,
    ModelDownload,
    ModelsDone,
    Noted,
    NotInstalled,
    ServerUp,
)
from lmsupervisor.core.observed import (
    DaemonProcess,
    DownloadedModel,
    DownloadProgress,
    Install,
    LoadedModel,
    ProbeResult,
    ServerSettings,
    base_url,
    usable_server,
)
from lmsupervisor.core.observed import effective_server as effective
from lmsupervisor.core.policy import Step
from lmsupervisor.core.preload import Action, instance_of, plan
from lmsupervisor.core.problems import Problem, app_hung_problem, download_paused_problem
from lmsupervisor.errors import (
    LmsError,
    LmsExitError,
    LmsNotFoundError,
    LmsTimeoutError,
    LmSupervisorError,
    RestAuthError,
    RestError,
    RestTimeoutError,
    RestUnsupportedError,
)
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.lms import LmsClient, error_line
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import Listing, RestClient, token_problem
from lmsupervisor.lmstudio.watch import ProcessTable

QUICK_TIMEOUT = 15.0  # seconds for `lms` calls that answer at once (status, stop, ps, version)
LOAD_TIMEOUT = 900.0  # seconds for one `lms load` (a large model on a slow disk)
DOWNLOAD_TIMEOUT = 6 * 3600.0  # seconds for `lms get`
TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a hung daemon
EXIT_WAIT = 10.0  # seconds to wait for the daemon to exit after `lms daemon down` (it returns early)
IN_FLIGHT_POLL = 1.0  # seconds between `lms ps` checks while an earlier load finishes
DOWNLOAD_POLL = 1.0  # seconds between REST v1 download status requests


def ladder_timeout(config: Config) -> float:
    """Seconds for an `lms` call that a live daemon answers at once (``daemon up`` on a
    running daemon, ``daemon down``, ``server stop``, ``daemon status``): twice the probe
    timeout, at least 3 s, at most :data:`QUICK_TIMEOUT`. A hung daemon fails its rung
    quickly instead of holding the ladder for the full quick timeout."""
    return min(QUICK_TIMEOUT, max(3.0, 2 * config.health.timeout))


def rung_deadline(step: Step, config: Config) -> float:
    """Seconds a whole bring-up at ``step`` may take before it counts as failed."""
    budget = config.server.start_timeout * 2 + QUICK_TIMEOUT * 4 + config.health.timeout * 2
    if step >= Step.RESTART_DAEMON:
        budget += EXIT_WAIT + TERMINATE_GRACE + 5.0
    return budget


class Actions:
    """Performs bring-ups and load passes with the injected I/O dependencies.

    ``capabilities`` caches what each `lms` binary can do (detected once per binary);
    ``rest`` is LM Studio's REST v1 client (None: `lms` only).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        lms_factory: Callable[[Path], LmsClient],
        prober: Prober,
        detect: Callable[[Config], Install],
        processes: ProcessTable,
        post: Callable[[Message], None],
        capabilities: CapabilityCache | None = None,
        rest: RestClient | None = None,
    ) -> None:
        self.clock = clock
        self.lms_factory = lms_factory
        self.prober = prober
        self.detect = detect
        self.processes = processes
        self.post = post
        self.capabilities = capabilities or CapabilityCache()
        self.rest = rest
        self.log = structlog.get_logger("lmsupervisor")

    # -- bring-up ---------------------------------------------------------------------
    async def bring_up(self, eff: BringUp) -> Message:
        """Adopt a healthy server (rung START), else climb to ``eff.step``; returns
        ServerUp, NotInstalled or BringUpFailed. Bounded by :func:`rung_deadline`."""
        log = self.log.bind(step=eff.step.name.lower(), action=eff.action)
        deadline = rung_deadline(eff.step, eff.config)
        seen = _Seen()
        try:
            return await within(self.clock, self._bring_up(eff, log, seen), deadline)
        except TimeoutError:
            why = f"the {eff.step.name.lower()} rung did not finish within {deadline:g} s"
        except LmSupervisorError as exc:  # `lms daemon up` failed, ...: what detection named still shows
            log.warning("bring_up_step_failed", error=str(exc))
            why = exc.message
        return BringUpFailed(eff.action, why, seen.install, tuple(seen.notes), seen.capabilities)

    async def _bring_up(self, eff: BringUp, log: structlog.typing.FilteringBoundLogger, seen: _Seen) -> Message:
        cfg = eff.config
        install = self.detect(cfg)
        if not install.installed or install.lms is None:
            reason = next((p.message for p in install.problems if p.severity == "error"), "LM Studio not found")
            return NotInstalled(eff.action, install, reason)
        seen.install = install
        began = self.clock.wall()
        lms = self.lms_factory(install.lms)
        caps = seen.capabilities = await self.capabilities.get(install.lms, lms)  # cached per binary
        install, found, sound = _settings(install, eff.last_good_server)
        seen.install = install
        sound = sound and server_address(found.bind) is not None  # never remember an unusable address
        server = effective(cfg.server.bind, cfg.server.port, cfg.server.cors, found)
        notes = seen.notes

        def note(problem: Problem) -> None:  # shown at once, not when this bring-up ends
            notes.append(problem)
            self.post(BringUpNoted(eff.action, problem))

        if not caps.bind:  # this lms cannot pass --bind: LM Studio keeps its saved interface (facts §8)
            if (unsupported := bind_problem(cfg.server.bind, found.bind, caps)) is not None:
                note(unsupported)
            server = replace(server, bind=found.bind)
        usable = usable_server(server, install, declarable=caps.bind)
        if isinstance(usable, Problem):  # LM Studio's own networkInterface is unusable: no retry or restart can fix it
            return BringUpFailed(eff.action, usable.message, install, tuple(notes), caps, usable, True)
        server = usable
        url = base_url(server.bind, server.port)
        version = eff.lms_version
        differs = (
            server.bind != server_address(found.bind)
            or (cfg.server.cors is not None and cfg.server.cors != found.cors)
            or server.port != found.port
        )

        async def up(reason: str, daemon: DaemonProcess | None, adopted: bool) -> ServerUp:
            rest, rest_notes = await self._rest_available(url, cfg.health.timeout)
            known = version or await self._service_version(install, cfg.health.timeout)
            # The server answers: whatever this bring-up found hung on its way (an app the user
            # has reopened meanwhile) is not hung any more.
            found_on_way = tuple(p for p in notes if p.code != "app_hung")
            return ServerUp(
                eff.action, install, server, daemon, reason, known, adopted, sound, caps, rest,
                (*found_on_way, *rest_notes),
            )  # fmt: skip

        if eff.step is Step.START:
            probe = await self.greet(url, cfg.health.timeout)
            if probe.ok and not differs:
                daemon = await self._find_daemon(lms, install, caps)
                return await up(f"adopted the running server at {url}", daemon, True)
            if probe.ok:
                log.info("server_settings_differ", declared=f"{server.bind}:{server.port} cors={server.cors}",
                         running=f"{found.bind}:{found.port} cors={found.cors}")  # fmt: skip

        daemon = eff.daemon if eff.daemon is not None and self.processes.alive(eff.daemon) else None
        is_app = daemon is not None and (
            daemon.is_daemon is False or (daemon.is_daemon is None and install.kind in ("app", "appimage"))
        )
        spare_app = is_app and not cfg.restart.kill_app
        hung_app = (
            daemon is not None
            and spare_app
            and (
                eff.step >= Step.RESTART_DAEMON
                or (eff.step >= Step.RESTART_SERVER and not await self._service_answers(install, lms, caps, cfg))
            )
        )
        if hung_app and daemon is not None:
            # The GUI app is the user's interactive program: never killed unless kill_app (facts §8).
            note(app_hung_problem(daemon.pid))
            log.warning("app_spared", pid=daemon.pid)
        elif eff.step >= Step.KILL_DAEMON and daemon is not None:
            log.warning("daemon_termination_started", pid=daemon.pid, verified=daemon.verified)
            await self.processes.terminate(daemon, TERMINATE_GRACE)
        elif eff.step is Step.RESTART_DAEMON:
            wait = EXIT_WAIT if "down" in caps.daemon else 0.0
            if "down" in caps.daemon:  # stops whatever daemon runs, known to us or not
                try:
                    await lms.daemon_down(timeout=ladder_timeout(cfg))
                except LmsTimeoutError as exc:
                    log.warning("daemon_down_failed", error=exc.message)
                    wait = 0.0  # a daemon that does not answer `down` will not exit by itself
                except LmsError as exc:
                    log.warning("daemon_down_failed", error=exc.message)
            # `lms daemon down` returns before the process has exited (facts §8).
            if daemon is not None and not await self.processes.wait_exit(daemon, wait):
                log.warning("daemon_termination_started", pid=daemon.pid, verified=daemon.verified)
                await self.processes.terminate(daemon, TERMINATE_GRACE)

        live = daemon is not None and self.processes.alive(daemon)
        fresh = False
        if "up" in caps.daemon and not live:
            status = await lms.daemon_up(timeout=cfg.server.start_timeout)
            version = status.version or version
            if status.pid:
                daemon = self.processes.identify(status.pid, install.service_path, status.is_daemon)
                # A daemon younger than this bring-up has no server to stop.
                fresh = daemon is not None and daemon.create_time >= began - 1.0
        elif not caps.daemon or "up" not in caps.daemon:
            log.debug("daemon_command_skipped")  # before 2025-11: `server start` wakes the app
        if (eff.step >= Step.RESTART_SERVER or differs) and not fresh:
            try:
                await lms.server_stop(timeout=ladder_timeout(cfg))
            except LmsError as exc:
                log.info("server_stop_failed", error=exc.message)
                # A live app that cannot answer `stop` (no answer in time, or `lms` cannot reach
                # it at all) is hung; "The server is not running." is an answer.
                reached = isinstance(exc, LmsExitError) and "server is not running" in exc.error_line.lower()
                if spare_app and daemon is not None and not hung_app and not reached:
                    hung_app = True
                    note(app_hung_problem(daemon.pid))
                    log.warning("app_spared", pid=daemon.pid)
        start_error: str | None = None
        # A spared app that hung answers nothing: `server start` gets the ladder's timeout, not start_timeout.
        start_timeout = ladder_timeout(cfg) if hung_app else cfg.server.start_timeout
        try:
            bind_arg = server.bind if caps.bind else None
            await lms.server_start(server.port, bind_arg, server.cors, timeout=start_timeout)
        except LmsExitError as exc:
            start_error = exc.error_line  # the probe decides (BT#1720: exit 1 while serving)
        except LmsTimeoutError as exc:
            start_error = exc.message  # the probe decides here too
        probe = await self.greet(url, cfg.health.timeout)
        if not probe.ok:
            why = (
                f"`lms server start` failed: {start_error}"
                if start_error
                else f"after `lms server start`, {probe.error}"
            )
            return BringUpFailed(eff.action, why, install, tuple(notes), caps)
        if start_error:
            log.warning("server_start_exit_ignored", error=start_error, url=url)
        if cfg.server.cors is not None and (cors := await self._check_cors(url, server.cors, cfg.health.timeout)):
            note(cors)
        if daemon is None or not self.processes.alive(daemon):
            daemon = await self._find_daemon(lms, install, caps)
        return await up(f"server started at {url}", daemon, False)

    async def greet(self, url: str, seconds: float, timeout: float | None = None) -> ProbeResult:
        """The greeting probe of ``url`` within ``seconds`` of clock time; a failure names
        ``timeout`` (the configured ``health.timeout``, default ``seconds``). Never raises."""
        timeout = seconds if timeout is None else timeout
        failed = ProbeResult(False, timeout * 1000, None, f"no answer from {url} within {timeout:g} s")
        if seconds <= 0:
            return failed
        try:
            return await within(self.clock, self.prober.greeting(url, timeout=seconds), seconds)
        except TimeoutError:
            return failed

    async def _rest_available(self, url: str, timeout: float) -> tuple[bool | None, list[Problem]]:
        """Whether the server at ``url`` has REST v1 (None: unknown), and a problem when it
        refuses our token (v1 exists, `lms` is used meanwhile)."""
        if self.rest is None:
            return None, []
        try:
            await within(self.clock, self.rest.models(url, timeout=timeout), timeout)
        except RestUnsupportedError:
            return False, []
        except RestAuthError as exc:
            return True, [token_problem(exc.code, exc.message)]
        except (RestError, TimeoutError) as exc:
            self.log.info("rest_check_failed", error=str(exc))
            return None, []
        return True, []

    async def _check_cors(self, url: str, declared: bool, timeout: float) -> Problem | None:
        """Verify the declared CORS with an ``Origin`` probe; a problem when LM Studio differs."""
        if self.rest is None:
            return None
        try:
            actual = await within(self.clock, self.rest.cors(url, timeout=timeout), timeout)
        except (RestError, TimeoutError) as exc:
            self.log.info("cors_check_failed", error=str(exc))
            return None
        if actual == declared:
            return None
        return Problem(
            "cors_not_applied",
            f"server.cors = {str(declared).lower()} is declared, but {url} "
            f"{'does not answer' if declared else 'answers'} cross-origin requests",
            "set CORS in LM Studio's Developer settings to match, or update LM Studio",
            "warning",
        )

    async def _service_answers(self, install: Install, lms: LmsClient, caps: CliCapabilities, cfg: Config) -> bool:
        """Whether LM Studio's service (a live app's) answers, asked the one way this install
        allows: ``/lms-status`` on the API port named in ``.internal/http-server.json``
        (2026+) within ``health.timeout`` seconds; else `lms daemon status --json` (0.3.31+)
        within :func:`ladder_timeout` seconds. That `lms` asks the app on its API port: no
        answer in time (before [lms] 7795183, 2025-11-27, its discovery has no timeout, so a
        hung app holds it) or "not running" while the process lives is no answer. True where
        it cannot be asked (no port published and no `daemon status`) or `lms` fails
        otherwise (a refused passkey is not a hung app): no verdict is no evidence."""
        port = (install.api_server or {}).get("port")
        if self.rest is not None and isinstance(port, int) and not isinstance(port, bool):
            return await self._service_version(install, cfg.health.timeout) is not None
        if "status" not in caps.daemon:
            return True
        try:
            status = await lms.daemon_status(timeout=ladder_timeout(cfg))
        except LmsTimeoutError as exc:
            self.log.info("daemon_status_failed", error=exc.message)
            return False
        except LmsError as exc:
            self.log.info("daemon_status_failed", error=exc.message)
            return True
        return status.running or not status.supported

    async def _service_version(self, install: Install, timeout: float) -> str | None:
        """The app/llmster version from ``/lms-status`` on the API port named in
        ``.internal/http-server.json`` (2025-11+); None elsewhere."""
        port = (install.api_server or {}).get("port")
        if self.rest is None or not isinstance(port, int) or isinstance(port, bool):
            return None
        try:
            return await within(self.clock, self.rest.service_version(port, timeout=timeout), timeout)
        except TimeoutError:
            return None

    async def _find_daemon(self, lms: LmsClient, install: Install, caps: CliCapabilities) -> DaemonProcess | None:
        """LM Studio's daemon: the verified PID of ``.internal/http-server.json`` (2026+, no
        `lms` call), else `lms daemon status --json` where this `lms` has it, else (0.3) the
        process running the install's executable itself. Never a process that merely
        mentions the path."""
        pid = _api_server_pid(install.home)
        if pid is not None:
            proc = self.processes.identify(pid, install.service_path)
            if proc is not None and proc.verified:
                return proc
        if "status" in caps.daemon:
            try:
                status = await lms.daemon_status(timeout=QUICK_TIMEOUT)
                if status.running and status.pid:
                    return self.processes.identify(status.pid, install.service_path, status.is_daemon)
            except LmsError as exc:
                self.log.info("daemon_status_failed", error=exc.message)
        if install.service_path is not None:  # 0.3: the app that runs the install's executable itself
            return self.processes.find_running(install.service_path)
        return None

    # -- load pass --------------------------------------------------------------------
    async def load_models(self, eff: LoadModels) -> Message:
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
            self.post(Noted("ttl_unsupported", ttl_problem(dropped, caps) if dropped else None))
        lms = self.lms_factory(eff.lms) if eff.lms is not None else None
        rest = self.rest if eff.rest and eff.url else None
        listing = await self._rest_listing(rest, eff)
        if listing is None and lms is None:
            raise LmsNotFoundError("no lms found", hint="run `lmsupervisor doctor`")
        for identifier in eff.unload:
            try:
                if listing is not None and rest is not None and eff.url:
                    await rest.unload(eff.url, identifier, timeout=QUICK_TIMEOUT)
                elif lms is not None:
                    await lms.unload(identifier, timeout=QUICK_TIMEOUT)
                self.log.info("model_unloaded", identifier=identifier)
            except (LmsError, RestError) as exc:
                self.log.warning("model_unload_failed", identifier=identifier, error=exc.message)

        async def list_loaded() -> list[LoadedModel]:
            if listing is not None and rest is not None and eff.url:
                return list((await rest.models(eff.url, timeout=QUICK_TIMEOUT)).loaded)
            assert lms is not None  # noqa: S101 - checked above
            return await lms.ps(timeout=QUICK_TIMEOUT)

        # After unloads the REST listing taken before them is stale (even a timed-out unload
        # may finish in LM Studio): list again.
        loaded = list(listing.loaded) if listing is not None and not eff.unload else await list_loaded()
        if not eff.models:
            self.post(Noted("download_paused", None))  # nothing declared: nothing to wait for
            return ModelsDone(eff.action, tuple(loaded), rest=listing is not None)
        loaded = await self._await_in_flight(eff, list_loaded, loaded)
        downloaded: list[DownloadedModel] = []
        if listing is not None:
            downloaded = list(listing.downloaded)
        elif not all(i.action is Action.KEEP for i in plan(eff.models, loaded, [])):
            assert lms is not None  # noqa: S101 - checked above
            downloaded = await lms.ls(timeout=QUICK_TIMEOUT)
        started: list[ModelConfig] = []
        # LM Link builds (facts §9) list `deviceIdentifier`: they have the hidden `load --local`.
        run = _Pass(
            local=bool(caps and caps.local) or any(d.lm_link for d in downloaded) or any(i.lm_link for i in loaded)
        )
        for item in plan(eff.models, loaded, downloaded):
            m, name = item.model, model_name(item.model)
            if item.action is Action.KEEP:
                self.post(ModelChanged(eff.action, name, "loaded"))
            elif item.action in (Action.MISSING, Action.CONFLICT):
                self.post(ModelChanged(eff.action, name, "failed", item.detail))
            elif await self._load_one(eff, lms, rest if listing is not None else None, m, item.path, run):
                started.append(m)
        # Every declared model was planned: a download not paused now (done, resumed, or the
        # model removed) no longer holds anything up.
        self.post(Noted("download_paused", download_paused_problem(run.paused) if run.paused else None))
        loaded = await list_loaded()
        ours = tuple(i.identifier for m in started if (i := instance_of(m, loaded)) is not None)
        answers = await self._ask_all(eff, loaded)
        return ModelsDone(eff.action, tuple(loaded), ours, answers, rest=listing is not None)

    async def _ask_all(self, eff: LoadModels, loaded: list[LoadedModel]) -> tuple[Answered, ...]:
        """Deep readiness after loading: each loaded model with probe = "answer" must answer
        one 1-token request within ``eff.answer_timeout`` seconds."""
        answers = []
        for m in eff.models:
            name = model_name(m)
            inst = instance_of(m, loaded)
            if name not in eff.ask or inst is None or not eff.url:
                continue
            answers.append(await self.ask(0, name, eff.url, inst.identifier, inst.type, eff.answer_timeout))
        return tuple(answers)

    async def ask(self, epoch: int, name: str, url: str, identifier: str, kind: str, timeout: float) -> Answered:
        """One answer probe of model ``name`` (instance ``identifier``, server ``epoch``)
        bounded by ``timeout`` seconds of clock time. A 401 is not the model's failure: the
        answer is ok-less and carries the token problem (``api_token_missing`` or
        ``api_token_invalid``); the model stays loaded."""
        try:
            result = await within(self.clock, self.prober.ask(url, identifier, kind, timeout), timeout)
        except TimeoutError:
            result = ProbeResult(False, timeout * 1000, None, f"{identifier} did not answer within {timeout:g} s")
        problem = None
        if result.status == 401:
            code = "api_token_invalid" if self.prober.token() else "api_token_missing"
            problem = token_problem(code, result.error or "HTTP 401")
        return Answered(epoch, name, result.ok, result.latency_ms, result.error, problem)

    async def _rest_listing(self, rest: RestClient | None, eff: LoadModels) -> Listing | None:
        """``GET /api/v1/models`` when REST can stand in for `lms` for every declared model
        (each key is a REST model key, or will be once downloaded); else None (use `lms`)."""
        if rest is None or eff.url is None:
            return None
        try:
            listing = await rest.models(eff.url, timeout=QUICK_TIMEOUT)
        except RestError as exc:
            self.log.info("rest_listing_failed", error=exc.message)  # a 401 is reported by the bring-up
            return None
        keys = {d.model_key for d in listing.downloaded}
        if all(m.key in keys or m.download for m in eff.models):
            return listing
        return None

    async def _await_in_flight(
        self, eff: LoadModels, list_loaded: Callable[[], Awaitable[list[LoadedModel]]], loaded: list[LoadedModel]
    ) -> list[LoadedModel]:
        by_name = {model_name(m): m for m in eff.models}
        waiting = {f.name: f.deadline for f in eff.in_flight if f.name in by_name}

        def missing(now: float) -> list[str]:
            return [
                n for n, d in waiting.items() if d > now and plan([by_name[n]], loaded, [])[0].action is not Action.KEEP
            ]

        names = missing(self.clock.monotonic())
        for name in names:
            self.log.info("load_in_flight_awaited", model=name)
            self.post(ModelChanged(eff.action, name, "loading"))
        while names:
            await self.clock.sleep(IN_FLIGHT_POLL)
            loaded = await list_loaded()
            names = missing(self.clock.monotonic())
        return loaded

    async def _download(
        self, eff: LoadModels, lms: LmsClient | None, rest: RestClient | None, m: ModelConfig
    ) -> DownloadProgress | None:
        """Download ``m``: REST v1 with progress (``ModelDownload`` messages), else `lms get`
        (None). Returns the REST job as it ended: ``completed``, ``already_downloaded``, or
        ``paused``, which waits for a person (facts §9) and is returned at once. Raises
        :class:`RestTimeoutError` after :data:`DOWNLOAD_TIMEOUT` seconds, :class:`RestError`
        when LM Studio says ``failed``."""
        name = model_name(m)
        self.post(ModelChanged(eff.action, name, "downloading"))
        if rest is None or eff.url is None:
            assert lms is not None  # noqa: S101 - the caller checked
            await lms.get(m.key, timeout=DOWNLOAD_TIMEOUT)
            return None
        job = await rest.download(eff.url, m.key, timeout=QUICK_TIMEOUT)
        deadline = self.clock.monotonic() + DOWNLOAD_TIMEOUT
        while job.status == "downloading" and job.job_id:
            self.post(ModelDownload(eff.action, name, job))
            if self.clock.monotonic() > deadline:
                raise RestTimeoutError(f"the download of {m.key} did not finish within {DOWNLOAD_TIMEOUT:g} s")
            await self.clock.sleep(DOWNLOAD_POLL)
            job = await rest.download_status(eff.url, job.job_id, timeout=QUICK_TIMEOUT)
        if job.status == "failed":
            raise RestError(f"LM Studio's download of {m.key} failed")
        self.post(ModelDownload(eff.action, name, job))
        return job

    async def _load_one(
        self,
        eff: LoadModels,
        lms: LmsClient | None,
        rest: RestClient | None,
        m: ModelConfig,
        path: str | None,
        run: _Pass | None = None,
    ) -> bool:
        """Download if needed, then load (REST v1 ``/load`` when it can express ``m``, else
        `lms load --exact`, with ``--local`` on LM Link builds and ``--ttl`` only where the
        CLI has it); True when LM Studio accepted it. ``run`` collects what the pass learns
        (``--local``, paused downloads)."""
        run = run or _Pass()
        name = model_name(m)
        by_rest = rest is not None and eff.url is not None and m.identifier is None and m.ttl is None and m.gpu is None
        try:
            if path is None:  # DOWNLOAD_AND_LOAD
                job = await self._download(eff, lms, rest, m)
                if job is not None and job.status == "paused":
                    run.paused.append(name)
                    why = f"the download of {m.key} is paused in LM Studio; resume it there"
                    self.post(ModelChanged(eff.action, name, "failed", why))
                    return False
                path = m.key if by_rest else None
            if path is None or (not by_rest and rest is not None):
                # `lms load --exact` needs the model's path, which REST v1 does not list.
                assert lms is not None  # noqa: S101 - REST stands in only with a lms or by_rest
                downloaded = await lms.ls(timeout=QUICK_TIMEOUT)
                run.local = run.local or any(d.lm_link for d in downloaded)
                here = (d for d in downloaded if d.device is None)  # never a linked device's copy (facts §9)
                path = next((d.path for d in here if m.key in (d.model_key, d.path)), None)
                if path is None:
                    msg = f"{m.key} was downloaded but `lms ls` does not list it"
                    self.post(ModelChanged(eff.action, name, "failed", msg))
                    return False
            self.post(LoadStarted(name))  # before the load: LM Studio may finish it whatever happens to us
            self.post(ModelChanged(eff.action, name, "loading"))
            try:
                if by_rest and rest is not None and eff.url is not None:
                    await rest.load(eff.url, m.key, m.context_length, timeout=LOAD_TIMEOUT)
                else:
                    assert lms is not None  # noqa: S101
                    await lms.load(
                        path,
                        identifier=m.identifier,
                        context_length=m.context_length,
                        gpu=m.gpu,
                        ttl=m.ttl if eff.capabilities is None or eff.capabilities.ttl else None,
                        local=run.local or bool(eff.capabilities and eff.capabilities.local),
                        timeout=LOAD_TIMEOUT,
                    )
            except (LmsTimeoutError, RestTimeoutError, asyncio.CancelledError):
                raise  # LM Studio may still finish it: it stays in flight
            except BaseException:
                self.post(LoadSettled(name))  # refused, or never spawned: nothing in flight
                raise
        except LmsExitError as exc:
            self.post(ModelChanged(eff.action, name, "failed", exc.error_line))
            return False
        except (LmsError, RestError) as exc:
            self.post(ModelChanged(eff.action, name, "failed", error_line(exc.message)))
            return False
        self.post(ModelChanged(eff.action, name, "loaded"))
        return True


@dataclass
class _Seen:
    """What one bring-up has learnt so far (the install as detected, problems noted on its
    way, this `lms`'s capabilities): kept when it fails by an exception or its deadline."""

    install: Install | None = None
    notes: list[Problem] = field(default_factory=list)
    capabilities: CliCapabilities | None = None


@dataclass
class _Pass:
    """What one load pass learns as it goes: ``local`` (an LM Link `lms`: pass ``--local``)
    and the names whose download is ``paused``."""

    local: bool = False
    paused: list[str] = field(default_factory=list)


def _settings(install: Install, last_good: ServerSettings | None) -> tuple[Install, ServerSettings, bool]:
    """LM Studio's server settings to inherit, and whether its file was sound.

    A corrupt, unreadable or missing ``http-server-config.json`` never replaces the
    user's settings with defaults: the last good ones are used, and a problem says so.
    """
    corrupt = any(p.code == "server_config_corrupt" for p in install.problems)
    sound = install.server.found and not corrupt
    if sound or last_good is None:
        return install, install.server, sound
    note = Problem(
        "server_config_remembered",
        f"{install.home / '.internal' / 'http-server-config.json'} is "
        f"{'unreadable' if corrupt else 'missing'}; using the last good server settings "
        f"(port {last_good.port}, bind {last_good.bind}, CORS {'on' if last_good.cors else 'off'})",
        "check LM Studio's server settings; lmsupervisor keeps using the remembered ones",
        "warning",
    )
    return replace(install, problems=(*install.problems, note)), last_good, False


def _api_server_pid(home: Path) -> int | None:
    """The PID in ``.internal/http-server.json`` (2026+, a hint that may be stale)."""
    try:
        data = json.loads((home / ".internal" / "http-server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
