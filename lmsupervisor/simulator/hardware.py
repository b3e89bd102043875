"""The simulated machine's hardware and inference runtimes, as data, and LM Studio's survey of them.

Sources (read in the public repositories, nothing copied):

- [js] ``packages/lms-shared-types/src/RuntimeHardwareSurvey.ts``: the survey's zod schema.
  Two versions: the one [lms] d6729dc (2025-12-18, "Hardware survey results in lms")
  printed, with TitleCase and sentence values (js a5140d1e: ``"OK"``, ``"Compatible"``,
  ``"GPU required but none found"``, ``"Discrete"``, ``"Shell"``, ``"Unknown"``), and the
  one [lms] 6c39cb8 (2026-03-05, "`lms runtime survey` use new types", js 0f01fb9f) prints,
  camelCase (``"ok"``, ``"compatible"``, ``"gpuRequiredButNoneFound"``, ``"discrete"``,
  ``"shell"``, ``"unknown"``). The field names and nesting are the same in both.
- [js] ``packages/lms-shared-types/src/RuntimeEngine.ts`` and ``RuntimeCommon.ts``:
  ``RuntimeEngineInfo`` (what ``runtime ls`` lists) and the ``SelectedRuntimeEngineMap``.
- [js] ``packages/lms-external-backend-interfaces/src/runtimeBackendInterface.ts``: the
  websocket ``runtime`` namespace (``listEngines``, ``getEngineSelections`` (superjson),
  ``selectEngine{engine,modelFormatName}``, ``surveyHardware(scope?)``).
- [lms] ``src/subcommands/runtime/{survey,list,select}.ts``: how `lms` prints them.

The hardware lives in ``<home>/.sim/hardware.json`` (:data:`DEFAULT_HARDWARE` when absent),
read anew on every use, so the test driver changes it under a running daemon::

    {"gpus": [RuntimeHardwareGpuInfo (schema-2 values)], "cpu": RuntimeHardwareCpuInfo,
     "ram_bytes": int, "engines": [{"name", "version", "engine", "platform",
     "gpu": {"make", "framework"} | absent (a CPU-only engine), "formats": [ModelFormatName]}],
     "selected": {ModelFormatName: "name@version"},
     "tokens_per_second": float,  # generation speed on the GPU, simulated tokens/s; 0: at once
     "cpu_slowdown": float}       # generation on the CPU is this many times slower

Faults (``faults.json``, see :class:`lmsupervisor.simulator.home.SimInstall`):
``gpu_late`` (simulated seconds after the daemon starts before any GPU is visible),
``gpu_lost`` (no GPU is visible), ``cpu_fallback`` (every answer that many times slower
while the survey still looks fine: the silent case of BT#2312).

Simulator choices, documented (LM Studio's behaviour is UNCONFIRMED here):

- a GPU engine (one with ``gpu.framework``) sees every visible GPU, reported with its
  framework as ``detectionPlatform``; with none visible its compatibility is
  ``gpuRequiredButNoneFound`` and its GPU step ``noDevicesFound``; a CPU-only engine
  lists no GPU and is ``compatible``;
- the daemon surveys its selected engines when it starts and keeps that survey: a
  survey without a scope (`lms runtime survey` without ``--refresh``) answers from it,
  so GPUs that appear later show only after ``--refresh`` (scope ``selected``);
- an instance runs on the GPU when, at its load, the selected GGUF engine is a GPU
  engine, a GPU is visible and ``--gpu`` was not ``off``; it generates at
  ``tokens_per_second``, or ``cpu_slowdown`` times slower on the CPU or while its GPU
  is lost.

Stdlib only: `bin/lms` imports this.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lmsupervisor.simulator import common

GIB = 1024**3

CUDA_ENGINE = "llama.cpp-linux-x86_64-nvidia-cuda12-avx2"
VULKAN_ENGINE = "llama.cpp-linux-x86_64-vulkan-avx2"
CPU_ENGINE = "llama.cpp-linux-x86_64-avx2"
ENGINE_VERSION = "1.52.1"

DEFAULT_HARDWARE: dict[str, Any] = {
    "gpus": [
        {
            "name": "NVIDIA GeForce RTX 4090",
            "deviceId": 0,
            "totalMemoryCapacityBytes": 24 * GIB,
            "dedicatedMemoryCapacityBytes": 24 * GIB,
            "integrationType": "discrete",
            "detectionPlatform": "CUDA",
            "detectionPlatformVersion": "12.8",
            "otherInfo": {},
        }
    ],
    "cpu": {
        "name": "AMD Ryzen 9 7950X 16-Core Processor",
        "architecture": "x86_64",
        "supportedInstructionSetExtensions": ["AVX", "AVX2"],
    },
    "ram_bytes": 64 * GIB,
    "engines": [
        {
            "name": CUDA_ENGINE,
            "version": ENGINE_VERSION,
            "engine": "llama.cpp",
            "platform": "linux",
            "gpu": {"make": "NVIDIA", "framework": "CUDA"},
            "formats": ["GGUF"],
        },
        {
            "name": VULKAN_ENGINE,
            "version": ENGINE_VERSION,
            "engine": "llama.cpp",
            "platform": "linux",
            "gpu": {"framework": "Vulkan"},
            "formats": ["GGUF"],
        },
        {
            "name": CPU_ENGINE,
            "version": ENGINE_VERSION,
            "engine": "llama.cpp",
            "platform": "linux",
            "formats": ["GGUF"],
        },
    ],
    "selected": {"GGUF": f"{CUDA_ENGINE}@{ENGINE_VERSION}"},
    "tokens_per_second": 0.0,
    "cpu_slowdown": 20.0,
}

# Schema 1 (2025-12-18) spelled every enum value as the HEAD CLI's label prints it
# ([lms] survey.ts getBackendCompatibilityStatusLabel & co. map schema 2 back to them).
_V1_COMPATIBILITY = {
    "compatible": "Compatible",
    "incompatibleAppVersion": "Incompatible app version",
    "incompatibleBackendVersion": "Incompatible backend version",
    "invalidCpuArchitecture": "Invalid CPU architecture",
    "invalidCpuInstructionSetExtensions": "Invalid CPU instruction set extensions",
    "cpuSurveyUnsuccessful": "CPU survey unsuccessful",
    "gpuSurveyUnsuccessful": "GPU survey unsuccessful",
    "gpuRequiredButNoneFound": "GPU required but none found",
    "gpuTargetsRequiredButNoneSpecified": "GPU targets required but none specified",
    "gpuDriverUnsupported": "GPU driver unsupported",
    "noSupportedGpus": "No supported GPUs",
    "incompatiblePlatform": "Incompatible platform",
    "libraryOutdated": "Library outdated",
    "invalidLibraryVersionFormat": "Invalid library version format",
    "missingLibraries": "Missing libraries",
    "errorSurveyingHardware": "Error surveying hardware",
    "errorCheckingCompatibility": "Error checking compatibility",
    "unknown": "Unknown",
}
_V1_WORDS = {  # the other enums: only these values differ between the schemas
    "ok": "OK",
    "noCompatibleBackends": "NoCompatibleBackends",
    "unset": "Unset",
    "success": "Success",
    "error": "Error",
    "noDevicesFound": "NoDevicesFound",
    "invalidDevice": "InvalidDevice",
    "unknown": "Unknown",
    "shell": "Shell",
    "integrated": "Integrated",
    "discrete": "Discrete",
}


def label(value: str) -> str:
    """How `lms runtime survey` (text) shows an enum value of either schema: HEAD maps
    schema-2 values to these labels ([lms] survey.ts ``get...Label``), d6729dc printed the
    schema-1 values, which are the same words."""
    return _V1_COMPATIBILITY.get(value, _V1_WORDS.get(value, value))


def hardware_path(home: Path) -> Path:
    """``<home>/.sim/hardware.json``."""
    return common.sim_dir(home) / "hardware.json"


def load(home: Path) -> dict[str, Any]:
    """The install's hardware (shape in the module docstring): ``hardware.json`` over
    :data:`DEFAULT_HARDWARE`, key by key; the defaults when missing or corrupt."""
    found = common.read_json(hardware_path(home), {})
    hardware = copy.deepcopy(DEFAULT_HARDWARE)
    if isinstance(found, dict):
        hardware.update(found)
    return hardware


def save(home: Path, hardware: dict[str, Any]) -> None:
    """Write ``hardware`` to ``hardware.json`` (atomically)."""
    common.write_json(hardware_path(home), hardware)


def engine_key(engine: dict[str, Any]) -> str:
    """``name@version``, as `lms runtime ls` prints an engine and `select` takes it."""
    return f"{engine['name']}@{engine['version']}"


def engine_info(engine: dict[str, Any], hardware: dict[str, Any]) -> dict[str, Any]:
    """``RuntimeEngineInfo`` ([js] RuntimeEngine.ts): ``{name, version, engine, platform,
    cpu: {architecture, instructionSetExtensions}, gpu?: {make?, framework?},
    supportedModelFormatNames}``."""
    info: dict[str, Any] = {
        "name": engine["name"],
        "version": engine["version"],
        "engine": engine["engine"],
        "platform": engine["platform"],
        "cpu": {
            "architecture": hardware["cpu"]["architecture"],
            "instructionSetExtensions": list(hardware["cpu"]["supportedInstructionSetExtensions"]),
        },
    }
    if "gpu" in engine:
        info["gpu"] = dict(engine["gpu"])
    info["supportedModelFormatNames"] = list(engine["formats"])
    return info


def selected_engines(hardware: dict[str, Any]) -> list[dict[str, Any]]:
    """The installed engines selected for some model format, each once, in install order."""
    chosen = set(hardware["selected"].values())
    return [e for e in hardware["engines"] if engine_key(e) in chosen]


def find_engine(hardware: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The installed engine called ``name@version``, or None."""
    return next((e for e in hardware["engines"] if engine_key(e) == key), None)


