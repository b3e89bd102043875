"""The orchestrator: one trigger queue, one consumer, one writer of the state.

Signal handlers, the PID watcher, the health loop, timers and the actions (bring-up,
model loading) only *post* messages; :meth:`Supervisor.run` consumes them one at a
time and is the only code that changes state, through :meth:`Supervisor._fire`, which
looks the edge up in :data:`lmsupervisor.core.states.TRANSITIONS`, logs ``state_changed``
and publishes the event. Every dependency with I/O is passed in (clock, `lms`, prober,
detection, process watching), so scenario tests run it on a fake clock.

The escalation ladder and the backoff are in :mod:`lmsupervisor.core.policy`; what to load
is planned by :mod:`lmsupervisor.core.preload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from lmsupervisor import __version__
from lmsupervisor.clock import Clock, iso
from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.observed import Install, LoadedModel, ServerSettings, effective_server
from lmsupervisor.core.policy import Backoff, Step, step_for
from lmsupervisor.core.preload import Action, plan
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.states import State, Trigger, accepts, next_state
from lmsupervisor.errors import ConfigError, LmsError, LmsExitError, LmsNotFoundError, LmSupervisorError
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.probe import Prober, ProbeResult, base_url
from lmsupervisor.lmstudio.watch import PidWatcher, ProcessTable

QUICK_TIMEOUT = 15.0  # seconds for `lms` calls that should answer at once (status, stop, ps)
LOAD_TIMEOUT = 900.0  # seconds for one `lms load` (a large model on a slow disk)
DOWNLOAD_TIMEOUT = 6 * 3600.0  # seconds for `lms get`
TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a hung daemon
EVENT_BACKLOG = 256  # events buffered per subscriber before it is dropped


@dataclass
class Msg:
    """A message on the trigger queue."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelStatus:
    key: str
    identifier: str | None
    state: str = "pending"  # pending | downloading | loading | loaded | failed
    error: str | None = None


