"""The native-messaging host driven as a browser drives it: the manifest's launcher started
with the caller's origin, length-prefixed JSON through real pipes, against the simulator
and a real `lmsupervisor run`."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.nativehost.protocol import MAX_INCOMING
from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually

pytestmark = pytest.mark.integration

CHROME_ID = "knldjmfmopnpolahpmmgbagdohdnhkik"
CONFIG = """
[server]
start_timeout = 15
[health]
interval = 0.2
timeout = 1
[restart]
initial_delay = 0.1
max_delay = 1
[log]
format = "json"
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""


class Browser:
    """One native port: the host process with pipes on stdin/stdout, as Chrome starts it."""

    def __init__(self, argv: list[str], env: dict[str, str], stderr: Path) -> None:
        with stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=os.path.dirname(argv[0]) or None,  # Chrome: the folder holding the host
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.stderr = stderr

    def send(self, message: dict[str, Any] | bytes) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.stdin.write(struct.pack("=I", len(body)) + body)
        self.stdin.flush()

    def recv(self, timeout: float = 30) -> dict[str, Any]:
        """The next answer; fails the test after ``timeout`` seconds of silence."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack("=I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    found: dict[str, Any] = json.loads(body)
                    return found
            left = deadline - time.monotonic()
            assert left > 0 and self.selector.select(left), f"no answer in {timeout} s: {self.stderr.read_text()}"
            chunk = os.read(self.stdout.fileno(), 1 << 20)
            assert chunk, f"the host closed stdout: {self.stderr.read_text()}"
            self.buf += chunk

    def ask(self, message: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        self.send(message)
        return self.recv(timeout)

    def close(self, timeout: float = 10) -> int:
        """Close stdin as a browser does when the port disconnects; the host's exit code."""
        if not self.stdin.closed:
            self.stdin.close()
        try:
            return self.proc.wait(timeout)
        finally:
            self.selector.close()
            self.stdout.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for sockets (AF_UNIX paths are limited to about 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lmnh", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def host_env(sim: SimInstall, sock: Path) -> dict[str, str]:
    env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(sock)}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "LMSUPERVISOR_CONFIG"):
        env.pop(var, None)
    return env


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    """The ports a test opens; each host killed and its pipes closed at teardown, also when the
    test failed before closing it (pipes left to the garbage collector raise a ResourceWarning
    in whichever later test it happens to run, and fail that one)."""
    opened: list[Browser] = []
    yield opened
    for b in opened:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(5)
        for pipe in (b.stdin, b.stdout):
            if not pipe.closed:
                pipe.close()
        b.selector.close()


def install(sim: SimInstall, env: dict[str, str], browser: str, ext: str, action: str = "install") -> str:
    args = ["--extension-id", ext] if action == "install" else []
    cli = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "native-host", action, "--browser", browser, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    return cli.stdout


def open_port(
    sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path, sock: Path | None = None
) -> Browser:
    """Install for Chrome, then start the manifest's ``path`` with the origin, as Chrome does;
    the host finds the supervisor at ``sock`` (default ``short_dir/status.sock``)."""
    env = host_env(sim, sock or short_dir / "status.sock")
    install(sim, env, "chrome", CHROME_ID)
    manifest = sim.root / ".config" / "google-chrome" / "NativeMessagingHosts" / "org.lmsupervisor.host.json"
    path = json.loads(manifest.read_text())["path"]
    browser = Browser([path, f"chrome-extension://{CHROME_ID}/"], env, tmp_path / f"host{len(browsers)}.err")
    browsers.append(browser)
    return browser


def test_installed_launcher_is_what_the_browser_runs(
    sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path
) -> None:
    """The manifest's path runs the host with the origin argument; uninstall removes it for each browser."""
    env = host_env(sim, short_dir / "status.sock")
    port = open_port(sim, short_dir, browsers, tmp_path)
    answer = port.ask({"action": "check_lmstudio", "id": 1})
    assert (answer["status"], answer["id"]) == ("success", 1)
    p = answer["payload"]
    assert (p["installed"], p["bootstrapped"], p["server_running"], p["supervisor"]["running"]) == (
        True,
        True,
        False,
        False,
    )
    assert port.close() == 0
    ff_out = install(sim, env, "firefox", "lmsupervisor@example.org")
    ff_manifest = sim.root / ".mozilla" / "native-messaging-hosts" / "org.lmsupervisor.host.json"
    assert str(ff_manifest) in ff_out
    firefox = Browser(  # Firefox passes the manifest path and the extension id
        [json.loads(ff_manifest.read_text())["path"], str(ff_manifest), "lmsupervisor@example.org"],
        env,
        tmp_path / "ff.err",
    )
    browsers.append(firefox)
    assert firefox.ask({"action": "check_lmstudio"})["status"] == "success"
    assert firefox.close() == 0
    for name in ("chrome", "firefox"):
        assert "removed" in install(sim, env, name, "", action="uninstall")
    assert not ff_manifest.exists()
    assert not list((sim.root / ".local" / "share" / "lmsupervisor").rglob("org.lmsupervisor.host"))


