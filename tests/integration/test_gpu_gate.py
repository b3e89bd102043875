"""The GPU gate and the runtime pin (issue 17) on a real `lmsupervisor run` against the
simulator's hardware (:mod:`lmsupervisor.simulator.hardware`): a GPU late at boot, a GPU
lost while running, ``[gpu] require = false``, a runtime switched by an update.

A GPU lost while running is noticed at the next survey: every bring-up and load pass
surveys (and a resume detector calls ``Supervisor.survey``); nothing polls while idle.
Figures (time to the problem, to ready after the GPU returns): ``bench/gpu_gate.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from lmsupervisor.simulator import hardware
from lmsupervisor.simulator.home import SimInstall
from tests.conftest import FAST
from tests.integration.test_run import Running, loaded_ids

pytestmark = pytest.mark.integration

CUDA = f"{hardware.CUDA_ENGINE}@{hardware.ENGINE_VERSION}"
CPU = f"{hardware.CPU_ENGINE}@{hardware.ENGINE_VERSION}"
ONE_MODEL = """
[gpu]
wait = 60
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""


def problems(snap: dict[str, Any]) -> dict[str, str]:
    return {p["code"]: p["severity"] for p in snap["problems"]}


def on_gpu(sim: SimInstall) -> dict[str, bool]:
    return {name: bool(g["on_gpu"]) for name, g in sim.generation().items()}


def test_gpus_late_at_boot(sim: SimInstall, start: Callable[..., Running]) -> None:
    """The GPU driver is not there for 3 s after the daemon starts: gpu_missing meanwhile
    with nothing loaded, then ready once it is, the model on the GPU, the problem gone."""
    late = 3.0  # wall seconds
    sim.gpu_late(late / FAST)
    began = time.monotonic()
    run = start(sim, ONE_MODEL)
    waiting = run.wait_for(lambda s: "gpu_missing" in problems(s))
    assert (waiting["state"], sim.loaded(), waiting["hardware"]["gpus"]) == ("loading_models", [], [])
    assert waiting["hardware"]["compatibility"]["status"] == "gpuRequiredButNoneFound"
    ready = run.wait_state("ready", timeout=60)
    assert time.monotonic() - began >= late  # never before the GPU was there
    assert (problems(ready), on_gpu(sim), ready["restarts"]["count"]) == ({}, {"qwen": True}, 0)
    assert ready["hardware"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"


def test_gpu_lost_while_running_then_back(sim: SimInstall, start: Callable[..., Running]) -> None:
    """Ready on the GPU; the GPU goes and the daemon dies: the bring-up after it finds no
    GPU (gpu_missing), loads nothing onto the CPU; the GPU comes back: ready, on the GPU."""
    run = start(sim, ONE_MODEL)
    run.wait_state("ready")
    sim.lose_gpu()
    sim.crash_daemon()
    missing = run.wait_for(lambda s: "gpu_missing" in problems(s) and s["lmstudio"]["daemon_pid"] is not None)
    assert (missing["state"], loaded_ids(sim)) == ("loading_models", [])
    sim.restore_gpu()
    ready = run.wait_state("ready", timeout=60)
    assert (problems(ready), on_gpu(sim)) == ({}, {"qwen": True})


def test_require_false_loads_on_the_cpu_and_says_so(sim: SimInstall, start: Callable[..., Running]) -> None:
    """``[gpu] require = false`` and no GPU: ready, the model on the CPU, and the status
    says so (gpu_missing as a warning naming the CPU)."""
    sim.lose_gpu()
    run = start(sim, ONE_MODEL.replace("wait = 60", "require = false"))
    ready = run.wait_for(lambda s: s["state"] == "ready" and "gpu_missing" in problems(s))
    assert (problems(ready), on_gpu(sim)) == ({"gpu_missing": "warning"}, {"qwen": False})
    assert "on the CPU" in ready["problems"][0]["message"]


def test_runtime_switched_by_an_update_is_selected_again(sim: SimInstall, start: Callable[..., Running]) -> None:
    """``[lmstudio] runtime`` pins CUDA; an update selects the CPU runtime and restarts LM
    Studio: the bring-up selects CUDA again before loading (runtime_changed names both),
    and the model runs on the GPU."""
    pinned = f'[lmstudio]\nruntime = "{hardware.CUDA_ENGINE}"\n' + ONE_MODEL
    run = start(sim, pinned)
    run.wait_state("ready")
    assert sim.update_runtime() == CPU
    sim.crash_daemon()  # the update's restart
    ready = run.wait_for(lambda s: s["state"] == "ready" and "runtime_changed" in problems(s))
    message = next(p["message"] for p in ready["problems"] if p["code"] == "runtime_changed")
    assert (CPU in message, hardware.CUDA_ENGINE in message) == (True, True)
    assert (sim.selected_runtime(), on_gpu(sim), ready["hardware"]["runtime"]["name"]) == (
        CUDA,
        {"qwen": True},
        hardware.CUDA_ENGINE,
    )
