"""`lmsupervisor run`: wire the real dependencies, hold the lock, serve until a signal.

Shutdown is staged (style.md): stop the supervisor (LM Studio is left running), stop
watching the config file, close the metrics port and the holding proxy (when ``[metrics]``
and ``[proxy] listen`` are set), close the status socket (each stage with its own timeout,
logging what overran), release the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from pathlib import Path

import structlog

from lmsupervisor import config as configmod
from lmsupervisor import logs, statefile
from lmsupervisor.clock import SystemClock
from lmsupervisor.config import Config
from lmsupervisor.configwatch import watch_config
from lmsupervisor.core.messages import Noted, Probed
from lmsupervisor.core.problems import CONFIG_WATCH_FAILED, config_watch_failed_problem
from lmsupervisor.dashboard.server import Dashboard
from lmsupervisor.errors import ConfigError, InstanceLockedError, StatusSocketError
from lmsupervisor.lmstudio import wiring
from lmsupervisor.lmstudio.install import Platform, detect
from lmsupervisor.notify import Notifications
from lmsupervisor.platform import current as this_os
from lmsupervisor.proxy.health import MetricsListener, healthz
from lmsupervisor.proxy.server import HoldingProxy
from lmsupervisor.service.notify import Notifier, ServiceNotifier
from lmsupervisor.statefile import HardwareMemory, SpeedMemory, StateFiles
from lmsupervisor.statusd.metrics import Metrics
from lmsupervisor.statusd.server import StatusServer
from lmsupervisor.statusd.socketdir import InstanceLock, check_config, prepare_socket_dir, resolve_group
from lmsupervisor.supervisor import ServerMemory, Supervisor

STAGE_TIMEOUT = 5.0  # seconds for each shutdown stage


def build_supervisor(
    cfg: Config,
    platform: Platform,
    config_path: Path | None,
    explicit_config: bool,
    metrics: Metrics | None = None,
    files: StateFiles | None = None,
) -> Supervisor:
    """A Supervisor with the real LM Studio (:func:`~lmsupervisor.lmstudio.wiring.wire`:
    clock, lms, prober, REST, process watching; ``sup.lmstudio.aclose()`` closes its HTTP
    clients). With ``metrics``, every `lms` call is counted there and it observes every
    reduced message. ``files`` writes the state files; its problems reach the supervisor
    as ``Noted`` messages."""
    files = files or StateFiles()
    holder: list[Supervisor] = []
    state_dir = statefile.default_folder()
    lmstudio = wiring.wire(
        platform,
        lambda: holder[0].config if holder else cfg,  # the config in force: a reload applies at once
        cache_dir=state_dir,
        wrap_runner=metrics.runner if metrics is not None else None,
        files=files,
    )

    def loader() -> Config:
        return configmod.load(config_path if explicit_config else None)[0]

    sup = Supervisor(
        cfg,
        lmstudio,
        config_loader=loader,
        config_path=config_path,
        pid=os.getpid(),
        memory=ServerMemory(state_dir / "server.json", files),
        hardware=HardwareMemory(state_dir / "hardware.json", files),
        speed=SpeedMemory(state_dir / "speed.json", files),
    )
    holder.append(sup)  # ServerMemory's files (shared with the capability cache) report through sup
    if metrics is not None:
        metrics.snapshot = sup.snapshot
        sup.observe(metrics.observe)
    return sup


async def serve(
    cfg: Config,
    config_path: Path,
    explicit: bool,
    sock: Path,
    platform: Platform | None = None,
    lock: InstanceLock | None = None,
    notifier: Notifier | None = None,
    files: StateFiles | None = None,
) -> None:
    """Serve until stopped. ``notifier`` tells systemd (sd_notify) about us; build it with
    :meth:`Notifier.from_environ` before ``platform``, so children never inherit
    ``NOTIFY_SOCKET``. READY=1 comes once the socket serves (it is started first) and the
    first reconcile ran (:mod:`lmsupervisor.service.notify`)."""
    log = structlog.get_logger("lmsupervisor")
    metrics = Metrics(None, SystemClock())
    sup = build_supervisor(cfg, platform or Platform.current(), config_path, explicit, metrics, files)
    service = ServiceNotifier(notifier or Notifier(None), SystemClock())
    proxy = None
    if cfg.proxy.address is not None:  # the holding proxy (design §9): LM Studio's surface, held while it recovers
        proxy = HoldingProxy(sup, metrics.registry, lambda: healthz(sup.snap))
        sup.proxy_status = proxy.status
    server = StatusServer(
        sup,
        sock,
        gid=resolve_group(cfg.status.group),
        transport=configmod.status_transport(cfg),
        metrics=metrics,
        check_interval=cfg.health.interval,
        on_recreated=lock.ensure if lock is not None else None,
        status_changes=(lambda: proxy.changes) if proxy is not None else None,
    )
    await server.start()
    sup.observe(lambda msg, _snap: server.check_now() if isinstance(msg, Probed) else None)  # in the round's wakeup
    # the TCP front doors (design §9): the holding proxy and the read-only metrics port
    scraped = MetricsListener(cfg.metrics, metrics.registry, lambda: healthz(sup.snap)) if cfg.metrics.address else None
    try:
        if proxy is not None:
            await proxy.start()
        if scraped is not None:
            await scraped.start()
    except BaseException:
        if proxy is not None:
            await proxy.close(STAGE_TIMEOUT)
        await server.close(STAGE_TIMEOUT)
        await sup.lmstudio.aclose()
        raise
    events = sup.subscribe()  # before run(): the first state change must not be missed
    notifying = asyncio.create_task(service.run(sup, events))
    notifications = Notifications(sup, SystemClock(), count=metrics.count_notification)  # [[notify]] (design §9)
    pushing = asyncio.create_task(notifications.run(sup.subscribe()))
    dashboard = Dashboard(sup, cfg.dashboard.listen, sock, SystemClock()) if cfg.dashboard.listen else None
    if dashboard is not None:
        try:
            await dashboard.start()
        except OSError as exc:  # a taken port is no reason not to supervise: said, and supervision goes on
            log.error("dashboard_failed", listen=cfg.dashboard.listen, error=str(exc))
            dashboard = None

    def on_hup() -> None:
        service.reloading()  # RELOADING=1 now, READY=1 when the "config" event comes
        sup.post("reload")
        server.check_soon()  # a tmp cleaner may have taken the socket: SIGHUP brings it back at once

    restore_signals = this_os().on_signals(
        asyncio.get_running_loop(), lambda name: sup.post("stop", reason=name), on_hup
    )
    watcher = None
    if config_path.parent.is_dir():  # a config change posts a reload (inotify on Linux: no idle wakeup)
        watcher = asyncio.create_task(
            watch_config(
                config_path,
                lambda: sup.post("reload"),
                SystemClock(),
                failed=lambda exc: sup.send(
                    Noted(CONFIG_WATCH_FAILED, config_watch_failed_problem(str(config_path), str(exc)))
                ),
            )
        )
    log.info("supervisor_started", config=str(config_path), socket=str(sock), pid=os.getpid())
    try:
        await sup.run()
    finally:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(notifying, STAGE_TIMEOUT)  # STOPPING=1 goes out here
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
        await notifications.aclose()
        if dashboard is not None:
            await dashboard.close()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(watcher, STAGE_TIMEOUT)
        if scraped is not None:
            await scraped.close()
        if proxy is not None:
            await proxy.close(STAGE_TIMEOUT)
        await server.close(STAGE_TIMEOUT)
        await sup.lmstudio.aclose()
        log.info("supervisor_exited")
        restore_signals()  # last: on Windows a console close waits for this


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise our soft open-files limit to the hard limit (services often start at 1024), see
    :meth:`~lmsupervisor.platform.base.OsPlatform.raise_fd_limit`.

    Returns (old soft, new soft), or None where nothing changed or there is no such limit.
    Many status clients and LM Studio's own child processes must never starve each other.
    """
    return this_os().raise_fd_limit()


