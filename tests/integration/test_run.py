"""The real `lmsupervisor run` process against the simulator, queried on its real socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually

pytestmark = pytest.mark.integration

QWEN_PATH = "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"
BASE_CONFIG = """
[server]
start_timeout = 15
[health]
interval = 0.2
timeout = 1
failures_before_restart = 3
[restart]
initial_delay = 0.1
max_delay = 1
[log]
level = "debug"
format = "json"
"""
TWO_MODELS = """
[[models]]
key = "openai/gpt-oss-20b"
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""


class Running:
    """A `lmsupervisor run` process with HOME in the simulated install; ``env`` is added to
    its environment (after the install's, which drops LMS_API_SERVER_INFO_PATH)."""

    def __init__(self, sim: SimInstall, sock: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.sim, self.sock, self.config = sim, sock, config
        self.log = config.with_suffix(".log")
        env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(sock), **(env or {})}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any] | None:
        try:
            snap: dict[str, Any] = request(self.sock, "GET", "/v1/status", timeout=5)[1]
            return snap
        except StatusSocketError:
            return None

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def ok() -> bool:
            nonlocal last
            last = self.status() or {}
            return bool(last) and check(last)

        assert eventually(ok, timeout=timeout, interval=0.05), (last, self.log.read_text()[-3000:])
        return last

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(lambda s: s["state"] == state, timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


def loaded_ids(sim: SimInstall) -> list[str]:
    return sorted(m["identifier"] for m in sim.loaded())


def test_cold_start_to_ready_with_two_models(sim: SimInstall, start: Callable[..., Running]) -> None:
    """From nothing running: daemon up, server start, both models loaded, once each."""
    run = start(sim)
    snap = run.wait_state("ready")
    assert [(m["key"], m["state"]) for m in snap["models"]] == [
        ("openai/gpt-oss-20b", "loaded"),
        ("qwen/qwen3-4b", "loaded"),
    ]
    assert (snap["server"]["running"], snap["lmstudio"]["daemon_pid"]) == (True, sim.daemon_pid())
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]  # no `:2` duplicates
    assert (snap["restarts"]["count"], snap["problems"]) == (0, [])
    assert oct(run.sock.stat().st_mode & 0o777) == "0o600"
    assert oct(run.sock.parent.stat().st_mode & 0o777) == "0o700"
    cli = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "status", "--socket", str(run.sock)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (cli.returncode, "qwen/qwen3-4b as qwen: loaded" in cli.stdout) == (0, True), cli


def test_adopts_a_running_server(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A healthy server with one model already loaded is kept: same daemon, no restart, no `:2`."""
    assert sim.lms("server", "start").returncode == 0
    assert sim.lms("load", "openai/gpt-oss-20b", "--exact", "--yes").returncode == 0
    pid = sim.daemon_pid()
    run = start(sim)
    snap = run.wait_state("ready")
    assert (snap["lmstudio"]["daemon_pid"], snap["restarts"]["count"]) == (pid, 0)
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]
    server_logs = "".join(p.read_text() for p in (sim.home / "server-logs").rglob("*.log"))
    assert server_logs.count("HTTP server listening") == 1  # never restarted


def test_kill_9_of_the_daemon(sim: SimInstall, start: Callable[..., Running]) -> None:
    """kill -9 of the daemon: back to ready with both models, restarts.count 1."""
    run = start(sim)
    run.wait_state("ready")
    old = sim.crash_daemon()
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] == 1)
    assert snap["lmstudio"]["daemon_pid"] not in (None, old)
    assert "exited" in snap["restarts"]["last_reason"]
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]


def test_server_stopped_behind_our_back(sim: SimInstall, start: Callable[..., Running]) -> None:
    """`lms server stop` by someone else: probes fail, the server is started again."""
    run = start(sim, "")
    run.wait_state("ready")
    pid = sim.daemon_pid()
    assert sim.lms("server", "stop").returncode == 0
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] >= 1)
    assert "probes" in snap["restarts"]["last_reason"]
    assert (sim.daemon_pid(), json.loads(sim.lms("server", "status", "--json").stdout)["running"]) == (pid, True)


def test_hung_daemon_is_replaced(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A daemon that accepts connections and never answers is detected and replaced."""
    run = start(sim)
    run.wait_state("ready")
    old = sim.daemon_pid()
    sim.hang_daemon()
    failing = run.wait_for(lambda s: s["state"] == "backoff", timeout=20)
    assert "3 probes" in failing["restarts"]["last_reason"]
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["lmstudio"]["daemon_pid"] not in (None, old), timeout=45)
    assert snap["restarts"]["count"] >= 1
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]


