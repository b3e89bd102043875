"""The GPU gate and the runtime pin (issue 17, design §9) on a fake clock: a real
Supervisor against the fake LM Studio, whose `lms runtime survey` shows its GPU or not."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.config import Config, GpuConfig, HealthConfig, LmStudioConfig, ModelConfig, RestartConfig
from lmsupervisor.core.hardware import Compatibility, Gpu, Hardware, RuntimeEngine, hardware_to_json
from lmsupervisor.core.policy import SURVEY_MAX_DELAY
from lmsupervisor.core.states import State
from lmsupervisor.lmstudio.lms import LmsResult
from lmsupervisor.statefile import HardwareMemory
from lmsupervisor.supervisor import Supervisor
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_supervisor, settle

CONFIG = Config(
    health=HealthConfig(interval=5, timeout=1, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=300, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two")),
    gpu=GpuConfig(wait=10),
)
CUDA = "llama.cpp-cuda@1.52.1"
CPU = "llama.cpp-cpu@1.52.1"
RTX = Hardware(
    (Gpu("NVIDIA GeForce RTX 4090", "CUDA", "discrete", 2**34),),
    RuntimeEngine("llama.cpp-cuda", "1.52.1", "llama.cpp"),
    Compatibility("compatible"),
    surveyed_at=1_700_000_000.0,
)


class TimedLm(FakeLmStudio):
    """The fake LM Studio with every `lms` call stamped with the fake clock's time."""

    def __init__(self) -> None:
        super().__init__()
        self.timed: list[tuple[float, tuple[str, ...]]] = []
        self.runtime_commands = ("ls", "select", "survey")

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        if "--help" not in args:
            self.timed.append((self.clock.now if self.clock else 0.0, args))
        return await super().run(*args, timeout=timeout)

    def at(self, *prefix: str) -> list[float]:
        """When the calls starting with ``prefix`` ran."""
        return [t for t, args in self.timed if args[: len(prefix)] == prefix]


class Gate:
    def __init__(self, config: Config, remembered: Hardware | None, folder: Path) -> None:
        self.clock = FakeClock()
        self.lm = TimedLm()
        self.file = folder / "hardware.json"
        if remembered is not None:
            self.file.write_text(json.dumps(hardware_to_json(remembered)))
        self.sup: Supervisor = make_supervisor(config, self.lm, self.clock, hardware=HardwareMemory(self.file))

    def status(self) -> dict[str, Any]:
        return self.sup.snapshot()

    def problems(self) -> dict[str, str]:
        return {p["code"]: p["severity"] for p in self.status()["problems"]}


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[Callable[..., Gate]]:
    made: list[tuple[Gate, asyncio.Task[None]]] = []

    def start(config: Config = CONFIG, remembered: Hardware | None = RTX, *, gpu: bool = False) -> Gate:
        folder = tmp_path / f"state{len(made)}"
        folder.mkdir()
        g = Gate(config, remembered, folder)
        g.lm.gpu_visible = gpu
        made.append((g, asyncio.create_task(g.sup.run())))
        return g

    yield start
    for g, task in made:
        g.sup.post("stop")
        await asyncio.wait_for(task, 5)
        await g.sup.lmstudio.aclose()


