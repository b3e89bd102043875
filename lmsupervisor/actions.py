"""The two long effects, performed against LM Studio: a bring-up and a load pass.

Each takes its effect value (:class:`~lmsupervisor.core.reducer.BringUp`,
:class:`~lmsupervisor.core.reducer.LoadModels`) and *returns* the message that ends it;
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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.observed import DaemonProcess, Install, LoadedModel, ProbeResult, ServerSettings, base_url
from lmsupervisor.core.observed import effective_server as effective
from lmsupervisor.core.policy import Step
from lmsupervisor.core.preload import Action, plan
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.reducer import (
    Answered,
    BringUp,
    BringUpFailed,
    LoadModels,
    LoadSettled,
    LoadStarted,
    Message,
    ModelChanged,
    ModelsDone,
    NotInstalled,
    ServerUp,
)
from lmsupervisor.errors import LmsError, LmsExitError, LmsNotFoundError, LmsTimeoutError, LmSupervisorError
from lmsupervisor.lmstudio.lms import LmsClient, no_such_command
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.watch import ProcessTable

QUICK_TIMEOUT = 15.0  # seconds for `lms` calls that answer at once (status, stop, ps, version)
LOAD_TIMEOUT = 900.0  # seconds for one `lms load` (a large model on a slow disk)
DOWNLOAD_TIMEOUT = 6 * 3600.0  # seconds for `lms get`
TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a hung daemon
EXIT_WAIT = 10.0  # seconds to wait for the daemon to exit after `lms daemon down` (it returns early)
IN_FLIGHT_POLL = 1.0  # seconds between `lms ps` checks while an earlier load finishes


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
    """Performs bring-ups and load passes with the injected I/O dependencies."""

    def __init__(
        self,
        *,
        clock: Clock,
        lms_factory: Callable[[Path], LmsClient],
        prober: Prober,
        detect: Callable[[Config], Install],
        processes: ProcessTable,
        post: Callable[[Message], None],
    ) -> None:
        self.clock = clock
        self.lms_factory = lms_factory
        self.prober = prober
        self.detect = detect
        self.processes = processes
        self.post = post
        self.log = structlog.get_logger("lmsupervisor")

    # -- bring-up ---------------------------------------------------------------------
    async def bring_up(self, eff: BringUp) -> Message:
        """Adopt a healthy server (rung START), else climb to ``eff.step``; returns
        ServerUp, NotInstalled or BringUpFailed. Bounded by :func:`rung_deadline`."""
        log = self.log.bind(step=eff.step.name.lower(), action=eff.action)
        deadline = rung_deadline(eff.step, eff.config)
        try:
            return await within(self.clock, self._bring_up(eff, log), deadline)
        except TimeoutError:
            return BringUpFailed(eff.action, f"the {eff.step.name.lower()} rung did not finish within {deadline:g} s")
        except LmSupervisorError as exc:
            log.warning("bring_up_step_failed", error=str(exc))
            return BringUpFailed(eff.action, exc.message)

    async def _bring_up(self, eff: BringUp, log: structlog.typing.FilteringBoundLogger) -> Message:
        cfg = eff.config
        install = self.detect(cfg)
        if not install.installed or install.lms is None:
            reason = next((p.message for p in install.problems if p.severity == "error"), "LM Studio not found")
            return NotInstalled(eff.action, install, reason)
        lms = self.lms_factory(install.lms)
        install, found, sound = _settings(install, eff.last_good_server)
        server = effective(cfg.server.bind, cfg.server.port, cfg.server.cors, found)
        url = base_url(server.bind, server.port)
        version = eff.lms_version
        if version is None:
            try:
                version = await lms.version(timeout=QUICK_TIMEOUT)
            except LmsNotFoundError:
                raise
            except LmsError as exc:
                log.info("lms_version_failed", error=exc.message)

        def up(reason: str, daemon: DaemonProcess | None, adopted: bool) -> ServerUp:
            return ServerUp(eff.action, install, server, daemon, reason, version, adopted, sound)

        if eff.step is Step.START:
            probe = await self._probe(url, cfg.health.timeout)
            differs = (cfg.server.bind is not None and cfg.server.bind != found.bind) or (
                cfg.server.cors is not None and cfg.server.cors != found.cors
            )
            if probe.ok and not differs:
                return up(f"adopted the running server at {url}", await self._find_daemon(lms, install), True)

        daemon = eff.daemon if eff.daemon is not None and self.processes.alive(eff.daemon) else None
        if eff.step >= Step.KILL_DAEMON and daemon is not None:
            log.warning("daemon_termination_started", pid=daemon.pid, verified=daemon.verified)
            await self.processes.terminate(daemon, TERMINATE_GRACE)
        elif eff.step is Step.RESTART_DAEMON:
            down = True
            try:
                await lms.daemon_down(timeout=ladder_timeout(cfg))
            except LmsError as exc:
                down = False  # a hung daemon does not answer: no point waiting for its exit
                log.warning("daemon_down_failed", error=exc.message)
            # `lms daemon down` returns before the process has exited (facts §8).
            if daemon is not None and not await self.processes.wait_exit(daemon, EXIT_WAIT if down else 0.0):
                log.warning("daemon_termination_started", pid=daemon.pid, verified=daemon.verified)
                await self.processes.terminate(daemon, TERMINATE_GRACE)

        live = daemon is not None and self.processes.alive(daemon)
        try:
            # A live daemon answers at once; only a cold start may take start_timeout.
            await lms.daemon_up(timeout=ladder_timeout(cfg) if live else cfg.server.start_timeout)
        except LmsExitError as exc:
            if not no_such_command(exc.stderr):
                raise
            log.info("daemon_command_rejected")  # LM Studio 0.3: `server start` wakes the app
        if eff.step >= Step.RESTART_SERVER:
            try:
                await lms.server_stop(timeout=ladder_timeout(cfg))
            except LmsError as exc:
                log.info("server_stop_failed", error=exc.message)
        start_error: str | None = None
        try:
            await lms.server_start(server.port, server.bind, server.cors, timeout=cfg.server.start_timeout)
        except LmsExitError as exc:
            start_error = exc.error_line  # the probe decides (BT#1720: exit 1 while serving)
        probe = await self._probe(url, cfg.health.timeout)
        if not probe.ok:
            why = (
                f"`lms server start` failed: {start_error}"
                if start_error
                else f"after `lms server start`, {probe.error}"
            )
            return BringUpFailed(eff.action, why, install)
        if start_error:
            log.warning("server_start_exit_ignored", error=start_error, url=url)
        return up(f"server started at {url}", await self._find_daemon(lms, install), False)

    async def _probe(self, url: str, timeout: float) -> ProbeResult:
        try:
            return await within(self.clock, self.prober.greeting(url, timeout=timeout), timeout)
        except TimeoutError:
            return ProbeResult(False, timeout * 1000, None, f"no answer from {url} within {timeout:g} s")

    async def _find_daemon(self, lms: LmsClient, install: Install) -> DaemonProcess | None:
        """LM Studio's daemon: from `lms daemon status --json`, else ``.internal/http-server.json``
        (a hint, used only when verified), else (0.3) the process running the install's
        executable itself. Never a process that merely mentions the path."""
        try:
            status = await lms.daemon_status(timeout=QUICK_TIMEOUT)
            if status.running and status.pid:
                return self.processes.identify(status.pid, install.service_path, status.is_daemon)
        except LmsError as exc:
            self.log.info("daemon_status_failed", error=exc.message)
        pid = _api_server_pid(install.home)
        if pid is not None:
            proc = self.processes.identify(pid, install.service_path)
            if proc is not None and proc.verified:
                return proc
        if install.service_path is not None:  # 0.3: the app that runs the install's executable itself
            return self.processes.find_running(install.service_path)
        return None

    # -- load pass --------------------------------------------------------------------
    async def load_models(self, eff: LoadModels) -> Message:
        """Unload what we owe, wait for loads in flight, load what is missing, verify with
        `lms ps --json`; returns ModelsDone (raises LmsError when `lms` cannot list)."""
        if eff.lms is None:
            raise LmsNotFoundError("no lms found", hint="run `lmsupervisor doctor`")
        lms = self.lms_factory(eff.lms)
        for identifier in eff.unload:
            try:
                await lms.unload(identifier, timeout=QUICK_TIMEOUT)
                self.log.info("model_unloaded", identifier=identifier)
            except LmsError as exc:
                self.log.warning("model_unload_failed", identifier=identifier, error=exc.message)
        loaded = await lms.ps(timeout=QUICK_TIMEOUT)
        if not eff.models:
            return ModelsDone(eff.action, tuple(loaded))
        loaded = await self._await_in_flight(eff, lms, loaded)
        items = plan(eff.models, loaded, [])
        downloaded = [] if all(i.action is Action.KEEP for i in items) else await lms.ls(timeout=QUICK_TIMEOUT)
        started: list[ModelConfig] = []
        for item in plan(eff.models, loaded, downloaded):
            m, name = item.model, model_name(item.model)
            if item.action is Action.KEEP:
                self.post(ModelChanged(eff.action, name, "loaded"))
            elif item.action in (Action.MISSING, Action.CONFLICT):
                self.post(ModelChanged(eff.action, name, "failed", item.detail))
            elif await self._load_one(eff, lms, m, item.path):
                started.append(m)
        loaded = await lms.ps(timeout=QUICK_TIMEOUT)
        ours = tuple(i for m in started if (i := _instance_of(m, loaded)) is not None)
        answers = await self._ask_all(eff, loaded)
        return ModelsDone(eff.action, tuple(loaded), ours, answers)

    async def _ask_all(self, eff: LoadModels, loaded: list[LoadedModel]) -> tuple[Answered, ...]:
        """Deep readiness after loading: each loaded model with probe = "answer" must answer
        one 1-token request within ``eff.answer_timeout`` seconds."""
        answers = []
        for m in eff.models:
            name = model_name(m)
            inst = next((i for i in loaded if i.identifier == _instance_of(m, loaded)), None)
            if name not in eff.ask or inst is None:
                continue
            result = await self.ask(eff.url, inst.identifier, inst.type, eff.answer_timeout)
            answers.append(Answered(0, name, result.ok, result.latency_ms, result.error))
        return tuple(answers)

    async def ask(self, url: str, identifier: str, kind: str, timeout: float) -> ProbeResult:
        """One answer probe of ``identifier`` bounded by ``timeout`` seconds of clock time."""
        try:
            return await within(self.clock, self.prober.ask(url, identifier, kind, timeout), timeout)
        except TimeoutError:
            return ProbeResult(False, timeout * 1000, None, f"{identifier} did not answer within {timeout:g} s")

    async def _await_in_flight(self, eff: LoadModels, lms: LmsClient, loaded: list[LoadedModel]) -> list[LoadedModel]:
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
            loaded = await lms.ps(timeout=QUICK_TIMEOUT)
            names = missing(self.clock.monotonic())
        return loaded

    async def _load_one(self, eff: LoadModels, lms: LmsClient, m: ModelConfig, path: str | None) -> bool:
        """Download if needed, then `lms load --exact`; True when LM Studio accepted it."""
        name = model_name(m)
        try:
            if path is None:  # DOWNLOAD_AND_LOAD
                self.post(ModelChanged(eff.action, name, "downloading"))
                await lms.get(m.key, timeout=DOWNLOAD_TIMEOUT)
                downloaded = await lms.ls(timeout=QUICK_TIMEOUT)
                path = next((d.path for d in downloaded if m.key in (d.model_key, d.path)), None)
                if path is None:
                    msg = f"`lms get {m.key}` finished but `lms ls` does not list it"
                    self.post(ModelChanged(eff.action, name, "failed", msg))
                    return False
            self.post(LoadStarted(name))  # before the load: LM Studio may finish it whatever happens to us
            self.post(ModelChanged(eff.action, name, "loading"))
            try:
                await lms.load(
                    path,
                    identifier=m.identifier,
                    context_length=m.context_length,
                    gpu=m.gpu,
                    ttl=m.ttl,
                    timeout=LOAD_TIMEOUT,
                )
            except (LmsTimeoutError, asyncio.CancelledError):
                raise  # LM Studio may still finish it: it stays in flight
            except BaseException:
                self.post(LoadSettled(name))  # refused, or never spawned: nothing in flight
                raise
        except LmsExitError as exc:
            self.post(ModelChanged(eff.action, name, "failed", exc.error_line))
            return False
        except LmsTimeoutError as exc:
            self.post(ModelChanged(eff.action, name, "failed", exc.message))
            return False
        except LmsError as exc:
            self.post(ModelChanged(eff.action, name, "failed", exc.message))
            return False
        self.post(ModelChanged(eff.action, name, "loaded"))
        return True


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


def _instance_of(m: ModelConfig, loaded: list[LoadedModel]) -> str | None:
    """The identifier of the instance that satisfies declared model ``m``."""
    if m.identifier:
        return m.identifier if any(i.identifier == m.identifier for i in loaded) else None
    return next((i.identifier for i in loaded if m.key in (i.model_key, i.path)), None)
