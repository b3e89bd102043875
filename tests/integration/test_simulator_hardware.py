"""The simulated machine's hardware (issue 17 part 6): `lms runtime survey/ls/select` per
release line, the websocket ``runtime`` namespace, and the GPU faults.

Sources: [lms] ``src/subcommands/runtime/{survey,list,select}.ts`` (survey since d6729dc
2025-12-18, its values camelCase since 6c39cb8 2026-03-05; ls/select since 35b4769
2025-09-23); [js] ``lms-shared-types/src/RuntimeHardwareSurvey.ts`` and
``lms-external-backend-interfaces/src/runtimeBackendInterface.ts``. The survey output of
the real simulated `lms` is read with the supervisor's parser
(:mod:`lmsupervisor.lmstudio.survey`), which is what it must feed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from websockets.sync.client import connect

from lmsupervisor.core.hardware import Hardware
from lmsupervisor.lmstudio.survey import parse_runtime_ls, parse_survey
from lmsupervisor.simulator import hardware, profiles
from lmsupervisor.simulator.home import SimInstall
from lmsupervisor.simulator.tool import send_fault
from tests.conftest import FAST, eventually
from tests.integration.test_wsapi import Port

pytestmark = pytest.mark.integration

CUDA = f"{hardware.CUDA_ENGINE}@{hardware.ENGINE_VERSION}"
CPU = f"{hardware.CPU_ENGINE}@{hardware.ENGINE_VERSION}"
QWEN = "qwen/qwen3-4b"
QWEN_PATH = "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"


def survey(sim: SimInstall, refresh: bool = False) -> Hardware:
    """`lms runtime survey --json [--refresh]`, parsed as the supervisor parses it."""
    result = sim.lms("runtime", "survey", "--json", *(["--refresh"] if refresh else []))
    assert result.returncode == 0, result.stderr
    return parse_survey(result.stdout)


def gpu_names(found: Hardware) -> list[str]:
    return [g.name for g in found.gpus]


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_survey_per_release_line(profile: str, make_sim: Callable[..., SimInstall]) -> None:
    """Profiles dated 2025-12-18 or later print the survey in their date's schema (1
    before 2026-03-05, 2 since) with the machine's GPU; older ones reject the command in
    their dialect: Commander ``unknown command 'survey'`` (or ``'runtime'`` before
    2025-09-23), cmd-ts its error box."""
    sim = make_sim(profile=profile)
    row = sim.release
    result = sim.lms("runtime", "survey", "--json")
    if row.survey_schema is not None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith('{\n  "status": ')  # JSON.stringify(result, null, 2)
        found = parse_survey(result.stdout)
        assert (found.schema, gpu_names(found), found.compatibility.compatible) == (
            row.survey_schema,
            ["NVIDIA GeForce RTX 4090"],
            True,
        )
        assert found.runtime is not None and found.runtime.key == CUDA
        return
    assert result.returncode == 1
    if row.dialect == "cmdts":
        assert "Not a valid subcommand name" in result.stderr
    else:
        word = "survey" if row.runtime_commands else "runtime"
        assert result.stderr == f"error: unknown command '{word}'\n"


def test_schema_dates() -> None:
    """The table's dates give the survey schemas: 0.4 (07b7252) schema 2, 0.4.0 (16afb91,
    2026-01-27) schema 1, 0.3.31 none but ls/select, cmd-ts neither."""
    table = {name: (row.survey_schema, row.runtime_commands) for name, row in profiles.PROFILES.items()}
    assert (table["0.4"], table["0.4.0"], table["0.3.31"], table["0.3-cmdts"]) == (
        (2, True),
        (1, True),
        (None, True),
        (None, False),
    )


@pytest.mark.parametrize("profile", ["0.4", "0.3.31"])
def test_runtime_ls_and_select(profile: str, make_sim: Callable[..., SimInstall]) -> None:
    """`runtime ls` lists the installed runtimes with the selected one marked; `runtime
    select <name>` selects another for its formats (stderr ``Selected ... for GGUF``, then
    ``Already selected``), ls shows it, and an unknown name exits 1 with the real hint."""
    sim = make_sim(profile=profile)
    listed = parse_runtime_ls(sim.lms("runtime", "ls").stdout)
    assert {r.runtime.key: r.selected for r in listed} == {
        CPU: False,
        CUDA: True,
        f"{hardware.VULKAN_ENGINE}@{hardware.ENGINE_VERSION}": False,
    }
    assert [r.formats for r in listed] == [("GGUF",)] * 3
    chosen = sim.lms("runtime", "select", hardware.CPU_ENGINE)
    assert (chosen.returncode, chosen.stdout, chosen.stderr) == (0, "", f"Selected {CPU} for GGUF\n")
    again = sim.lms("runtime", "select", CPU)
    assert (again.returncode, again.stderr) == (0, f"Already selected {CPU} for GGUF\n")
    assert [r.runtime.key for r in parse_runtime_ls(sim.lms("runtime", "ls").stdout) if r.selected] == [CPU]
    assert sim.selected_runtime() == CPU
    unknown = sim.lms("runtime", "select", "llama.cpp-nowhere")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "No installed runtime extensions found matching: llama.cpp-nowhere\n\n"
        "Use 'lms runtime ls' to see installed runtime extensions.\n",
    )


def test_survey_text(make_sim: Callable[..., SimInstall]) -> None:
    """Without ``--json`` the survey prints [lms] survey.ts's summary of the llama.cpp engine."""
    sim = make_sim()
    result = sim.lms("runtime", "survey")
    assert (result.returncode, result.stdout) == (
        0,
        f"Survey by {hardware.CUDA_ENGINE} ({hardware.ENGINE_VERSION})\n"
        "GPU/ACCELERATORS                           VRAM      \n"
        "NVIDIA GeForce RTX 4090 (CUDA, Discrete)    24.00 GiB\n"
        "\nCPU: x86_64 (AVX, AVX2)\nRAM: 64.00 GiB\n",
    )


