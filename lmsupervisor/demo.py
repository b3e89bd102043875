"""`lmsupervisor demo`: the whole loop against a simulated LM Studio, in under a minute.

Makes a simulated LM Studio 0.4 in a temporary folder, supervises it with two declared
models, prints each state change as it happens, kills the simulated daemon once
(``kill -9``) to show the recovery, then stops, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import psutil

from lmsupervisor import logs
from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig, ServerConfig
from lmsupervisor.lmstudio.install import Platform
from lmsupervisor.run import build_supervisor
from lmsupervisor.simulator.home import SimInstall, create_install

TIME_SCALE = 0.25  # simulated LM Studio runs 4x faster than a real machine
DEADLINE = 50.0  # seconds: the demo gives up on a phase after this


def _say(started: float, text: str) -> None:
    sys.stdout.write(f"[{time.monotonic() - started:6.2f}s] {text}\n")
    sys.stdout.flush()


async def _demo(sim: SimInstall) -> int:
    cfg = Config(
        server=ServerConfig(start_timeout=30),
        health=HealthConfig(interval=1.0, timeout=2.0, failures_before_restart=3),
        restart=RestartConfig(initial_delay=0.5, max_delay=10, reset_after=30),
        models=(ModelConfig("qwen/qwen3-4b", identifier="qwen"), ModelConfig("google/gemma-3-1b")),
    )
    platform = Platform("linux", sim.root, sim.env())
    sup = build_supervisor(cfg, platform, None, explicit_config=False)
    started = time.monotonic()
    _say(started, f"simulated LM Studio 0.4 in {sim.root} (HTTP port {sim.http_port})")
    _say(started, "declared: qwen/qwen3-4b as 'qwen', google/gemma-3-1b")
    ready = asyncio.Event()

    async def show() -> None:
        async for event in sup.events():
            if event["type"] == "state":
                _say(started, f"state {event['previous']} -> {event['state']}: {event['reason']}")
                if event["state"] == "ready":
                    ready.set()
            elif event["type"] == "model":
                extra = f" ({event['error']})" if event["error"] else ""
                _say(started, f"  model {event['identifier'] or event['key']}: {event['state']}{extra}")
            elif event["type"] == "restart":
                _say(started, f"  restart #{event['count']} ({event['step']}): {event['reason']}")

    viewer = asyncio.create_task(show())
    runner = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(ready.wait(), DEADLINE)
        ready.clear()
        pid = sup.snapshot()["lmstudio"]["daemon_pid"] or sim.daemon_pid()
        _say(started, f"ready. Now: kill -9 of LM Studio's daemon (PID {pid})")
        if pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()  # SIGKILL on Unix, TerminateProcess on Windows
        await asyncio.wait_for(ready.wait(), DEADLINE)
        snap = sup.snapshot()
        loaded = ", ".join(f"{m['identifier'] or m['key']}={m['state']}" for m in snap["models"])
        _say(started, f"recovered: {loaded}; restarts.count = {snap['restarts']['count']}")
        return 0
    except TimeoutError:
        _say(started, f"not ready after {DEADLINE:g} s; state {sup.state.value}")
        return 1
    finally:
        sup.post("stop", reason="demo finished")
        await asyncio.wait_for(runner, 10)
        viewer.cancel()
        await sup.lmstudio.aclose()


def demo_main() -> int:
    """Run the demo (see the module docstring) in a temporary folder, removed afterwards.

    Returns 0 when the simulated LM Studio came back ready with its models after the
    ``kill -9``, 1 when a phase was not ready within :data:`DEADLINE` seconds.
    """
    logs.configure("error", "console")  # the demo prints events; logs only for errors
    with tempfile.TemporaryDirectory(prefix="lmsupervisor-demo-") as tmp:
        sim = create_install(Path(tmp) / "home", time_scale=TIME_SCALE)
        try:
            code = asyncio.run(_demo(sim))
        finally:
            sim.stop()
    print("demo passed: LM Studio came back with its models" if code == 0 else "demo FAILED")
    return code
