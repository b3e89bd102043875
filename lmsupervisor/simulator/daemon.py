"""The simulated LM Studio service: llmster or the headless GUI app, per the install's profile.

Run as ``python -m lmsupervisor.simulator.daemon [--run-as-service]`` with ``HOME`` set;
`lms` spawns it detached, as [js] ``findOrStartLlmster.ts`` spawns the real one.

It owns the state (HTTP server on/off, loaded instances) and serves two listeners:

- the **API port** (first free port of ``config.json`` ``api_ports``; real LM Studio uses
  41343, 52993, ...): ``GET /lms-status`` (0.4 only) -> ``{"package","version"}``,
  ``GET /lmstudio-greeting`` -> ``{"lmstudio":true}``, and ``POST /sim/rpc``, the
  simulator's private stand-in for LM Studio's websocket RPC, used by the simulated `lms`;
- **LM Studio's websocket API** on both listeners (``ws://127.0.0.1:<port>/<namespace>``,
  facts §9), what the official SDKs and the real `lms` speak: :mod:`.wsapi`;
- LM Studio's **HTTP server**, once started, on the configured bind/port (facts §4):
  the greeting, ``/v1/models``, ``/v1/chat/completions`` (plain and SSE),
  ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``, REST v0, and on profiles
  with ``rest_v1`` the native ``/api/v1/models``, ``/load``, ``/unload``, ``/download``
  and ``/download/status/<job_id>`` (facts §4), behind an API token when
  ``config.json`` ``api_token`` is set (the greeting stays open: `lms` probes it without
  a token). Every bind is really bound on loopback: ``0.0.0.0`` on 127.0.0.1, ``::``
  (dual-stack in real LM Studio) on ::1 and 127.0.0.1 (see
  :func:`lmsupervisor.simulator.common.socket_hosts`).

Capabilities come from the profile row (:mod:`lmsupervisor.simulator.profiles`).
Profiles with ``publishes_server_info`` publish ``.internal/http-server.json`` ``{"host","pid","port"}`` (the API
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
import errno
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lmsupervisor.simulator import common, hardware, openai_api, profiles, wsapi

_FOREVER = threading.Event()  # never set: a hung handler waits on it
_TOKEN_RE = re.compile(r"sk-lm-[A-Za-z0-9]{8}:[A-Za-z0-9]{20}")  # [py] token regex, facts §4


def _iso(t: float) -> str:
    """``2025-10-03T15:33:23.496Z``, as REST v1 writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


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


