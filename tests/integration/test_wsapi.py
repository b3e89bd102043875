"""The simulator's websocket API at the message level: what `lms` calls that the SDK tests do not.

Facts §9 "The websocket API": the lifecycle calls of the real CLI (``system.info``,
``startHttpServer``, ``stopHttpServer``), ``getInstanceProcessingState``, ``keepAlive``,
the ``rpcError`` shape, and the namespaces the simulator does not serve.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lmsupervisor.simulator.home import SimInstall

pytestmark = pytest.mark.integration


class Port:
    """One authenticated namespace socket, as `lms` opens it (``lms-cli`` + ``.internal/lms-key-2``)."""

    def __init__(self, ws: ClientConnection, sim: SimInstall) -> None:
        self.ws, self.next_id = ws, 0
        key2 = (sim.home / ".internal" / "lms-key-2").read_text().strip()
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "lms-cli", "clientPasskey": "<key>" + key2}))
        assert json.loads(ws.recv(timeout=5)) == {"success": True}

    def call(self, endpoint: str, parameter: Any = None) -> dict[str, Any]:
        """Send an ``rpcCall`` and return the answer (``rpcResult`` or ``rpcError``)."""
        self.next_id += 1
        message: dict[str, Any] = {"type": "rpcCall", "endpoint": endpoint, "callId": self.next_id}
        if parameter is not None:
            message["parameter"] = parameter
        self.ws.send(json.dumps(message))
        answer: dict[str, Any] = json.loads(self.ws.recv(timeout=10))
        return answer


@pytest.fixture
def system(sim: SimInstall) -> Iterator[Port]:
    """The ``system`` namespace of a woken daemon (HTTP server off), on its API port."""
    assert sim.lms("daemon", "up").returncode == 0
    with connect(f"ws://127.0.0.1:{sim.api_port}/system", open_timeout=5) as ws:
        yield Port(ws, sim)


def greeting(sim: SimInstall) -> bool:
    """True when LM Studio's HTTP server answers ``/lmstudio-greeting``."""
    try:
        with urllib.request.urlopen(f"{sim.http_url}/lmstudio-greeting", timeout=2) as resp:
            return bool(json.loads(resp.read()) == {"lmstudio": True})
    except OSError:
        return False


def test_the_cli_lifecycle_calls(sim: SimInstall, system: Port) -> None:
    """``info`` names the daemon; ``startHttpServer``/``stopHttpServer`` (void: no ``result``) start
    and stop the HTTP server `lms server status` sees; ``keepAlive`` is acknowledged."""
    info = system.call("info")
    assert info == {
        "type": "rpcResult",
        "callId": 1,
        "result": {"pid": sim.daemon_pid(), "isDaemon": True, "version": "0.4.12"},
    }
    started = system.call("startHttpServer", {"port": sim.http_port, "cors": False, "networkInterface": "127.0.0.1"})
    assert (started, greeting(sim)) == ({"type": "rpcResult", "callId": 2}, True)
    assert system.call("stopHttpServer") == {"type": "rpcResult", "callId": 3}
    assert (greeting(sim), "not running" in sim.lms("server", "status").stderr) == (False, True)
    system.ws.send(json.dumps({"type": "keepAlive"}))
    assert json.loads(system.ws.recv(timeout=5)) == {"type": "keepAliveAck"}


def test_model_calls_and_errors(sim: SimInstall) -> None:
    """``getInstanceProcessingState`` is ``{status, queued}``; an unknown id and an endpoint the
    simulator lacks are ``rpcError`` ``{title, rootTitle}``; an unknown namespace is refused."""
    assert sim.lms("load", "qwen/qwen3-4b", "--yes", "--identifier", "q").returncode == 0
    with connect(f"ws://127.0.0.1:{sim.api_port}/llm", open_timeout=5) as ws:
        llm = Port(ws, sim)
        spec = {"type": "query", "query": {"identifier": "q"}}
        state = llm.call("getInstanceProcessingState", {"specifier": spec})
        assert state == {"type": "rpcResult", "callId": 1, "result": {"status": "idle", "queued": 0}}
        missing = llm.call("unloadModel", {"identifier": "nope"})
        assert (missing["type"], missing["error"]["title"]) == ("rpcError", 'No model found with identifier "nope".')
        assert llm.call("estimateModelUsage")["error"]["title"] == "Endpoint llm.estimateModelUsage is not simulated."
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{sim.api_port}/nowhere", open_timeout=5)
    assert refused.value.response.status_code == 404


def test_a_refused_load_is_a_titled_error_with_a_suggestion(sim: SimInstall) -> None:
    """A load LM Studio refuses ends the ``loadModel`` channel with ``channelError`` ``{title,
    suggestion, cause}``: the fields the real `lms` 07b7252 prints as `Error: <title>`,
    ``(!) SUGGESTION`` and ``(X) CAUSE`` (facts §9), the same text the simulated `lms` prints."""
    sim.fail_load("qwen/qwen3-4b", "Model loading was stopped due to insufficient system resources.")
    assert sim.lms("daemon", "up").returncode == 0
    with connect(f"ws://127.0.0.1:{sim.api_port}/llm", open_timeout=5) as ws:
        Port(ws, sim)
        create = {"modelKey": "qwen/qwen3-4b", "loadConfigStack": {"layers": []}}
        ws.send(
            json.dumps({"type": "channelCreate", "endpoint": "loadModel", "channelId": 1, "creationParameter": create})
        )
        error: dict[str, Any] = {"type": "channelSend"}
        for _ in range(200):  # resolved, progress..., then the end of the channel
            error = json.loads(ws.recv(timeout=10))
            if error["type"] != "channelSend":
                break
    assert (error["type"], error["error"]["title"], error["error"]["cause"], error["error"]["suggestion"]) == (
        "channelError",
        "Failed to load model",
        "Model loading was stopped due to insufficient system resources.",
        "Try loading the model with a smaller context length or less GPU offload.",
    )


def test_a_rejected_cli_passkey_fails_the_handshake(sim: SimInstall) -> None:
    """With the ``cli_passkey_rejected`` fault (BT#1566) the websocket refuses `lms`'s passkey
    with the real wording, so a real `lms` fails as on such installs; SDK clients still connect."""
    assert sim.lms("daemon", "up").returncode == 0
    sim.reject_cli_passkey()
    key2 = (sim.home / ".internal" / "lms-key-2").read_text().strip()
    with connect(f"ws://127.0.0.1:{sim.api_port}/system", open_timeout=5) as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "lms-cli", "clientPasskey": "<key>" + key2}))
        assert json.loads(ws.recv(timeout=5)) == {"success": False, "error": "Invalid passkey for lms CLI client"}
    with connect(f"ws://127.0.0.1:{sim.api_port}/system", open_timeout=5) as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "my-sdk-app", "clientPasskey": "x"}))
        assert json.loads(ws.recv(timeout=5)) == {"success": True}
