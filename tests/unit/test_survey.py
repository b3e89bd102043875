"""Parsing `lms runtime survey --json` (both schemas) and `lms runtime ls`.

Hand-written fixtures follow the zod schema in [js] ``packages/lms-shared-types/src/
RuntimeHardwareSurvey.ts``: schema 1 as of js a5140d1e (2025-12-18, printed by [lms]
d6729dc), schema 2 as of js 0f01fb9f (2026-03-05, printed by [lms] 6c39cb8); the
``runtime ls`` table follows [lms] ``src/subcommands/runtime/list.ts``. The simulator's
own output is built by its pure functions (``lmsupervisor.simulator.hardware``), which
its `lms` prints with ``json.dumps(indent=2)``; the integration tests parse the real
process's output too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lmsupervisor.core.hardware import Compatibility, Gpu, Hardware, InstalledRuntime, RuntimeEngine
from lmsupervisor.errors import LmsOutputError
from lmsupervisor.lmstudio.survey import parse_runtime_ls, parse_survey
from lmsupervisor.simulator import hardware as sim_hardware

# Schema 2: a Windows machine with an NVIDIA card, CUDA runtime selected.
V2_CUDA: dict[str, Any] = {
    "status": "ok",
    "engines": [
        {
            "name": "llama.cpp-win-x86_64-nvidia-cuda12-avx2",
            "version": "1.50.2",
            "engine": "llama.cpp",
            "platform": "win",
            "compatibility": {"status": "compatible"},
            "supportedModelFormatNames": ["GGUF"],
            "hardwareSurvey": {
                "gpuSurveyResult": {
                    "result": {"code": "success", "message": ""},
                    "gpuInfo": [
                        {
                            "name": "NVIDIA GeForce RTX 3060",
                            "deviceId": 0,
                            "totalMemoryCapacityBytes": 12884901888,
                            "dedicatedMemoryCapacityBytes": 12884901888,
                            "integrationType": "discrete",
                            "detectionPlatform": "CUDA",
                            "detectionPlatformVersion": "12.4",
                            "otherInfo": {"computeCapability": "8.6"},
                        }
                    ],
                },
                "cpuSurveyResult": {
                    "result": {"code": "success", "message": ""},
                    "cpuInfo": {
                        "name": "Intel(R) Core(TM) i7-12700K",
                        "architecture": "x86_64",
                        "supportedInstructionSetExtensions": ["AVX", "AVX2"],
                    },
                },
            },
            "memoryInfo": {"ramCapacity": 34359738368, "vramCapacity": 12884901888, "totalMemory": 47244640256},
            "visibleDevicesConfig": {"visibleDevices": [0], "changesOrder": False},
        }
    ],
}

# Schema 1: a Mac (integrated GPU, no dedicated memory) whose MLX engine is listed first.
V1_METAL: dict[str, Any] = {
    "status": "OK",
    "engines": [
        {
            "name": "mlx-llm-mac-arm64-apple-metal-advsimd",
            "version": "0.36.0",
            "engine": "mlx-llm",
            "platform": "mac",
            "compatibility": {"status": "Compatible"},
            "supportedModelFormatNames": ["MLX"],
            "hardwareSurvey": {
                "gpuSurveyResult": {"result": {"code": "Success", "message": ""}, "gpuInfo": []},
                "cpuSurveyResult": {"result": {"code": "Success", "message": ""}},
            },
            "memoryInfo": {"ramCapacity": 38654705664, "vramCapacity": 0, "totalMemory": 38654705664},
        },
        {
            "name": "llama.cpp-mac-arm64-apple-metal-advsimd",
            "version": "1.52.0",
            "engine": "llama.cpp",
            "platform": "mac",
            "compatibility": {"status": "Compatible"},
            "supportedModelFormatNames": ["GGUF"],
            "hardwareSurvey": {
                "gpuSurveyResult": {
                    "result": {"code": "Success", "message": ""},
                    "gpuInfo": [
                        {
                            "name": "Apple M3 Pro",
                            "deviceId": 0,
                            "totalMemoryCapacityBytes": 28991029248,
                            "dedicatedMemoryCapacityBytes": 0,
                            "integrationType": "Integrated",
                            "detectionPlatform": "Metal",
                            "detectionPlatformVersion": "3",
                            "otherInfo": {},
                        }
                    ],
                },
                "cpuSurveyResult": {
                    "result": {"code": "Success", "message": ""},
                    "cpuInfo": {"architecture": "ARM64", "supportedInstructionSetExtensions": ["AdvSIMD"]},
                },
            },
            "memoryInfo": {"ramCapacity": 38654705664, "vramCapacity": 28991029248, "totalMemory": 67645734912},
        },
    ],
}

# Schema 1: the CUDA runtime at boot, before the driver is there (BT#1186).
V1_NO_GPU: dict[str, Any] = {
    "status": "NoCompatibleBackends",
    "engines": [
        {
            "name": "llama.cpp-linux-x86_64-nvidia-cuda12-avx2",
            "version": "1.44.0",
            "engine": "llama.cpp",
            "platform": "linux",
            "compatibility": {"status": "GPU required but none found", "message": "No CUDA devices"},
            "supportedModelFormatNames": ["GGUF"],
            "hardwareSurvey": {
                "gpuSurveyResult": {"result": {"code": "NoDevicesFound", "message": ""}, "gpuInfo": []},
                "cpuSurveyResult": {
                    "result": {"code": "Success", "message": ""},
                    "cpuInfo": {"architecture": "x86_64", "supportedInstructionSetExtensions": ["AVX2"]},
                },
            },
            "memoryInfo": {"ramCapacity": 17179869184, "vramCapacity": 0, "totalMemory": 17179869184},
        }
    ],
}


def printed(value: Any) -> str:
    """What `lms` prints: ``JSON.stringify(value, null, 2)`` plus a newline."""
    return json.dumps(value, indent=2) + "\n"


def test_schema_2_cuda_machine() -> None:
    """A schema-2 survey gives the GPU, its platform and VRAM, the runtime and its status."""
    assert parse_survey(printed(V2_CUDA)) == Hardware(
        gpus=(Gpu("NVIDIA GeForce RTX 3060", "CUDA", "discrete", 12884901888),),
        runtime=RuntimeEngine("llama.cpp-win-x86_64-nvidia-cuda12-avx2", "1.50.2", "llama.cpp"),
        compatibility=Compatibility("compatible"),
        status="ok",
        ram_bytes=34359738368,
        schema=2,
    )


def test_schema_1_values_come_back_in_schema_2() -> None:
    """Schema 1's TitleCase values are read as schema 2's, the llama.cpp engine is the one
    described even when listed second, and an integrated GPU's VRAM is its total memory."""
    found = parse_survey(printed(V1_METAL))
    assert (found.schema, found.status, found.compatibility.compatible) == (1, "ok", True)
    assert found.gpus == (Gpu("Apple M3 Pro", "Metal", "integrated", 28991029248),)
    assert found.runtime == RuntimeEngine("llama.cpp-mac-arm64-apple-metal-advsimd", "1.52.0", "llama.cpp")


