"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.clock import SystemClock
from lmsupervisor.service.notify import (
    FIRST_RECONCILE,
    Notifier,
    Progress,
    ServiceNotifier,
    heartbeat,
    heartbeat_period,
    on_event,
    on_reload,
    socket_address,
    status_line,
)
from tests.scenarios.fakes import FakeClock


class Systemd:
    """A datagram socket like systemd's notify socket; :meth:`drain` returns what arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def drain(self) -> list[list[str]]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return got

    async def arrived(self, timeout: float = 5.0) -> list[list[str]]:
        """Datagrams, letting the event loop run until one arrives or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not (got := self.drain()) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return got


@pytest.fixture
def systemd() -> Iterator[Systemd]:
    folder = tempfile.mkdtemp(prefix="lmsvn", dir="/tmp")
    fake = Systemd(os.path.join(folder, "notify"))
    yield fake
    fake.sock.close()
    os.unlink(fake.address)
    os.rmdir(folder)


@pytest.fixture
def abstract_systemd() -> Iterator[Systemd]:
    fake = Systemd(f"\0lmsupervisor-test-{os.getpid()}-{time.monotonic_ns()}")
    yield fake
    fake.sock.close()


SNAP: dict[str, Any] = {
    "state": "ready",
    "server": {"api_endpoint": "http://127.0.0.1:1234"},
    "models": [{"key": "a", "state": "loaded"}, {"key": "b", "state": "loaded"}],
}


def state(s: str, reason: str = "because") -> dict[str, Any]:
    return {"type": "state", "state": s, "previous": "x", "reason": reason}


def test_sends_one_datagram_of_lines_to_a_path_socket(systemd: Systemd) -> None:
    """Lines go out as one newline-separated datagram to a filesystem socket."""
    n = Notifier(systemd.address)
    assert n.send("READY=1", "STATUS=ok")
    n.close()
    assert systemd.drain() == [["READY=1", "STATUS=ok"]]


def test_abstract_namespace_socket(abstract_systemd: Systemd) -> None:
    """``@name`` in NOTIFY_SOCKET reaches the abstract-namespace socket ``\\0name``."""
    env = {"NOTIFY_SOCKET": "@" + abstract_systemd.address[1:]}
    n = Notifier.from_environ(env)
    assert n.address == abstract_systemd.address
    n.send("READY=1")
    n.close()
    assert abstract_systemd.drain() == [["READY=1"]]


def test_noop_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET nothing is sent and the heartbeat returns at once."""
    n = Notifier.from_environ({})
    assert (n.enabled, n.send("READY=1"), n.watchdog_usec) == (False, False, None)
    asyncio.run(asyncio.wait_for(ServiceNotifier(n, SystemClock()).beat(), 1))


def test_from_environ_unsets_and_checks_the_watchdog_pid() -> None:
    """The variables are removed (children must not inherit them); a WATCHDOG_PID of
    another process disables the watchdog, ours enables it."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1", "PATH": "/bin"}
    n = Notifier.from_environ(env, pid=42)
    assert (env, n.address, n.watchdog_usec) == ({"PATH": "/bin"}, "/run/x", None)
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}
    assert Notifier.from_environ(env, pid=42).watchdog_usec == 10_000_000
    assert Notifier.from_environ({"NOTIFY_SOCKET": "relative"}).enabled is False
    assert socket_address("@") is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    """A notify socket that is gone makes send() return False; supervision goes on."""
    n = Notifier(str(tmp_path / "gone"))
    assert n.send("WATCHDOG=1") is False
    n.close()


def test_status_line() -> None:
    """One line: state, loaded/declared models, the endpoint; the reason outside ready; no newlines."""
    assert status_line("ready", SNAP) == "ready: 2/2 models, http://127.0.0.1:1234"
    snap = {**SNAP, "models": [{"key": "a", "state": "loaded"}, {"key": "b", "state": "failed"}]}
    assert status_line("degraded", snap, "b failed:\nout of memory") == (
        "degraded: 1/2 models, http://127.0.0.1:1234 (b failed: out of memory)"
    )
    assert len(status_line("backoff", SNAP, "x" * 1000)) == 200