def test_a_whole_session_without_supervisor(
    sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path
) -> None:
    """Start LM Studio, chat (plain, then streamed delta by delta), see the model, stop it: one port."""
    port = open_port(sim, short_dir, browsers, tmp_path)
    started = port.ask({"action": "start_lmstudio"})
    assert (started["status"], started["payload"]["started_by"], started["payload"]["how"]) == (
        "success",
        "native_host",
        "started",
    )
    assert started["payload"]["server_running"] is True
    assert json.loads(sim.lms("server", "status", "--json").stdout)["running"] is True

    msgs = [{"role": "user", "content": "Say hello"}]
    plain = port.ask({"action": "chat_completion", "messages": msgs, "settings": {"model": "qwen/qwen3-4b"}})
    assert plain["payload"]["content"] == "Simulated reply from qwen/qwen3-4b."
    assert (plain["payload"]["finish_reason"], plain["payload"]["usage"]["total_tokens"]) == ("stop", 14)

    port.send({"action": "chat_completion", "messages": msgs, "settings": {"model": "qwen/qwen3-4b", "stream": True}})
    deltas: list[str] = []
    while (answer := port.recv())["payload"]["type"] == "delta":
        deltas.append(answer["payload"]["delta"])
    assert len(deltas) == 4
    assert "".join(deltas).split() == ["Simulated", "reply", "from", "qwen/qwen3-4b."]
    assert (answer["payload"]["done"], answer["payload"]["finish_reason"]) == (True, "stop")
    assert "usage" in answer["payload"]  # null: the simulator, like LM Studio before include_usage, sends none

    check = port.ask({"action": "check_lmstudio"})
    assert check["payload"]["current_model"] == "qwen/qwen3-4b"  # JIT-loaded by the chat

    stopped = port.ask({"action": "stop_lmstudio"})
    assert (stopped["payload"]["stopped"], stopped["payload"]["server_running"]) == (True, False)
    assert json.loads(sim.lms("server", "status", "--json").stdout)["running"] is False
    down = port.ask({"action": "chat_completion", "messages": msgs})
    assert (down["status"], down["code"]) == ("error", "unreachable")
    assert port.close() == 0


def test_broken_messages_never_end_the_host(
    sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path
) -> None:
    """Bad JSON, bad UTF-8, an oversized frame: each gets an error answer and the next message is served."""
    port = open_port(sim, short_dir, browsers, tmp_path)
    port.send(b"{half a message")
    assert port.recv()["code"] == "bad_request"
    port.send(b"\xc3\x28")
    assert "not UTF-8" in port.recv()["error"]
    port.send(b"x" * (MAX_INCOMING + 1))  # one byte over Chrome's limit; the host reads it all
    big = port.recv()
    assert (big["status"], big["code"]) == ("error", "too_large")
    assert port.ask({"action": "check_lmstudio", "id": "after"})["id"] == "after"
    port.stdin.write(struct.pack("=I", 100) + b"{}")  # then the browser dies mid-frame
    assert port.close() == 0


def test_hostile_ids_and_timeouts_never_end_the_host(
    sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path
) -> None:
    """A lone-surrogate id, a 2 MiB id and NaN / infinite / absurd timeouts each get a small
    bad_request answer (the bad id not echoed) and the host serves the next message."""
    port = open_port(sim, short_dir, browsers, tmp_path)
    port.send(b'{"action": "check_lmstudio", "id": "\\ud800"}')
    lone = port.recv()
    assert (lone["code"], "id" in lone, "surrogate" in lone["error"]) == ("bad_request", False, True)
    port.send(json.dumps({"action": "check_lmstudio", "id": "x" * (2 << 20)}).encode())
    big = port.recv()
    assert (big["code"], "id" in big, len(json.dumps(big)) < 10_000) == ("bad_request", False, True)
    for value in (b"NaN", b"Infinity", b"1e308"):
        port.send(
            b'{"action": "chat_completion", "messages": [{"role": "user", "content": "hi"}], "timeout": %s}' % value
        )
        answer = port.recv()
        assert (answer["code"], "timeout: expected seconds > 0 and <= 3600" in answer["error"]) == ("bad_request", True)
    assert port.ask({"action": "check_lmstudio", "id": "after"})["id"] == "after"
    assert port.close() == 0


