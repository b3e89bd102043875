"""Fidelity of the simulator to shared/lmstudio-facts.md: (command) -> (stdout, stderr, exit).

Each row names the facts-sheet line it checks. JSON shapes are compared with real
samples quoted from the sheet, so a drift in field names or types fails here.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from lmsupervisor.simulator.home import SimInstall

pytestmark = pytest.mark.integration

# facts §3: "A real `ps --json` line (observed, 2026)"
REAL_PS_LINE = json.loads(
    '{"type":"llm","modelKey":"ornith-1.0-35b-mlx-oq8","format":"safetensors","displayName":'
    '"Ornith 1.0 35B OQ8","publisher":"jedisct1","path":"jedisct1/Ornith-1.0-35B-MLX-oQ8",'
    '"sizeBytes":37726897291,"indexedModelIdentifier":"jedisct1/Ornith-1.0-35B-MLX-oQ8",'
    '"deviceIdentifier":null,"paramsString":"35B","architecture":"qwen3_5_moe","quantization":'
    '{"name":"8bit","bits":8},"identifier":"ornith-1.0-35b-mlx-oq8","ttlMs":null,"lastUsedTime":'
    '1786252670392,"vision":true,"trainedForToolUse":true,"maxContextLength":262144,'
    '"contextLength":65536,"status":"idle","queued":0,"parallel":2}'
)
INSTANCE_FIELDS = {"identifier", "ttlMs", "lastUsedTime", "contextLength", "status", "queued", "parallel"}
ORNITH_PATH = "jedisct1/Ornith-1.0-35B-MLX-oQ8"
TYPE_NAMES = ("int", "str", "bool")


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively: what a consumer of the JSON depends on."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def up(sim: SimInstall, state: str) -> None:
    """Bring ``sim`` to ``state``: none, daemon, server, or model (server + one model)."""
    if state == "none":
        return
    # 0.3 has no `daemon` command: any client command wakes the app (facts §1).
    assert sim.lms(*(["daemon", "up"] if sim.profile == "0.4" else ["ps"])).returncode == 0
    if state in ("server", "model"):
        assert sim.lms("server", "start").returncode == 0
    if state == "model":
        assert sim.lms("load", ORNITH_PATH, "--exact", "--yes").returncode == 0


# (id, profile, state, argv, exit code, stdout: JSON value or shape check or regex, stderr regex)
ROWS: list[tuple[str, str, str, list[str], int, Any, str]] = [
    ("daemon-status-down-json", "0.4", "none", ["daemon", "status", "--json"], 0, {"status": "not-running"}, r"^$"),
    ("daemon-status-down-text", "0.4", "none", ["daemon", "status"], 0, "", r"^LM Studio is not running\n$"),
    (
        "daemon-status-up-json",
        "0.4",
        "daemon",
        ["daemon", "status", "--json"],
        0,
        {"status": "running", "pid": "int", "isDaemon": True},
        r"^$",
    ),
    (
        "daemon-status-up-text",
        "0.4",
        "daemon",
        ["daemon", "status"],
        0,
        "",
        r"^llmster v[\d.]+ is running \(PID: \d+\)\n$",
    ),
    ("daemon-up-started", "0.4", "none", ["daemon", "up"], 0, "", r"^llmster started \(PID: \d+\)\.\n$"),
    (
        "daemon-up-already",
        "0.4",
        "daemon",
        ["daemon", "up"],
        0,
        "",
        r"^The daemon is already running \(PID: \d+\)\.\n$",
    ),
    (
        "daemon-up-json",
        "0.4",
        "none",
        ["daemon", "up", "--json"],
        0,
        {"status": "running", "pid": "int", "isDaemon": True, "version": "str"},
        r"^$",
    ),
    ("daemon-down", "0.4", "daemon", ["daemon", "down"], 0, "", r"^Shutting down llmster\.\.\.\nDone\.\n$"),
    ("daemon-down-not-running", "0.4", "none", ["daemon", "down"], 1, "", r"^Daemon is not running\.\n$"),
    (
        "server-status-off-json",
        "0.4",
        "daemon",
        ["server", "status", "--json"],
        0,
        {"running": False, "port": "int"},
        r"^$",
    ),
    (
        "server-status-on-json",
        "0.4",
        "server",
        ["server", "status", "--json"],
        0,
        {"running": True, "port": "int"},
        r"^$",
    ),
    ("server-status-off-text", "0.4", "none", ["server", "status"], 0, "", r"^The server is not running\.\n$"),
    ("server-status-on-text", "0.4", "server", ["server", "status"], 0, "", r"^The server is running on port \d+\.\n$"),
    ("server-start", "0.4", "daemon", ["server", "start"], 0, "", r"^Success! Server is now running on port \d+\n$"),
    (
        "server-start-wakes-daemon",
        "0.4",
        "none",
        ["server", "start"],
        0,
        "",
        r"^Success! Server is now running on port \d+\n$",
    ),
    ("server-stop", "0.4", "server", ["server", "stop"], 0, "", r"^Stopped the server on port \d+\.\n$"),
    ("server-stop-not-running", "0.4", "daemon", ["server", "stop"], 1, "", r"^The server is not running\.\n$"),
    ("ps-empty-json", "0.4", "daemon", ["ps", "--json"], 0, [], r"^$"),
    ("ps-empty-text", "0.4", "daemon", ["ps"], 0, "", r"^No models are currently loaded\.\n$"),
    ("ps-json", "0.4", "model", ["ps", "--json"], 0, [shape(REAL_PS_LINE)], r"^$"),
    (
        "ps-text",
        "0.4",
        "model",
        ["ps"],
        0,
        re.compile(r"^IDENTIFIER\s+MODEL\s+STATUS\s+SIZE\s+CONTEXT\s+PARALLEL\s+DEVICE\s+TTL\n"),
        r"^$",
    ),
    ("ls-json", "0.4", "daemon", ["ls", "--json"], 0, "ls-shape", r"^$"),
    (
        "ls-text",
        "0.4",
        "daemon",
        ["ls"],
        0,
        re.compile(r"^You have \d+ models, taking up [\d.]+ GB of disk space\."),
        r"^$",
    ),
    (
        "load-exact",
        "0.4",
        "daemon",
        ["load", ORNITH_PATH, "--exact", "--yes"],
        0,
        "",
        r"^Model loaded successfully in [\d.]+s\.\n\(37\.73 GB\)\nTo use the model in the API/SDK, use the "
        r'identifier "ornith-1\.0-35b-mlx-oq8"\.\n$',
    ),
    (
        "load-duplicate-makes-:2",
        "0.4",
        "model",
        ["load", ORNITH_PATH, "--exact", "--yes"],
        0,
        "",
        r'use the identifier "ornith-1\.0-35b-mlx-oq8:2"',
    ),
    (
        "load-exact-needs-path-not-key",
        "0.4",
        "daemon",
        ["load", "ornith-1.0-35b-mlx-oq8", "--exact", "--yes"],
        1,
        "",
        r"^Model not found\n",
    ),
    ("load-yes-unknown", "0.4", "daemon", ["load", "zzzz-no-such", "--yes"], 1, "", r"^Model not found\n"),
    ("load-gpu-auto-rejected", "0.4", "daemon", ["load", ORNITH_PATH, "--gpu", "auto"], 1, "", r"Not a number"),
    (
        "unload-known",
        "0.4",
        "model",
        ["unload", "ornith-1.0-35b-mlx-oq8"],
        0,
        "",
        r'^Model "ornith-1\.0-35b-mlx-oq8" unloaded\.\n$',
    ),
    ("unload-unknown-exits-0", "0.4", "daemon", ["unload", "nope"], 0, "", r"^Model Not Found\n$"),
    ("unload-all", "0.4", "model", ["unload", "--all"], 0, "", r"^Unloaded 1 models\.\n$"),
    ("unload-all-none", "0.4", "daemon", ["unload", "-a"], 0, "", r"^No models to unload\.\n$"),
    ("unload-no-arg-none-loaded", "0.4", "daemon", ["unload"], 1, "", r"No models to unload"),
    (
        "get-already",
        "0.4",
        "daemon",
        ["get", "openai/gpt-oss-20b", "--yes"],
        0,
        "",
        r"^Model already downloaded\. To use, run: lms load openai/gpt-oss-20b\n$",
    ),
    ("get-downloads", "0.4", "daemon", ["get", "ibm/granite-4-micro", "--yes"], 0, "", r"lms load ibm/granite-4-micro"),
    ("get-unknown", "0.4", "daemon", ["get", "nobody/nothing", "--yes"], 1, "", r"^Error: "),
    ("version-json", "0.4", "none", ["version", "--json"], 0, {"version": "str"}, r"^$"),
    ("dash-v", "0.4", "none", ["-v"], 0, re.compile(r"^CLI commit: \w+\n$"), r"^$"),
    ("status-off", "0.4", "daemon", ["status"], 0, re.compile(r"^Server:  OFF \n"), r"^$"),
    (
        "status-on",
        "0.4",
        "model",
        ["status"],
        0,
        re.compile(r"^Server: ON \(port: \d+\)\n\nLoaded Models\n  · ornith-1\.0-35b-mlx-oq8 - 37\.73 GB\n$"),
        r"^$",
    ),
    ("unknown-command", "0.4", "none", ["frobnicate"], 1, "", r"^error: unknown command 'frobnicate'\n$"),
    ("unknown-option", "0.4", "none", ["ps", "--bogus"], 1, "", r"^error: unknown option '--bogus'\n$"),
    # Profile 0.3: no daemon command; `server start` wakes the app itself.
    ("legacy-no-daemon", "0.3", "none", ["daemon", "status", "--json"], 1, "", r"^error: unknown command 'daemon'\n$"),
    (
        "legacy-server-start-wakes-app",
        "0.3",
        "none",
        ["server", "start"],
        0,
        "",
        r"^Success! Server is now running on port \d+\n$",
    ),
    ("legacy-ps", "0.3", "server", ["ps", "--json"], 0, [], r"^$"),
    ("legacy-version-semver", "0.3", "none", ["version", "--json"], 0, {"version": "0.3.31"}, r"^$"),
]


@pytest.mark.parametrize(
    ("profile", "state", "argv", "code", "stdout", "stderr"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_lms_command(
    make_sim: Any, profile: str, state: str, argv: list[str], code: int, stdout: Any, stderr: str
) -> None:
    """Each `lms` command prints what the facts sheet says, on the right stream, with its exit code."""
    sim = make_sim(profile=profile)
    up(sim, state)
    result = sim.lms(*argv)
    assert (result.returncode, bool(re.search(stderr, result.stderr))) == (code, True), result
    if isinstance(stdout, re.Pattern):
        assert stdout.search(result.stdout), result.stdout
    elif stdout == "ls-shape":
        items = json.loads(result.stdout)
        real_ls = {k: v for k, v in shape(REAL_PS_LINE).items() if k not in INSTANCE_FIELDS}
        assert shape(items[3]) == real_ls  # the Ornith model, as the facts sheet shows it
        assert all("identifier" not in i for i in items)
    elif stdout == "":
        assert result.stdout == ""
    else:
        value = json.loads(result.stdout)
        assert result.stdout.endswith("\n") and ", " not in result.stdout  # JSON.stringify: compact
        if isinstance(stdout, list):
            assert shape(value) == stdout
        else:  # a type name stands for "any value of that type", anything else is literal
            seen = {
                k: shape(v) if isinstance(stdout.get(k), str) and stdout[k] in TYPE_NAMES else v
                for k, v in value.items()
            }
            assert seen == stdout


def test_plain_server_start_resets_cors_and_bind(sim: SimInstall) -> None:
    """BT#1334: `server start` without flags starts with CORS off and bind 127.0.0.1, and
    the daemon writes them back to http-server-config.json."""
    cfg = json.loads(sim.server_config_path.read_text())
    cfg.update(cors=True, networkInterface="0.0.0.0")
    sim.server_config_path.write_text(json.dumps(cfg))
    assert sim.lms("server", "start").returncode == 0
    after = json.loads(sim.server_config_path.read_text())
    assert (after["cors"], after["networkInterface"]) == (False, "127.0.0.1")


def test_server_start_keeps_declared_settings(sim: SimInstall) -> None:
    """`server start --cors --bind` persists what it was given."""
    assert sim.lms("server", "start", "--cors", "--bind", "127.0.0.1").returncode == 0
    after = json.loads(sim.server_config_path.read_text())
    assert after["cors"] is True
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}/lmstudio-greeting") as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_http_server_is_down_until_started(sim: SimInstall) -> None:
    """The daemon alone does not serve HTTP (autoStartOnLaunch false, llmster's default)."""
    up(sim, "daemon")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}/lmstudio-greeting", timeout=2)


