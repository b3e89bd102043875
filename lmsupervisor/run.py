"""`lmsupervisor run`: wire the real dependencies, hold the lock, serve until a signal.

Shutdown is staged (style.md): stop the supervisor (LM Studio is left running), stop
watching the config file, close the status socket (each stage with its own timeout,
logging what overran), release the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import filelock
import structlog

from lmsupervisor import config as configmod
from lmsupervisor import logs
from lmsupervisor.api.statusd import StatusServer, prepare_socket_dir
from lmsupervisor.clock import SystemClock
from lmsupervisor.config import Config
from lmsupervisor.errors import ConfigError, InstanceLockedError, StatusSocketError
from lmsupervisor.lmstudio.install import Platform, detect
from lmsupervisor.lmstudio.lms import Lms, LmsClient
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.watch import OsPidWatcher, OsProcessTable
from lmsupervisor.service.notify import Notifier, ServiceNotifier
from lmsupervisor.supervisor import Supervisor

STAGE_TIMEOUT = 5.0  # seconds for each shutdown stage


def build_supervisor(
    cfg: Config, platform: Platform, config_path: Path | None, explicit_config: bool
) -> tuple[Supervisor, Prober]:
    """A Supervisor with the real clock, lms, prober and process watching."""
    clock = SystemClock()
    prober = Prober(timeout=cfg.health.timeout)

    def loader() -> Config:
        return configmod.load(config_path if explicit_config else None)[0]

    sup = Supervisor(
        cfg,
        clock=clock,
        lms_factory=lambda p: LmsClient(Lms(p, env=platform.env)),
        prober=prober,
        detect=lambda c: detect(platform, c.lmstudio.home, c.lmstudio.lms),
        pids=OsPidWatcher(clock),
        processes=OsProcessTable(clock),
        config_loader=loader,
        config_path=config_path,
        pid=os.getpid(),
    )
    return sup, prober


async def _watch_config(path: Path, sup: Supervisor) -> None:
    """Post ``reload`` when the config file changes (watchfiles: inotify/FSEvents, no polling)."""
    import watchfiles  # noqa: PLC0415 - its Rust extension loads only for `run`

    async for changes in watchfiles.awatch(path.parent, debounce=200, recursive=False):
        if any(Path(p).name == path.name for _, p in changes):
            sup.post("reload")


async def serve(
    cfg: Config,
    config_path: Path,
    explicit: bool,
    sock: Path,
    platform: Platform | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Serve until stopped. ``notifier`` tells systemd (sd_notify) about us; build it with
    :meth:`Notifier.from_environ` before ``platform``, so children never inherit
    ``NOTIFY_SOCKET``. READY=1 comes once the socket serves (it is started first) and the
    first reconcile ran (:mod:`lmsupervisor.service.notify`)."""
    log = structlog.get_logger("lmsupervisor")
    sup, prober = build_supervisor(cfg, platform or Platform.current(), config_path, explicit)
    service = ServiceNotifier(notifier or Notifier(None), SystemClock())
    server = StatusServer(sup, sock, cfg.status.group)
    await server.start()
    events = sup.subscribe()  # before run(): the first state change must not be missed
    notifying = asyncio.create_task(service.run(sup, events))

    def on_hup() -> None:
        service.reloading()  # RELOADING=1 now, READY=1 when the "config" event comes
        sup.post("reload")

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: sup.post("stop", reason="SIGTERM"))
    loop.add_signal_handler(signal.SIGINT, lambda: sup.post("stop", reason="SIGINT"))
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    watcher = asyncio.create_task(_watch_config(config_path, sup)) if config_path.parent.is_dir() else None
    log.info("supervisor_started", config=str(config_path), socket=str(sock), pid=os.getpid())
    try:
        await sup.run()
    finally:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(notifying, STAGE_TIMEOUT)  # STOPPING=1 goes out here
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(watcher, STAGE_TIMEOUT)
        await server.close(STAGE_TIMEOUT)
        await prober.aclose()
        log.info("supervisor_exited")


def run_main(config_path: Path | None) -> None:
    """Run until SIGTERM/SIGINT. Raises :class:`ConfigError` (the CLI exits 78) for a bad
    config or socket folder, :class:`InstanceLockedError` (exit 69) if another instance runs."""
    notifier = Notifier.from_environ(os.environ)  # first: children must not inherit NOTIFY_SOCKET
    cfg, path = configmod.load(config_path)
    logs.configure(cfg.log.level, cfg.log.format)
    sock = configmod.socket_path(cfg)
    try:
        prepare_socket_dir(sock)
    except (StatusSocketError, OSError) as exc:
        raise ConfigError(f"status.socket: cannot prepare {sock.parent}: {exc}", key="status.socket") from exc
    lock = filelock.FileLock(str(sock) + ".lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise InstanceLockedError(
            f"another instance is running for {sock} (lock {lock.lock_file})",
            hint="stop it first, or give this one another status.socket",
        ) from None
    try:
        asyncio.run(serve(cfg, path, config_path is not None, sock, notifier=notifier))
    except StatusSocketError as exc:
        raise InstanceLockedError(exc.message, exc.hint) from exc
    finally:
        lock.release()
