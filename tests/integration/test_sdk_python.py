"""The simulator's websocket API through LM Studio's official Python SDK (``lmstudio`` on PyPI).

Issue 15 items 2 and 3: the SDK speaks LM Studio's websocket API (facts §9), so these
tests prove the simulator serves it well enough for a real client, over the same state
that `lms` and REST see, with the same faults, and that a crash the SDK reports as its own
error is repaired by a real `lmsupervisor run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lmstudio as lms
import pytest
from websockets.sync.client import connect

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import Running

pytestmark = pytest.mark.integration

QWEN = "qwen/qwen3-4b"
TOKEN = "sk-lm-Abcd1234:Abcdefghij0123456789"
QWEN_ONLY = '\n[[models]]\nkey = "qwen/qwen3-4b"\nidentifier = "qwen"\n'


def serving(sim: SimInstall) -> SimInstall:
    """``sim`` with its daemon woken and its HTTP server started by the simulated `lms`."""
    result = sim.lms("server", "start")
    assert result.returncode == 0, result.stderr
    return sim


def test_list_load_respond_unload_on_the_http_port(sim: SimInstall) -> None:
    """The SDK's model calls over ``ws://127.0.0.1:<http port>``: what it loads, `lms ps` shows, and back."""
    serving(sim)
    progress: list[float] = []
    with lms.Client(f"127.0.0.1:{sim.http_port}") as client:
        downloaded = {m.model_key for m in client.list_downloaded_models()}
        listed = {m["modelKey"] for m in json.loads(sim.lms("ls", "--json").stdout)}
        assert (downloaded, client.llm.list_loaded()) == (listed, [])
        model = client.llm.load_new_instance(QWEN, "q1", ttl=600, on_load_progress=progress.append)
        assert (model.identifier, progress[-1], progress == sorted(progress), len(progress) > 1) == (
            "q1",
            1.0,
            True,
            True,
        )
        ps = json.loads(sim.lms("ps", "--json").stdout)
        assert [(m["identifier"], m["modelKey"], m["ttlMs"]) for m in ps] == [("q1", QWEN, 600_000)]
        assert [m.identifier for m in client.llm.list_loaded()] == ["q1"]
        assert client.llm.model(QWEN).respond("hi").content == "Simulated reply from q1."
        client.llm.unload("q1")
        assert (client.llm.list_loaded(), sim.loaded()) == ([], [])


def test_the_api_port_answers_too(sim: SimInstall) -> None:
    """The API port (what `lms` and SDK discovery use) serves the same namespaces and state."""
    serving(sim)
    assert sim.lms("load", QWEN, "--yes", "--identifier", "from-lms").returncode == 0
    with lms.Client(f"127.0.0.1:{sim.api_port}") as client:
        assert [m.identifier for m in client.llm.list_loaded()] == ["from-lms"]


def test_a_failing_load_is_the_sdk_error_with_lm_studios_text(sim: SimInstall) -> None:
    """``fail_load`` (the guardrail refusal) reaches the SDK as its own server error, with the cause."""
    serving(sim)
    sim.fail_load(QWEN)
    with lms.Client(f"127.0.0.1:{sim.http_port}") as client, pytest.raises(lms.LMStudioServerError) as caught:
        client.llm.load_new_instance(QWEN)
    assert "insufficient system resources" in str(caught.value)
    assert sim.loaded() == []


def _handshake(url: str, identifier: str, passkey: str) -> dict[str, object]:
    with connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": identifier, "clientPasskey": passkey}))
        answer: dict[str, object] = json.loads(ws.recv(timeout=5))
        return answer


def test_the_handshake_checks_the_cli_key_and_api_tokens(make_sim: Callable[..., SimInstall]) -> None:
    """`lms-cli` needs its passkey to end with ``.internal/lms-key-2``; with a token required,
    guests are refused and the token's two halves (``sk-lm-<id>:<passkey>``) get in."""
    sim = serving(make_sim(api_token=TOKEN))
    url = f"ws://127.0.0.1:{sim.api_port}/llm"
    key2 = (sim.home / ".internal" / "lms-key-2").read_text().strip()
    assert _handshake(url, "lms-cli", "<build key>" + key2) == {"success": True}
    assert _handshake(url, "lms-cli", "<build key>") == {
        "success": False,
        "error": "Invalid passkey for lms CLI client",
    }
    assert _handshake(url, "Abcd1234", "Abcdefghij0123456789") == {"success": True}
    assert _handshake(url, "guest:x", "y")["success"] is False
    # The error is a string ([js] wsAuthenticationResultSchema, and lms prints "Failed to
    # authenticate: <error>"); lmstudio 1.5.0 passes it to dict() and raises ValueError, so
    # the SDK itself is not asserted on here.


def test_a_crash_is_the_sdks_error_and_run_brings_it_back(sim: SimInstall, start: Callable[..., Running]) -> None:
    """kill -9 mid-session: the next call raises the SDK's own error; after `lmsupervisor run` brings
    LM Studio back with its model, the same program answers again (from the supervisor's instance)."""
    serving(sim)
    host = f"127.0.0.1:{sim.http_port}"
    with lms.Client(host) as client:
        model = client.llm.model(QWEN)
        assert model.respond("hi").content == f"Simulated reply from {QWEN}."
        sim.crash_and_wait()
        with pytest.raises(lms.LMStudioWebsocketError):
            model.respond("hi")
    run = start(sim, extra=QWEN_ONLY)
    run.wait_state("ready")
    with lms.Client(host) as client:
        assert client.llm.model(QWEN).respond("hi").content == "Simulated reply from qwen."


def test_act_calls_the_tool_once_then_answers(sim: SimInstall) -> None:
    """``model.act`` with a Python function: one call with schema-built arguments (ints from the
    type hints), then an answer quoting the result, in two rounds."""
    serving(sim)
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    said: list[Any] = []
    with lms.Client(f"127.0.0.1:{sim.http_port}") as client:
        result = client.llm.model(QWEN).act("What is a + b?", [add], on_message=said.append)
    assert (result.rounds, calls, said[-1].content[0].text) == (
        2,
        [(1, 1)],
        f"Simulated reply from {QWEN}. The tool returned: 2",
    )
