"""The simulated llmster or app process: start, serve, shut down; LM Studio's HTTP server
on and off (facts §1, §3, §4); the private RPC that the simulated `lms` calls."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.daemon.models import Models
from lmsupervisor.simulator.daemon.routes import _Server

# libuv's texts for the errors a listen meets, as Node prints them (`listen EADDRINUSE: ...`)
_LISTEN_ERRORS = {
    errno.EADDRINUSE: "EADDRINUSE: address already in use",
    errno.EADDRNOTAVAIL: "EADDRNOTAVAIL: address not available",
    errno.EAFNOSUPPORT: "EAFNOSUPPORT: address family not supported",
    errno.EACCES: "EACCES: permission denied",
}


class Daemon(Models):
    """llmster or the app: the process's lifecycle, LM Studio's HTTP server on and off, and
    the private RPC, over the state and models (:class:`.models.Models`)."""

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