def test_schema_1_gpu_required_but_none_found() -> None:
    """The boot-time failure reads as no GPU and ``gpuRequiredButNoneFound`` with LM Studio's message."""
    found = parse_survey(printed(V1_NO_GPU))
    assert (found.gpus, found.status, found.compatibility) == (
        (),
        "noCompatibleBackends",
        Compatibility("gpuRequiredButNoneFound", "No CUDA devices"),
    )
    assert not found.compatibility.compatible


def test_a_status_neither_schema_knows_is_kept_and_not_compatible() -> None:
    """A newer LM Studio's status is passed through as printed, never taken for compatible."""
    data = copy.deepcopy(V2_CUDA)
    data["engines"][0]["compatibility"] = {"status": "gpuTooOld"}
    assert parse_survey(printed(data)).compatibility == Compatibility("gpuTooOld")


def test_no_engine_surveyed() -> None:
    """A survey with no engine has no runtime and an unknown compatibility."""
    found = parse_survey(printed({"status": "noCompatibleBackends", "engines": []}))
    assert (found.runtime, found.gpus, found.compatibility.status) == (None, (), "unknown")


@pytest.mark.parametrize(
    ("stdout", "names"),
    [
        ("", "printed no JSON"),
        ("Error: something\n", "printed no JSON"),
        ("[]", "expected a JSON object"),
        ('{"engines": []}', "survey.status"),
        ('{"status": "ok", "engines": {}}', "survey.engines"),
        ('{"status": "ok", "engines": [1]}', "survey.engines"),
        ('{"status": "ok", "engines": [{"version": "1"}]}', "survey.engines[0].name"),
        ('{"status": "ok", "engines": [{"name": "x", "version": "1"}]}', "compatibility"),
    ],
)
def test_malformed_survey_raises_lms_output_error(stdout: str, names: str) -> None:
    """Malformed output is an LmsOutputError that names what is wrong, never another exception."""
    with pytest.raises(LmsOutputError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_survey(stdout)


@pytest.mark.parametrize(
    ("path", "value", "names"),
    [
        (("hardwareSurvey", "gpuSurveyResult", "gpuInfo"), None, "gpuInfo"),
        (("hardwareSurvey", "gpuSurveyResult", "gpuInfo", 0, "dedicatedMemoryCapacityBytes"), "24 GB", "dedicated"),
        (("hardwareSurvey", "gpuSurveyResult", "gpuInfo", 0, "name"), None, "name"),
        (("compatibility", "status"), 3, "status"),
        (("memoryInfo", "ramCapacity"), -1, "ramCapacity"),
    ],
)
def test_a_wrong_field_deep_inside_is_named(path: tuple[Any, ...], value: Any, names: str) -> None:
    """A wrong value deep in the engine raises LmsOutputError with the field's path."""
    data = copy.deepcopy(V2_CUDA)
    node: Any = data["engines"][0]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(LmsOutputError, match=names):
        parse_survey(printed(data))


@pytest.mark.parametrize("schema", [1, 2])
def test_simulator_survey_both_schemas(schema: int) -> None:
    """The simulator's survey, as its `lms` prints it in either schema, parses to the
    simulated machine: its GPU, the selected CUDA runtime, compatible."""
    hw = copy.deepcopy(sim_hardware.DEFAULT_HARDWARE)
    engine = sim_hardware.selected_engines(hw)[0]
    result = sim_hardware.survey_result([sim_hardware.survey_engine(engine, hw, hw["gpus"])])
    found = parse_survey(printed(sim_hardware.as_schema(result, schema)))
    gpu = hw["gpus"][0]
    assert found == Hardware(
        gpus=(Gpu(gpu["name"], "CUDA", "discrete", gpu["dedicatedMemoryCapacityBytes"]),),
        runtime=RuntimeEngine(engine["name"], engine["version"], "llama.cpp"),
        compatibility=Compatibility("compatible"),
        status="ok",
        ram_bytes=hw["ram_bytes"],
        schema=schema,
    )


@pytest.mark.parametrize("schema", [1, 2])
def test_simulator_survey_without_gpu_both_schemas(schema: int) -> None:
    """With no GPU visible, the simulator's CUDA runtime reads as gpuRequiredButNoneFound in either schema."""
    hw = copy.deepcopy(sim_hardware.DEFAULT_HARDWARE)
    engine = sim_hardware.selected_engines(hw)[0]
    result = sim_hardware.survey_result([sim_hardware.survey_engine(engine, hw, [])])
    found = parse_survey(printed(sim_hardware.as_schema(result, schema)))
    assert (found.gpus, found.status, found.compatibility.status) == (
        (),
        "noCompatibleBackends",
        "gpuRequiredButNoneFound",
    )


# `lms runtime ls` as [lms] list.ts prints it: columnify, four-space splitter, centred columns.
RUNTIME_LS = (
    "LLM ENGINE                                          SELECTED    MODEL FORMAT\n"
    "llama.cpp-linux-x86_64-avx2@1.52.1                                  GGUF    \n"
    "llama.cpp-linux-x86_64-nvidia-cuda12-avx2@1.52.1       ✓            GGUF    \n"
    "mlx-llm-mac-arm64-apple-metal-advsimd@0.36.0           ✓         MLX, GGUF  \n"
)


def test_runtime_ls() -> None:
    """Each row gives name@version, whether it is selected, and its model formats."""
    assert parse_runtime_ls(RUNTIME_LS) == [
        InstalledRuntime(RuntimeEngine("llama.cpp-linux-x86_64-avx2", "1.52.1"), False, ("GGUF",)),
        InstalledRuntime(RuntimeEngine("llama.cpp-linux-x86_64-nvidia-cuda12-avx2", "1.52.1"), True, ("GGUF",)),
        InstalledRuntime(RuntimeEngine("mlx-llm-mac-arm64-apple-metal-advsimd", "0.36.0"), True, ("MLX", "GGUF")),
    ]


def test_runtime_ls_coloured_and_empty() -> None:
    """Colour codes are stripped; empty output is no runtime."""
    coloured = "\x1b[1mLLM ENGINE\x1b[22m    SELECTED    MODEL FORMAT\nx@1    ✓    GGUF\n"
    assert parse_runtime_ls(coloured) == [InstalledRuntime(RuntimeEngine("x", "1"), True, ("GGUF",))]
    assert parse_runtime_ls("\n") == []


@pytest.mark.parametrize("stdout", ["No runtimes found.\n", "LLM ENGINE    SELECTED\nnoversion    ✓    GGUF\n"])
def test_runtime_ls_malformed(stdout: str) -> None:
    """Text without the heading, or a row without name@version, is an LmsOutputError."""
    with pytest.raises(LmsOutputError):
        parse_runtime_ls(stdout)
