"""The processes a chaos soak runs and watches: ``lmsupervisor run`` (:class:`Supervisor`,
its log scanned for crashes by :func:`scan_log_text`), the ``/v1/status`` poller
(:class:`StatusPoller`), the GUI app's own small install (:class:`AppSide`), a port held as
another program would (:func:`hold_port`), and the looks at LM Studio's HTTP server and its
processes the faults need. :func:`kill_under` kills whatever still runs under the soak's folder.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from chaos_soak.plan import USER_SERVER, Snapshot, config_text
from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall, create_install

CRASH_MARKERS = ("Task exception was never retrieved", "Traceback")
LOG_EXCERPT = 1500  # characters of log kept per crash


def scan_log_text(text: str) -> tuple[bool, str, int]:
    """Look for crashes in the supervisor's output (JSON log lines and stray stderr).

    Returns (crash seen, the first crash's block, the number of ``action_crashed`` events).
    A crash is "Task exception was never retrieved" or a traceback outside an
    ``action_crashed`` event; the block runs to the next JSON line, so it ends on the error.
    """
    lines = text.splitlines()
    crash, excerpt, handled = False, "", 0
    for i, line in enumerate(lines):
        if not any(marker in line for marker in CRASH_MARKERS):
            continue
        event = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            event = parsed.get("event") if isinstance(parsed, dict) else None
        if event == "action_crashed":
            handled += 1
            continue
        if not crash:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("{")), len(lines))
            excerpt = "\n".join(lines[i:end])[-LOG_EXCERPT:]
        crash = True
    return crash, excerpt, handled


def greets(endpoint: str, timeout: float = 0.5) -> bool:
    """LM Studio's HTTP server at ``endpoint`` (``http://host:port``) answers its greeting."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/lmstudio-greeting")
        resp = conn.getresponse()
        return bool(json.loads(resp.read()) == {"lmstudio": True})
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def refuses_without_token(url: str, timeout: float = 0.5) -> bool:
    """LM Studio's HTTP server at ``url`` answers 401 to ``GET /v1/models`` without a token
    ("Require Authentication" in effect, facts §4)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/v1/models")
        return conn.getresponse().status == 401
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def kill_under(folder: Path) -> None:
    """Kill every process (but this one) whose command line names something under ``folder``."""
    mine = str(folder) + os.sep
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid != os.getpid() and any(mine in part for part in cmdline):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                victims.append(proc)
    psutil.wait_procs(victims, timeout=5)


@contextlib.contextmanager
def hold_port(port: int) -> Iterator[socket.socket]:
    """Listen on 127.0.0.1:``port`` as another program would.

    Unlike :meth:`SimInstall.occupy_port` it sets SO_REUSEADDR: the stopped server's
    connections leave the port in TIME_WAIT, where a plain bind fails for a minute. Linux
    still refuses a second listener on the port, so LM Studio's ``server start`` fails.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield s
    finally:
        s.close()


class StatusPoller(threading.Thread):
    """Queries ``/v1/status`` ``rate`` times a second; latencies of the answers in ms."""

    def __init__(self, sock: Path, rate: float) -> None:
        super().__init__(name="status-poller", daemon=True)
        self.sock, self.period = sock, 1.0 / max(rate, 0.1)
        self.latencies: list[float] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            started = time.perf_counter()
            try:
                request(self.sock, "GET", "/v1/status", timeout=2.0)
            except (StatusSocketError, OSError, ValueError):
                self.errors += 1
                continue
            self.latencies.append((time.perf_counter() - started) * 1000)


class Supervisor:
    """One ``lmsupervisor run`` process, its output appended to ``log``."""

    def __init__(self, sim: SimInstall, sock: Path, config: Path, log: Path) -> None:
        env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(sock)}
        env.pop("XDG_STATE_HOME", None)  # its state folder: $HOME/.local/state/lmsupervisor, in the soak's HOME
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> bool:
        """SIGTERM and wait; True if it exited within ``timeout`` (else it is killed)."""
        if self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True


class AppSide:
    """A second, small install for the faults of the GUI app (profile ``0.4-app``): its own
    LM Studio app (started as its user would), its own supervisor (no models, so it is
    cheap) on its own socket and HOME, under ``root``. :meth:`close` kills all of it."""

    def __init__(self, root: Path, time_scale: float) -> None:
        self.root = root
        self.sim = create_install(root / "home", "0.4-app", time_scale=time_scale, server_config=dict(USER_SERVER))
        self.sock = root / "s.sock"
        config = root / "c.toml"
        config.write_text(config_text(models=()), encoding="utf-8")
        self.sim.launch_app()
        self.run = Supervisor(self.sim, self.sock, config, root / "supervisor.log")

    def ready(self, snap: Snapshot) -> bool:
        """Ready, no config error, LM Studio's HTTP server greets where the snapshot says."""
        return (
            snap.get("state") == "ready"
            and snap["supervisor"]["config_error"] is None
            and greets(str(snap["server"]["api_endpoint"]))
        )

    def close(self) -> None:
        self.run.kill()
        kill_under(self.root)
        self.sim.stop()  # reaps the app it launched (already killed)
