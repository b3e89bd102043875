"""`lmsupervisor run` as a service manager sees it: sd_notify to a socket standing in for systemd; `wait` at boot."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmsupervisor.client.sync import request
from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import BASE_CONFIG, TWO_MODELS

pytestmark = pytest.mark.integration


class FakeSystemd:
    """The notify socket; :meth:`until` reads datagrams until one holds a given line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[list[str]] = []

    def until(self, line: str, timeout: float = 30.0) -> list[list[str]]:
        """Datagrams received until one containing ``line`` (included); raises after ``timeout``."""
        got: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(65536).decode().split("\n")
            except TimeoutError:
                break
            got.append(msg)
            self.seen.append(msg)
            if line in msg:
                return got
        raise AssertionError(f"{line} did not arrive within {timeout} s; got {got}")


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(short_dir / "notify")
    yield fake
    fake.sock.close()


def start_run(sim: SimInstall, sock: Path, config: Path, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(sock), **extra_env}
    with config.with_suffix(".log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_sd_notify_life_cycle(sim: SimInstall, systemd: FakeSystemd, short_dir: Path, tmp_path: Path) -> None:
    """STATUS on each state, READY once the socket serves and models are loaded, watchdog pings,
    RELOADING on SIGHUP then READY, STOPPING on SIGTERM; LM Studio never inherits NOTIFY_SOCKET."""
    config = tmp_path / "config.toml"
    config.write_text(BASE_CONFIG + TWO_MODELS)
    sock = short_dir / "status.sock"
    proc = start_run(sim, sock, config, {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"})
    try:
        before = systemd.until("READY=1")
        assert request(sock, "GET", "/v1/health") == (200, {"ready": True, "state": "ready"})  # served before READY
        statuses = [line for msg in before for line in msg if line.startswith("STATUS=")]
        assert statuses[0].startswith("STATUS=starting: 0/2 models")
        assert any(s.startswith("STATUS=loading_models: ") for s in statuses)
        assert before[-1][1] == f"STATUS=ready: 2/2 models, http://127.0.0.1:{sim.http_port}"
        assert ["WATCHDOG=1", "EXTEND_TIMEOUT_USEC=600000"] in before  # the loop extends start-up until READY
        pings = systemd.until("WATCHDOG=1", timeout=2)
        assert pings[-1] == ["WATCHDOG=1"]  # after READY: pings only

        daemon = sim.daemon_pid()
        environ = Path(f"/proc/{daemon}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]

        sent = time.monotonic_ns() // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = next(m for m in systemd.until("RELOADING=1") if "RELOADING=1" in m)
        usec = int(reloading[1].removeprefix("MONOTONIC_USEC="))
        assert 0 <= usec - sent < 5_000_000  # CLOCK_MONOTONIC, microseconds
        systemd.until("READY=1", timeout=10)

        proc.send_signal(signal.SIGTERM)
        systemd.until("STOPPING=1", timeout=10)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert [line for msg in systemd.seen for line in msg if line.startswith("MAINPID=")] == []


def test_without_notify_socket_nothing_is_sent(sim: SimInstall, short_dir: Path, tmp_path: Path) -> None:
    """Outside systemd `run` works the same: ready, then a clean stop."""
    config = tmp_path / "config.toml"
    config.write_text(BASE_CONFIG)
    sock = short_dir / "status.sock"
    proc = start_run(sim, sock, config, {})
    try:
        waited = subprocess.run(
            [sys.executable, "-m", "lmsupervisor", "wait", "--timeout", "30", "--socket", str(sock)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert waited.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_wait_retries_until_the_supervisor_is_up(sim: SimInstall, short_dir: Path, tmp_path: Path) -> None:
    """Boot order: `wait --timeout` started before the supervisor keeps retrying and returns 0 once it is ready."""
    sock = short_dir / "status.sock"
    waiter = subprocess.Popen(
        [sys.executable, "-m", "lmsupervisor", "wait", "--timeout", "60", "--socket", str(sock)],
        stderr=subprocess.PIPE,
    )
    config = tmp_path / "config.toml"
    config.write_text(BASE_CONFIG)
    try:
        time.sleep(1.0)  # the dependent starts first, as at boot, and finds nothing
        assert waiter.poll() is None, "wait gave up before its timeout"
        proc = start_run(sim, sock, config, {})
        try:
            assert waiter.wait(60) == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.wait(5)
        assert waiter.stderr is not None
        waiter.stderr.close()


def test_wait_times_out_with_3_when_nothing_comes(short_dir: Path) -> None:
    """No supervisor at all: `wait --timeout 1` retries for the whole second, then exits 3 (not running)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "wait", "--timeout", "1", "--socket", str(short_dir / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, "no supervisor answers" in done.stderr) == (3, True)
    assert time.monotonic() - started >= 1.0
    assert not os.path.exists(short_dir / "none.sock")
