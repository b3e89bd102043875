"""Loaded instances and downloads: what `lms load/unload/get`, REST and the websocket API share."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lmsupervisor.simulator import common, hardware, profiles
from lmsupervisor.simulator.daemon.state import State


def _iso(t: float) -> str:
    """``2025-10-03T15:33:23.496Z``, as REST v1 writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Models(State):
    """The loaded instances (load, unload, TTL, the JIT model) and downloads from the simulated hub."""

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