def test_gpu_late_shows_after_a_refresh(make_sim: Callable[..., SimInstall]) -> None:
    """``gpu_late``: the daemon's own survey at start finds no GPU (``gpuRequiredButNoneFound``,
    status ``noCompatibleBackends``) and keeps it; once the GPU is there, ``--refresh`` finds
    it, and the kept survey is the refreshed one from then on."""
    sim = make_sim()
    late = 1.0  # wall seconds
    sim.gpu_late(late / FAST)
    started = time.monotonic()  # before the daemon starts: its GPU delay runs from its start
    assert sim.lms("daemon", "up").returncode == 0
    first = survey(sim)
    assert (first.gpus, first.status, first.compatibility.status) == (
        (),
        "noCompatibleBackends",
        "gpuRequiredButNoneFound",
    )
    assert eventually(lambda: bool(survey(sim, refresh=True).gpus), timeout=late + 15, interval=0.2)
    assert time.monotonic() - started >= late  # never before the fault's delay
    kept = survey(sim)
    assert (gpu_names(kept), kept.compatibility.compatible) == (["NVIDIA GeForce RTX 4090"], True)


def test_gpu_lost_then_back(make_sim: Callable[..., SimInstall]) -> None:
    """``gpu-lost`` while a model runs: a refreshed survey shows no GPU and
    ``gpuRequiredButNoneFound``; the loaded model, loaded onto the GPU, now generates
    ``cpu_slowdown`` times slower, and its answers take at least that long while usage
    still counts the tokens; when the GPU is back, the speed is too."""
    sim = make_sim()
    sim.set_hardware(tokens_per_second=4.0, cpu_slowdown=20.0)
    assert sim.lms("server", "start").returncode == 0
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes").returncode == 0
    gpu_speed = sim.generation()[QWEN]
    assert gpu_speed == {"on_gpu": True, "seconds_per_token": pytest.approx(FAST / 4.0)}
    assert send_fault(sim.root, "gpu-lost") == "every GPU is gone"
    lost = survey(sim, refresh=True)
    assert (lost.gpus, lost.compatibility.status) == ((), "gpuRequiredButNoneFound")
    slow = sim.generation()[QWEN]["seconds_per_token"]
    assert slow == pytest.approx(20 * gpu_speed["seconds_per_token"])
    with openai.OpenAI(base_url=f"{sim.http_url}/v1", api_key="lm-studio", max_retries=0, timeout=30) as client:
        started = time.monotonic()
        answer = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "hi"}])
        elapsed = time.monotonic() - started
    assert answer.usage is not None
    tokens = answer.usage.completion_tokens
    assert tokens >= 1 and elapsed >= tokens * slow  # the caller's tokens/s shows the fall-back
    send_fault(sim.root, "gpu-back")
    assert sim.generation()[QWEN] == gpu_speed
    assert gpu_names(survey(sim, refresh=True)) == ["NVIDIA GeForce RTX 4090"]


def test_models_loaded_without_a_gpu_stay_on_the_cpu(make_sim: Callable[..., SimInstall]) -> None:
    """A model loaded while the GPU is gone runs on the CPU, also after the GPU returns
    (the silent fall-back after boot); `--gpu off` is the CPU too."""
    sim = make_sim()
    sim.set_hardware(tokens_per_second=10.0, cpu_slowdown=8.0)
    sim.lose_gpu()
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes").returncode == 0
    sim.restore_gpu()
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes", "--identifier", "gpu").returncode == 0
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes", "--identifier", "off", "--gpu", "off").returncode == 0
    speeds = sim.generation()
    assert {k: v["on_gpu"] for k, v in speeds.items()} == {QWEN: False, "gpu": True, "off": False}
    assert speeds[QWEN]["seconds_per_token"] == pytest.approx(8 * speeds["gpu"]["seconds_per_token"])


