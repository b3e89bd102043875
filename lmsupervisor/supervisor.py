"""The runner: one queue of messages, the pure reducer, and one performer of effects.

Signal handlers, the PID watcher, the health loop, timers and the actions (the bring-up,
:mod:`lmsupervisor.lmstudio.bringup`, and the load pass, :mod:`lmsupervisor.lmstudio.loadpass`)
only *post* messages; :meth:`Supervisor.run` takes them one at a time, asks
:func:`lmsupervisor.core.reducer.reduce` for the next snapshot and the effects, and
performs the effects (:meth:`Supervisor._perform`). Nothing else writes the snapshot.

Crash-proof by construction: every effect runs inside a guard, and whatever it raises
(``OSError`` from spawning `lms`, ``httpx.InvalidURL``, a bug) becomes an
``ActionCrashed`` message, logged ``action_crashed`` with its traceback, which the ladder
handles like any other failure. No exception ends supervision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from lmsupervisor import __version__, logs, statefile
from lmsupervisor.clock import iso
from lmsupervisor.config import Config, server_address, server_port
from lmsupervisor.core import reducer as core
from lmsupervisor.core.effects import (
    Ask,
    BringUp,
    CancelAction,
    Effect,
    Health,
    LoadModels,
    Log,
    Publish,
    ReadConfig,
    Relog,
    Remember,
    RememberHardware,
    RememberSpeed,
    Schedule,
    Survey,
    Unload,
    Watch,
)
from lmsupervisor.core.messages import (
    CONFIG_ACTION,
    EFFECT_ACTION,
    ActionCrashed,
    ConfigChanged,
    ConfigRejected,
    DaemonExited,
    LoadPassFailed,
    Message,
    Noted,
    Now,
    ReloadRequested,
    RestartRequested,
    Start,
    StopRequested,
    SurveyRequested,
    TimerFired,
)
from lmsupervisor.core.observed import DaemonProcess, ServerSettings
from lmsupervisor.core.problems import SUPERVISOR_ERROR, Problem
from lmsupervisor.core.snapshot import Snapshot, initial
from lmsupervisor.core.states import State
from lmsupervisor.core.status import render
from lmsupervisor.errors import ConfigError, LmsError, RestError
from lmsupervisor.health import HealthChecks, describe
from lmsupervisor.lmstudio.bringup import bring_up
from lmsupervisor.lmstudio.facade import LmStudio
from lmsupervisor.lmstudio.loadpass import load_models, unload
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.surveypass import survey_pass
from lmsupervisor.statefile import HardwareMemory, SpeedMemory, StateFiles

EVENT_BACKLOG = 256  # events buffered per subscriber before it is dropped
STOP_GRACE = 3.0  # seconds cancelled tasks get to clean up (reap `lms`) at shutdown


class ServerMemory:
    """The last good LM Studio server settings, kept in lmsupervisor's own state file
    (JSON ``{"port","bind","cors"}``), so a corrupt ``http-server-config.json`` never
    resets them. ``path`` None keeps them in memory only; ``files`` writes it (one policy:
    a failed write is reported, never raised, see :mod:`lmsupervisor.statefile`)."""

    def __init__(self, path: Path | None, files: StateFiles | None = None) -> None:
        self.path = path
        self.files = files or StateFiles()
        self.log = structlog.get_logger("lmsupervisor")

    def load(self) -> ServerSettings | None:
        """The remembered settings, or None: no file, not readable, or not what
        :meth:`save` writes. Each value is checked as LM Studio's own are: ``port`` by
        :func:`~lmsupervisor.config.server_port` (1..65535, not a boolean), ``bind`` by
        :func:`~lmsupervisor.config.server_address` (returned normalised), ``cors`` a
        boolean. A file with an unusable value is ignored whole (LM Studio's settings, or
        its defaults, apply) and logged ``server_memory_ignored`` naming the value; never
        raises: a state file is never a reason to fail."""
        if self.path is None:
            return None
        data, why = statefile.read_json(self.path)
        if why is not None:
            self._ignored(why)
        if data is None:
            return None
        if not isinstance(data, dict):
            self._ignored(f"expected a JSON object, got {type(data).__name__}")
            return None
        port, bind, cors = server_port(data.get("port")), server_address(data.get("bind")), data.get("cors")
        if port is None:
            self._ignored(f"port: expected an integer from 1 to 65535, got {data.get('port')!r}")
        elif bind is None:
            self._ignored(f"bind: expected an IP address or localhost, got {data.get('bind')!r}")
        elif not isinstance(cors, bool):
            self._ignored(f"cors: expected true or false, got {cors!r}")
        else:
            return ServerSettings(port=port, bind=bind, cors=cors, found=True)
        return None

    def _ignored(self, why: str) -> None:
        # Nothing for the user to do: it is written again once LM Studio's own file is sound.
        self.log.warning("server_memory_ignored", path=str(self.path), error=why)

    def save(self, server: ServerSettings) -> bool:
        """Write atomically (temp file + rename); False when it could not (reported by
        ``files``, never raised)."""
        if self.path is None:
            return True
        return self.files.write(self.path, json.dumps({"port": server.port, "bind": server.bind, "cors": server.cors}))


class Supervisor:
    """Keeps LM Studio in the declared state. Construct, then ``await run()``.

    ``lmstudio`` is LM Studio as the supervisor reaches it (every I/O seam,
    :class:`~lmsupervisor.lmstudio.facade.LmStudio`); ``config_loader`` reads the config
    again on a reload (None: never), ``memory`` keeps the last good server settings,
    ``hardware`` the last good hardware survey (the GPU gate's, design §9), ``speed`` the
    models' speed baselines (``model_slow``'s)."""

    def __init__(
        self,
        config: Config,
        lmstudio: LmStudio,
        *,
        config_loader: Callable[[], Config] | None = None,
        config_path: Path | None = None,
        rng: random.Random | None = None,
        pid: int = 0,
        memory: ServerMemory | None = None,
        hardware: HardwareMemory | None = None,
        speed: SpeedMemory | None = None,
    ) -> None:
        self.lmstudio = lmstudio
        self.clock = lmstudio.clock
        self.config_loader = config_loader
        self.config_path = config_path
        self.pid = pid
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.memory = memory or ServerMemory(None)
        self.log = structlog.get_logger("lmsupervisor")
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.memory.files.attach(self.note_state_files)  # after the queue: a known problem is sent at once
        self.hardware = hardware or HardwareMemory(None)
        self.speed = speed or SpeedMemory(None)
        self.snap: Snapshot = initial(
            config, self.clock.wall(), self.memory.load(), self.hardware.load(), self.speed.load()
        )
        self._action: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.health = HealthChecks(
            lmstudio,
            send=self.send,
            spawn=self._spawn,
            snapshot=lambda: self.snap,
            files=self.memory.files,
        )
        self._unwatch: Callable[[], None] | None = None
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._observers: list[Callable[[Message, Snapshot], None]] = []
        self._failed_effects: set[str] = set()  # effects whose last run raised (shown as supervisor_error)
        self.proxy_status: Callable[[], dict[str, Any]] | None = None  # the holding proxy's status key (run.py)

    # -- public interface ------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Enqueue a message (call from the event loop)."""
        self.queue.put_nowait(msg)

    def note_state_files(self, problem: Problem | None) -> None:
        """The state files' problem (``state_folder_unwritable``), or None once they are
        written again (:class:`~lmsupervisor.statefile.StateFiles` listener)."""
        self.send(Noted(statefile.PROBLEM, problem))

    def post(self, kind: str, **data: Any) -> None:
        """Enqueue a request by name: ``stop`` (``reason``), ``reload``, ``restart``
        (``daemon``, ``reason``), ``survey`` (``refresh``). Unknown names raise ValueError."""
        if kind == "stop":
            self.send(StopRequested(str(data.get("reason", "stop requested"))))
        elif kind == "reload":
            self.send(ReloadRequested())
        elif kind == "restart":
            self.send(RestartRequested(bool(data.get("daemon")), str(data.get("reason", "restart requested"))))
        elif kind == "survey":
            self.survey(bool(data.get("refresh", True)))
        else:
            raise ValueError(f"unknown request {kind!r}")

    def survey(self, refresh: bool = True) -> None:
        """Survey LM Studio's hardware again now (after a resume from sleep, an update):
        ``refresh`` asks LM Studio to survey anew rather than answer from its start-up
        survey. Ready or degraded, GPUs gone close the gate (models we loaded are unloaded,
        and loaded again when the GPU is back); elsewhere a bring-up or load pass surveys
        anyway and this is ignored."""
        self.send(SurveyRequested(refresh))

    @property
    def prober(self) -> Prober:
        """LM Studio's prober (:meth:`LmStudio.aclose` closes it with the REST client)."""
        return self.lmstudio.prober

    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self.snap.state

    @property
    def ready(self) -> bool:
        """True in ``ready``."""
        return self.snap.ready

    @property
    def config(self) -> Config:
        """The config in force."""
        return self.snap.config

    async def run(self) -> None:
        """Supervise until a stop request has been handled."""
        self.dispatch(Start())
        try:
            while self.snap.state is not State.STOPPED:
                self.dispatch(await self.queue.get())
        finally:
            self._cancel_all()
            pending = [t for t in self._tasks if not t.done()]
            if pending:  # let cancelled `lms` calls reap their processes before the loop closes
                with contextlib.suppress(asyncio.CancelledError):
                    _, late = await asyncio.wait(pending, timeout=STOP_GRACE)
                    for task in late:
                        self.log.warning("task_outlived_stop", task=task.get_name())
            for q in list(self._subscribers):
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)

    def observe(self, observer: Callable[[Message, Snapshot], None]) -> None:
        """Call ``observer(message, new_snapshot)`` after every message is reduced (metrics,
        tests). An observer that raises is logged and never disturbs supervision."""
        self._observers.append(observer)

    def dispatch(self, msg: Message) -> None:
        """Reduce one message and perform its effects."""
        now = Now(self.clock.monotonic(), self.clock.wall(), self.rng.uniform(-1.0, 1.0))
        try:
            self.snap, effects = core.reduce(self.snap, msg, now)
        except Exception:  # a bug in the reducer: keep the last good state, keep running
            self.log.exception("reducer_crashed", message=type(msg).__name__)
            return
        for observer in self._observers:
            try:
                observer(msg, self.snap)
            except Exception:
                self.log.exception("observer_failed", message=type(msg).__name__)
        for effect in effects:
            name = type(effect).__name__
            try:
                self._perform(effect)
            except Exception as exc:  # its own failure, never the running action's (which did nothing wrong)
                self.log.exception("effect_crashed", effect=name)
                self._failed_effects.add(name)
                self.send(ActionCrashed(EFFECT_ACTION, name, describe(exc)))
            else:
                if name in self._failed_effects:
                    self._failed_effects.discard(name)
                    if not self._failed_effects:  # every effect that failed has worked since
                        self.send(Noted(SUPERVISOR_ERROR, None))

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue that receives every event from now on (``None`` at shutdown)."""
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_BACKLOG)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Stop delivering to ``q`` (a subscriber that left)."""
        self._subscribers.discard(q)

    async def events(
        self, q: asyncio.Queue[dict[str, Any] | None] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events as they happen (``state``, ``model``, ``restart``, ``config``) until
        shutdown; pass a queue from :meth:`subscribe` to miss nothing in between."""
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
        return render(
            self.snap,
            version=__version__,
            pid=self.pid,
            config_path=str(self.config_path) if self.config_path else None,
            proxy=self.proxy_status() if self.proxy_status is not None else None,
        )

    # -- effects ----------------------------------------------------------------------
    def _perform(self, effect: Effect) -> None:
        match effect:
            case Log(level=level, event=event, fields=fields):
                getattr(self.log, level)(event, **fields)
            case Publish(event=event):
                self._publish(event)
            case BringUp():
                self._start_action(effect.action, "bring_up", lambda: bring_up(self.lmstudio, effect, self.send))
            case LoadModels():
                self._start_action(effect.action, "load_models", lambda: self._load(effect))
            case Survey():
                self._start_action(effect.action, "survey", lambda: survey_pass(self.lmstudio, effect))
            case CancelAction():
                _cancel(self._action)
            case Schedule(gen=gen, delay=delay):
                _cancel(self._timer)
                self._timer = self._spawn(self._fire_later(gen, delay))
            case Health():
                self.health.set_mode(effect)
            case Ask():
                self.health.ask(effect)
            case Watch(daemon=daemon):
                self._watch(daemon)
            case Unload():
                self._spawn(self._unload(effect))
            case ReadConfig():
                self._read_config()
            case Relog(level=level, format=fmt):
                logs.configure(level, fmt)
            case Remember(server=server):
                self.memory.save(server)
            case RememberHardware(hardware=hardware):
                self.hardware.save(hardware)
            case RememberSpeed(baselines=baselines):
                self.speed.save(baselines)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_action(self, action: int, name: str, work: Callable[[], Coroutine[Any, Any, Message]]) -> None:
        _cancel(self._action)

        async def guarded() -> None:
            try:
                msg = await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("action_crashed", effect=name, action=action)
                msg = ActionCrashed(action, name, describe(exc))
            self.send(msg)

        self._action = self._spawn(guarded())

    async def _load(self, effect: LoadModels) -> Message:
        try:
            return await load_models(self.lmstudio, effect, self.send)
        except (LmsError, RestError) as exc:  # LM Studio's failure (`lms`, or REST v1 answering an error)
            return LoadPassFailed(effect.action, f"listing models failed: {exc.message}")

    async def _fire_later(self, gen: int, delay: float) -> None:
        await self.clock.sleep(delay)
        self.send(TimerFired(gen))

    async def _unload(self, effect: Unload) -> None:
        try:
            await unload(self.lmstudio, effect)  # REST or `lms` as a load pass would choose
        except (LmsError, RestError) as exc:
            self.log.warning("model_unload_failed", identifier=effect.identifier, error=exc.message)
        except Exception:
            self.log.exception("action_crashed", effect="unload", identifier=effect.identifier)

    def _read_config(self) -> None:
        if self.config_loader is None:
            return
        try:
            new = self.config_loader()
        except ConfigError as exc:
            self.send(ConfigRejected(exc.message, exc.key))
        except Exception as exc:  # RecursionError, MemoryError on a hostile file: never fatal
            self.log.exception("action_crashed", effect="read_config")
            self.send(ActionCrashed(CONFIG_ACTION, "read_config", describe(exc)))
        else:
            self.send(ConfigChanged(new))

    def _watch(self, daemon: DaemonProcess | None) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if daemon is None:
            return
        pid = daemon.pid
        if not self.lmstudio.processes.alive(daemon):
            self.send(DaemonExited(pid))
            return
        self._unwatch = self.lmstudio.pids.watch(pid, lambda: self.send(DaemonExited(pid)))

    # -- health: probes on a fixed cadence, drift checks beside them ------------------------
    # -- events -------------------------------------------------------------------------
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

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            _cancel(task)
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