# libuv's texts for the errors a listen meets, as Node prints them (`listen EADDRINUSE: ...`)
_LISTEN_ERRORS = {
    errno.EADDRINUSE: "EADDRINUSE: address already in use",
    errno.EADDRNOTAVAIL: "EADDRNOTAVAIL: address not available",
    errno.EAFNOSUPPORT: "EAFNOSUPPORT: address family not supported",
    errno.EACCES: "EACCES: permission denied",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], role: str, daemon: Daemon) -> None:
        self.role = role
        self.daemon = daemon
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class Daemon:
    """The service's state. Every mutation holds ``lock``."""

    def __init__(self, home: Path, is_app: bool) -> None:
        self.home = home
        self.is_app = is_app
        self.config = common.load_config(home)
        self.profile = profiles.get(str(self.config["profile"]))
        self.lock = threading.RLock()
        self.instances: list[dict[str, Any]] = []
        self.http: tuple[_Server, ...] = ()  # the HTTP server's listeners; empty while it is off
        self.http_settings: dict[str, Any] = {}
        self.hang_all = False
        self.hang_http = False
        self.last_jit: str | None = None
        self.api: _Server | None = None
        self.jobs: dict[str, dict[str, Any]] = {}  # REST v1 download jobs by job_id
        self.log_path = common.sim_dir(home) / "daemon.log"
        self.started = time.monotonic()  # reset once the API port is bound (gpu_late counts from there)
        self.surveys: dict[str, dict[str, Any]] = {}  # the last survey of each engine, by name@version
        self.on_gpu: dict[str, bool] = {}  # by instanceReference: whether it was loaded onto a GPU

    # -- helpers -------------------------------------------------------------
    def log(self, line: str) -> None:
        """Append ``line`` to ``<home>/.sim/daemon.log`` with the time and PID; never raises (an OSError is dropped)."""
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
        """``<home>/.internal/http-server-config.json`` as a dict (facts §2); ``{}`` when missing or corrupt."""
        found = common.read_json(self.home / ".internal" / "http-server-config.json", None)
        return found if isinstance(found, dict) else {}

    def version(self) -> str:
        """The app/llmster version this install reports (``/lms-status``, ``daemon up --json``; facts §3, §8)."""
        return str(self.config["version"])

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Bind the API port and start the service, as llmster or the app does when spawned (facts §1).

        Sleeps ``daemon_start_s`` simulated seconds plus the ``daemon_start_delay`` fault (wall
        seconds), binds the first free port of ``api_ports``, writes
        ``.internal/http-server.json`` ``{"host","pid","port"}`` on profiles that publish it,
        starts the HTTP server when ``autoStartOnLaunch`` is true, and starts the TTL thread.
        Exits the process with 1 (``SystemExit``) when no API port is free.
        """
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
        key2 = self.home / ".internal" / "lms-key-2"
        if not key2.is_file():  # the CLI's passkey half, made by the service on its first run ([lms] createClient.ts)
            key2.write_text(uuid.uuid4().hex, encoding="utf-8")
        if self.profile.publishes_server_info:
            common.write_json(
                self.home / ".internal" / "http-server.json",
                {"host": "127.0.0.1", "pid": os.getpid(), "port": api_port},
            )
        self.log(f"started pid={os.getpid()} api_port={api_port} app={self.is_app}")
        self.started = time.monotonic()
        self.survey({"type": "selected"})  # surveyed at start, kept until a scoped survey
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
        """Answer the API port until the process exits (blocks; :meth:`start` first)."""
        assert self.api is not None  # noqa: S101 - start() exits when it has no port
        self.api.serve_forever(poll_interval=0.05)

    def request_shutdown(self) -> None:
        """`requestShutdown()`: answer now, exit ``daemon_stop_s`` simulated seconds later."""
        threading.Timer(max(0.05, common.scaled(self.config, self.config["daemon_stop_s"])), self.shutdown).start()

    def shutdown(self) -> None:
        """Stop the HTTP server and exit the process with 0 at once (``os._exit``); the loaded models go with it."""
        self.log("shutting down")
        with self.lock:
            self._close_http()
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

    # -- hardware (see :mod:`.hardware`) ----------------------------------------
    def gpus_now(self) -> list[dict[str, Any]]:
        """The GPUs visible now (``gpu_lost``, ``gpu_late`` faults applied)."""
        return hardware.visible_gpus(
            hardware.load(self.home),
            common.load_faults(self.home),
            time.monotonic() - self.started,
            float(self.config["time_scale"]),
        )

    def survey(self, scope: Any) -> dict[str, Any]:
        """``client.runtime.surveyHardware(scope)`` in this profile's schema (1 or 2).

        ``scope`` None answers the kept survey of the selected engines (surveying any not
        surveyed yet); ``{"type": "selected"}`` (`--refresh`) re-surveys them, ``{"type":
        "all"}`` every installed engine, ``{"type": "custom", "engines": [{name, version}]}``
        those named."""
        hw = hardware.load(self.home)
        if isinstance(scope, dict) and scope.get("type") == "all":
            engines, fresh = list(hw["engines"]), True
        elif isinstance(scope, dict) and scope.get("type") == "custom":
            wanted = {f"{e.get('name')}@{e.get('version')}" for e in scope.get("engines") or [] if isinstance(e, dict)}
            engines, fresh = [e for e in hw["engines"] if hardware.engine_key(e) in wanted], True
        else:
            engines, fresh = hardware.selected_engines(hw), isinstance(scope, dict)
        gpus = self.gpus_now()
        with self.lock:
            for engine in engines:
                key = hardware.engine_key(engine)
                if fresh or key not in self.surveys:
                    self.surveys[key] = hardware.survey_engine(engine, hw, gpus)
            result = hardware.survey_result([self.surveys[hardware.engine_key(e)] for e in engines])
        return hardware.as_schema(result, self.profile.survey_schema or 2)

    def engines(self) -> dict[str, Any]:
        """``{"engines": [RuntimeEngineInfo], "selections": {format: {name, version}}}``:
        ``client.runtime.engine.list()`` and ``getSelections()``."""
        hw = hardware.load(self.home)
        selections = {}
        for fmt, key in hw["selected"].items():
            name, _, version = str(key).rpartition("@")
            selections[fmt] = {"name": name, "version": version}
        return {"engines": [hardware.engine_info(e, hw) for e in hw["engines"]], "selections": selections}

    def select_engine(self, name: str, version: str, model_format: str) -> dict[str, Any]:
        """``client.runtime.engine.select({name, version}, format)``: persisted in
        ``hardware.json``; ``{"error"}`` when no such engine is installed."""
        with self.lock:
            hw = hardware.load(self.home)
            if hardware.find_engine(hw, f"{name}@{version}") is None:
                return {"error": f"No installed runtime extension {name}@{version}."}
            hw["selected"] = {**hw["selected"], model_format: f"{name}@{version}"}
            hardware.save(self.home, hw)
        self.log(f"runtime selected: {name}@{version} for {model_format}")
        return {"ok": True}

    def seconds_per_token(self, inst: dict[str, Any]) -> float:
        """Wall seconds one generated token of ``inst`` takes (0: at once), see :func:`hardware.speed`."""
        rate = hardware.speed(
            hardware.load(self.home),
            common.load_faults(self.home),
            self.on_gpu.get(str(inst.get("instanceReference")), False),
            bool(self.gpus_now()),
        )
        return common.scaled(self.config, 1.0 / rate) if rate > 0 else 0.0

    # -- HTTP server ---------------------------------------------------------
    def start_http(self, port: int, cors: bool, bind: str | None, persist: bool = True) -> str | None:
        """Start (or restart) the HTTP server; returns an error message or None.

        ``bind`` None: the `lms` predates ``--bind`` and sent no ``networkInterface``, so the
        saved one is kept (facts §8).
        """
        if bind is None:
            bind = str(self.server_config().get("networkInterface") or "127.0.0.1")
        with self.lock:
            self._close_http()
            self.hang_http = False
            common.sleep_simulated(self.config, self.config["server_start_s"])
            servers: list[_Server] = []
            for host in common.socket_hosts(bind):
                try:
                    servers.append(_Server((host, port), "http", self))
                except OSError as exc:
                    self.log(f"http server failed on {host}: {exc}")
                    for bound in servers:
                        bound.server_close()
                    text = _LISTEN_ERRORS.get(exc.errno or 0, _LISTEN_ERRORS[errno.EADDRINUSE])
                    return f"listen {text} {bind}:{port}"
            self.http = tuple(servers)
            self.http_settings = {"port": port, "cors": cors, "networkInterface": bind}
            for server in servers:
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
        """`lms server stop` (facts §3): stop the HTTP server; the port it served, or None when it was not running."""
        with self.lock:
            if not self.http:
                return None
            port = int(self.http_settings["port"])
            self._close_http()
            return port

    def _close_http(self) -> None:
        """Stop every listener of the HTTP server (the caller holds ``lock``)."""
        for server in self.http:
            server.shutdown()
            server.server_close()
        self.http = ()

    def jit_enabled(self) -> bool:
        """True unless ``http-server-config.json`` sets ``justInTimeModelLoading`` to false (default on, facts §2)."""
        return self.server_config().get("justInTimeModelLoading", True) is not False

    # -- models --------------------------------------------------------------
    def find_downloaded(self, key_or_path: str) -> dict[str, Any] | None:
        """The downloaded model whose ``modelKey`` or ``path`` is ``key_or_path``, in `lms ls --json` shape, or None."""
        for m in common.downloaded_models(self.home):
            if key_or_path in (m["modelKey"], m["path"]):
                return m
        return None

    def load(
        self, params: dict[str, Any], jit: bool = False, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        """Load a model; ``{"instance": ...}`` or ``{"error": message}``.

        ``params``: ``modelKey`` (key or path), ``identifier``, ``ttl`` (seconds),
        ``contextLength``. ``on_progress`` gets 0.25, 0.5, 0.75 as the simulated load time
        passes (the websocket ``loadModel`` channel's ``progress``). The instance carries a
        fresh ``instanceReference`` (websocket only: `lms ps --json` does not show it).
        """
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
        for quarter in (0.25, 0.5, 0.75):
            common.sleep_simulated(self.config, seconds / 4)
            if on_progress is not None:
                on_progress(quarter)
        common.sleep_simulated(self.config, seconds / 4)
        failing = common.load_faults(self.home).get("fail_load", {})
        if isinstance(failing, dict) and model["modelKey"] in failing:
            message = failing[model["modelKey"]] or profiles.guardrail_text(self.profile, int(model["sizeBytes"]))
            self.log(f"load failed: {model['modelKey']}: {message}")
            return {"error": str(message)}
        on_gpu = (
            str(params.get("gpu") or "").lower() != "off"
            and hardware.gpu_engine_selected(hardware.load(self.home))
            and bool(self.gpus_now())
        )
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
                    "instanceReference": uuid.uuid4().hex,
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
            self.on_gpu[inst["instanceReference"]] = on_gpu
            self.instances.append(inst)
            if jit:
                self.last_jit = ident
        self.log(f"loaded {ident} in {time.monotonic() - started:.3f}s on the {'GPU' if on_gpu else 'CPU'}")
        return {"instance": inst, "seconds": time.monotonic() - started}

    def unload(self, identifier: str) -> bool:
        """`lms unload <id>`: remove the instance called ``identifier``; False when there is none.

        `lms` then prints "Model Not Found" and still exits 0 (facts §3)."""
        with self.lock:
            for inst in self.instances:
                if identifier in (inst["identifier"],):
                    self.instances.remove(inst)
                    return True
        return False

    def resolve_instance(self, name: str | None, kind: str = "llm") -> dict[str, Any] | None:
        """The loaded ``kind`` instance called ``name`` (identifier or key), or the only one."""
        with self.lock:
            candidates = [i for i in self.instances if i["type"] == kind]
            for inst in candidates:
                if name in (inst["identifier"], inst["modelKey"]):
                    return inst
            if len(candidates) == 1:  # BT#619: with one model loaded, `model` is ignored
                return candidates[0]
        return None

    # -- the private RPC (stand-in for LM Studio's websocket) ----------------
    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer one call of ``POST /sim/rpc``, the simulator's stand-in for LM Studio's websocket RPC.

        ``method`` is one of ``info`` (``{"pid","isDaemon","version"}``, as ``client.system.getInfo()``,
        facts §5), ``server_start``, ``server_stop``, ``list_downloaded``, ``list_loaded`` (``{"models":
        [...]}`` in `ls`/`ps --json` shape, facts §3), ``load``, ``unload``, ``unload_all``,
        ``download``, ``shutdown`` (``requestShutdown()``), the runtime namespace's
        ``list_engines`` (:meth:`engines`), ``select_engine{name,version,modelFormatName}``
        and ``survey{scope}`` (``{"result": RuntimeHardwareSurveyResult}``), ``generation``
        (the driver's: ``{identifier: {"on_gpu", "seconds_per_token"}}``), and ``fault`` (``hang``, ``http_hang``,
        ``crash``: the test driver's faults). Failures come back as ``{"error": message}``, never
        raised; ``crash`` exits the process with 1 instead of answering.
        """
        if method == "info":
            return {"pid": os.getpid(), "isDaemon": not self.is_app, "version": self.version()}
        if method == "server_start":
            bind = params.get("networkInterface")
            error = self.start_http(int(params["port"]), bool(params["cors"]), str(bind) if bind else None)
            return {"error": error} if error else {"ok": True}
        if method == "server_stop":
            port = self.stop_http()
            return {"port": port} if port is not None else {"error": "The server is not running."}
        if method == "list_downloaded":
            return {"models": common.downloaded_models(self.home)}
        if method == "list_loaded":
            with self.lock:
                return {"models": [{k: v for k, v in i.items() if k != "instanceReference"} for i in self.instances]}
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
            self.request_shutdown()
            return {"ok": True}
        if method == "list_engines":
            return self.engines()
        if method == "select_engine":
            return self.select_engine(str(params["name"]), str(params["version"]), str(params["modelFormatName"]))
        if method == "survey":
            return {"result": self.survey(params.get("scope"))}
        if method == "generation":  # the test driver's view: where each instance runs, how fast
            with self.lock:
                instances = list(self.instances)
            return {
                i["identifier"]: {
                    "on_gpu": self.on_gpu.get(i["instanceReference"], False),
                    "seconds_per_token": self.seconds_per_token(i),
                }
                for i in instances
            }
        if method == "fault":
            self.hang_all = bool(params.get("hang", self.hang_all))
            self.hang_http = bool(params.get("http_hang", self.hang_http))
            if params.get("crash"):
                os._exit(1)
            return {"ok": True}
        return {"error": f"unknown method {method}"}

    def start_download(self, name: str) -> dict[str, Any] | None:
        """REST v1 ``/download``: a job that completes after the simulated download time."""
        model = next((m for m in common.catalog(self.home) if name in (m["modelKey"], m["path"])), None)
        if model is None:
            return None
        if common.is_downloaded(self.home, model):
            return {"status": "already_downloaded"}
        job_id = f"job_{uuid.uuid4().hex[:10]}"
        seconds = common.scaled(self.config, self.config["download_s_per_gb"] * model["sizeBytes"] / 1e9)
        job: dict[str, Any] = {"model": model, "started": time.time(), "seconds": seconds, "completed": None}
        with self.lock:
            self.jobs[job_id] = job

        def finish() -> None:
            self._mark_downloaded(model)
            job["completed"] = time.time()

        threading.Timer(seconds, finish).start()
        return {
            "job_id": job_id,
            "status": "downloading",
            "total_size_bytes": model["sizeBytes"],
            "started_at": _iso(job["started"]),
        }

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        """REST v1 ``/download/status/:job_id`` with bytes, rate and ETA (wall time)."""
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            return None
        total = int(job["model"]["sizeBytes"])
        status: dict[str, Any] = {"job_id": job_id, "total_size_bytes": total, "started_at": _iso(job["started"])}
        if job["completed"] is not None:
            return {**status, "status": "completed", "downloaded_bytes": total, "completed_at": _iso(job["completed"])}
        seconds = max(float(job["seconds"]), 1e-6)
        done = min(total, int(total * (time.time() - job["started"]) / seconds))
        return {
            **status,
            "status": "downloading",
            "downloaded_bytes": done,
            "bytes_per_second": round(total / seconds),
            "estimated_completion": _iso(job["started"] + seconds),
        }

    def _mark_downloaded(self, model: dict[str, Any]) -> None:
        folder = common.models_dir(self.home) / model["path"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.sim").write_text(model["modelKey"])

    def download(self, name: str) -> dict[str, Any]:
        """`lms get <name>` (facts §3): download ``name`` (a ``modelKey`` or ``path`` of the hub catalogue).

        Blocks for ``download_s_per_gb`` simulated seconds per GB, then returns ``{"status":
        "completed", "modelKey"}``; ``{"status": "already_downloaded", "modelKey"}`` when on disk,
        ``{"error": message}`` when the hub has no such model.
        """
        for m in common.catalog(self.home):
            if name in (m["modelKey"], m["path"]):
                if common.is_downloaded(self.home, m):
                    return {"status": "already_downloaded", "modelKey": m["modelKey"]}
                common.sleep_simulated(self.config, self.config["download_s_per_gb"] * m["sizeBytes"] / 1e9)
                self._mark_downloaded(m)
                return {"status": "completed", "modelKey": m["modelKey"]}
        return {"error": f"No model found matching {name!r} on the hub."}


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the simulated llmster / app process."""
    args = sys.argv[1:] if argv is None else argv
    home = common.lmstudio_home()
    profile = profiles.get(str(common.load_config(home)["profile"]))
    # Spawned by lms from app-install-location.json (--run-as-service) or launched by the
    # user: either way the GUI app of an app profile.
    daemon = Daemon(home, is_app="--run-as-service" in args or profile.is_app)
    signal.signal(signal.SIGTERM, lambda *_: daemon.shutdown())
    daemon.start()
    daemon.serve()


if __name__ == "__main__":
    main()
