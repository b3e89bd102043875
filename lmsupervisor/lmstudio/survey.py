"""Parse `lms runtime survey --json` and `lms runtime ls` into :mod:`lmsupervisor.core.hardware`.

Pure functions of the text `lms` printed; every malformed input raises
:class:`~lmsupervisor.errors.LmsOutputError` naming the field, never another exception.

**The survey** (lmstudio-facts.md §9; [js] ``packages/lms-shared-types/src/
RuntimeHardwareSurvey.ts``) is ``JSON.stringify(client.runtime.surveyHardware(), null, 2)``
([lms] ``src/subcommands/runtime/survey.ts``)::

    {"status": "ok" | "noCompatibleBackends",
     "engines": [{"name", "version", "engine", "platform",
                  "compatibility": {"status", "message"?},
                  "supportedModelFormatNames": [...],
                  "hardwareSurvey": {
                      "gpuSurveyResult": {"result": {"code", "message"},
                                          "gpuInfo": [{"name", "deviceId",
                                                       "totalMemoryCapacityBytes",
                                                       "dedicatedMemoryCapacityBytes",
                                                       "integrationType", "detectionPlatform",
                                                       "detectionPlatformVersion", "otherInfo"}]},
                      "cpuSurveyResult": {"result": {...}, "cpuInfo"?: {"name"?, "architecture",
                                          "supportedInstructionSetExtensions"}}},
                  "memoryInfo": {"ramCapacity", "vramCapacity", "totalMemory"},
                  "visibleDevicesConfig"?: {...}}]}

Two schemas with these same fields: **1** ([lms] d6729dc, 2025-12-18; [js] a5140d1e) spells
the values ``"OK"``, ``"NoCompatibleBackends"``, ``"Compatible"``, ``"GPU required but none
found"``, ``"Discrete"``, ``"Shell"``, ``"Unknown"``; **2** ([lms] 6c39cb8, 2026-03-05; [js]
0f01fb9f) ``"ok"``, ``"compatible"``, ``"gpuRequiredButNoneFound"``, ``"discrete"``,
``"shell"``, ``"unknown"``. Values are returned in schema 2; a value neither schema knows
is kept as printed (a newer LM Studio), so it is never ``compatible`` by accident.

**`lms runtime ls`** ([lms] ``src/subcommands/runtime/list.ts``, 35b4769 2025-09-23 on): a
columnify table ``LLM ENGINE  SELECTED  MODEL FORMAT`` with ``name@version``, ``✓`` and
``GGUF, MLX``; nothing on stdout when no runtime is installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lmsupervisor.core.hardware import Compatibility, Gpu, Hardware, InstalledRuntime, RuntimeEngine
from lmsupervisor.errors import LmsOutputError
from lmsupervisor.lmstudio.lmsoutput import parse_json

SURVEY_ARGV = ("lms", "runtime", "survey", "--json")
LS_ARGV = ("lms", "runtime", "ls")

# Schema 1's spellings -> schema 2 ([js] RuntimeHardwareSurvey.ts at a5140d1e vs 0f01fb9f).
_V1_COMPATIBILITY = {
    "Compatible": "compatible",
    "Incompatible app version": "incompatibleAppVersion",
    "Incompatible backend version": "incompatibleBackendVersion",
    "Invalid CPU architecture": "invalidCpuArchitecture",
    "Invalid CPU instruction set extensions": "invalidCpuInstructionSetExtensions",
    "CPU survey unsuccessful": "cpuSurveyUnsuccessful",
    "GPU survey unsuccessful": "gpuSurveyUnsuccessful",
    "GPU required but none found": "gpuRequiredButNoneFound",
    "GPU targets required but none specified": "gpuTargetsRequiredButNoneSpecified",
    "GPU driver unsupported": "gpuDriverUnsupported",
    "No supported GPUs": "noSupportedGpus",
    "Incompatible platform": "incompatiblePlatform",
    "Library outdated": "libraryOutdated",
    "Invalid library version format": "invalidLibraryVersionFormat",
    "Missing libraries": "missingLibraries",
    "Error surveying hardware": "errorSurveyingHardware",
    "Error checking compatibility": "errorCheckingCompatibility",
    "Unknown": "unknown",
}
_V1_STATUS = {"OK": "ok", "NoCompatibleBackends": "noCompatibleBackends"}
_V1_WORDS = {"Unknown": "unknown", "Shell": "shell", "Integrated": "integrated", "Discrete": "discrete"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_COLUMNS = re.compile(r"\S+(?: \S+)*")  # cells: runs of text separated by two spaces or more


def _fail(what: str, argv: Sequence[str]) -> LmsOutputError:
    return LmsOutputError(
        f"`{' '.join(argv)}`: {what}",
        list(argv),
        hint="LM Studio's survey format may have changed; run the command by hand and report it",
    )


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str, argv: Sequence[str]) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _fail(f"{where}.{key}: expected {kind.__name__}, got {value!r}", argv)
    return value


def _bytes(obj: Mapping[str, Any], key: str, where: str, argv: Sequence[str]) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(f"{where}.{key}: expected a byte count, got {value!r}", argv)
    return int(value)


def parse_survey(stdout: str, argv: Sequence[str] = SURVEY_ARGV) -> Hardware:
    """The :class:`Hardware` in `lms runtime survey --json` output ``stdout`` (either schema).

    The engine described is the first llama.cpp engine, else the first engine, as `lms`
    shows it; with no engine, ``runtime`` is None and the compatibility ``unknown``.
    ``surveyed_at`` is left None for the caller. Raises :class:`LmsOutputError` when the
    text is no JSON or a field the supervisor reads is missing or of the wrong type.
    """
    data = parse_json(stdout, argv)
    if not isinstance(data, dict):
        raise _fail(f"expected a JSON object, got {type(data).__name__}", argv)
    status = _get(data, "status", str, "survey", argv)
    engines = _get(data, "engines", list, "survey", argv)
    schema = 1 if status in _V1_STATUS else 2
    status = _V1_STATUS.get(status, status)
    if not all(isinstance(e, dict) for e in engines):
        raise _fail("survey.engines: expected objects", argv)
    if not engines:
        return Hardware((), None, Compatibility("unknown", "the survey listed no runtime"), status, 0, schema)
    index = next((i for i, e in enumerate(engines) if e.get("engine") == "llama.cpp"), 0)
    engine = engines[index]
    where = f"survey.engines[{index}]"
    runtime = RuntimeEngine(
        _get(engine, "name", str, where, argv),
        _get(engine, "version", str, where, argv),
        engine.get("engine") if isinstance(engine.get("engine"), str) else "",
    )
    compat = _get(engine, "compatibility", dict, where, argv)
    compat_status = _get(compat, "status", str, f"{where}.compatibility", argv)
    if compat_status in _V1_COMPATIBILITY:
        schema = 1
    message = compat.get("message")
    compatibility = Compatibility(
        _V1_COMPATIBILITY.get(compat_status, compat_status), message if isinstance(message, str) else ""
    )
    survey = _get(engine, "hardwareSurvey", dict, where, argv)
    gpu_result = _get(survey, "gpuSurveyResult", dict, f"{where}.hardwareSurvey", argv)
    gpu_where = f"{where}.hardwareSurvey.gpuSurveyResult"
    gpus = []
    for n, info in enumerate(_get(gpu_result, "gpuInfo", list, gpu_where, argv)):
        at = f"{gpu_where}.gpuInfo[{n}]"
        if not isinstance(info, dict):
            raise _fail(f"{at}: expected an object, got {info!r}", argv)
        dedicated = _bytes(info, "dedicatedMemoryCapacityBytes", at, argv)
        platform = _get(info, "detectionPlatform", str, at, argv)
        integration = _get(info, "integrationType", str, at, argv)
        gpus.append(
            Gpu(
                _get(info, "name", str, at, argv),
                _V1_WORDS.get(platform, platform),
                _V1_WORDS.get(integration, integration),
                dedicated if dedicated > 0 else _bytes(info, "totalMemoryCapacityBytes", at, argv),
            )
        )
    memory = engine.get("memoryInfo")
    ram = _bytes(memory, "ramCapacity", f"{where}.memoryInfo", argv) if isinstance(memory, dict) else 0
    return Hardware(tuple(gpus), runtime, compatibility, status, ram, schema)


def parse_runtime_ls(stdout: str, argv: Sequence[str] = LS_ARGV) -> list[InstalledRuntime]:
    """The installed runtimes in `lms runtime ls` output ``stdout`` (colours stripped).

    ``[]`` for empty output (`lms` then says ``No runtimes found.`` on stderr). Raises
    :class:`LmsOutputError` when there is text but no ``LLM ENGINE`` heading, or a row
    whose engine is not ``name@version``.
    """
    lines = [line.rstrip() for line in _ANSI.sub("", stdout).splitlines() if line.strip()]
    if not lines:
        return []
    if not lines[0].lstrip().startswith("LLM ENGINE"):
        raise _fail(f"expected the LLM ENGINE heading, got {lines[0][:120]!r}", argv)
    found = []
    for line in lines[1:]:
        cells = _COLUMNS.findall(line)
        name, at, version = cells[0].rpartition("@")
        if not at or not name or not version:
            raise _fail(f"expected name@version first in {line[:120]!r}", argv)
        rest = cells[1:]
        selected = bool(rest) and rest[0] == "✓"
        formats = rest[1:] if selected else rest
        found.append(
            InstalledRuntime(
                RuntimeEngine(name, version),
                selected,
                tuple(f.strip() for cell in formats for f in cell.split(",") if f.strip()),
            )
        )
    return found
