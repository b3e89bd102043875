"""What LM Studio says of the machine's hardware and inference runtime, as plain frozen data.

Parsed from `lms runtime survey --json` and `lms runtime ls` by
:mod:`lmsupervisor.lmstudio.survey` (lmstudio-facts.md §9); the core decides with it (is a
GPU there, is the runtime compatible, which runtime is selected). Field meanings follow
[js] ``packages/lms-shared-types/src/RuntimeHardwareSurvey.ts``; values are always those of
the current (second) schema, whichever schema the `lms` printed.
"""

from __future__ import annotations

from dataclasses import dataclass

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
