"""The real :class:`~lmsupervisor.lmstudio.facade.LmStudio`, wired in one place.

`lmsupervisor run` (:func:`lmsupervisor.run.build_supervisor`) and the native host's
``start_lmstudio`` both bring LM Studio up through :mod:`lmsupervisor.lmstudio.bringup`.
They take LM Studio from :func:`wire`, so both run the same `lms` (with the same
environment), detect the install the same way, probe with the same API token, and share
the capability cache in lmsupervisor's state folder (``capabilities.json``): a native host
started by a browser asks no `lms --help` that the supervisor already asked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from lmsupervisor.clock import Clock, SystemClock
from lmsupervisor.config import Config
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.facade import LmStudio
from lmsupervisor.lmstudio.install import Platform, detect
from lmsupervisor.lmstudio.lms import Lms, LmsClient, LmsRunner
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient, resolve_token
from lmsupervisor.lmstudio.watch import OsPidWatcher, OsProcessTable
from lmsupervisor.statefile import StateFiles

REST_MIN_TIMEOUT = 5.0  # seconds: a REST listing of many models may take longer than one greeting


def wire(
    platform: Platform,
    config: Callable[[], Config],
    *,
    cache_dir: Path | None = None,
    runner_factory: Callable[[Path], LmsRunner] | None = None,
    wrap_runner: Callable[[LmsRunner], LmsRunner] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    files: StateFiles | None = None,
) -> LmStudio:
    """The real LM Studio for ``platform``.

    ``config`` gives the config in force: it is read once now for the timeouts
    (``health.timeout`` seconds per probe, at least :data:`REST_MIN_TIMEOUT` for REST) and
    at every HTTP request for the API token (``[lmstudio] api_token``, ``api_token_file``,
    else ``$LM_API_TOKEN`` of ``platform.env``: :func:`~lmsupervisor.lmstudio.rest.resolve_token`),
    so a reload applies at once. ``cache_dir`` holds ``capabilities.json`` (None: memory
    only). `lms` runs as :class:`~lmsupervisor.lmstudio.lms.Lms` with ``platform.env``,
    unless ``runner_factory`` says otherwise; ``wrap_runner`` wraps each runner (metrics
    count the calls). ``transport`` (httpx) and ``clock`` (default
    :class:`~lmsupervisor.clock.SystemClock`) are for tests; ``files`` writes the cache
    (:mod:`lmsupervisor.statefile`: reported, never raised). Opens no connection yet.
    """
    timeout = config().health.timeout
    clock = clock or SystemClock()
    env = dict(platform.env)

    def token() -> str | None:
        return resolve_token(config(), env)

    def make_runner(path: Path) -> LmsRunner:
        return runner_factory(path) if runner_factory is not None else Lms(path, env=platform.env)

    def lms_factory(path: Path) -> LmsClient:
        runner = make_runner(path)
        return LmsClient(wrap_runner(runner) if wrap_runner is not None else runner)

    return LmStudio(
        clock=clock,
        detect=lambda c: detect(platform, c.lmstudio.home, c.lmstudio.lms),
        lms_factory=lms_factory,
        prober=Prober(timeout=timeout, transport=transport, token=token),
        processes=OsProcessTable(clock),
        pids=OsPidWatcher(clock),
        capabilities=CapabilityCache(None if cache_dir is None else cache_dir / "capabilities.json", files=files),
        rest=RestClient(timeout=max(timeout, REST_MIN_TIMEOUT), transport=transport, token=token),
    )
