"""The escalation ladder (design §6): bring LM Studio's server up, one rung per attempt.

:func:`bring_up` performs a :class:`~lmsupervisor.core.effects.BringUp` effect and
*returns* the message that ends it (``ServerUp``, ``NotInstalled`` or ``BringUpFailed``);
what it finds on its way goes out at once through ``post`` (``BringUpNoted``). It writes
no state: the reducer does. Our own errors (:class:`~lmsupervisor.errors.LmSupervisorError`)
become ``BringUpFailed``; anything else escapes to the runner (``ActionCrashed``).

One function per rung, in the order a bring-up at ``step`` runs them:

- :func:`adopt` (``START``): a healthy server with the declared settings is kept;
- :func:`spare_app`: the GUI app holding the service is the user's program, never
  killed unless ``[restart] kill_app``; a hung one is reported (``app_hung``) instead;
- :func:`kill_daemon` (``KILL_DAEMON``): terminate, wait, kill the daemon's PID;
- :func:`restart_daemon` (``RESTART_DAEMON``): `lms daemon down`, then the PID if it stays;
- :func:`wake_daemon`: `lms daemon up` where there is one and no daemon lives;
- :func:`restart_server` (``RESTART_SERVER``, or settings that differ): `lms server stop`;
- :func:`start_server` (every rung): `lms server start`, then the greeting decides.

Level-triggered: a bring-up adopts what runs, so it may be repeated after any crash.
:func:`start_once` is one bring-up at ``START`` outside a supervisor (the native host's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from lmsupervisor.clock import within
from lmsupervisor.config import Config, server_address
from lmsupervisor.core.capabilities import CliCapabilities, bind_problem
from lmsupervisor.core.effects import BringUp
from lmsupervisor.core.messages import BringUpFailed, BringUpNoted, Message, NotInstalled, ServerUp
from lmsupervisor.core.observed import DaemonProcess, Install, ServerSettings, base_url, usable_server
from lmsupervisor.core.observed import effective_server as effective
from lmsupervisor.core.policy import Rung
from lmsupervisor.core.problems import Problem, app_hung_problem
from lmsupervisor.errors import LmsError, LmsExitError, LmsTimeoutError, LmSupervisorError
from lmsupervisor.lmstudio.facade import QUICK_TIMEOUT, LmStudio
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.lookups import cors_problem, find_daemon, rest_available, service_answers, service_version

TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a hung daemon
EXIT_WAIT = 10.0  # seconds to wait for the daemon to exit after `lms daemon down` (it returns early)
ONCE_ACTION = 1  # the action number of a bring-up outside a supervisor (:func:`start_once`)

log = structlog.get_logger("lmsupervisor")


def ladder_timeout(config: Config) -> float:
    """Seconds for an `lms` call that a live daemon answers at once (``daemon up`` on a
    running daemon, ``daemon down``, ``server stop``, ``daemon status``): twice the probe
    timeout, at least 3 s, at most :data:`QUICK_TIMEOUT`. A hung daemon fails its rung
    quickly instead of holding the ladder for the full quick timeout."""
    return min(QUICK_TIMEOUT, max(3.0, 2 * config.health.timeout))


def rung_deadline(step: Rung, config: Config) -> float:
    """Seconds a whole bring-up at ``step`` may take before it counts as failed."""
    budget = config.server.start_timeout * 2 + QUICK_TIMEOUT * 4 + config.health.timeout * 2
    if step >= Rung.RESTART_DAEMON:
        budget += EXIT_WAIT + TERMINATE_GRACE + 5.0
    return budget


async def bring_up(lm: LmStudio, eff: BringUp, post: Callable[[Message], None]) -> Message:
    """Adopt a healthy server (rung START), else climb to ``eff.step``; returns
    ServerUp, NotInstalled or BringUpFailed. Bounded by :func:`rung_deadline`."""
    bound = log.bind(step=eff.step.name.lower(), action=eff.action)
    deadline = rung_deadline(eff.step, eff.config)
    seen = _Seen()
    try:
        return await within(lm.clock, _climb(lm, eff, post, bound, seen), deadline)
    except TimeoutError:
        why = f"the {eff.step.name.lower()} rung did not finish within {deadline:g} s"
    except LmSupervisorError as exc:  # `lms daemon up` failed, ...: what detection named still shows
        bound.warning("bring_up_step_failed", error=str(exc))
        why = exc.message
    return BringUpFailed(eff.action, why, seen.install, tuple(seen.notes), seen.capabilities)


async def start_once(lm: LmStudio, config: Config, post: Callable[[Message], None] | None = None) -> Message:
    """One bring-up at rung ``START`` with ``config``, outside any supervisor (no daemon
    known, no remembered server settings, the detected capabilities decide ``daemon up``
    and ``--bind``): ServerUp (``adopted`` when its server answered already), NotInstalled
    or BringUpFailed, as :func:`bring_up`. ``post`` gets what it finds on its way."""
    eff = BringUp(
        action=ONCE_ACTION, step=Rung.START, config=config, daemon=None, last_good_server=None, lms_version=None
    )
    return await bring_up(lm, eff, post or (lambda _: None))


@dataclass
class _Seen:
    """What one bring-up has learnt so far (the install as detected, problems noted on its
    way, this `lms`'s capabilities): kept when it fails by an exception or its deadline."""

    install: Install | None = None
    notes: list[Problem] = field(default_factory=list)
    capabilities: CliCapabilities | None = None


@dataclass
class Climb:
    """One bring-up as it climbs: what it was asked (``eff``), what it found (``install``,
    LM Studio's own server settings ``found`` and whether their file was ``sound``, this
    `lms` and its ``caps``), the ``server`` settings it applies, and what the rungs learn:
    the ``daemon`` it knows, whether it is the GUI app to spare (``spare_app``) and hung
    (``hung_app``), whether `daemon up` just started it (``fresh``), LM Studio's ``version``."""

    lm: LmStudio
    eff: BringUp
    post: Callable[[Message], None]
    log: structlog.typing.FilteringBoundLogger
    seen: _Seen
    install: Install
    lms: LmsClient
    caps: CliCapabilities
    found: ServerSettings
    server: ServerSettings
    sound: bool
    began: float  # wall seconds when `lms` was first asked: a daemon younger than this is fresh
    version: str | None
    daemon: DaemonProcess | None = None
    spare_app: bool = False
    hung_app: bool = False
    fresh: bool = False

    @property
    def config(self) -> Config:
        """The config this bring-up applies."""
        return self.eff.config

    @property
    def url(self) -> str:
        """Where the server answers."""
        return base_url(self.server.bind, self.server.port)

    @property
    def differs(self) -> bool:
        """The declared server settings differ from LM Studio's own: a running server is restarted."""
        cfg, found = self.config.server, self.found
        return (
            self.server.bind != server_address(found.bind)
            or (cfg.cors is not None and cfg.cors != found.cors)
            or self.server.port != found.port
        )

    def note(self, problem: Problem) -> None:
        """Report ``problem`` at once, not when this bring-up ends."""
        self.seen.notes.append(problem)
        self.post(BringUpNoted(self.eff.action, problem))

    def spared(self, daemon: DaemonProcess) -> None:
        """The GUI app ``daemon`` is hung and spared: ``app_hung`` (facts §8)."""
        self.note(app_hung_problem(daemon.pid))
        self.log.warning("app_spared", pid=daemon.pid)


async def _climb(
    lm: LmStudio,
    eff: BringUp,
    post: Callable[[Message], None],
    bound: structlog.typing.FilteringBoundLogger,
    seen: _Seen,
) -> Message:
    """The ladder: adopt at ``START``; else the rung's own step (spare a hung app, kill or
    restart the daemon), wake the daemon, restart the server where asked, start it."""
    prepared = await _prepare(lm, eff, post, bound, seen)
    if not isinstance(prepared, Climb):
        return prepared
    c = prepared
    if eff.step is Rung.START and (adopted := await adopt(c)) is not None:
        return adopted
    c.daemon = eff.daemon if eff.daemon is not None and lm.processes.alive(eff.daemon) else None
    if not await spare_app(c):
        if eff.step >= Rung.KILL_DAEMON and c.daemon is not None:
            await kill_daemon(c, c.daemon)
        elif eff.step is Rung.RESTART_DAEMON:
            await restart_daemon(c)
    await wake_daemon(c)
    if (eff.step >= Rung.RESTART_SERVER or c.differs) and not c.fresh:
        await restart_server(c)
    return await start_server(c)


async def _prepare(
    lm: LmStudio,
    eff: BringUp,
    post: Callable[[Message], None],
    bound: structlog.typing.FilteringBoundLogger,
    seen: _Seen,
) -> Climb | Message:
    """Detect the install and this `lms`'s capabilities, and settle the server settings to
    apply; NotInstalled, or a deterministic BringUpFailed when they name no address LM
    Studio's server can bind (no retry or restart can fix that)."""
    install = lm.detect(eff.config)
    if not install.installed or install.lms is None:
        reason = next((p.message for p in install.problems if p.severity == "error"), "LM Studio not found")
        return NotInstalled(eff.action, install, reason)
    seen.install = install
    began = lm.clock.wall()
    lms = lm.lms(install.lms)
    caps = seen.capabilities = await lm.capabilities.get(install.lms, lms)  # cached per binary
    install, found, sound = _settings(install, eff.last_good_server)
    seen.install = install
    sound = sound and server_address(found.bind) is not None  # never remember an unusable address
    cfg = eff.config.server
    server = effective(cfg.bind, cfg.port, cfg.cors, found)
    c = Climb(
        lm=lm, eff=eff, post=post, log=bound, seen=seen, install=install, lms=lms, caps=caps, found=found,
        server=server, sound=sound, began=began, version=eff.lms_version,
    )  # fmt: skip
    if not caps.bind:  # this lms cannot pass --bind: LM Studio keeps its saved interface (facts §8)
        if (unsupported := bind_problem(cfg.bind, found.bind, caps)) is not None:
            c.note(unsupported)
        server = replace(server, bind=found.bind)
    usable = usable_server(server, install, declarable=caps.bind)
    if isinstance(usable, Problem):  # LM Studio's own networkInterface is unusable: no retry or restart can fix it
        return BringUpFailed(eff.action, usable.message, install, tuple(seen.notes), caps, usable, True)
    c.server = usable
    return c


async def _up(c: Climb, reason: str, daemon: DaemonProcess | None, adopted: bool) -> ServerUp:
    timeout = c.config.health.timeout
    rest, rest_notes = await rest_available(c.lm, c.url, timeout)
    known = c.version or await service_version(c.lm, c.install, timeout)
    # The server answers: whatever this bring-up found hung on its way (an app the user
    # has reopened meanwhile) is not hung any more.
    found_on_way = tuple(p for p in c.seen.notes if p.code != "app_hung")
    return ServerUp(
        c.eff.action, c.install, c.server, daemon, reason, known, adopted, c.sound, c.caps, rest,
        (*found_on_way, *rest_notes),
    )  # fmt: skip


# -- the rungs ----------------------------------------------------------------------------
async def adopt(c: Climb) -> ServerUp | None:
    """Rung ``START``: a server that answers its greeting with the declared settings is
    kept (ServerUp, ``adopted``); one with other settings is restarted (None)."""
    probe = await c.lm.greet(c.url, c.config.health.timeout)
    if probe.ok and not c.differs:
        daemon = await find_daemon(c.lm, c.lms, c.install, c.caps)
        return await _up(c, f"adopted the running server at {c.url}", daemon, True)
    if probe.ok:
        c.log.info("server_settings_differ", declared=f"{c.server.bind}:{c.server.port} cors={c.server.cors}",
                   running=f"{c.found.bind}:{c.found.port} cors={c.found.cors}")  # fmt: skip
    return None


async def spare_app(c: Climb) -> bool:
    """Whether the known daemon is LM Studio's GUI app (``isDaemon`` false, or unknown on
    an app install) to spare (not ``[restart] kill_app``), and whether it is hung: from
    ``RESTART_DAEMON`` on it is, at ``RESTART_SERVER`` when its service does not answer
    (:func:`~lmsupervisor.lmstudio.lookups.service_answers`). A hung app is reported
    (``app_hung``), never killed: True."""
    daemon, install = c.daemon, c.install
    is_app = daemon is not None and (
        daemon.is_daemon is False or (daemon.is_daemon is None and install.kind in ("app", "appimage"))
    )
    c.spare_app = is_app and not c.config.restart.kill_app
    step = c.eff.step
    c.hung_app = (
        daemon is not None
        and c.spare_app
        and (step >= Rung.RESTART_DAEMON or (step >= Rung.RESTART_SERVER and not await _answers(c)))
    )
    if c.hung_app and daemon is not None:
        # The GUI app is the user's interactive program: never killed unless kill_app (facts §8).
        c.spared(daemon)
        return True
    return False


async def _answers(c: Climb) -> bool:
    return await service_answers(c.lm, c.install, c.lms, c.caps, c.config.health.timeout, ladder_timeout(c.config))


async def kill_daemon(c: Climb, daemon: DaemonProcess) -> None:
    """Rung ``KILL_DAEMON``: terminate ``daemon``, wait :data:`TERMINATE_GRACE`, kill."""
    c.log.warning("daemon_termination_started", pid=daemon.pid, verified=daemon.verified)
    await c.lm.processes.terminate(daemon, TERMINATE_GRACE)


async def restart_daemon(c: Climb) -> None:
    """Rung ``RESTART_DAEMON``: `lms daemon down` where this `lms` has it (it stops any
    daemon, known to us or not), then, as it returns before the process has exited (facts
    §8), up to :data:`EXIT_WAIT` seconds for the known daemon to go; one that stays (or
    does not answer `down`) is terminated."""
    wait = EXIT_WAIT if "down" in c.caps.daemon else 0.0
    if "down" in c.caps.daemon:
        try:
            await c.lms.daemon_down(timeout=ladder_timeout(c.config))
        except LmsTimeoutError as exc:
            c.log.warning("daemon_down_failed", error=exc.message)
            wait = 0.0  # a daemon that does not answer `down` will not exit by itself
        except LmsError as exc:
            c.log.warning("daemon_down_failed", error=exc.message)
    if c.daemon is not None and not await c.lm.processes.wait_exit(c.daemon, wait):
        await kill_daemon(c, c.daemon)


async def wake_daemon(c: Climb) -> None:
    """`lms daemon up` where this `lms` has it (2025-11+) and no known daemon lives; the
    daemon it names becomes the known one, ``fresh`` when younger than this bring-up.
    Older `lms` have no daemon command: `server start` wakes the app."""
    if "up" not in c.caps.daemon:
        c.log.debug("daemon_command_skipped")  # before 2025-11: `server start` wakes the app
        return
    if c.daemon is not None and c.lm.processes.alive(c.daemon):
        return
    status = await c.lms.daemon_up(timeout=c.config.server.start_timeout)
    c.version = status.version or c.version
    if status.pid:
        c.daemon = c.lm.processes.identify(status.pid, c.install.service_path, status.is_daemon)
        # A daemon younger than this bring-up has no server to stop.
        c.fresh = c.daemon is not None and c.daemon.create_time >= c.began - 1.0


async def restart_server(c: Climb) -> None:
    """Rung ``RESTART_SERVER`` (and any rung whose settings differ from the running
    server's): `lms server stop`. A spared app that cannot answer it (no answer in time,
    or `lms` cannot reach it at all) is hung; "The server is not running." is an answer."""
    try:
        await c.lms.server_stop(timeout=ladder_timeout(c.config))
    except LmsError as exc:
        c.log.info("server_stop_failed", error=exc.message)
        reached = isinstance(exc, LmsExitError) and "server is not running" in exc.error_line.lower()
        if c.spare_app and c.daemon is not None and not c.hung_app and not reached:
            c.hung_app = True
            c.spared(c.daemon)


async def start_server(c: Climb) -> Message:
    """Every rung's end: `lms server start` with the settings in force (``--bind`` where
    this `lms` has it), then the greeting decides (BT#1720: `server start` may exit 1
    while serving). ServerUp, or BringUpFailed naming `lms`'s words or the probe's."""
    cfg = c.config
    start_error = await _server_start(c)
    probe = await c.lm.greet(c.url, cfg.health.timeout)
    if not probe.ok:
        why = f"`lms server start` failed: {start_error}" if start_error else f"after `lms server start`, {probe.error}"
        return BringUpFailed(c.eff.action, why, c.install, tuple(c.seen.notes), c.caps)
    if start_error:
        c.log.warning("server_start_exit_ignored", error=start_error, url=c.url)
    if cfg.server.cors is not None and (cors := await cors_problem(c.lm, c.url, c.server.cors, cfg.health.timeout)):
        c.note(cors)
    daemon = c.daemon
    if daemon is None or not c.lm.processes.alive(daemon):
        daemon = await find_daemon(c.lm, c.lms, c.install, c.caps)
    return await _up(c, f"server started at {c.url}", daemon, False)


async def _server_start(c: Climb) -> str | None:
    """`lms server start`; None, or its error (the probe decides whether it matters). A
    spared app that hung answers nothing: it gets the ladder's timeout, not start_timeout."""
    start_timeout = ladder_timeout(c.config) if c.hung_app else c.config.server.start_timeout
    try:
        bind_arg = c.server.bind if c.caps.bind else None
        await c.lms.server_start(c.server.port, bind_arg, c.server.cors, timeout=start_timeout)
    except LmsExitError as exc:
        return exc.error_line  # the probe decides (BT#1720: exit 1 while serving)
    except LmsTimeoutError as exc:
        return exc.message  # the probe decides here too
    return None


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