def test_daemon_publishes_api_server_info(sim: SimInstall) -> None:
    """0.4 writes .internal/http-server.json {host, pid, port} with the API port and its PID."""
    up(sim, "daemon")
    info = json.loads((sim.home / ".internal" / "http-server.json").read_text())
    assert (set(info), info["pid"], info["port"]) == ({"host", "pid", "port"}, sim.daemon_pid(), sim.api_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lms-status") as resp:
        status = json.loads(resp.read())
    assert isinstance(status["package"], str) and isinstance(status["version"], str)


def test_legacy_app_publishes_no_api_server_info(make_sim: Any) -> None:
    """0.3 predates http-server.json and /lms-status; the API port answers the greeting."""
    sim = make_sim(profile="0.3")
    up(sim, "server")
    assert not (sim.home / ".internal" / "http-server.json").exists()
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lms-status") as resp:
        assert "error" in json.loads(resp.read())
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lmstudio-greeting") as resp:
        assert json.loads(resp.read()) == {"lmstudio": True}


def _get(sim: SimInstall, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}{path}", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def _post(sim: SimInstall, path: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{sim.http_port}{path}",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_http_endpoints(sim: SimInstall) -> None:
    """Greeting, the three model lists and unknown routes answer as facts §4 says."""
    up(sim, "model")
    assert _get(sim, "/lmstudio-greeting") == (200, {"lmstudio": True})
    status, v1 = _get(sim, "/v1/models")
    assert status == 200 and v1["object"] == "list"
    assert set(v1["data"][0]) == {"id", "object", "owned_by"}
    # JIT on (the default): every downloaded model is listed, not only the loaded one.
    assert {"openai/gpt-oss-20b", "ornith-1.0-35b-mlx-oq8"} <= {m["id"] for m in v1["data"]}
    _, v0 = _get(sim, "/api/v0/models")
    states = {m["id"]: m["state"] for m in v0["data"]}
    assert (states["ornith-1.0-35b-mlx-oq8"], states["openai/gpt-oss-20b"]) == ("loaded", "not-loaded")
    assert {m["type"] for m in v0["data"]} == {"llm", "vlm", "embeddings"}
    _, v1native = _get(sim, "/api/v1/models")
    by_key = {m["key"]: m for m in v1native["models"]}
    assert [i["id"] for i in by_key["ornith-1.0-35b-mlx-oq8"]["loaded_instances"]] == ["ornith-1.0-35b-mlx-oq8"]
    assert by_key["openai/gpt-oss-20b"]["loaded_instances"] == []
    assert _get(sim, "/chat/completions") == (200, {"error": "Unexpected endpoint or method. (GET /chat/completions)"})
    status, body, _ = _post(sim, "/v1/nothing", {})
    assert (status, json.loads(body)) == (200, {"error": "Unexpected endpoint or method. (POST /v1/nothing)"})


def test_v1_models_lists_only_loaded_when_jit_off(make_sim: Any) -> None:
    """facts §4: with JIT off, /v1/models lists only loaded models."""
    sim = make_sim(server_config={"justInTimeModelLoading": False})
    up(sim, "model")
    assert [m["id"] for m in _get(sim, "/v1/models")[1]["data"]] == ["ornith-1.0-35b-mlx-oq8"]


def test_chat_completions_json_and_sse(sim: SimInstall) -> None:
    """A chat completion answers chat.completion JSON, or SSE chunks ending in [DONE]."""
    up(sim, "model")
    body = {"model": "ornith-1.0-35b-mlx-oq8", "messages": [{"role": "user", "content": "hi"}]}
    status, raw, _ = _post(sim, "/v1/chat/completions", body)
    reply = json.loads(raw)
    assert (status, reply["object"], reply["choices"][0]["message"]["role"]) == (200, "chat.completion", "assistant")
    assert reply["id"].startswith("chatcmpl-")
    status, raw, ctype = _post(sim, "/v1/chat/completions", {**body, "stream": True})
    frames = [f for f in raw.decode().split("\n\n") if f]
    assert ctype.startswith("text/event-stream") and frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_responses_endpoint(sim: SimInstall) -> None:
    """/v1/responses answers a response object, and streams response.* events."""
    up(sim, "model")
    status, raw, _ = _post(sim, "/v1/responses", {"model": "ornith-1.0-35b-mlx-oq8", "input": ""})
    assert (status, json.loads(raw)["object"]) == (200, "response")
    _, raw, _ = _post(sim, "/v1/responses", {"model": "ornith-1.0-35b-mlx-oq8", "input": "", "stream": True})
    events = re.findall(r"^event: (\S+)$", raw.decode(), re.M)
    assert (events[0], events[-1]) == ("response.created", "response.completed")


def test_chat_errors_without_models(make_sim: Any) -> None:
    """JIT off and nothing loaded: 404 "No models loaded"; JIT on, unknown model: 400."""
    sim = make_sim(server_config={"justInTimeModelLoading": False})
    up(sim, "server")
    status, raw, _ = _post(sim, "/v1/chat/completions", {"model": "x", "messages": []})
    assert status == 404 and "No models loaded" in json.loads(raw)["error"]["message"]
    jit = make_sim("jit")
    up(jit, "server")
    status, raw, _ = _post(jit, "/v1/chat/completions", {"model": "nobody/nothing", "messages": []})
    err = json.loads(raw)["error"]
    assert (status, err["code"]) == (400, "model_not_found")
    assert err["message"].startswith('Invalid model identifier "nobody/nothing"')


def test_jit_load_and_ttl_expiry(sim: SimInstall) -> None:
    """A request for a downloaded model JIT-loads it; a --ttl model is unloaded after its TTL."""
    up(sim, "server")
    status, _, _ = _post(sim, "/v1/chat/completions", {"model": "google/gemma-3-1b", "messages": []})
    assert status == 200
    assert [m["identifier"] for m in sim.loaded()] == ["google/gemma-3-1b"]
    assert sim.lms("load", ORNITH_PATH, "--exact", "--yes", "--ttl", "5").returncode == 0
    import time

    deadline = time.monotonic() + 5  # TTL 5 simulated s = 0.1 wall s at the test scale
    while time.monotonic() < deadline and any(m["modelKey"] == "ornith-1.0-35b-mlx-oq8" for m in sim.loaded()):
        time.sleep(0.02)
    assert [m["modelKey"] for m in sim.loaded()] == ["google/gemma-3-1b"]
