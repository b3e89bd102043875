"""LmStudio: the one object through which lmsupervisor reaches LM Studio.

It holds every seam of the adapter (style.md habit 3): install detection, the `lms`
client factory, the HTTP prober and the REST v1 client (with the API token resolver they
share), the process table and the PID watcher, the capability cache, and the clock. The
supervisor, its health checks, the escalation ladder (:mod:`lmsupervisor.lmstudio.bringup`),
the load pass (:mod:`lmsupervisor.lmstudio.loadpass`) and the native host take it whole
instead of one argument per seam. :func:`lmsupervisor.lmstudio.wiring.wire` builds the real
one; tests build one from fakes (``tests/scenarios/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import Config
from lmsupervisor.core.observed import Install, ProbeResult
from lmsupervisor.httperrors import no_answer
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient
from lmsupervisor.lmstudio.watch import PidWatcher, ProcessTable

QUICK_TIMEOUT = 15.0  # seconds for `lms` calls and REST requests that answer at once (status, stop, ps, unload)


@dataclass(frozen=True)
class LmStudio:
    """LM Studio as lmsupervisor sees it: each field one seam.

    ``detect(config)`` finds the install (:func:`lmsupervisor.lmstudio.install.detect`);
    ``lms_factory(binary)`` gives an `lms` client for that binary; ``prober`` greets and
    asks the HTTP server; ``rest`` is LM Studio's REST v1 client (None: `lms` only);
    ``processes`` identifies, waits for and terminates LM Studio's daemon, ``pids``
    watches it exit; ``capabilities`` caches what each `lms` binary can do (facts §8).
    ``prober`` and ``rest`` hold HTTP clients: :meth:`aclose` them when done.
    """

    clock: Clock
    detect: Callable[[Config], Install]
    lms_factory: Callable[[Path], LmsClient]
    prober: Prober
    processes: ProcessTable
    pids: PidWatcher
    capabilities: CapabilityCache = field(default_factory=CapabilityCache)
    rest: RestClient | None = None

    @property
    def token(self) -> Callable[[], str | None]:
        """The API token resolver the prober and REST send (for any other client of LM
        Studio's HTTP server, such as the native host's chat)."""
        return self.prober.token

    def lms(self, binary: Path) -> LmsClient:
        """An `lms` client running ``binary``."""
        return self.lms_factory(binary)

    async def greet(self, url: str, seconds: float, timeout: float | None = None) -> ProbeResult:
        """The greeting probe of ``url`` within ``seconds`` of clock time; a failure names
        ``timeout`` (the configured ``health.timeout``, default ``seconds``). Never raises."""
        timeout = seconds if timeout is None else timeout
        failed = ProbeResult(False, timeout * 1000, None, no_answer(url, timeout))
        if seconds <= 0:
            return failed
        try:
            return await within(self.clock, self.prober.greeting(url, timeout=seconds), seconds)
        except TimeoutError:
            return failed

    async def aclose(self) -> None:
        """Close the prober's and the REST client's HTTP clients."""
        await self.prober.aclose()
        if self.rest is not None:
            await self.rest.aclose()
