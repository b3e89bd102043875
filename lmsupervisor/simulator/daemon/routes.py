"""The HTTP handler of both listeners: the API port (``/lms-status``, the greeting,
``/sim/rpc``), LM Studio's HTTP server (OpenAI-compatible, REST v0 and v1, facts §4), and
the websocket upgrade on either (:mod:`lmsupervisor.simulator.wsapi`)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from lmsupervisor.simulator import common, openai_api, wsapi

if TYPE_CHECKING:
    from lmsupervisor.simulator.daemon.service import Daemon

_FOREVER = threading.Event()  # never set: a hung handler waits on it
_TOKEN_RE = re.compile(r"sk-lm-[A-Za-z0-9]{8}:[A-Za-z0-9]{20}")  # [py] token regex, facts §4


def _v1_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": "invalid_request", "code": code, "message": message}}


def _v0_item(m: dict[str, Any], loaded: list[dict[str, Any]]) -> dict[str, Any]:
    """A REST v0 model (facts §4): ``state`` loaded / not-loaded, no instance ids."""
    item = {
        "id": m["modelKey"],
        "object": "model",
        "type": "embeddings" if m["type"] == "embedding" else ("vlm" if m.get("vision") else "llm"),
        "publisher": m["publisher"],
        "arch": m["architecture"],
        "compatibility_type": "mlx" if m["format"] == "safetensors" else "gguf",
        "quantization": m["quantization"]["name"],
        "state": "loaded" if any(i["modelKey"] == m["modelKey"] for i in loaded) else "not-loaded",
        "max_context_length": m["maxContextLength"],
    }
    for inst in loaded:
        if inst["modelKey"] == m["modelKey"]:
            item["loaded_context_length"] = inst["contextLength"]
    return item


def _v1_item(m: dict[str, Any], loaded: list[dict[str, Any]]) -> dict[str, Any]:
    """A REST v1 model (facts §4): non-empty ``loaded_instances`` means loaded."""
    instances = []
    for i in loaded:
        if i["modelKey"] == m["modelKey"]:
            config = {"context_length": i["contextLength"]}
            if m["type"] == "llm":
                config["parallel"] = i.get("parallel", 4)
            instances.append({"id": i["identifier"], "config": config})
    item = {
        "type": m["type"],
        "publisher": m["publisher"],
        "key": m["modelKey"],
        "display_name": m["displayName"],
        "architecture": m["architecture"],
        "quantization": {"name": m["quantization"]["name"], "bits_per_weight": m["quantization"]["bits"]},
        "size_bytes": m["sizeBytes"],
        "params_string": m["paramsString"],
        "max_context_length": m["maxContextLength"],
        "format": m["format"],
        "capabilities": ["tool_use"] if m.get("trainedForToolUse") else [],
        "loaded_instances": instances,
    }
    if m["type"] == "embedding":  # [docs] list.md: architecture is absent for embedding models
        item.pop("architecture")
    return item


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], role: str, daemon: Daemon) -> None:
        self.role = role
        self.daemon = daemon
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request (undeclared in typeshed)
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on every connection, as LM Studio's Node/bun server has (Node's http
    # `noDelay` defaults to true since v18, nodejs/node#42163). Without it a kept-alive
    # request waits ~40 ms (Nagle against the client's delayed ACK: the head and the body
    # are two writes), which a real server never adds.
    disable_nagle_algorithm = True

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
        if self.server.role == "http" and self.server not in d.http:
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
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            # The request head again, as sent (CRLF): the websockets library parses it itself.
            head = self.raw_requestline + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self.headers.items())
            wsapi.serve(self.server.daemon, self.connection, head + b"\r\n", path, self.server.role == "http")
            self.close_connection = True
            return
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
        self._body()  # read, so a kept-alive connection's next request starts in the right place
        if self.server.role == "http" and not self._authorized():  # every route but the greeting
            return
        self._unexpected()

    do_PUT = do_DELETE
    do_PATCH = do_DELETE

    # -- API port ------------------------------------------------------------
    def _api_get(self, path: str) -> None:
        d = self.server.daemon
        if path == "/lms-status" and d.profile.probe == "lms-status":
            package = "lmstudio" if d.is_app else "daemon"
            self._send_json(200, {"package": package, "version": d.version()})
        elif path == "/lmstudio-greeting":
            self._send_json(200, {"lmstudio": True})
        else:
            self._unexpected()

    # -- LM Studio's HTTP server ---------------------------------------------
    def _authorized(self) -> bool:
        """API-token mode (facts §4): without the right ``Bearer`` token, answer 401 and False.

        Bodies as users quote them: a missing token names the header; a wrong one is
        "Malformed" when it does not look like ``sk-lm-<8>:<20>`` ([py] regex), "Invalid"
        otherwise (that second wording is the simulator's).
        """
        d = self.server.daemon
        token = d.config.get("api_token")
        if not token or not d.profile.api_tokens:
            return True
        header = self.headers.get("Authorization") or ""
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if given == token:
            return True
        if not given:
            message = (
                "An LM Studio API token is required to make requests to this server, but none was provided "
                "using the Authorization header using the 'Bearer' scheme. You can create a token in the "
                "Developer page of LM Studio."
            )
        elif not _TOKEN_RE.fullmatch(given):
            message = f"Malformed LM Studio API token provided: {given[:10]}... Ensure you are using a valid token."
        else:
            message = f"Invalid LM Studio API token provided: {given[:10]}... Ensure you are using a valid token."
        self._send_json(401, {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}})
        return False

    def _http_get(self, path: str) -> None:
        d = self.server.daemon
        if path == "/lmstudio-greeting":  # open even with a token: `lms server start` probes it
            self._send_json(200, {"lmstudio": True})
            return
        if not self._authorized():
            return
        with d.lock:
            loaded = [dict(i) for i in d.instances]
        downloaded = common.downloaded_models(d.home)
        if path == "/v1/models":
            # Facts §4: JIT on lists every downloaded model, JIT off only the loaded ones.
            if d.jit_enabled():
                ids = [m["modelKey"] for m in downloaded]
                ids += [i["identifier"] for i in loaded if i["identifier"] not in ids]
            else:
                ids = [i["identifier"] for i in loaded]
            data = [{"id": i, "object": "model", "owned_by": "organization_owner"} for i in ids]
            self._send_json(200, {"data": data, "object": "list"})
        elif path == "/api/v0/models":
            self._send_json(200, {"object": "list", "data": [_v0_item(m, loaded) for m in downloaded]})
        elif path.startswith("/api/v0/models/"):
            name = path.removeprefix("/api/v0/models/")
            found = next((m for m in downloaded if name in (m["modelKey"], m["path"])), None)
            if found is None:
                self._send_json(404, {"error": f"Model {name} not found"})
            else:
                self._send_json(200, _v0_item(found, loaded))
        elif path == "/api/v1/models" and d.profile.rest_v1:
            self._send_json(200, {"models": [_v1_item(m, loaded) for m in downloaded]})
        elif path.startswith("/api/v1/models/download/status/") and d.profile.rest_v1:
            job = d.job_status(path.rsplit("/", 1)[-1])
            if job is None:
                self._send_json(404, _v1_error("not_found", f"No download job with id {path.rsplit('/', 1)[-1]}"))
            else:
                self._send_json(200, job)
        else:
            self._unexpected()

    def _model_for(
        self, body: dict[str, Any], kind: str = "llm"
    ) -> tuple[dict[str, Any] | None, tuple[int, Any] | None]:
        """The ``kind`` instance a request addresses, JIT-loading it if allowed; or an error reply."""
        d = self.server.daemon
        name = body.get("model")
        inst = d.resolve_instance(name if isinstance(name, str) else None, kind)
        if inst is not None:
            inst["lastUsedTime"] = int(time.time() * 1000)
            return inst, None
        if not d.jit_enabled() or not isinstance(name, str):
            return None, (404, {"error": dict(d.profile.no_models_error)})
        model = d.find_downloaded(name)
        if model is None:
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
        if model["type"] != kind:  # the simulator's wording: the real one is UNCONFIRMED
            return None, (
                400,
                {
                    "error": {
                        "message": f'Model "{name}" is an {model["type"]} model; this endpoint needs an {kind} model.',
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": None,
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
        if not self._authorized():
            return
        d = self.server.daemon
        if path.startswith("/api/v1/models/") and d.profile.rest_v1:
            self._rest_v1_post(path.removeprefix("/api/v1/models/"), body)
            return
        endpoints = {
            "/v1/chat/completions": "chat",
            "/api/v0/chat/completions": "chat",
            "/v1/completions": "completion",
            "/api/v0/completions": "completion",
            "/v1/embeddings": "embedding",
            "/api/v0/embeddings": "embedding",
            "/v1/responses": "response",
        }
        kind = endpoints.get(path)
        if kind is None:
            self._unexpected()
            return
        inst, error = self._model_for(body, "embedding" if kind == "embedding" else "llm")
        if error is not None:
            self._send_json(*error)
            return
        assert inst is not None  # noqa: S101 - _model_for returns one or the other
        ident, stream = str(inst["identifier"]), bool(body.get("stream"))
        broken = common.load_faults(d.home).get("fail_answer", {})
        if isinstance(broken, dict) and ident in broken:  # loaded, but it cannot answer
            message = str(broken[ident] or "Model crashed while generating (exit code 134)")
            self._send_json(500, {"error": {"message": message, "type": "server_error", "code": None}})
            return
        if not inst.get("trainedForToolUse"):  # only tool-capable models call tools (toolcalls.py)
            body = {k: v for k, v in body.items() if k != "tools"}
        if kind == "embedding":
            answer = openai_api.embeddings(ident, body)
            if answer is None:
                self._send_json(400, {"error": {"message": "'input' must be a string or an array of strings."}})
            else:
                self._send_json(200, answer)
            return
        # generation takes its time: per token on the GPU, slower on the CPU (hardware.py)
        per_token = d.seconds_per_token(inst)
        if kind == "response" and stream:
            self._sse(
                [f"event: {e}\ndata: {json.dumps(data)}\n\n" for e, data in openai_api.response_events(ident, body)],
                per_token,
            )
        elif kind == "response":
            answer = openai_api.response(ident, body)
            time.sleep(per_token * answer["usage"]["output_tokens"])
            self._send_json(200, answer)
        elif stream:
            chunks = (openai_api.chat_chunks if kind == "chat" else openai_api.completion_chunks)(ident, body)
            self._sse([f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"], per_token)
        else:
            answer = (openai_api.chat_completion if kind == "chat" else openai_api.completion)(ident, body)
            time.sleep(per_token * answer["usage"]["completion_tokens"])
            self._send_json(200, answer)

    def _rest_v1_post(self, action: str, body: dict[str, Any]) -> None:
        """``POST /api/v1/models/{load,unload,download}`` (facts §4, [docs] 2_rest/*).

        The documented load parameters are ``model``, ``context_length`` and
        ``echo_load_config`` (plus engine settings); anything else (``identifier``,
        ``ttl``) is ignored, so the instance id is the key, then ``key:2``... Error bodies
        are the simulator's, in the shape of LM Studio's token error.
        """
        d = self.server.daemon
        name = body.get("model")
        if action == "load":
            if not isinstance(name, str) or d.find_downloaded(name) is None:
                self._send_json(404, _v1_error("model_not_found", f'Model "{name}" not found.'))
                return
            context = body.get("context_length")
            result = d.load({"modelKey": name, "contextLength": context if isinstance(context, int) else None})
            if "error" in result:
                self._send_json(500, _v1_error("model_load_failed", str(result["error"])))
                return
            inst = result["instance"]
            reply: dict[str, Any] = {
                "type": inst["type"],
                "instance_id": inst["identifier"],
                "load_time_seconds": round(float(result["seconds"]), 3),
                "status": "loaded",
            }
            if body.get("echo_load_config"):
                reply["load_config"] = {"context_length": inst["contextLength"]}
            self._send_json(200, reply)
        elif action == "unload":
            instance_id = body.get("instance_id")
            if isinstance(instance_id, str) and d.unload(instance_id):
                self._send_json(200, {"instance_id": instance_id})
            else:
                self._send_json(404, _v1_error("model_not_found", f'No loaded model instance "{instance_id}".'))
        elif action == "download":
            job = d.start_download(name) if isinstance(name, str) else None
            if job is None:
                self._send_json(404, _v1_error("model_not_found", f"No model found matching {name!r} on the hub."))
            else:
                self._send_json(200, job)
        else:
            self._unexpected()

    def _sse(self, frames: list[str], per_frame: float = 0.0) -> None:
        """Send ``frames`` as server-sent events, ``per_frame`` wall seconds apart (generation time)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for frame in frames:
            if per_frame > 0:
                time.sleep(per_frame)
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True
