"""What every benchmark does around its measurement: a real `lmsupervisor run` against a
simulated LM Studio, waited for until ready, then stopped with the simulator.

Used by bench/idle.py, bench/recovery.py, bench/status.py and bench/status_cli.py (run as
``python bench/NAME.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall


def wait_ready(sock: Path, timeout: float) -> None:
    """Poll ``GET /v1/health`` on ``sock`` every 50 ms until it says ready; SystemExit after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if request(sock, "GET", "/v1/health")[1]["ready"]:
                return
        except StatusSocketError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"supervisor on {sock} not ready within {timeout:g} s")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Supervised:
    """``with Supervised(sim, tmp, config) as run:``: `lmsupervisor run` with the TOML text
    ``config`` (written to ``tmp/c.toml``) and its status socket at :attr:`sock`, against
    ``sim``, ready within ``ready_timeout`` seconds. On leaving: SIGTERM and wait for the
    supervisor, stop the simulator, remove ``tmp``. Its output goes to /dev/null."""

    def __init__(
        self, sim: SimInstall, tmp: Path, config: str, *, sock: Path | None = None, ready_timeout: float = 60.0
    ) -> None:
        self.sim, self.tmp, self.ready_timeout = sim, tmp, ready_timeout
        self.sock = sock or tmp / "s.sock"
        self.config = tmp / "c.toml"
        self.config.write_text(config, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervised:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmsupervisor", "run", "--config", str(self.config)],
            env={**self.sim.env(), "LMSUPERVISOR_SOCKET": str(self.sock)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(self.sock, self.ready_timeout)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pid(self) -> int:
        """The supervisor's PID."""
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None
        self.sim.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
