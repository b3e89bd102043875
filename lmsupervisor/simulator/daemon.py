"""The simulated LM Studio service: llmster (profile 0.4) or the headless app (0.3).

Run as ``python -m lmsupervisor.simulator.daemon [--run-as-service]`` with ``HOME`` set;
`lms` spawns it detached, as [js] ``findOrStartLlmster.ts`` spawns the real one.

It owns the state (HTTP server on/off, loaded instances) and serves two listeners:

- the **API port** (first free port of ``config.json`` ``api_ports``; real LM Studio uses
  41343, 52993, ...): ``GET /lms-status`` (0.4 only) -> ``{"package","version"}``,
  ``GET /lmstudio-greeting`` -> ``{"lmstudio":true}``, and ``POST /sim/rpc``, the
  simulator's private stand-in for LM Studio's websocket RPC, used by the simulated `lms`;
- LM Studio's **HTTP server**, once started, on the configured bind/port (facts §4).

Profile 0.4 publishes ``.internal/http-server.json`` ``{"host","pid","port"}`` (the API
port). Whether real LM Studio deletes that file on a clean exit is UNCONFIRMED; the
simulator leaves it behind, the harder case (a stale file naming a dead PID).

Uncertain choices, documented: ``server start`` on an already running server restarts
it with the new settings (clearing an injected HTTP hang); the settings a server starts
with are written back to ``http-server-config.json`` (which is how a plain
``lms server start`` resets the GUI's CORS and LAN choice, BT#1334); ``autoStartOnLaunch``
starts the server when the daemon starts; TTLs run in simulated time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lmsupervisor.simulator import common

_FOREVER = threading.Event()  # never set: a hung handler waits on it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], role: str, daemon: Daemon) -> None:
        self.role = role
        self.daemon = daemon
        super().__init__(address, _Handler)


class Daemon:
    """The service's state. Every mutation holds ``lock``."""

    def __init__(self, home: Path, is_app: bool) -> None:
        self.home = home
        self.is_app = is_app
        self.config = common.load_config(home)
        self.lock = threading.RLock()
        self.instances: list[dict[str, Any]] = []
        self.http: _Server | None = None
        self.http_settings: dict[str, Any] = {}
        self.hang_all = False
        self.hang_http = False
        self.last_jit: str | None = None
        self.api: _Server | None = None
        self.log_path = common.sim_dir(home) / "daemon.log"

    # -- helpers -------------------------------------------------------------
    def log(self, line: str) -> None:
        with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {line}\n")

    def server_log(self, line: str) -> None:
        """A line of LM Studio's server log (``server-logs/YYYY-MM/YYYY-MM-DD.1.log``)."""
        now = time.gmtime()
        folder = self.home / "server-logs" / time.strftime("%Y-%m", now)
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / time.strftime("%Y-%m-%d.1.log", now)).open("a") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S', now)}][INFO] {line}\n")

    def server_config(self) -> dict[str, Any]:
        found = common.read_json(self.home / ".internal" / "http-server-config.json", None)
        return found if isinstance(found, dict) else {}

    def version(self) -> str:
        return str(self.config["version"])

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        faults = common.load_faults(self.home)
        common.sleep_simulated(self.config, self.config["daemon_start_s"])
        time.sleep(float(faults.get("daemon_start_delay", 0)))  # wall seconds
        for port in self.config["api_ports"]:
            try:
                self.api = _Server(("127.0.0.1", int(port)), "api", self)
                break
            except OSError:
                continue
        if self.api is None:
            self.log(f"no free API port in {self.config['api_ports']}; exiting")
            sys.exit(1)
        api_port = self.api.server_address[1]
        if not self.is_app and self.config["profile"] != "0.3":
            common.write_json(
                self.home / ".internal" / "http-server.json",
                {"host": "127.0.0.1", "pid": os.getpid(), "port": api_port},
            )
        self.log(f"started pid={os.getpid()} api_port={api_port} app={self.is_app}")
        cfg = self.server_config()
        if cfg.get("autoStartOnLaunch") is True:
            self.start_http(
                int(cfg.get("port", 1234)),
                bool(cfg.get("cors", False)),
                str(cfg.get("networkInterface", "127.0.0.1")),
                persist=False,
            )
        threading.Thread(target=self._ttl_loop, daemon=True).start()

    def serve(self) -> None:
        assert self.api is not None  # noqa: S101 - start() exits when it has no port
        self.api.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        self.log("shutting down")
        with self.lock:
            if self.http is not None:
                self.http.shutdown()
                self.http.server_close()
        os._exit(0)

    def _ttl_loop(self) -> None:
        while True:
            time.sleep(0.05)
            now_ms = time.time() * 1000
            scale = float(self.config["time_scale"])
            with self.lock:
                for inst in list(self.instances):
                    ttl = inst.get("ttlMs")
                    if ttl is not None and now_ms - inst["lastUsedTime"] > ttl * scale:
                        self.instances.remove(inst)
                        self.server_log(f"Unloading model {inst['modelKey']} due to TTL expiration.")

    # -- HTTP server ---------------------------------------------------------
    def start_http(self, port: int, cors: bool, bind: str, persist: bool = True) -> str | None:
        """Start (or restart) the HTTP server; returns an error message or None."""
        with self.lock:
            if self.http is not None:
                self.http.shutdown()
                self.http.server_close()
                self.http = None
            self.hang_http = False
            common.sleep_simulated(self.config, self.config["server_start_s"])
            try:
                server = _Server((bind, port), "http", self)
            except OSError as exc:
                self.log(f"http server failed: {exc}")
                return f"listen EADDRINUSE: address already in use {bind}:{port}"
            self.http = server
            self.http_settings = {"port": port, "cors": cors, "networkInterface": bind}
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            if persist:
                cfg = self.server_config()
                cfg.update(self.http_settings)
                common.write_json(self.home / ".internal" / "http-server-config.json", cfg)
            self.server_log(f"[LM STUDIO SERVER] Success! HTTP server listening on port {port}")
            self.server_log("Server started.")
            if self.jit_enabled():
                self.server_log("Just-in-time model loading active.")
            return None

    def stop_http(self) -> int | None:
        with self.lock:
            if self.http is None:
                return None
            port = int(self.http_settings["port"])
            self.http.shutdown()
            self.http.server_close()
            self.http = None
            return port

    def jit_enabled(self) -> bool:
        return self.server_config().get("justInTimeModelLoading", True) is not False

    # -- models --------------------------------------------------------------
    def find_downloaded(self, key_or_path: str) -> dict[str, Any] | None:
        for m in common.downloaded_models(self.home):
            if key_or_path in (m["modelKey"], m["path"]):
                return m
        return None

    def load(self, params: dict[str, Any], jit: bool = False) -> dict[str, Any]:
        """Load a model; ``{"instance": ...}`` or ``{"error": message}``."""
        model = self.find_downloaded(str(params["modelKey"]))
        if model is None:
            return {"error": f"Model not found: {params['modelKey']}"}
        with self.lock:
            wanted = params.get("identifier")
            taken = {i["identifier"] for i in self.instances}
            if wanted and wanted in taken:
                return {"error": f'An instance with identifier "{wanted}" already exists.'}
        seconds = self.config["load_s_base"] + self.config["load_s_per_gb"] * (model["sizeBytes"] / 1e9)
        started = time.monotonic()
        common.sleep_simulated(self.config, seconds)
        failing = common.load_faults(self.home).get("fail_load", {})
        if isinstance(failing, dict) and model["modelKey"] in failing:
            message = failing[model["modelKey"]] or common.GUARDRAIL_ERROR
            self.log(f"load failed: {model['modelKey']}: {message}")
            return {"error": str(message)}
        with self.lock:
            taken = {i["identifier"] for i in self.instances}
            ident = wanted or model["modelKey"]
            n = 2
            while not wanted and ident in taken:  # BT#619: duplicates become <key>:2
                ident = f"{model['modelKey']}:{n}"
                n += 1
            ttl = params.get("ttl")
            inst = dict(model)
            inst.update(
                {
                    "identifier": ident,
                    "ttlMs": int(ttl) * 1000 if ttl else None,
                    "lastUsedTime": int(time.time() * 1000),
                    "contextLength": int(params.get("contextLength") or min(4096, model["maxContextLength"])),
                    "status": "idle",
                    "queued": 0,
                    "parallel": 4,
                }
            )
            if model["type"] == "embedding":
                for k in ("parallel",):
                    inst.pop(k)
            self.instances.append(inst)
            if jit:
                self.last_jit = ident
        self.log(f"loaded {ident} in {time.monotonic() - started:.3f}s")
        return {"instance": inst, "seconds": time.monotonic() - started}

    def unload(self, identifier: str) -> bool:
        with self.lock:
            for inst in self.instances:
                if identifier in (inst["identifier"],):
                    self.instances.remove(inst)
                    return True
        return False

    def resolve_instance(self, name: str | None) -> dict[str, Any] | None:
        with self.lock:
            for inst in self.instances:
                if name in (inst["identifier"], inst["modelKey"]):
                    return inst
            if len(self.instances) == 1:  # BT#619: with one model loaded, `model` is ignored
                return self.instances[0]
        return None

    # -- the private RPC (stand-in for LM Studio's websocket) ----------------
    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "info":
            return {"pid": os.getpid(), "isDaemon": not self.is_app, "version": self.version()}
        if method == "server_start":
            error = self.start_http(int(params["port"]), bool(params["cors"]), str(params["networkInterface"]))
            return {"error": error} if error else {"ok": True}
        if method == "server_stop":
            port = self.stop_http()
            return {"port": port} if port is not None else {"error": "The server is not running."}
        if method == "list_downloaded":
            return {"models": common.downloaded_models(self.home)}
        if method == "list_loaded":
            with self.lock:
                return {"models": [dict(i) for i in self.instances]}
        if method == "load":
            return self.load(params)
        if method == "unload":
            return {"found": self.unload(str(params["identifier"]))}
        if method == "unload_all":
            with self.lock:
                count = len(self.instances)
                self.instances.clear()
            return {"count": count}
        if method == "download":
            return self.download(str(params["model"]))
        if method == "shutdown":
            threading.Timer(0.05, self.shutdown).start()
            return {"ok": True}
        if method == "fault":
            self.hang_all = bool(params.get("hang", self.hang_all))
            self.hang_http = bool(params.get("http_hang", self.hang_http))
            if params.get("crash"):
                os._exit(1)
            return {"ok": True}
        return {"error": f"unknown method {method}"}

    def download(self, name: str) -> dict[str, Any]:
        for m in common.catalog(self.home):
            if name in (m["modelKey"], m["path"]):
                if common.is_downloaded(self.home, m):
                    return {"status": "already_downloaded", "modelKey": m["modelKey"]}
                common.sleep_simulated(self.config, self.config["download_s_per_gb"] * m["sizeBytes"] / 1e9)
                folder = common.models_dir(self.home) / m["path"]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "model.sim").write_text(m["modelKey"])
                return {"status": "completed", "modelKey": m["modelKey"]}
        return {"error": f"No model found matching {name!r} on the hub."}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing ------------------------------------------------------------
    def _maybe_hang(self) -> bool:
        """Block forever if a hang is injected; True if this server was stopped meanwhile.

        A stopped HTTP server also drops requests on kept-alive connections, as a real
        server that closed its sockets would.
        """
        d = self.server.daemon
        if d.hang_all or (self.server.role == "http" and d.hang_http):
            _FOREVER.wait()
        if self.server.role == "http" and self.server is not d.http:
            self.close_connection = True
            return True
        return False

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.server.role == "http" and self.server.daemon.http_settings.get("cors"):
            self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            found = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def _unexpected(self) -> None:
        # Facts §4: unknown routes answer HTTP 200 with an error body (BT#618, BT#1323).
        self._send_json(200, {"error": f"Unexpected endpoint or method. ({self.command} {self.path})"})

    def do_GET(self) -> None:
        if self._maybe_hang():
            return
        path = self.path.split("?", 1)[0]
        if self.server.role == "api":
            self._api_get(path)
        else:
            self._http_get(path)

    def do_POST(self) -> None:
        if self._maybe_hang():
            return
        path = self.path.split("?", 1)[0]
        body = self._body()
        if self.server.role == "api" and path == "/sim/rpc":
            method = str(body.get("method", ""))
            self._send_json(200, self.server.daemon.rpc(method, body.get("params") or {}))
        elif self.server.role == "http":
            self._http_post(path, body)
        else:
            self._unexpected()

    def do_DELETE(self) -> None:
        if self._maybe_hang():
            return
        self._unexpected()

    do_PUT = do_DELETE
    do_PATCH = do_DELETE

    # -- API port ------------------------------------------------------------
    def _api_get(self, path: str) -> None:
        d = self.server.daemon
        if path == "/lms-status" and d.config["profile"] != "0.3":
            package = "lmstudio" if d.is_app else "daemon"
            self._send_json(200, {"package": package, "version": d.version()})
        elif path == "/lmstudio-greeting":
            self._send_json(200, {"lmstudio": True})
        else:
            self._unexpected()

    # -- LM Studio's HTTP server ---------------------------------------------
    def _http_get(self, path: str) -> None:
        d = self.server.daemon
        with d.lock:
            loaded = [dict(i) for i in d.instances]
        downloaded = common.downloaded_models(d.home)
        loaded_keys = {i["modelKey"] for i in loaded}
        if path == "/lmstudio-greeting":
            self._send_json(200, {"lmstudio": True})
        elif path == "/v1/models":
            # Facts §4: JIT on lists every downloaded model, JIT off only the loaded ones.
            if d.jit_enabled():
                ids = [m["modelKey"] for m in downloaded]
                ids += [i["identifier"] for i in loaded if i["identifier"] not in ids]
            else:
                ids = [i["identifier"] for i in loaded]
            data = [{"id": i, "object": "model", "owned_by": "organization_owner"} for i in ids]
            self._send_json(200, {"data": data, "object": "list"})
        elif path == "/api/v0/models":
            data = []
            for m in downloaded:
                item = {
                    "id": m["modelKey"],
                    "object": "model",
                    "type": "embeddings" if m["type"] == "embedding" else ("vlm" if m.get("vision") else "llm"),
                    "publisher": m["publisher"],
                    "arch": m["architecture"],
                    "compatibility_type": "mlx" if m["format"] == "safetensors" else "gguf",
                    "quantization": m["quantization"]["name"],
                    "state": "loaded" if m["modelKey"] in loaded_keys else "not-loaded",
                    "max_context_length": m["maxContextLength"],
                }
                for inst in loaded:
                    if inst["modelKey"] == m["modelKey"]:
                        item["loaded_context_length"] = inst["contextLength"]
                data.append(item)
            self._send_json(200, {"object": "list", "data": data})
        elif path == "/api/v1/models" and d.config["profile"] != "0.3":
            models = []
            for m in downloaded:
                models.append(
                    {
                        "type": m["type"],
                        "publisher": m["publisher"],
                        "key": m["modelKey"],
                        "display_name": m["displayName"],
                        "architecture": m["architecture"],
                        "quantization": {
                            "name": m["quantization"]["name"],
                            "bits_per_weight": m["quantization"]["bits"],
                        },
                        "size_bytes": m["sizeBytes"],
                        "params_string": m["paramsString"],
                        "max_context_length": m["maxContextLength"],
                        "format": m["format"],
                        "capabilities": ["tool_use"] if m.get("trainedForToolUse") else [],
                        "loaded_instances": [
                            {"id": i["identifier"], "config": {"context_length": i["contextLength"]}}
                            for i in loaded
                            if i["modelKey"] == m["modelKey"]
                        ],
                    }
                )
            self._send_json(200, {"models": models})
        else:
            self._unexpected()

    def _model_for(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[int, Any] | None]:
        """The instance a request addresses, JIT-loading it if allowed; or an error reply."""
        d = self.server.daemon
        name = body.get("model")
        inst = d.resolve_instance(name if isinstance(name, str) else None)
        if inst is not None:
            inst["lastUsedTime"] = int(time.time() * 1000)
            return inst, None
        if not d.jit_enabled() or not isinstance(name, str):
            return None, (
                404,
                {
                    "error": {
                        "message": "No models loaded. Please load a model in the developer page or "
                        "use the 'lms load' command.",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": None,
                    }
                },
            )
        if d.find_downloaded(name) is None:
            names = ", ".join(m["modelKey"] for m in common.downloaded_models(d.home)[:2])
            return None, (
                400,
                {
                    "error": {
                        "message": f'Invalid model identifier "{name}". Please specify a valid '
                        f"downloaded model (e.g., {names}).",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                },
            )
        settings = common.read_json(d.home / "settings.json", {})
        ttl = body.get("ttl") or 3600
        if isinstance(settings, dict):
            jit_ttl = settings.get("developer", {}).get("jitModelTTL", {})
            if isinstance(jit_ttl, dict) and jit_ttl.get("enabled") is False:
                ttl = None
        if d.last_jit is not None:  # Auto-Evict: at most one JIT model
            d.unload(d.last_jit)
        result = d.load({"modelKey": name, "ttl": ttl}, jit=True)
        if "error" in result:
            return None, (
                400,
                {"error": {"message": result["error"], "type": "model_load_failed", "code": "model_load_failed"}},
            )
        return result["instance"], None

    def _http_post(self, path: str, body: dict[str, Any]) -> None:
        if path not in ("/v1/chat/completions", "/v1/responses", "/api/v0/chat/completions"):
            self._unexpected()
            return
        inst, error = self._model_for(body)
        if error is not None:
            self._send_json(*error)
            return
        assert inst is not None  # noqa: S101 - _model_for returns one or the other
        reply = f"Simulated reply from {inst['identifier']}."
        created = int(time.time())
        if path == "/v1/responses":
            rid = f"resp_{uuid.uuid4().hex[:24]}"
            if body.get("stream"):
                events = [
                    ("response.created", {"type": "response.created", "response": {"id": rid}}),
                    *[
                        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": w + " "})
                        for w in reply.split()
                    ],
                    (
                        "response.completed",
                        {"type": "response.completed", "response": {"id": rid, "status": "completed"}},
                    ),
                ]
                self._sse([f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events])
                return
            self._send_json(
                200,
                {
                    "id": rid,
                    "object": "response",
                    "created_at": created,
                    "status": "completed",
                    "model": inst["identifier"],
                    "output": [
                        {
                            "type": "message",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": reply, "annotations": []}],
                        }
                    ],
                },
            )
            return
        cid = "chatcmpl-" + uuid.uuid4().hex[:21]
        if body.get("stream"):
            chunks = []
            for n, word in enumerate(reply.split()):
                delta = {"role": "assistant", "content": word + " "} if n == 0 else {"content": " " + word}
                chunks.append(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": inst["identifier"],
                        "system_fingerprint": inst["identifier"],
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
                    }
                )
            chunks.append(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": inst["identifier"],
                    "system_fingerprint": inst["identifier"],
                    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                }
            )
            self._sse([f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"])
            return
        words = len(reply.split())
        self._send_json(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": inst["identifier"],
                "choices": [
                    {
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": reply},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
                "stats": {},
                "system_fingerprint": inst["identifier"],
            },
        )

    def _sse(self, frames: list[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for frame in frames:
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True


def main(argv: list[str] | None = None) -> None:
    """Entry point of the simulated llmster / app process."""
    args = sys.argv[1:] if argv is None else argv
    home = common.lmstudio_home()
    daemon = Daemon(home, is_app="--run-as-service" in args)
    signal.signal(signal.SIGTERM, lambda *_: daemon.shutdown())
    daemon.start()
    daemon.serve()


if __name__ == "__main__":
    main()