def test_failing_model_degrades_with_lmstudio_text(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A model LM Studio refuses: degraded, its error text shown, the server stays up."""
    sim.fail_load("qwen/qwen3-4b")
    run = start(sim)
    snap = run.wait_state("degraded")
    qwen = next(m for m in snap["models"] if m["key"] == "qwen/qwen3-4b")
    assert (qwen["state"], "insufficient system resources" in qwen["error"]) == ("failed", True)
    # HEAD's titled error (facts §9): the title and the cause, no block headings
    assert qwen["error"].startswith("Failed to load model: Model loading was stopped"), qwen["error"]
    assert (snap["server"]["running"], snap["ready"]) == (True, False)
    cli = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "status", "--socket", str(run.sock)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert cli.returncode == 1
    sim.clear_faults()  # retried under backoff: it recovers by itself
    run.wait_state("ready")


def test_ready_with_lmstudio_variables_in_the_environment(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A supervisor started with LMS_API_SERVER_INFO_PATH (turns off lms's discovery and
    wake-up), LMS_SERVER_HOST and FORCE_COLOR (coloured help) in its environment still
    starts LM Studio, detects `daemon up`, and is ready (facts §9)."""
    run = start(sim, env={"LMS_API_SERVER_INFO_PATH": "/nonexistent", "LMS_SERVER_HOST": "0.0.0.0", "FORCE_COLOR": "1"})
    snap = run.wait_state("ready", timeout=60)
    assert (snap["lmstudio"]["capabilities"]["daemon"], loaded_ids(sim)) == (
        ["down", "status", "up"],
        ["openai/gpt-oss-20b", "qwen"],
    )


def test_models_on_a_linked_device_are_loaded_here(sim: SimInstall, start: Callable[..., Running]) -> None:
    """LM Link (facts §9): a linked device holding both declared models, loaded there and
    listed first, satisfies nothing here: both are loaded on this machine (`--local`, never
    the remote copy), and the remote instances are left alone."""
    sim.link_device("desk-pc", ["openai/gpt-oss-20b", "qwen/qwen3-4b"], loaded=["openai/gpt-oss-20b"])
    run = start(sim)
    run.wait_state("ready")
    remote = json.loads((sim.home / ".sim" / "linked.json").read_text())["loaded"]
    assert (loaded_ids(sim), [i["identifier"] for i in remote]) == (
        ["openai/gpt-oss-20b", "qwen"],
        ["openai/gpt-oss-20b"],
    )


def test_legacy_profile(make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """LM Studio 0.3 (no `lms daemon`): `server start` wakes the app; ready with both models."""
    sim = make_sim(profile="0.3")
    run = start(sim)
    snap = run.wait_state("ready")
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]
    assert snap["lmstudio"]["daemon_pid"] == sim.daemon_pid()  # found by its executable
    sim.crash_daemon()
    run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] == 1)


def test_ttl_on_an_lms_without_it(make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """0.3.8's cmd-ts `lms` rejects `--ttl` and the whole load (facts §9): the model is loaded
    without it, ready, and the status names ttl_unsupported with its fix."""
    sim = make_sim(profile="0.3.8")
    path = "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"  # no modelKey before 2025-01
    run = start(sim, f'[[models]]\nkey = "{path}"\nttl = 600\n')
    snap = run.wait_state("ready")
    [problem] = [p for p in snap["problems"] if p["code"] == "ttl_unsupported"]
    assert (loaded_ids(sim), "0.3.9" in problem["fix"]) == (["qwen/qwen3-4b"], True)


def test_rejected_passkey_is_named_in_the_status(sim: SimInstall, start: Callable[..., Running]) -> None:
    """BT#1566: an `lms` whose passkey LM Studio refuses is reported by its cause, not by
    the final `WebSocket connection closed` (facts §9)."""
    assert sim.lms("daemon", "up").returncode == 0
    sim.reject_cli_passkey()
    run = start(sim, "")
    snap = run.wait_for(lambda s: "passkey" in (s["restarts"]["last_reason"] or ""), timeout=60)
    assert "Failed to authenticate: Invalid passkey for lms CLI client" in snap["restarts"]["last_reason"]


def test_second_instance_exits_69(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A second `run` on the same socket exits 69 and leaves the first one alone."""
    first = start(sim, "")
    first.wait_state("ready")
    second = start(sim, "")
    assert second.proc.wait(30) == 69
    assert "another instance" in second.log.read_text()
    assert first.status() is not None


def test_bad_config_exits_78(sim: SimInstall, tmp_path: Path) -> None:
    """A config error exits 78 and names the TOML key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[models]]\nkey = "a"\nttl = "10m"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "run", "--config", str(cfg)],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, "models[0].ttl" in proc.stderr) == (78, True), proc.stderr


