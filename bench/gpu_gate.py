"""The GPU gate's figures (issue 17): per scenario, on a real `lmsupervisor run` against the
simulator, the wall seconds from the fault to the problem in ``GET /v1/status``, and from
the GPU's return to ``ready``.

Scenarios: ``late`` (the GPU driver is there ``--late`` s after the daemon starts: the
problem from the supervisor's start, ready from the GPU's appearance), ``lost`` (the GPU
goes and the daemon dies while ready, then the GPU is back), ``cpu`` (``[gpu] require =
false`` without a GPU: start to the warning, start to ready). The simulator's time scale
is ``--time-scale`` (model loads are scaled; the supervisor's own delays are the
config's, in wall seconds: restart backoff 0.1..1 s, so re-surveys at most 1 s apart).

    .venv/bin/python bench/gpu_gate.py [--runs 3] [--late 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall, create_install

CONFIG = """
[health]
interval = 0.5
timeout = 1
[restart]
initial_delay = 0.1
max_delay = 1
[gpu]
wait = 60
{extra}
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""


def codes(snap: dict[str, Any]) -> set[str]:
    return {p["code"] for p in snap["problems"]}


class Run:
    """`lmsupervisor run` against ``sim`` with its socket in ``tmp``."""

    def __init__(self, sim: SimInstall, tmp: Path, extra: str = "") -> None:
        self.sock = tmp / "s.sock"
        config = tmp / "c.toml"
        config.write_text(CONFIG.format(extra=extra), encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
            env={**sim.env(), "LMSUPERVISOR_SOCKET": str(self.sock)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 120.0) -> float:
        """Poll the status every 20 ms until ``check`` holds; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check(request(self.sock, "GET", "/v1/status", timeout=5)[1]):
                    return time.monotonic()
            except StatusSocketError:
                pass
            time.sleep(0.02)
        raise SystemExit(f"condition not met within {timeout:g} s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def late(tmp: Path, scale: float, seconds: float) -> tuple[float, float]:
    sim = create_install(tmp / "home", time_scale=scale)
    sim.gpu_late(seconds / scale)
    began = time.monotonic()
    run = Run(sim, tmp)
    try:
        problem = run.until(lambda s: "gpu_missing" in codes(s))
        ready = run.until(lambda s: s["state"] == "ready")
        pid = request(run.sock, "GET", "/v1/status", timeout=5)[1]["lmstudio"]["daemon_pid"]
        visible = psutil.Process(pid).create_time() + seconds  # wall time the GPU appeared
        return problem - began, ready + (time.time() - time.monotonic()) - visible
    finally:
        run.stop()
        sim.stop()


def lost(tmp: Path, scale: float) -> tuple[float, float]:
    sim = create_install(tmp / "home", time_scale=scale)
    run = Run(sim, tmp)
    try:
        run.until(lambda s: s["state"] == "ready")
        fault = time.monotonic()
        sim.lose_gpu()
        sim.crash_daemon()
        problem = run.until(lambda s: "gpu_missing" in codes(s))
        time.sleep(1.0)  # a while without the GPU
        back = time.monotonic()
        sim.restore_gpu()
        ready = run.until(lambda s: s["state"] == "ready")
        return problem - fault, ready - back
    finally:
        run.stop()
        sim.stop()


def cpu(tmp: Path, scale: float) -> tuple[float, float]:
    sim = create_install(tmp / "home", time_scale=scale)
    sim.lose_gpu()
    began = time.monotonic()
    run = Run(sim, tmp, "require = false")
    try:
        problem = run.until(lambda s: "gpu_missing" in codes(s))
        ready = run.until(lambda s: s["state"] == "ready")
        return problem - began, ready - began
    finally:
        run.stop()
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--late", type=float, default=3.0, help="wall seconds the GPU is late after the daemon starts")
    parser.add_argument("--time-scale", type=float, default=0.02)
    args = parser.parse_args()
    print(f"simulator time scale {args.time_scale:g}; {args.runs} runs each; seconds (median, max)")
    scenarios: dict[str, Callable[[Path], tuple[float, float]]] = {
        f"late {args.late:g} s (start -> gpu_missing; GPU there -> ready)": lambda t: late(
            t, args.time_scale, args.late
        ),
        "lost + daemon crash (fault -> gpu_missing; GPU back -> ready)": lambda t: lost(t, args.time_scale),
        "require = false, no GPU (start -> warning; start -> ready)": lambda t: cpu(t, args.time_scale),
    }
    for name, scenario in scenarios.items():
        firsts, seconds = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="lmsv-gpu", dir="/tmp") as tmp:
                a, b = scenario(Path(tmp))
            firsts.append(a)
            seconds.append(b)
        print(
            f"{name}: {statistics.median(firsts):.2f} / {max(firsts):.2f}; "
            f"{statistics.median(seconds):.2f} / {max(seconds):.2f}"
        )


if __name__ == "__main__":
    main()