def gpu_engine_selected(hardware: dict[str, Any]) -> bool:
    """Whether the engine selected for GGUF runs on a GPU (has ``gpu.framework``)."""
    engine = find_engine(hardware, str(hardware["selected"].get("GGUF", "")))
    return engine is not None and bool(engine.get("gpu", {}).get("framework"))


def visible_gpus(
    hardware: dict[str, Any], faults: dict[str, Any], seconds_up: float, time_scale: float
) -> list[dict[str, Any]]:
    """The GPUs the machine shows now: none under ``gpu_lost``, nor while ``seconds_up``
    (wall seconds since the daemon started) is below ``gpu_late`` (simulated seconds, so
    ``gpu_late * time_scale`` wall seconds)."""
    if faults.get("gpu_lost"):
        return []
    if seconds_up < float(faults.get("gpu_late") or 0) * time_scale:
        return []
    return list(hardware["gpus"])


def survey_engine(engine: dict[str, Any], hardware: dict[str, Any], gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """``RuntimeHardwareSurveyEngine`` of ``engine`` with ``gpus`` visible, schema-2 values,
    keys in the zod schema's order ([js] RuntimeHardwareSurvey.ts)."""
    framework = engine.get("gpu", {}).get("framework")
    seen = [{**g, "detectionPlatform": framework} for g in gpus] if framework else []
    if framework and not seen:
        compatibility = {
            "status": "gpuRequiredButNoneFound",
            "message": f"{engine['name']} needs a {framework} GPU; none was found.",  # the simulator's wording
        }
        gpu_result = {"code": "noDevicesFound", "message": f"No {framework} devices found."}
    else:
        compatibility = {"status": "compatible"}
        gpu_result = {"code": "success" if seen else "noDevicesFound", "message": ""}
    vram = sum(int(g["dedicatedMemoryCapacityBytes"]) for g in seen)
    ram = int(hardware["ram_bytes"])
    return {
        "name": engine["name"],
        "version": engine["version"],
        "engine": engine["engine"],
        "platform": engine["platform"],
        "compatibility": compatibility,
        "supportedModelFormatNames": list(engine["formats"]),
        "hardwareSurvey": {
            "gpuSurveyResult": {"result": gpu_result, "gpuInfo": seen},
            "cpuSurveyResult": {"result": {"code": "success", "message": ""}, "cpuInfo": dict(hardware["cpu"])},
        },
        "memoryInfo": {"ramCapacity": ram, "vramCapacity": vram, "totalMemory": ram + vram},
    }


def survey_result(engines: list[dict[str, Any]]) -> dict[str, Any]:
    """``RuntimeHardwareSurveyResult`` ``{status, engines}``: ``ok`` when an engine is
    compatible, else ``noCompatibleBackends`` (schema-2 values)."""
    ok = any(e["compatibility"]["status"] == "compatible" for e in engines)
    return {"status": "ok" if ok else "noCompatibleBackends", "engines": engines}


def as_schema(result: dict[str, Any], schema: int) -> dict[str, Any]:
    """``result`` (schema-2 values) as survey schema ``schema`` prints it: 2 unchanged, 1
    with the TitleCase and sentence values of 2025-12-18."""
    if schema == 2:
        return result

    def word(value: str) -> str:
        return _V1_WORDS.get(value, value)

    engines = []
    for e in result["engines"]:
        hw = e["hardwareSurvey"]
        gpu, cpu = hw["gpuSurveyResult"], hw["cpuSurveyResult"]
        cpu_v1 = {**cpu, "result": {**cpu["result"], "code": word(cpu["result"]["code"])}}
        if "cpuInfo" in cpu:
            cpu_v1["cpuInfo"] = {**cpu["cpuInfo"], "architecture": word(cpu["cpuInfo"]["architecture"])}
        engines.append(
            {
                **e,
                "compatibility": {**e["compatibility"], "status": _V1_COMPATIBILITY[e["compatibility"]["status"]]},
                "hardwareSurvey": {
                    "gpuSurveyResult": {
                        "result": {**gpu["result"], "code": word(gpu["result"]["code"])},
                        "gpuInfo": [
                            {
                                **g,
                                "integrationType": word(g["integrationType"]),
                                "detectionPlatform": word(g["detectionPlatform"]),
                            }
                            for g in gpu["gpuInfo"]
                        ],
                    },
                    "cpuSurveyResult": cpu_v1,
                },
            }
        )
    return {"status": word(result["status"]), "engines": engines}


def speed(hardware: dict[str, Any], faults: dict[str, Any], on_gpu: bool, gpu_now: bool) -> float:
    """Simulated tokens per second of an instance: ``tokens_per_second`` on its GPU,
    ``cpu_slowdown`` times less on the CPU (``on_gpu`` False, or no GPU visible now),
    and the ``cpu_fallback`` fault's factor less again; 0 means "at once"."""
    rate = float(hardware.get("tokens_per_second") or 0)
    if rate <= 0:
        return 0.0
    if not (on_gpu and gpu_now):
        rate /= max(1.0, float(hardware.get("cpu_slowdown") or 1))
    return rate / max(1.0, float(faults.get("cpu_fallback") or 1))