async def test_gpu_late_at_boot_waits_then_restarts_the_daemon_once_then_loads(gate: Callable[..., Gate]) -> None:
    """No GPU at boot (the last good survey had one): gpu_missing at once and no model
    loaded; re-surveys (``--refresh``) back off 1, 2, 4, 8 s; past ``[gpu] wait`` (10 s) LM
    Studio's daemon is restarted once (restarts.count 1, cause gpu_missing), never a second
    time in the 10 minutes after, while re-surveys go on at the 30 s cap; the GPU appears,
    the next survey opens the gate, both models load and the problem clears."""
    g = gate()
    await g.clock.advance(0)
    assert (g.sup.state, g.problems(), g.lm.at("load")) == (State.LOADING_MODELS, {"gpu_missing": "error"}, [])
    assert g.lm.timed[-1] == (0.0, ("runtime", "survey", "--json"))  # the daemon's own survey first
    await g.clock.advance(600)
    surveys = g.lm.at("runtime", "survey")
    assert g.lm.at("daemon", "down") == [15.0]  # the first timer past 10 s of waiting, and only that one
    assert surveys[:6] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]  # 1, 2, 4, 8 s; then the fresh daemon's, + 16 s
    gaps = [b - a for a, b in itertools.pairwise(surveys[5:])]
    assert gaps and set(gaps) == {SURVEY_MAX_DELAY}
    assert (g.lm.at("load"), g.problems(), g.status()["restarts"]["count"]) == ([], {"gpu_missing": "error"}, 1)
    assert g.sup.snap.restarts.cause == "gpu_missing"
    assert g.status()["hardware"]["gpus"] == []
    g.lm.gpu_visible = True
    await g.clock.advance(SURVEY_MAX_DELAY)
    status = g.status()
    assert (status["state"], status["problems"], [m["state"] for m in status["models"]]) == (
        "ready",
        [],
        ["loaded", "loaded"],
    )
    assert status["hardware"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"
    assert g.sup.snap.hardware.waiting_since is None and not g.sup.snap.hardware.restart_spent


async def test_a_second_wait_gets_its_own_daemon_restart(gate: Callable[..., Gate]) -> None:
    """The daemon restart is spent per wait: once the GPU came back, a later loss (a later
    bring-up finds it gone) may restart the daemon once again, not before ``wait``."""
    g = gate()
    await g.clock.advance(20)
    g.lm.gpu_visible = True
    await g.clock.advance(SURVEY_MAX_DELAY)
    assert (g.sup.state, len(g.lm.at("daemon", "down"))) == (State.READY, 1)
    g.lm.gpu_visible = False
    g.lm.exit_daemon()  # kill -9: the bring-up after it finds no GPU
    await g.clock.advance(60)
    downs = g.lm.at("daemon", "down")
    assert len(downs) == 2 and downs[1] - downs[0] > CONFIG.gpu.wait


async def test_require_false_loads_on_the_cpu_and_says_so(gate: Callable[..., Gate]) -> None:
    """``[gpu] require = false``: no GPU, the models load anyway; gpu_missing stays as a
    warning naming the CPU; nothing waits, nothing restarts."""
    g = gate(replace(CONFIG, gpu=GpuConfig(require=False)))
    await g.clock.advance(1)
    status = g.status()
    assert (status["state"], status["restarts"]["count"], g.problems()) == ("ready", 0, {"gpu_missing": "warning"})
    assert "on the CPU" in status["problems"][0]["message"]
    assert len(g.lm.at("load")) == 2


async def test_auto_without_a_remembered_gpu_opens_on_a_compatible_cpu_runtime(gate: Callable[..., Gate]) -> None:
    """``"auto"`` requires what the last good survey had: nothing remembered and LM Studio's
    CPU runtime compatible, the models load at once and that survey is remembered; a GPU
    runtime that finds no GPU is gpu_missing even with nothing remembered."""
    g = gate(remembered=None)
    g.lm.selected = CPU
    await g.clock.advance(1)
    assert (g.sup.state, g.problems()) == (State.READY, {})
    assert json.loads(g.file.read_text())["runtime"]["name"] == "llama.cpp-cpu"
    g2 = gate(remembered=None)
    await g2.clock.advance(1)
    assert (g2.sup.state, g2.problems()) == (State.LOADING_MODELS, {"gpu_missing": "error"})
    assert "gpuRequiredButNoneFound" in g2.status()["problems"][0]["message"]


async def test_the_last_good_survey_is_remembered_and_required(gate: Callable[..., Gate]) -> None:
    """A survey that passes is written to hardware.json; a later supervisor starts with it
    (shown as ``hardware`` before its own survey) and requires its GPU."""
    g = gate(remembered=None, gpu=True)
    await g.clock.advance(1)
    assert g.sup.state is State.READY
    kept = json.loads(g.file.read_text())
    assert [x["name"] for x in kept["gpus"]] == ["NVIDIA GeForce RTX 4090"]
    later = Gate(CONFIG, None, g.file.parent)
    assert later.sup.snapshot()["hardware"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"
    assert later.sup.snap.hardware.last_good is not None


async def test_no_survey_in_this_lms_gates_nothing(gate: Callable[..., Gate]) -> None:
    """An `lms` without `runtime survey` (before 2025-12-18): no survey runs, nothing is
    gated, ``hardware`` is null even with a remembered survey."""
    g = gate()
    g.lm.runtime_commands = ()
    await g.clock.advance(1)
    assert (g.sup.state, g.status()["hardware"], g.lm.at("runtime")) == (State.READY, None, [])


async def test_runtime_changed_by_an_update_is_selected_again_before_loading(gate: Callable[..., Gate]) -> None:
    """``[lmstudio] runtime`` pinned to CUDA, an update selected the CPU runtime: `runtime
    select` runs before the survey and before any load; runtime_changed names both."""
    g = gate(replace(CONFIG, lmstudio=LmStudioConfig(runtime=CUDA)), gpu=True)
    g.lm.selected = CPU
    await g.clock.advance(1)
    calls = [args[:2] for _, args in g.lm.timed]
    assert calls.index(("runtime", "select")) < calls.index(("runtime", "survey")) < calls.index(("load", "a/one"))
    assert (g.sup.state, g.lm.selected, g.problems()) == (State.READY, CUDA, {"runtime_changed": "warning"})
    problem = g.status()["problems"][0]["message"]
    assert CPU in problem and CUDA in problem
    g.sup.post("restart")  # the next bring-up finds it as declared: nothing to say
    await g.clock.advance(1)
    assert (g.sup.state, g.problems(), len(g.lm.at("runtime", "select"))) == (State.READY, {}, 1)


async def test_a_survey_asked_while_ready_unloads_what_we_loaded_when_the_gpu_is_gone(
    gate: Callable[..., Gate],
) -> None:
    """The resume entry point (``Supervisor.survey``): GPU still there, nothing changes; GPU
    gone, the models we loaded are unloaded (they may run on the CPU), the gate waits, and
    they load again once it is back."""
    g = gate(gpu=True)
    await g.clock.advance(1)
    g.sup.survey()
    await g.clock.advance(0)
    assert (g.sup.state, g.lm.timed[-1][1]) == (State.READY, ("runtime", "survey", "--json", "--refresh"))
    g.lm.gpu_visible = False
    g.sup.survey()
    await g.clock.advance(0)
    assert (g.sup.state, g.problems(), g.lm.loaded) == (State.LOADING_MODELS, {"gpu_missing": "error"}, [])
    g.lm.gpu_visible = True
    await g.clock.advance(5)
    assert (g.sup.state, g.problems(), len(g.lm.loaded)) == (State.READY, {}, 2)


async def test_a_failed_survey_waits_only_when_a_gpu_is_required(gate: Callable[..., Gate]) -> None:
    """`lms runtime survey` failing: with a remembered GPU no model loads (gpu_survey_failed,
    an error, re-surveyed); with nothing required the models load with a warning."""
    g = gate(gpu=True)
    g.lm.fail[("runtime", "survey")] = (1, "Error: the survey crashed")
    await g.clock.advance(1)
    assert (g.sup.state, g.problems()) == (State.LOADING_MODELS, {"gpu_survey_failed": "error"})
    g.lm.fail.clear()
    await g.clock.advance(3)
    assert (g.sup.state, g.problems()) == (State.READY, {})
    free = gate(remembered=None, gpu=True)
    free.lm.fail[("runtime", "survey")] = (1, "Error: the survey crashed")
    await free.clock.advance(1)
    assert (free.sup.state, free.problems()) == (State.READY, {"gpu_survey_failed": "warning"})


async def test_a_gpu_config_change_while_waiting_is_judged_at_once(gate: Callable[..., Gate]) -> None:
    """Waiting for the GPU, a reload setting ``require = false`` loads the models now, not
    at the next re-survey."""
    g = gate()
    await g.clock.advance(3.5)
    assert g.sup.state is State.LOADING_MODELS
    from lmsupervisor.core.messages import ConfigChanged

    g.sup.send(ConfigChanged(replace(CONFIG, gpu=GpuConfig(require=False))))
    await g.clock.advance(0)
    assert (g.sup.state, g.problems()) == (State.READY, {"gpu_missing": "warning"})
    await settle()
