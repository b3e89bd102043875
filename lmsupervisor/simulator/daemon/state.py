"""The simulated service's state: its settings and logs, and the machine's hardware as the
service sees it (:mod:`lmsupervisor.simulator.hardware`)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmsupervisor.simulator import common, hardware, profiles

if TYPE_CHECKING:
    from lmsupervisor.simulator.daemon.routes import _Server


class State:
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

    def jit_enabled(self) -> bool:
        """True unless ``http-server-config.json`` sets ``justInTimeModelLoading`` to false (default on, facts §2)."""
        return self.server_config().get("justInTimeModelLoading", True) is not False

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