class Supervisor:
    """A real `lmsupervisor run` on the simulated install with ``config``."""

    def __init__(self, sim: SimInstall, sock: Path, tmp_path: Path, config_text: str = CONFIG) -> None:
        self.sock = sock
        config = tmp_path / "config.toml"
        config.write_text(config_text)
        with (tmp_path / "run.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
                env={**sim.env(), "LMSUPERVISOR_SOCKET": str(sock)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def state(self) -> str | None:
        try:
            return str(request(self.sock, "GET", "/v1/status", timeout=5)[1]["state"])
        except StatusSocketError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def gated_lms(sim: SimInstall, folder: Path) -> tuple[Path, Path]:
    """A wrapper ``<folder>/lms`` around the install's `lms` whose ``daemon up`` does not begin
    until the file ``<folder>/gate`` exists: LM Studio's daemon "takes" exactly as long as the
    test wants. Returns (wrapper, gate)."""
    gate = folder / "gate"
    wrapper = folder / "lms"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "daemon up" ]; then while [ ! -e "{gate}" ]; do sleep 0.05; done; fi\n'
        f'exec "{sim.lms_path}" "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return wrapper, gate


class Relay:
    """A Unix socket in front of the supervisor's status socket that passes every connection
    through and counts them: the test learns that the host has read the supervisor's state."""

    def __init__(self, path: Path, target: Path) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.connections = 0
        self.changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.changed:
                self.connections += 1
                self.changed.notify_all()
            threading.Thread(target=self._pass, args=(client,), daemon=True).start()

    def _pass(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX) as upstream:
            try:
                upstream.connect(str(self.target))
                ends = {client: upstream, upstream: client}
                with selectors.DefaultSelector() as sel:
                    for end in ends:
                        sel.register(end, selectors.EVENT_READ)
                    while True:
                        for key, _ in sel.select():
                            data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                            if not data:
                                return
                            ends[key.fileobj].sendall(data)  # type: ignore[index]
            except OSError:
                return

    def wait_beyond(self, count: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` s, a guard) for more than ``count`` connections."""
        with self.changed:
            return self.changed.wait_for(lambda: self.connections > count, timeout)

    def close(self) -> None:
        """Stop accepting: shutdown() wakes the thread blocked in accept(), close() alone would not."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def test_under_a_running_supervisor(sim: SimInstall, short_dir: Path, browsers: list[Browser], tmp_path: Path) -> None:
    """start waits for the supervisor, check shows its state, stop is refused and LM Studio keeps running.

    The supervisor's `lms daemon up` is held until the host has read the supervisor's state
    (through a relay in front of the status socket), so the host always finds it starting."""
    lms, gate = gated_lms(sim, tmp_path)
    # start_timeout: longer than the test may run, so the gate, not `daemon up`'s timeout, ends the hold
    config = CONFIG.replace("start_timeout = 15", "start_timeout = 600") + f'[lmstudio]\nlms = "{lms}"\n'
    supervisor = Supervisor(sim, short_dir / "status.sock", tmp_path, config)
    relay = Relay(short_dir / "relay.sock", short_dir / "status.sock")
    try:
        assert eventually(lambda: supervisor.state() == "starting", timeout=30)
        port = open_port(sim, short_dir, browsers, tmp_path, sock=short_dir / "relay.sock")
        before = relay.connections
        port.send({"action": "start_lmstudio"})
        assert relay.wait_beyond(before, timeout=30), "the host never read the supervisor's state"
        assert supervisor.state() == "starting"  # still held: what the host read
        gate.touch()
        started = port.recv(timeout=60)
        assert started["status"] == "success", started
        p = started["payload"]
        assert (p["started_by"], p["how"], p["supervisor"]["state"], p["server_running"]) == (
            "supervisor",
            "waited",
            "ready",
            True,
        )
        assert (p["supervisor"]["running"], p["current_model"]) == (True, "qwen")
        pid = sim.daemon_pid()

        refused = port.ask({"action": "stop_lmstudio"})
        assert (refused["status"], refused["code"]) == ("error", "supervised")
        assert f"pid {supervisor.proc.pid}" in refused["error"]
        assert json.loads(sim.lms("server", "status", "--json").stdout)["running"] is True
        assert sim.daemon_pid() == pid

        again = port.ask({"action": "start_lmstudio"})
        assert (again["payload"]["how"], supervisor.state()) == ("already_running", "ready")
        reply = port.ask({"action": "chat_completion", "messages": [{"role": "user", "content": "hi"}]})
        assert reply["payload"]["content"] == "Simulated reply from qwen."  # no model given: the supervised one
        assert port.close() == 0
    finally:
        relay.close()
        supervisor.stop()