def run_main(config_path: Path | None) -> None:
    """Run until asked to stop (SIGTERM/SIGINT; on Windows Ctrl-C, Ctrl-Break, a console
    close). Raises :class:`ConfigError` (the CLI exits 78) for a bad config, group or socket
    folder, :class:`InstanceLockedError` (exit 69) if another instance runs."""
    notifier = Notifier.from_environ(os.environ)  # first: children must not inherit NOTIFY_SOCKET
    cfg, path = configmod.load(config_path)
    logs.configure(cfg.log.level, cfg.log.format)
    check_config(cfg)
    sock = configmod.socket_path(cfg)
    try:
        prepare_socket_dir(sock, resolve_group(cfg.status.group))
    except OSError as exc:
        raise ConfigError(f"status.socket: cannot prepare {sock.parent}: {exc}", key="status.socket") from exc
    lock = InstanceLock(Path(str(sock) + ".lock"))
    lock.acquire()
    raised = raise_fd_limit()
    if raised is not None:
        structlog.get_logger("lmsupervisor").info("fd_limit_raised", soft=raised[0], new_soft=raised[1])
    files = StateFiles()
    try:
        home_lock = lock_home(cfg, Platform.current(), sock, files=files)
    except BaseException:
        lock.release()
        raise
    try:
        asyncio.run(serve(cfg, path, config_path is not None, sock, lock=lock, notifier=notifier, files=files))
    except StatusSocketError as exc:
        raise InstanceLockedError(exc.message, exc.hint) from exc
    finally:
        if home_lock is not None:
            home_lock.release()
        lock.release()


