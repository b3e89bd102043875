"""What LM Studio says of the machine's hardware and inference runtime, as plain frozen data.

Parsed from `lms runtime survey --json` and `lms runtime ls` by
:mod:`lmsupervisor.lmstudio.survey` (lmstudio-facts.md §9); the core decides with it (is a
GPU there, is the runtime compatible, which runtime is selected). Field meanings follow
[js] ``packages/lms-shared-types/src/RuntimeHardwareSurvey.ts``; values are always those of
the current (second) schema, whichever schema the `lms` printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

COMPATIBLE = "compatible"


@dataclass(frozen=True)
class Gpu:
    """One GPU a runtime detected (``RuntimeHardwareGpuInfo``).

    ``platform`` is its ``detectionPlatform`` (``CUDA``, ``ROCm``, ``Metal``, ``Vulkan``,
    ``OpenCl``, ``shell``, ``unknown``); ``integration`` its ``integrationType``
    (``discrete``, ``integrated``, ``unknown``); ``vram_bytes`` its dedicated memory, or
    its total memory when it has none dedicated (as [lms] ``survey.ts`` shows it).
    """

    name: str
    platform: str
    integration: str
    vram_bytes: int


@dataclass(frozen=True)
class RuntimeEngine:
    """A runtime engine: ``name`` (``llama.cpp-linux-x86_64-nvidia-cuda12-avx2``),
    ``version`` (``1.52.1``) and ``engine`` family (``llama.cpp``, ``mlx-llm``; empty when
    not told). ``key`` is ``name@version``, how `lms runtime ls` shows it and `select` takes it."""

    name: str
    version: str
    engine: str = ""

    @property
    def key(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Compatibility:
    """A runtime's compatibility with this machine: ``status`` (``compatible``,
    ``gpuRequiredButNoneFound``, ``gpuSurveyUnsuccessful``, ``gpuDriverUnsupported``,
    ``noSupportedGpus``, ``missingLibraries``, ..., ``unknown``) and LM Studio's ``message``
    (empty when it gave none)."""

    status: str
    message: str = ""

    @property
    def compatible(self) -> bool:
        """True when LM Studio says the runtime can run here."""
        return self.status == COMPATIBLE


@dataclass(frozen=True)
class Hardware:
    """One hardware survey, of the runtime LM Studio reports first for llama.cpp (else its
    first engine), as `lms runtime survey` shows it.

    ``gpus`` that runtime detected; ``runtime`` None when the survey had no engine;
    ``compatibility`` its status; ``status`` the survey's own (``ok`` or
    ``noCompatibleBackends``); ``ram_bytes`` the machine's RAM (0 when not told);
    ``schema`` 1 (LM Studio's first survey schema, 2025-12) or 2 (2026-03 on);
    ``surveyed_at`` wall seconds (epoch), filled in by whoever ran the survey.
    """

    gpus: tuple[Gpu, ...]
    runtime: RuntimeEngine | None
    compatibility: Compatibility
    status: str = "ok"
    ram_bytes: int = 0
    schema: int = 2
    surveyed_at: float | None = None


@dataclass(frozen=True)
class InstalledRuntime:
    """One row of `lms runtime ls`: an installed runtime, whether it is ``selected`` (for
    some model format) and the model ``formats`` it runs (``GGUF``, ``MLX``)."""

    runtime: RuntimeEngine
    selected: bool
    formats: tuple[str, ...]


def hardware_to_json(hw: Hardware) -> dict[str, Any]:
    """``hw`` as JSON data (the state folder's ``hardware.json``): every field, times as
    epoch seconds; :func:`hardware_from_json` reads it back."""
    return {
        "gpus": [asdict(g) for g in hw.gpus],
        "runtime": asdict(hw.runtime) if hw.runtime is not None else None,
        "compatibility": asdict(hw.compatibility),
        "status": hw.status,
        "ram_bytes": hw.ram_bytes,
        "schema": hw.schema,
        "surveyed_at": hw.surveyed_at,
    }


def hardware_from_json(data: Any) -> Hardware | None:
    """The inverse of :func:`hardware_to_json`; None for anything malformed (never raises)."""
    try:
        gpus = tuple(
            Gpu(str(g["name"]), str(g["platform"]), str(g["integration"]), _count(g["vram_bytes"]))
            for g in data["gpus"]
        )
        rt = data["runtime"]
        runtime = None if rt is None else RuntimeEngine(str(rt["name"]), str(rt["version"]), str(rt.get("engine", "")))
        compat = data["compatibility"]
        at = data.get("surveyed_at")
        return Hardware(
            gpus,
            runtime,
            Compatibility(str(compat["status"]), str(compat.get("message") or "")),
            str(data.get("status", "ok")),
            _count(data.get("ram_bytes", 0)),
            int(data.get("schema", 2)),
            float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a byte count, got {value!r}")
    return value


@dataclass(frozen=True)
class Gate:
    """The GPU gate's verdict on one survey (:func:`gate`): ``open`` whether models may
    load; ``missing`` the GPUs required and not found (names from the last good survey, or
    ``"a GPU"``); ``incompatible`` LM Studio's compatibility status when it is not
    ``compatible``; ``on_cpu`` that models load although GPUs are missing or the runtime
    is incompatible (``[gpu] require = false``); ``remember`` whether the survey is the new
    last good one (compatible, and no GPU of the last good one missing)."""

    open: bool
    missing: tuple[str, ...] = ()
    incompatible: str | None = None
    on_cpu: bool = False
    remember: bool = False


def gate(survey: Hardware, last_good: Hardware | None, require: str | bool) -> Gate:
    """May models load on the hardware ``survey`` shows (design §9 ``[gpu] require``)?

    Required GPUs: with ``"auto"`` those of ``last_good`` (none without one), with True
    those and at least one, with False none. GPUs are matched by name, one for one (a
    renamed GPU counts as missing). The gate is closed when a required GPU is missing or
    the runtime is not ``compatible``; with ``require`` False it stays open and says so
    (``on_cpu``). Pure.
    """
    known = list(last_good.gpus) if last_good is not None else []
    found = [g.name for g in survey.gpus]
    missing: list[str] = []
    for g in known:
        if g.name in found:
            found.remove(g.name)
        else:
            missing.append(g.name)
    if require is True and not survey.gpus and not known:
        missing.append("a GPU")
    incompatible = None if survey.compatibility.compatible else survey.compatibility.status
    remember = incompatible is None and not missing
    if require is False:
        return Gate(True, tuple(missing), incompatible, bool(missing) or incompatible is not None, remember)
    return Gate(remember, tuple(missing), incompatible, False, remember)