def test_ready_only_after_the_first_reconcile() -> None:
    """starting and loading_models send STATUS only; the first of ready, degraded, backoff or
    not_installed adds READY=1, once."""
    assert {"ready", "degraded", "backoff", "not_installed"} == FIRST_RECONCILE
    for first in sorted(FIRST_RECONCILE):
        p = Progress()
        p, lines = on_event(p, state("starting"), SNAP)
        assert lines == ["STATUS=starting: 2/2 models, http://127.0.0.1:1234 (because)"]
        p, lines = on_event(p, state("loading_models"), SNAP)
        assert "READY=1" not in lines
        p, lines = on_event(p, state(first), SNAP)
        assert lines[0] == "READY=1" and lines[1].startswith(f"STATUS={first}: ")
        p, lines = on_event(p, state("ready"), SNAP)
        assert lines == ["STATUS=ready: 2/2 models, http://127.0.0.1:1234"]


def test_stopping_and_other_events() -> None:
    """stopping sends STOPPING=1 once; model and restart events send nothing."""
    p = Progress(started=True)
    assert on_event(p, {"type": "model", "key": "a"}, SNAP) == (p, [])
    p, lines = on_event(p, state("stopping", "SIGTERM"), SNAP)
    assert lines[0] == "STOPPING=1"
    p, lines = on_event(p, state("stopped"), SNAP)
    assert lines == ["STATUS=stopped: 2/2 models, http://127.0.0.1:1234"]


def test_reload_then_ready_after_the_config_event() -> None:
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC; the config event (applied or rejected) sends READY=1."""
    assert on_reload(Progress(), 5) == (Progress(), [])  # before READY=1: nothing to reload
    p, lines = on_reload(Progress(started=True), 123)
    assert lines[:2] == ["RELOADING=1", "MONOTONIC_USEC=123"]
    p, lines = on_event(p, {"type": "config", "error": "health.bogus: unknown key"}, SNAP)
    assert lines == [
        "READY=1",
        "STATUS=ready: 2/2 models, http://127.0.0.1:1234 (config rejected: health.bogus: unknown key)",
    ]
    assert on_event(p, {"type": "config", "error": None}, SNAP) == (p, [])  # a file-change reload: no READY


def test_heartbeat_lines() -> None:
    """WATCHDOG=1 when asked for; EXTEND_TIMEOUT_USEC until READY=1 (and while reloading)."""
    assert heartbeat_period(10_000_000) == 5.0
    assert heartbeat(Progress(), True, 5.0) == ["WATCHDOG=1", "EXTEND_TIMEOUT_USEC=15000000"]
    assert heartbeat(Progress(started=True), True, 5.0) == ["WATCHDOG=1"]
    assert heartbeat(Progress(started=True), False, 10.0) == []
    assert heartbeat(Progress(started=True, stopping=True), True, 5.0) == ["WATCHDOG=1"]


class FakeSup:
    def snapshot(self) -> dict[str, Any]:
        return SNAP


async def test_runner_beats_at_half_the_watchdog(systemd: Systemd) -> None:
    """On a fake clock: a ping at once, then one every WATCHDOG_USEC/2; READY=1 ends the extensions."""
    clock = FakeClock()
    service = ServiceNotifier(Notifier(systemd.address, watchdog_usec=4_000_000), clock)
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    task = asyncio.create_task(service.run(FakeSup(), events))
    await clock.advance(0)
    assert systemd.drain() == [["WATCHDOG=1", "EXTEND_TIMEOUT_USEC=6000000"]]
    await clock.advance(1.9)
    assert systemd.drain() == []
    await clock.advance(0.1)
    assert systemd.drain() == [["WATCHDOG=1", "EXTEND_TIMEOUT_USEC=6000000"]]
    events.put_nowait(state("ready"))
    await clock.advance(2)
    assert systemd.drain() == [["READY=1", "STATUS=ready: 2/2 models, http://127.0.0.1:1234"], ["WATCHDOG=1"]]
    events.put_nowait(None)
    await asyncio.wait_for(task, 1)
    assert task.done()


async def test_watchdog_pings_stop_while_the_loop_is_blocked(systemd: Systemd) -> None:
    """The pings come from the event loop: none while it is blocked, again once it runs."""
    service = ServiceNotifier(Notifier(systemd.address, watchdog_usec=20_000), SystemClock())  # every 10 ms
    beating = asyncio.create_task(service.beat())
    assert await systemd.arrived(), "no ping while the loop runs"
    time.sleep(0.2)  # noqa: ASYNC251 - the point: the loop is blocked for 20 ping periods
    assert systemd.drain() == []
    resumed = await systemd.arrived()
    assert (len(resumed), resumed[0][0]) == (1, "WATCHDOG=1"), "pings did not resume, or came in a burst"
    beating.cancel()
    service.notifier.close()