def test_cpu_fallback_is_silent(make_sim: Callable[..., SimInstall]) -> None:
    """``cpu-fallback``: every answer is that many times slower while the survey still
    shows the GPU and ``compatible`` (BT#2312: only the speed tells)."""
    sim = make_sim()
    sim.set_hardware(tokens_per_second=10.0)
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes").returncode == 0
    before = sim.generation()[QWEN]["seconds_per_token"]
    assert send_fault(sim.root, "cpu-fallback", factor=6) == "every answer is now 6 times slower"
    assert sim.generation()[QWEN] == {"on_gpu": True, "seconds_per_token": pytest.approx(6 * before)}
    found = survey(sim, refresh=True)
    assert (gpu_names(found), found.compatibility.compatible) == (["NVIDIA GeForce RTX 4090"], True)


def test_runtime_switched_by_an_update(make_sim: Callable[..., SimInstall]) -> None:
    """``runtime-update`` selects another installed runtime (a CPU one by default): `runtime
    ls` and the survey show it, and a model loaded then runs on the CPU; `runtime select`
    of the old one puts the next load back on the GPU."""
    sim = make_sim()
    assert sim.lms("daemon", "up").returncode == 0
    assert send_fault(sim.root, "runtime-update") == f"the selected runtime is now {CPU}"
    assert [r.runtime.key for r in parse_runtime_ls(sim.lms("runtime", "ls").stdout) if r.selected] == [CPU]
    found = survey(sim)
    assert found.runtime is not None and (found.runtime.key, found.gpus, found.compatibility.compatible) == (
        CPU,
        (),
        True,
    )
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes").returncode == 0
    assert sim.lms("runtime", "select", CUDA).returncode == 0
    assert sim.lms("load", QWEN_PATH, "--exact", "--yes", "--identifier", "back").returncode == 0
    assert {k: v["on_gpu"] for k, v in sim.generation().items()} == {QWEN: False, "back": True}
    with pytest.raises(LookupError):
        sim.update_runtime("llama.cpp-nowhere@1.0.0")


def test_websocket_runtime_namespace(make_sim: Callable[..., SimInstall]) -> None:
    """The ``runtime`` namespace as the SDK calls it: ``listEngines`` (``RuntimeEngineInfo``),
    ``getEngineSelections`` (a superjson Map), ``selectEngine``, ``surveyHardware`` with and
    without a scope."""
    sim = make_sim()
    assert sim.lms("daemon", "up").returncode == 0
    with connect(f"ws://127.0.0.1:{sim.api_port}/runtime", open_timeout=5) as ws:
        runtime = Port(ws, sim)
        engines = runtime.call("listEngines")["result"]
        assert engines[0] == {
            "name": hardware.CUDA_ENGINE,
            "version": hardware.ENGINE_VERSION,
            "engine": "llama.cpp",
            "platform": "linux",
            "cpu": {"architecture": "x86_64", "instructionSetExtensions": ["AVX", "AVX2"]},
            "gpu": {"make": "NVIDIA", "framework": "CUDA"},
            "supportedModelFormatNames": ["GGUF"],
        }
        assert "gpu" not in engines[2]
        selections = {"name": hardware.CUDA_ENGINE, "version": hardware.ENGINE_VERSION}
        assert runtime.call("getEngineSelections")["result"] == {
            "json": [["GGUF", selections]],
            "meta": {"values": ["map"]},
        }
        cpu = {"name": hardware.CPU_ENGINE, "version": hardware.ENGINE_VERSION}
        selected = runtime.call("selectEngine", {"engine": cpu, "modelFormatName": "GGUF"})
        assert selected["type"] == "rpcResult" and "result" not in selected  # z.void()
        result = runtime.call("surveyHardware", {"type": "all"})["result"]
        assert [e["name"] for e in result["engines"]] == [e["name"] for e in engines]
        kept = runtime.call("surveyHardware")["result"]
        assert [e["name"] for e in kept["engines"]] == [hardware.CPU_ENGINE]
        wrong = runtime.call("selectEngine", {"engine": {"name": "x", "version": "1"}, "modelFormatName": "GGUF"})
        assert wrong["type"] == "rpcError"
    assert sim.selected_runtime() == CPU


def test_websocket_survey_absent_before_2025_12(make_sim: Callable[..., SimInstall]) -> None:
    """On a release line without the survey, ``runtime.surveyHardware`` is an ``rpcError``."""
    sim = make_sim(profile="0.3.31")
    assert sim.lms("ps").returncode == 0  # wakes the app
    with connect(f"ws://127.0.0.1:{sim.api_port}/runtime", open_timeout=5) as ws:
        answer = Port(ws, sim).call("surveyHardware")
    assert (answer["type"], answer["error"]["title"]) == (
        "rpcError",
        "LM Studio 0.3.31 has no endpoint runtime.surveyHardware.",
    )