def test_sigterm_leaves_lmstudio_running(sim: SimInstall, start: Callable[..., Running]) -> None:
    """SIGTERM: exit 0, socket removed, daemon and models still up."""
    run = start(sim)
    run.wait_state("ready")
    pid = sim.daemon_pid()
    assert run.stop() == 0
    assert (run.sock.exists(), sim.daemon_pid(), loaded_ids(sim)) == (False, pid, ["openai/gpt-oss-20b", "qwen"])
    gone = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "status", "--socket", str(run.sock)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert gone.returncode == 3


def test_sighup_reload(sim: SimInstall, start: Callable[..., Running]) -> None:
    """An invalid config on SIGHUP keeps the old one and shows the error; a valid one is applied."""
    run = start(sim, "")
    run.wait_state("ready")
    run.config.write_text(BASE_CONFIG + "[health]\nbogus = 1\n")
    run.proc.send_signal(signal.SIGHUP)
    snap = run.wait_for(lambda s: s["supervisor"]["config_error"] is not None)
    assert "not valid TOML" in snap["supervisor"]["config_error"] or "health" in snap["supervisor"]["config_error"]
    assert snap["state"] == "ready"
    run.config.write_text(BASE_CONFIG + '[[models]]\nkey = "google/gemma-3-1b"\n')
    run.proc.send_signal(signal.SIGHUP)
    run.wait_for(
        lambda s: (
            s["supervisor"]["config_error"] is None
            and s["state"] == "ready"
            and [m["state"] for m in s["models"]] == ["loaded"]
        )
    )
    assert loaded_ids(sim) == ["google/gemma-3-1b"]


def test_an_edited_config_file_is_reloaded_without_a_signal(sim: SimInstall, start: Callable[..., Running]) -> None:
    """Saving the config file is enough: the file watch posts the reload (no SIGHUP, no request)."""
    run = start(sim, "")
    run.wait_state("ready")
    run.config.write_text(BASE_CONFIG + '[[models]]\nkey = "google/gemma-3-1b"\n')
    run.wait_for(lambda s: s["state"] == "ready" and [m["state"] for m in s["models"]] == ["loaded"])
    assert loaded_ids(sim) == ["google/gemma-3-1b"]


