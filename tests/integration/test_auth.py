"""LM Studio's "Require Authentication" (facts §4) against real processes: the configured
token reaches every client of LM Studio's HTTP server, the answer probe of a `lmsupervisor
run` and the chat of the native host (issue 14 item 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually
from tests.integration.test_nativehost import Browser
from tests.integration.test_run import Running

pytestmark = pytest.mark.integration

TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"
ANSWERING = """
[server]
start_timeout = 15
[health]
interval = 0.2
timeout = 1
answer_interval = 0.3
answer_timeout = 5
[restart]
initial_delay = 0.1
max_delay = 1
[log]
level = "debug"
format = "json"
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
probe = "answer"
"""


def last_used(sim: SimInstall, identifier: str) -> int | None:
    """The simulator's ``lastUsedTime`` of ``identifier`` (ms; it moves with every request
    the server accepted for it), None when it is not loaded."""
    return next((int(m["lastUsedTime"]) for m in sim.loaded() if m["identifier"] == identifier), None)


def loads_of(sim: SimInstall, identifier: str) -> int:
    """How often the simulated daemon loaded ``identifier`` (its own log: ``loaded <id> in ...``)."""
    log = sim.home / ".sim" / "daemon.log"
    return sum(1 for line in log.read_text(encoding="utf-8").splitlines() if f"] loaded {identifier} in " in line)


def test_answer_probe_carries_the_configured_token(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """With "Require Authentication" on and ``[lmstudio] api_token`` set, a ``probe = "answer"``
    model answers its probes: the supervisor is ready, the model stays loaded (loaded once,
    never reloaded) across several answer intervals, with no problem reported."""
    sim = make_sim(profile="0.4", api_token=TOKEN)
    run = start(sim, ANSWERING, base=f'[lmstudio]\napi_token = "{TOKEN}"\n')
    snap = run.wait_state("ready")
    seen: set[int] = set()

    def answered_again() -> bool:  # each accepted answer probe moves lastUsedTime
        used = last_used(sim, "qwen")
        if used is not None:
            seen.add(used)
        return len(seen) >= 4

    assert eventually(answered_again, timeout=30, interval=0.05), seen
    snap = run.wait_for(lambda s: s["state"] == "ready")
    [model] = snap["models"]
    assert (model["state"], model["error"], model["last_answer_ms"] is not None) == ("loaded", None, True)
    assert (snap["restarts"]["count"], snap["problems"]) == (0, [])
    assert loads_of(sim, "qwen") == 1  # a refused answer would have unloaded and loaded it again


def test_native_host_chat_uses_the_token_from_the_config_file(
    make_sim: Callable[..., SimInstall], native_host: Callable[..., Browser], tmp_path: Path
) -> None:
    """No ``LM_API_TOKEN`` in the host's environment: the token comes only from the config's
    ``[lmstudio] api_token_file``, and chat and the loaded-model list get through."""
    sim = make_sim(profile="0.4", api_token=TOKEN)
    assert sim.lms("server", "start").returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    port = native_host(sim, f'[lmstudio]\napi_token_file = "{token_file}"\n[health]\ntimeout = 2\n')
    msgs = [{"role": "user", "content": "Say hello"}]
    reply = port.ask({"action": "chat_completion", "messages": msgs, "settings": {"model": "qwen/qwen3-4b"}})
    assert reply["status"] == "success", reply
    assert reply["payload"]["content"] == "Simulated reply from qwen/qwen3-4b."
    check = port.ask({"action": "check_lmstudio"})
    assert (check["payload"]["config_error"], check["payload"]["loaded_models"]) == (None, ["qwen/qwen3-4b"])
    assert port.close() == 0


def test_the_simulator_refuses_every_route_but_the_greeting(make_sim: Callable[..., SimInstall]) -> None:
    """The oracle of the tests above: without the token every method and route of the HTTP
    server is a 401 with LM Studio's body (facts §4); ``GET /lmstudio-greeting`` stays open
    (`lms server start` probes it without a token)."""
    sim = make_sim(profile="0.4", api_token=TOKEN)
    assert sim.lms("server", "start").returncode == 0
    port = json.loads(sim.lms("server", "status", "--json").stdout)["port"]
    routes = [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/v1/models"),
        ("DELETE", "/v1/models/x"),
        ("PUT", "/api/v1/models"),
        ("PATCH", "/nowhere"),
        ("GET", "/nowhere"),
    ]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as http:
        for method, path in routes:
            answer = http.request(method, path, json={} if method in ("POST", "PUT") else None)
            error = answer.json()["error"]
            expected = (method, path, 401, "invalid_request", "invalid_api_key")
            assert (method, path, answer.status_code, error["type"], error["code"]) == expected
        greeting = http.get("/lmstudio-greeting")
        assert (greeting.status_code, greeting.json()) == (200, {"lmstudio": True})
        ok = http.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (ok.status_code, "data" in ok.json()) == (200, True)
