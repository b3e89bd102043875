"""Never harmful when the supervisor itself stalls: the real `lmsupervisor run` against the
simulator, frozen with SIGSTOP (a machine at load 15-19 on 2 cores stalled its event loop
17 s), keeps a healthy LM Studio; a real hang is still replaced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator

from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually
from tests.integration.test_run import Running

# BASE_CONFIG's health: interval 0.2 s, timeout 1 s, failures_before_restart 3: a hang is
# noticed within 3 x 0.2 + 1 = 1.6 s.
IN_FLIGHT = 0.5  # seconds LM Studio is frozen before the supervisor: probes pile up, none timed out
STALL = 4.0  # seconds the supervisor is frozen: longer than the 1.6 s detection bound


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """SIGSTOP ``pids`` for the block; SIGCONT them in the same order, whatever happens."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def events(run: Running, since: int) -> list[dict[str, object]]:
    """The supervisor's JSON log events after byte ``since`` of its log."""
    text = run.log.read_bytes()[since:].decode(errors="replace")
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_a_stalled_supervisor_never_restarts_a_healthy_lm_studio(
    sim: SimInstall, start: Callable[..., Running]
) -> None:
    """The whole machine stalls: LM Studio first, the supervisor with probes in flight just
    after, for longer than the detection bound; the supervisor runs again first. Its probes'
    deadlines all passed while it was frozen: they are no verdict (``probe_discarded``), it
    probes again at once, and LM Studio's daemon keeps its PID with no restart counted.
    Then a real hang is still replaced."""
    run = start(sim)
    run.wait_state("ready")
    daemon = sim.daemon_pid()
    assert daemon is not None
    mark = run.log.stat().st_size
    with frozen(daemon):
        time.sleep(IN_FLIGHT)  # the stall's shape, not a wait for a condition
        with frozen(run.proc.pid):
            time.sleep(STALL)

    def judged() -> bool:
        names = [e.get("event") for e in events(run, mark)]
        return "probe_discarded" in names or "probe_failed" in names

    assert eventually(judged, timeout=10), run.log.read_text()[-3000:]
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["server"]["consecutive_failures"] == 0, timeout=10)
    seen = [e.get("event") for e in events(run, mark)]
    assert (snap["restarts"]["count"], snap["lmstudio"]["daemon_pid"], sim.daemon_starts()) == (0, daemon, 1), seen
    assert ("probe_discarded" in seen, "probe_failed" in seen) == (True, False), seen

    sim.hang_daemon()
    snap = run.wait_for(lambda s: s["restarts"]["count"] >= 1, timeout=20)
    assert "probes" in snap["restarts"]["last_reason"]