def test_restart_endpoint_and_wait(sim: SimInstall, start: Callable[..., Running]) -> None:
    """`lmsupervisor restart` restarts the server; `wait` returns 0 once ready again."""
    run = start(sim, "")
    run.wait_state("ready")
    cli = [sys.executable, "-m", "lmsupervisor"]
    restart = subprocess.run(
        [*cli, "restart", "--socket", str(run.sock)], capture_output=True, text=True, timeout=30, check=False
    )
    assert restart.returncode == 0, restart.stderr
    waited = subprocess.run(
        [*cli, "wait", "--timeout", "30", "--socket", str(run.sock)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert waited.returncode == 0
    snap = run.wait_state("ready")
    assert (snap["restarts"]["count"], snap["restarts"]["last_reason"]) == (1, "restart requested on the socket")


def test_http_api_of_the_socket(sim: SimInstall, start: Callable[..., Running]) -> None:
    """/v1/health, /metrics, 404 and 405 answer as the contract says."""
    run = start(sim, "")
    run.wait_state("ready")
    assert request(run.sock, "GET", "/v1/health") == (200, {"ready": True, "state": "ready"})
    assert request(run.sock, "GET", "/nope")[0] == 404
    assert request(run.sock, "GET", "/v1/restart")[0] == 405
    curl = shutil.which("curl")
    if curl:  # the contract's own example, where curl exists
        out = subprocess.run(
            [curl, "-s", "--unix-socket", str(run.sock), "http://lms/metrics"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        assert "lmsupervisor_ready 1" in out


def test_stale_socket_is_replaced(sim: SimInstall, start: Callable[..., Running], short_dir: Path) -> None:
    """A socket file left by a crashed run (nobody listening) is replaced safely."""
    import socket as socketmod

    stale = socketmod.socket(socketmod.AF_UNIX)
    stale.bind(str(short_dir / "status.sock"))
    stale.close()  # the file stays, nobody listens
    run = start(sim, "")
    run.wait_state("ready")
    assert os.path.exists(run.sock)


def test_second_supervisor_of_the_same_home_exits_69(
    sim: SimInstall, start: Callable[..., Running], short_dir: Path, tmp_path: Path
) -> None:
    """Another socket does not make another supervisor welcome: one per LM Studio home (exit 69,
    naming the first one's socket and PID), and the first keeps LM Studio as it was."""
    first = start(sim)
    first.wait_state("ready")
    config = tmp_path / "other.toml"
    config.write_text(BASE_CONFIG + TWO_MODELS)
    second = Running(sim, short_dir / "other.sock", config)
    try:
        assert second.proc.wait(30) == 69
    finally:
        second.stop()
    text = second.log.read_text()
    assert (str(first.sock) in text, f"PID {first.proc.pid}" in text) == (True, True), text
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]


def test_corrupt_server_config_keeps_the_users_settings(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """A corrupt http-server-config.json during a restart never resets port and CORS to defaults:
    the last good settings are used and a problem says so."""
    sim = make_sim(server_config={"cors": True})
    run = start(sim)
    snap = run.wait_state("ready")
    port = snap["server"]["port"]
    assert snap["server"]["cors"] is True
    sim.corrupt("http-server-config.json", '{"port": 12')
    assert request(run.sock, "POST", "/v1/restart")[0] == 202
    snap = run.wait_for(lambda s: s["restarts"]["count"] >= 1 and s["state"] == "ready")
    assert (snap["server"]["port"], snap["server"]["cors"]) == (port, True)
    assert "server_config_remembered" in [p["code"] for p in snap["problems"]]
    assert json.loads(sim.server_config_path.read_text())["cors"] is True  # what LM Studio runs with, persisted


def test_a_model_that_cannot_answer_is_reloaded(sim: SimInstall, start: Callable[..., Running]) -> None:
    """Deep readiness: with probe = "answer" a loaded model must answer one token; when it stops
    answering it is failed with LM Studio's words, unloaded and loaded again once it answers."""
    base = BASE_CONFIG.replace("[health]\n", "[health]\nanswer_interval = 0.5\nanswer_timeout = 5\n")
    run = start(sim, TWO_MODELS + 'probe = "answer"\n', base)
    snap = run.wait_state("ready")
    assert snap["models"][1]["last_answer_ms"] is not None
    sim.fail_answer("qwen", "Model crashed while generating (exit code 134)")
    snap = run.wait_for(lambda s: s["models"][1]["state"] == "failed")
    assert snap["models"][1]["error"] == "qwen did not answer: Model crashed while generating (exit code 134)"
    sim.clear_faults()
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["models"][1]["state"] == "loaded", timeout=60)
    assert loaded_ids(sim) == ["openai/gpt-oss-20b", "qwen"]


def test_sigterm_during_a_load_stops_cleanly(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """SIGTERM while `lms load` runs: exit 0, LM Studio left running, and no traceback (the
    killed `lms` is reaped before the loop closes, no "Event loop is closed")."""
    sim = make_sim(time_scale=0.5)  # the 20B model takes seconds to load
    run = start(sim)
    run.wait_for(lambda s: any(m["state"] == "loading" for m in s["models"]), timeout=60)
    assert run.stop() == 0
    log = run.log.read_text()
    assert ("Traceback" in log, "Event loop is closed" in log, sim.daemon_pid() is not None) == (False, False, True)
