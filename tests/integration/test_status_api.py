"""The real `lmsupervisor run` against the simulator: metrics parsed by prometheus_client, the TCP
transport with a missing, wrong and right token (the CLI and client finding it by themselves),
and /v1/status encoded once per change (issue 10 items 4, 5, 7)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmsupervisor.client import Client
from lmsupervisor.endpoint import tokenfile
from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import Running

pytestmark = pytest.mark.integration

ONE_MODEL = """
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""
TCP = '\n[status]\ntransport = "tcp"\n'


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value of every sample, read by prometheus_client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def raw(port: int, head: str) -> tuple[int, bytes]:
    """One request over plain TCP; (status, body)."""
    with socket.create_connection((tokenfile.HOST, port), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def cli(run: Running, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**run.sim.env(), "LMSUPERVISOR_SOCKET": str(run.sock)}
    return subprocess.run(
        [sys.executable, "-m", "lmsupervisor", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_metrics_of_a_real_run_parse_and_count(sim: SimInstall, start: Callable[..., Running]) -> None:
    """A real run's /metrics parses with prometheus_client: ready, model loaded, lms calls and probes
    counted, versions in the info metric, and a requested restart counted under `requested`."""
    run = start(sim, ONE_MODEL)
    run.wait_state("ready")
    client = Client(run.sock)
    client.wait_ready(30)
    before = samples(client.request("GET", "/metrics").body.decode())
    assert before[("lmsupervisor_ready", ())] == 1
    assert before[("lmsupervisor_state", (("state", "ready"),))] == 1
    assert before[("lmsupervisor_model_loaded", (("identifier", "qwen"), ("key", "qwen/qwen3-4b")))] == 1
    assert before[("lmsupervisor_lms_calls_total", (("command", "load"), ("result", "ok")))] >= 1
    called = {dict(labels)["command"] for (name, labels), v in before.items() if name.endswith("calls_total") and v}
    assert {"load", "server start"} <= called or {"load", "daemon up"} <= called, called
    assert before[("lmsupervisor_lms_call_duration_seconds_count", (("command", "load"),))] >= 1
    assert before[("lmsupervisor_restarts_total", (("reason", "requested"),))] == 0
    info = next(labels for name, labels in before if name == "lmsupervisor_info")
    assert dict(info)["version"] and dict(info)["lmstudio_version"]
    assert before[("lmsupervisor_uptime_seconds", ())] > 0
    assert before[("lmsupervisor_last_transition_timestamp_seconds", ())] > 1.7e9
    assert run.wait_for(lambda s: s["server"]["last_probe_ms"] is not None)
    client.restart()
    run.wait_for(lambda s: s["restarts"]["count"] == 1 and s["state"] == "ready")
    after = samples(client.request("GET", "/metrics").body.decode())
    assert after[("lmsupervisor_restarts_total", (("reason", "requested"),))] == 1
    assert after[("lmsupervisor_probes_total", (("result", "ok"),))] >= 1
    assert after[("lmsupervisor_probe_latency_seconds_count", ())] >= 1


def test_status_is_encoded_once_per_change_in_a_real_run(sim: SimInstall, start: Callable[..., Running]) -> None:
    """200 status requests in a row cost a handful of encodings (one per snapshot change), not 200."""
    run = start(sim, "")
    run.wait_state("ready")
    client = Client(run.sock)

    def encodings() -> float:
        return samples(client.request("GET", "/metrics").body.decode())[("lmsupervisor_status_encodings_total", ())]

    first = encodings()
    bodies = {client.request("GET", "/v1/status").body for _ in range(200)}
    # each health probe (every 0.2 s here) makes a new snapshot: one encoding each, never one per request
    assert encodings() - first <= len(bodies) + 2
    assert len(bodies) < 100


def test_tcp_transport_needs_the_token_and_the_cli_finds_it(sim: SimInstall, start: Callable[..., Running]) -> None:
    """With transport tcp: no Unix socket, a 0600 endpoint file; missing and wrong tokens get 401,
    the right one 200; `lmsupervisor status`, `restart` and the client work unchanged."""
    run = start(sim, TCP)
    endpoint = Path(tokenfile.token_path(run.sock))
    run.wait_for(lambda s: s["state"] == "ready")  # Running.status uses the client: it found the file
    assert not run.sock.exists()
    assert endpoint.stat().st_mode & 0o777 == 0o600
    info = json.loads(endpoint.read_text())
    assert info["pid"] == run.proc.pid
    head = "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n"
    missing = raw(info["port"], head.format(""))
    wrong = raw(info["port"], head.format("Authorization: Bearer " + "A" * len(info["token"]) + "\r\n"))
    right = raw(info["port"], head.format(f"Authorization: Bearer {info['token']}\r\n"))
    post = raw(info["port"], "POST /v1/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert [missing[0], wrong[0], right[0], post[0]] == [401, 401, 200, 401]
    assert json.loads(wrong[1]) == {"error": "wrong bearer token"}
    assert json.loads(right[1])["state"] == "ready"
    status = cli(run, "status", "--json")
    assert (status.returncode, json.loads(status.stdout)["state"]) == (0, "ready"), status.stderr
    restarted = cli(run, "restart")
    assert (restarted.returncode, restarted.stdout.strip()) == (0, "accepted"), restarted.stderr
    run.wait_for(lambda s: s["restarts"]["count"] == 1 and s["state"] == "ready")
    assert samples(Client(run.sock).request("GET", "/metrics").body.decode())[("lmsupervisor_ready", ())] == 1
    assert run.stop() == 0
    assert not endpoint.exists()  # removed at shutdown
    gone = cli(run, "status")
    assert gone.returncode == 3