class Supervisor:
    """Keeps LM Studio in the declared state. Construct, then ``await run()``."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        lms_factory: Callable[[Path], LmsClient],
        prober: Prober,
        detect: Callable[[Config], Install],
        pids: PidWatcher,
        processes: ProcessTable,
        config_loader: Callable[[], Config] | None = None,
        config_path: Path | None = None,
        rng: random.Random | None = None,
        pid: int = 0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.lms_factory = lms_factory
        self.prober = prober
        self.detect = detect
        self.pids = pids
        self.processes = processes
        self.config_loader = config_loader
        self.config_path = config_path
        self.pid = pid
        self.log = structlog.get_logger("lmsupervisor")
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.backoff = Backoff(config.restart, rng)
        self.model_backoff = Backoff(config.restart, rng)  # retries of failed models, own count

        self.state = State.STOPPED
        self.since = clock.wall()
        self.started_at = clock.wall()
        self.config_error: str | None = None
        self.install: Install | None = None
        self.server = ServerSettings()
        self.daemon_pid: int | None = None
        self.daemon_supported: bool | None = None
        self.lms_version: str | None = None
        self.server_running = False
        self.last_probe_ms: float | None = None
        self.consecutive_failures = 0
        self.models: dict[str, ModelStatus] = {}
        self.problems: list[Problem] = []
        self.restart_count = 0
        self.last_restart_reason: str | None = None
        self.last_restart_at: float | None = None
        self.next_attempt_at: float | None = None
        self._healthy_since: float | None = None
        self._action: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_gen = 0
        self._unwatch: Callable[[], None] | None = None
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._sync_models()

    # -- public interface ------------------------------------------------------
    def post(self, kind: str, **data: Any) -> None:
        """Enqueue a trigger (thread-unsafe; call from the event loop)."""
        self.queue.put_nowait(Msg(kind, data))

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    async def run(self) -> None:
        """Run until a ``stop`` message has been handled."""
        self._fire(Trigger.START, "supervisor started")
        self._begin(self._bring_up(Step.START))
        try:
            while self.state is not State.STOPPED:
                msg = await self.queue.get()
                await self._handle(msg)
        finally:
            self._cancel_all()
            for q in list(self._subscribers):
                q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue that receives every event from now on (``None`` at shutdown)."""
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_BACKLOG)
        self._subscribers.add(q)
        return q

    async def events(
        self,
        q: asyncio.Queue[dict[str, Any] | None] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events as they happen (``state``, ``model``, ``restart``) until shutdown;
        pass a queue from :meth:`subscribe` to miss nothing between subscribing and reading."""
        q = q or self.subscribe()
        try:
            while True:
                event = await q.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(q)

    def snapshot(self) -> dict[str, Any]:
        """The status document of design §5 (``GET /v1/status``)."""
        inst = self.install
        return {
            "state": self.state.value,
            "ready": self.ready,
            "since": iso(self.since),
            "supervisor": {
                "version": __version__,
                "pid": self.pid,
                "started_at": iso(self.started_at),
                "config_path": str(self.config_path) if self.config_path else None,
                "config_error": self.config_error,
            },
            "lmstudio": {
                "installed": bool(inst and inst.installed),
                "bootstrapped": bool(inst and inst.bootstrapped),
                "home": str(inst.home) if inst else None,
                "lms": str(inst.lms) if inst and inst.lms else None,
                "version": self.lms_version,
                "daemon_pid": self.daemon_pid,
                "local_service_enabled": inst.local_service_enabled if inst else None,
                "kind": inst.kind if inst else None,
            },
            "server": {
                "running": self.server_running,
                "bind": self.server.bind,
                "port": self.server.port,
                "cors": self.server.cors,
                "api_endpoint": base_url(self.server.bind, self.server.port),
                "last_probe_ms": None if self.last_probe_ms is None else round(self.last_probe_ms, 3),
                "consecutive_failures": self.consecutive_failures,
            },
            "models": [
                {"key": m.key, "identifier": m.identifier, "state": m.state, "error": m.error}
                for m in self.models.values()
            ],
            "restarts": {
                "count": self.restart_count,
                "last_reason": self.last_restart_reason,
                "last_at": iso(self.last_restart_at),
                "next_attempt_at": iso(self.next_attempt_at),
                "attempt": self.backoff.attempt,
            },
            "problems": [p.to_json() for p in self.problems],
        }

    # -- the one writer of state -------------------------------------------------
    def _fire(self, trigger: Trigger, reason: str) -> None:
        previous = self.state
        self.state = next_state(previous, trigger)  # raises IllegalTransition
        self.since = self.clock.wall()
        self.log.info(
            "state_changed", state=self.state.value, previous=previous.value, trigger=trigger.value, reason=reason
        )
        self._publish({"type": "state", "state": self.state.value, "previous": previous.value, "reason": reason})
        if self.state in (State.READY, State.DEGRADED):
            if self._health is None or self._health.done():
                self._health = asyncio.create_task(self._health_loop())
            if self.state is State.READY and self._healthy_since is None:
                self._healthy_since = self.clock.monotonic()
        else:
            self._cancel(self._health)
            self._health = None
        if self.state is not State.BACKOFF:
            self.next_attempt_at = None

    def _publish(self, event: dict[str, Any]) -> None:
        event = {"time": iso(self.clock.wall()), **event}
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a reader that does not read is dropped, never waited on
                self._subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    # -- message handling ----------------------------------------------------------
    async def _handle(self, msg: Msg) -> None:
        d = msg.data
        k = msg.kind
        if k == "stop":
            self._cancel_all()
            self._fire(Trigger.STOP, d.get("reason", "stop requested"))
            # LM Studio is left running on purpose: a supervisor restart must not take
            # the models down (design §6).
            self._fire(Trigger.STOPPED, "supervisor stopped; LM Studio left running")
        elif k == "not_installed" and self.state is State.STARTING:
            self.server_running = False
            self._fire(Trigger.NOT_INSTALLED, d["reason"])
            self._schedule(self.backoff.next_delay())
        elif k == "server_up" and self.state is State.STARTING:
            self._set_daemon_pid(d.get("pid"))
            self.server_running = True
            self.consecutive_failures = 0
            self._fire(Trigger.SERVER_UP, d["reason"])
            self._begin(self._load_models())
        elif k == "bring_up_failed" and self.state is State.STARTING:
            self._fail(d["reason"])
        elif k == "models_done" and self.state is State.LOADING_MODELS:
            if d["ok"]:
                self.model_backoff.reset()
                self._fire(Trigger.MODELS_LOADED, "all declared models are loaded")
            else:
                self._fire(Trigger.MODEL_FAILED, d["reason"])
                self._schedule(self.model_backoff.next_delay())
        elif k == "process_exited" and d.get("pid") == self.daemon_pid:
            self.daemon_pid = None
            if accepts(self.state, Trigger.FAILED) and self.state is not State.STARTING:
                self.server_running = False
                self._fail(f"LM Studio's daemon (PID {d.get('pid')}) exited")
        elif k == "probe":
            self._on_probe(d["result"], d.get("loaded"))
        elif k == "timer" and d.get("gen") == self._timer_gen:
            self._on_timer()
        elif k == "restart":
            if accepts(self.state, Trigger.RESTART):
                self._cancel_all()
                step = Step.KILL_DAEMON if d.get("daemon") else Step.RESTART_SERVER
                self._count_restart(d.get("reason", "restart requested"), step)
                self._fire(Trigger.RESTART, d.get("reason", "restart requested"))
                self._begin(self._bring_up(step))
        elif k == "reload":
            self._reload()

    def _on_probe(self, result: ProbeResult, loaded: list[LoadedModel] | None) -> None:
        if self.state not in (State.READY, State.DEGRADED):
            return
        self.last_probe_ms = result.latency_ms
        if result.ok:
            self.consecutive_failures = 0
            self.server_running = True
            if self.state is State.READY and self.backoff.attempt and self._healthy_long_enough():
                self.log.info("backoff_reset", after_attempts=self.backoff.attempt)
                self.backoff.reset()
            if loaded is not None:
                gone = [
                    m
                    for m in self.config.models
                    if self.models[self._name(m)].state == "loaded"
                    and plan([m], loaded, [])[0].action is not Action.KEEP
                ]
                if gone:
                    for m in gone:
                        self._set_model(m, "pending", None)
                    names = ", ".join(self._name(m) for m in gone)
                    self.log.warning("model_drifted", models=names)
                    self._fire(Trigger.DRIFT, f"declared model no longer loaded: {names}")
                    self._begin(self._load_models())
            return
        self.consecutive_failures += 1
        self.log.warning("probe_failed", error=result.error, consecutive=self.consecutive_failures)
        if self.consecutive_failures >= self.config.health.failures_before_restart:
            self.server_running = False
            self._fail(f"server failed {self.consecutive_failures} probes: {result.error}")

    def _on_timer(self) -> None:
        self._timer = None
        if self.state is State.BACKOFF:
            step = step_for(self.backoff.attempt)
            self._count_restart(self.last_restart_reason or "retry", step)
            self._fire(Trigger.TIMER, f"retry {self.backoff.attempt}: {step.name.lower()}")
            self._begin(self._bring_up(step))
        elif self.state is State.NOT_INSTALLED:
            self._fire(Trigger.TIMER, "checking for LM Studio again")
            self._begin(self._bring_up(Step.START))
        elif self.state is State.DEGRADED:
            self._fire(Trigger.TIMER, "retrying the failed models")
            self._begin(self._load_models())

    def _fail(self, reason: str) -> None:
        """A failure in an active state: cancel work, back off, schedule the retry."""
        self._cancel(self._action)
        if self._healthy_long_enough():
            self.backoff.reset()
        self._healthy_since = None
        delay = self.backoff.next_delay()
        self.last_restart_reason = reason
        self.log.warning("supervision_failed", reason=reason, attempt=self.backoff.attempt, retry_in=round(delay, 3))
        self._fire(Trigger.FAILED, reason)
        self.next_attempt_at = self.clock.wall() + delay
        self._schedule(delay)

    def _healthy_long_enough(self) -> bool:
        """READY for at least ``restart.reset_after`` seconds: the next failure starts the backoff over."""
        return (
            self._healthy_since is not None
            and self.clock.monotonic() - self._healthy_since >= self.config.restart.reset_after
        )

    def _count_restart(self, reason: str, step: Step) -> None:
        self.restart_count += 1
        self.last_restart_at = self.clock.wall()
        self.last_restart_reason = reason
        self._publish({"type": "restart", "count": self.restart_count, "reason": reason, "step": step.name.lower()})

    def _schedule(self, delay: float) -> None:
        self._cancel(self._timer)
        self._timer_gen += 1
        gen = self._timer_gen

        async def fire_later() -> None:
            await self.clock.sleep(delay)
            self.post("timer", gen=gen)

        self._timer = asyncio.create_task(fire_later())

    def _reload(self) -> None:
        if self.config_loader is None:
            return
        try:
            new = self.config_loader()
        except ConfigError as exc:
            self.config_error = str(exc.message)
            self.log.error("config_rejected", error=exc.message, key=exc.key)
            self._publish({"type": "config", "error": exc.message})
            return
        old, self.config_error = self.config, None
        self.config = new
        self.backoff.config = self.model_backoff.config = new.restart
        self._sync_models()
        self.log.info("config_reloaded")
        self._publish({"type": "config", "error": None})
        if (old.server, old.lmstudio) != (new.server, new.lmstudio) and accepts(self.state, Trigger.RECONFIGURE_SERVER):
            self._cancel_all()
            self._fire(Trigger.RECONFIGURE_SERVER, "server settings changed")
            self._begin(self._bring_up(Step.RESTART_SERVER))
        elif old.models != new.models and accepts(self.state, Trigger.RECONFIGURE_MODELS):
            self._cancel(self._action)
            self._fire(Trigger.RECONFIGURE_MODELS, "declared models changed")
            self._begin(self._load_models())

    # -- tasks ----------------------------------------------------------------------
    def _begin(self, coro: Any) -> None:
        self._cancel(self._action)
        self._action = asyncio.create_task(coro)

    @staticmethod
    def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.done():
            task.cancel()

    def _cancel_all(self) -> None:
        for task in (self._action, self._health, self._timer):
            self._cancel(task)
        self._health = None

    def _set_daemon_pid(self, pid: int | None) -> None:
        if pid == self.daemon_pid and self._unwatch is not None:
            return
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.daemon_pid = pid
        if pid:
            self._unwatch = self.pids.watch(pid, lambda: self.post("process_exited", pid=pid))

    def _client(self) -> LmsClient:
        if self.install is None or self.install.lms is None:
            raise LmsNotFoundError("no lms found", hint="run `lmsupervisor doctor`")
        return self.lms_factory(self.install.lms)

    # -- bring-up: adopt, or climb the ladder ------------------------------------------
    async def _bring_up(self, step: Step) -> None:
        try:
            await self._bring_up_steps(step)
        except LmSupervisorError as exc:
            self.log.warning("bring_up_failed", step=step.name.lower(), error=str(exc))
            self.post("bring_up_failed", reason=str(exc.message))

    async def _bring_up_steps(self, step: Step) -> None:
        cfg = self.config
        install = self.detect(cfg)
        self.install = install
        self.problems = list(install.problems)
        if not install.installed or install.lms is None:
            reason = next((p.message for p in install.problems if p.severity == "error"), "LM Studio not found")
            self.post("not_installed", reason=reason)
            return
        self.server = effective_server(cfg.server.bind, cfg.server.port, cfg.server.cors, install.server)
        url = base_url(self.server.bind, self.server.port)
        lms = self._client()
        if self.lms_version is None:
            with contextlib.suppress(LmsError):
                self.lms_version = await lms.version(timeout=QUICK_TIMEOUT)

        if step is Step.START:
            probe = await self.prober.greeting(url, timeout=cfg.health.timeout)
            declared_differs = (cfg.server.bind is not None and cfg.server.bind != install.server.bind) or (
                cfg.server.cors is not None and cfg.server.cors != install.server.cors
            )
            if probe.ok and not declared_differs:
                adopted = await self._find_daemon_pid(lms, install)
                self.log.info("server_adopted", url=url, daemon_pid=adopted)
                self.post("server_up", reason=f"adopted the running server at {url}", pid=adopted)
                return

        old_pid = self.daemon_pid
        if step >= Step.KILL_DAEMON and old_pid and self.processes.alive(old_pid):
            self.log.warning("daemon_terminating", pid=old_pid)
            await self.processes.terminate(old_pid, TERMINATE_GRACE)
        elif step is Step.RESTART_DAEMON and self.daemon_supported is not False:
            try:
                await lms.daemon_down(timeout=QUICK_TIMEOUT)
            except LmsError as exc:
                self.log.warning("daemon_down_failed", error=str(exc))
            if old_pid and self.processes.alive(old_pid):
                self.log.warning("daemon_terminating", pid=old_pid)
                await self.processes.terminate(old_pid, TERMINATE_GRACE)

        pid: int | None = None
        if self.daemon_supported is not False:
            try:
                status = await lms.daemon_up(timeout=cfg.server.start_timeout)
                self.daemon_supported, pid = True, status.pid
            except LmsExitError as exc:
                if "unknown command" not in exc.stderr:
                    raise
                self.daemon_supported = False  # LM Studio 0.3: `server start` wakes the app
        if step >= Step.RESTART_SERVER:
            with contextlib.suppress(LmsError):
                await lms.server_stop(timeout=QUICK_TIMEOUT)
        await lms.server_start(self.server.port, self.server.bind, self.server.cors, timeout=cfg.server.start_timeout)
        probe = await self.prober.greeting(url, timeout=cfg.health.timeout)
        if not probe.ok:
            self.post("bring_up_failed", reason=f"`lms server start` succeeded but {probe.error}")
            return
        if pid is None:
            pid = await self._find_daemon_pid(lms, install)
        self.log.info("server_started", url=url, daemon_pid=pid, step=step.name.lower())
        self.post("server_up", reason=f"server started at {url}", pid=pid)

    async def _find_daemon_pid(self, lms: LmsClient, install: Install) -> int | None:
        """From `lms daemon status --json`, else http-server.json, else the app's process."""
        if self.daemon_supported is not False:
            try:
                status = await lms.daemon_status(timeout=QUICK_TIMEOUT)
                self.daemon_supported = status.supported
                if status.running and status.pid:
                    return status.pid
            except LmsError as exc:
                self.log.warning("daemon_status_failed", error=str(exc))
        info = install.api_server or {}
        pid = info.get("pid")
        if isinstance(pid, int) and self.processes.alive(pid):
            return pid
        if install.service_path is not None:
            return self.processes.find_by_executable(install.service_path)
        return None

    # -- models -----------------------------------------------------------------------
    @staticmethod
    def _name(m: ModelConfig) -> str:
        return m.identifier or m.key

    def _sync_models(self) -> None:
        old = self.models
        self.models = {
            self._name(m): old.get(self._name(m)) or ModelStatus(m.key, m.identifier) for m in self.config.models
        }

    def _set_model(self, m: ModelConfig, state: str, error: str | None) -> None:
        status = self.models[self._name(m)]
        if (status.state, status.error) == (state, error):
            return
        status.state, status.error = state, error
        log = self.log.warning if state == "failed" else self.log.info
        fields = {"key": m.key, "identifier": m.identifier, **({"error": error} if error else {})}
        log(
            "model_"
            + {
                "loaded": "loaded",
                "failed": "load_failed",
                "loading": "loading",
                "downloading": "downloading",
                "pending": "pending",
            }[state],
            **fields,
        )
        self._publish({"type": "model", "key": m.key, "identifier": m.identifier, "state": state, "error": error})

    async def _load_models(self) -> None:
        try:
            await self._load_models_steps()
        except LmsError as exc:
            self.post("models_done", ok=False, reason=f"listing models failed: {exc.message}")

    async def _load_models_steps(self) -> None:
        declared = self.config.models
        if not declared:
            self.post("models_done", ok=True)
            return
        lms = self._client()
        loaded = await lms.ps(timeout=QUICK_TIMEOUT)
        # `lms ls` only when something must be loaded: it is what resolves keys to paths.
        all_kept = all(p.action is Action.KEEP for p in plan(declared, loaded, []))
        downloaded = [] if all_kept else await lms.ls(timeout=QUICK_TIMEOUT)
        for item in plan(declared, loaded, downloaded):
            m = item.model
            if item.action is Action.KEEP:
                self._set_model(m, "loaded", None)
                continue
            if item.action in (Action.MISSING, Action.CONFLICT):
                self._set_model(m, "failed", item.detail)
                continue
            path = item.path
            try:
                if item.action is Action.DOWNLOAD_AND_LOAD:
                    self._set_model(m, "downloading", None)
                    await lms.get(m.key, timeout=DOWNLOAD_TIMEOUT)
                    downloaded = await lms.ls(timeout=QUICK_TIMEOUT)
                    path = next((d.path for d in downloaded if m.key in (d.model_key, d.path)), None)
                    if path is None:
                        self._set_model(m, "failed", f"`lms get {m.key}` finished but `lms ls` does not list it")
                        continue
                self._set_model(m, "loading", None)
                assert path is not None  # noqa: S101 - LOAD always carries the path
                await lms.load(
                    path,
                    identifier=m.identifier,
                    context_length=m.context_length,
                    gpu=m.gpu,
                    ttl=m.ttl,
                    timeout=LOAD_TIMEOUT,
                )
                self._set_model(m, "loaded", None)
            except LmsExitError as exc:
                self._set_model(m, "failed", exc.error_line)  # LM Studio's own words
                continue
            except LmsError as exc:
                self._set_model(m, "failed", exc.message)
                continue
        # Verify with `lms ps --json`: a zero exit is not proof (facts §3).
        loaded = await lms.ps(timeout=QUICK_TIMEOUT)
        for item in plan(declared, loaded, []):
            status = self.models[self._name(item.model)]
            if item.action is Action.KEEP:
                self._set_model(item.model, "loaded", None)
            elif status.state != "failed":
                self._set_model(item.model, "failed", "not listed by `lms ps --json` after loading")
        failed = [n for n, s in self.models.items() if s.state == "failed"]
        self.post("models_done", ok=not failed, reason=f"model failed: {', '.join(failed)}" if failed else "all loaded")

    # -- health -----------------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            health = self.config.health  # read each round: a reload applies at the next probe
            await self.clock.sleep(health.interval)
            url = base_url(self.server.bind, self.server.port)
            result = await self.prober.greeting(url, timeout=health.timeout)
            loaded = None
            if result.ok and self.config.models and self.install and self.install.lms:
                with contextlib.suppress(LmsError):
                    loaded = await self._client().ps(timeout=max(health.timeout, QUICK_TIMEOUT))
            self.post("probe", result=result, loaded=loaded)