def lock_home(
    cfg: Config, platform: Platform, sock: Path, state_dir: Path | None = None, files: StateFiles | None = None
) -> InstanceLock | None:
    """Take the one-supervisor-per-LM-Studio-home lock (two supervisors with different
    sockets would otherwise fight over one LM Studio and create ``:2`` duplicates).

    The lock is ``<state dir>/homes/<sha256 of the home's real path>.lock`` beside a JSON
    note ``{"pid", "socket", "home"}`` naming its holder. Raises
    :class:`InstanceLockedError` (exit 69) naming the other supervisor's socket and PID.
    A state folder that cannot hold the lock (read-only, full, not ours) is no reason not
    to supervise: None is returned (the socket's own lock still keeps one ``run`` per
    socket) and ``files`` reports ``state_folder_unwritable``.
    """
    files = files or StateFiles()
    home = detect(platform, cfg.lmstudio.home, cfg.lmstudio.lms).home
    folder = (state_dir or statefile.default_folder()) / "homes"
    digest = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:24]
    lock = InstanceLock(folder / f"{digest}.lock")
    note = folder / f"{digest}.json"
    holder = json.dumps({"pid": os.getpid(), "socket": str(sock), "home": str(home)})

    def late() -> bool:
        """The lock once the folder is repaired (taken for the rest of this process: an
        flock ends with it); True when the folder works again, even if another supervisor
        took the home meanwhile (logged: the folder problem is gone all the same)."""
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock.acquire()
        except InstanceLockedError:
            structlog.get_logger("lmsupervisor").warning("home_lock_taken", lock=str(lock.path))
            return True
        except (OSError, ConfigError):
            return False
        return files.write(note, holder)

    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock.acquire()
    except (OSError, ConfigError) as exc:
        cause = exc.__cause__ if isinstance(exc, ConfigError) and isinstance(exc.__cause__, OSError) else exc
        files.failed(lock.path, cause if isinstance(cause, OSError) else OSError(str(exc)), again=late)
        return None
    except InstanceLockedError:
        try:
            holder = json.loads(note.read_text(encoding="utf-8"))
            who = f"PID {holder.get('pid')}, socket {holder.get('socket')}"
        except (OSError, ValueError, AttributeError):
            who = "another lmsupervisor"
        raise InstanceLockedError(
            f"LM Studio at {home} is already supervised ({who})",
            hint="one supervisor per LM Studio home: stop the other one, or point this one at another home",
        ) from None
    files.write(note, holder)
    return lock
